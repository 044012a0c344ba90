// Package schedule owns certmail's periodic tasks as a record shared through
// Redis: the definition of a schedule (Schedule), its validation by the same
// rules as every task entry point plus its own (Validate, Rules), the
// schedules file (ParseFile), the API's JSON (DecodeJSON), and the Store
// that keeps the API's schedules, the file's as the leader mirrors them, and
// each schedule's state (runs, last tick, last task, ended and why) and its
// history on the dashboard. The API and the CLI read and change schedules
// through a Store; the scheduler fires them and advances their state through
// the same Store, each write fenced by its leader lease and made only while
// the schedule exists.
package schedule

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/tasks"
)

// DefaultQueue is where scheduled tasks go unless a schedule names another.
const DefaultQueue = "bulk"

// Schedule is one periodic task, as written in the file or posted to the API
// (both read by the JSON names, DecodeJSON and ParseFile). A member added
// later must be omitempty: an ended file schedule starts anew when the
// digest of its JSON changes (MirrorFile), so a new encoding would start
// them all anew.
type Schedule struct {
	ID       string          `json:"id"`
	Cron     string          `json:"cron"`
	Timezone string          `json:"timezone,omitempty"`
	Type     string          `json:"type"`
	Payload  json.RawMessage `json:"payload"`
	Queue    string          `json:"queue,omitempty"`
	Until    *time.Time      `json:"until,omitempty"`
	MaxRuns  int             `json:"max_runs,omitempty"`
	// UntilValidated ends a resend-dcv schedule once its order no longer
	// waits for validation by email: its ticks carry only_if_pending, and the
	// first not_pending outcome ends it. Default true for resend-dcv (a
	// validated schedule reads back with it set); other types must leave it
	// out, as it cannot apply to them.
	UntilValidated *bool `json:"until_validated,omitempty"`
}

// Compiled is a validated schedule ready to fire, its defaults filled in.
type Compiled struct {
	Schedule
	Source string // SourceFile or SourceAPI
	spec   cron.Schedule
	loc    *time.Location
}

// EndsWhenValidated reports whether the schedule is until_validated: it
// ends once its order is validated.
func (c *Compiled) EndsWhenValidated() bool { return c.UntilValidated != nil && *c.UntilValidated }

// TickPayload returns the payload the schedule's ticks carry: its own,
// with only_if_pending for an until_validated schedule.
func (c *Compiled) TickPayload() (tasks.Payload, error) {
	p, err := tasks.Parse(c.Type, c.Payload)
	if err != nil {
		return nil, err
	}
	if rd, ok := p.(tasks.ResendDCV); ok && c.EndsWhenValidated() {
		rd.OnlyIfPending = true
		p = rd
	}
	return p, nil
}

// Next returns the first tick strictly after t (the zero time when the
// spec fires no more). A cron spec whose hour is not "*" fires once per
// wall-clock time of its time zone, as Vixie cron does across a daylight
// saving change: in the hour repeated when the clocks go back it fires in
// the first pass only, and a tick whose time is skipped when they go
// forward fires once, as they jump. A spec whose hour is "*" (it fires
// every hour) and @every follow elapsed time, so they fire in both passes
// of a repeated hour.
func (c *Compiled) Next(t time.Time) time.Time {
	spec, ok := c.spec.(*cron.SpecSchedule)
	if !ok || spec.Hour&cronStar != 0 || c.loc == time.UTC {
		return c.spec.Next(t.In(c.loc))
	}
	// The spec's next wall-clock times, computed as if they were UTC (where
	// each exists once), each taken at the first instant c's zone shows it:
	// those of the second pass of a repeated hour map to its first pass,
	// at or before t, and are passed over.
	w := wallClock(t.In(c.loc))
	for range maxWallSteps {
		if w = spec.Next(w); w.IsZero() {
			return w
		}
		if at := c.firstShown(w); at.After(t) {
			return at
		}
	}
	return time.Time{}
}

// cronStar is robfig/cron's mark of a field written "*" in a SpecSchedule
// (its starBit).
const cronStar = 1 << 63

// maxWallSteps bounds the wall-clock times Next passes over: those of one
// repeated or skipped hour at most (60 for a tick a minute), or a few
// hours' in zones that shift by more.
const maxWallSteps = 1000

// wallClock returns the wall-clock time t shows in its location, as a UTC
// time, to the second.
func wallClock(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}

// firstShown returns the first instant c's zone shows the wall-clock time
// w (written as UTC): the earlier of two in an hour repeated when the
// clocks go back, and the instant they jump for one they skip.
func (c *Compiled) firstShown(w time.Time) time.Time {
	at := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, c.loc)
	start, end := at.ZoneBounds()
	if shown := wallClock(at); !shown.Equal(w) {
		// Skipped: at is an instant next to the jump, on one side of it.
		if shown.After(w) && !start.IsZero() {
			return start
		}
		if shown.Before(w) && !end.IsZero() {
			return end
		}
		return at
	}
	if start.IsZero() {
		return at
	}
	// Shown again after the clocks went back: the zone before showed it
	// first, as many seconds earlier as its offset was larger.
	_, before := start.Add(-time.Second).Zone()
	if _, offset := at.Zone(); before > offset {
		if earlier := at.Add(-time.Duration(before-offset) * time.Second); earlier.Before(start) && wallClock(earlier).Equal(w) {
			return earlier
		}
	}
	return at
}

var (
	idPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
)

// Bounds of a schedule's cron spec and time zone, in bytes, judged on the
// value as given, before it is trimmed or parsed: a spec or an IANA zone
// name is far shorter, the leader reads every schedule every second (and
// judges again those whose JSON changed), and the API lists them all in one
// answer. Over its bound, a member is judged no further (overBounds).
const (
	MaxCronBytes     = 256
	MaxTimezoneBytes = 64
)

// overBounds returns a problem for each member of s over its bound
// (MaxTimezoneBytes, MaxCronBytes), in the order compile reports them. The
// message names the bound, never the value.
func overBounds(s Schedule) []tasks.FieldError {
	var errs []tasks.FieldError
	for _, m := range []struct {
		field, value string
		limit        int
	}{{"timezone", s.Timezone, MaxTimezoneBytes}, {"cron", s.Cron, MaxCronBytes}} {
		if len(m.value) > m.limit {
			errs = append(errs, tasks.FieldError{Field: m.field, Message: fmt.Sprintf("must be at most %d bytes", m.limit)})
		}
	}
	return errs
}

// DefaultMinInterval is CERTMAIL_SCHEDULE_MIN_INTERVAL's default: the
// shortest time allowed between two ticks of a schedule.
const DefaultMinInterval = time.Minute

// DefaultMaxSchedules is CERTMAIL_SCHEDULE_MAX's default: the most schedules
// the API and the CLI may hold at once.
const DefaultMaxSchedules = 1000

// Rules are what a schedule is judged by beyond its own form: the
// configuration every process that takes schedules reads.
type Rules struct {
	// Enqueue are the configured accounts and served queues; a schedule's
	// payload and queue are checked as every task entry point checks them
	// (enqueue.Check).
	Enqueue enqueue.Rules
	// MinInterval is the shortest time allowed between two ticks of a
	// schedule (CERTMAIL_SCHEDULE_MIN_INTERVAL); 0 means DefaultMinInterval.
	MinInterval time.Duration
	// MaxSchedules is the most schedules added through the API or the CLI
	// kept at once (CERTMAIL_SCHEDULE_MAX); beyond it the ones that ended
	// first make room (Store.Add). 0 means DefaultMaxSchedules. The
	// schedules file's are not counted: the file bounds them.
	MaxSchedules int
}

// WithDefaults returns r with zero values replaced by the defaults.
func (r Rules) WithDefaults() Rules {
	r.Enqueue = r.Enqueue.WithDefaults()
	r.MinInterval = cmp.Or(r.MinInterval, DefaultMinInterval)
	r.MaxSchedules = cmp.Or(r.MaxSchedules, DefaultMaxSchedules)
	return r
}

// Validate reports the first rule that cannot work.
func (r Rules) Validate() error {
	if r.MinInterval < 0 {
		return errors.New("schedule minimum interval must not be negative")
	}
	if r.MaxSchedules < 0 {
		return errors.New("the most schedules must not be negative")
	}
	return r.Enqueue.Validate()
}

// judge is how compile judges a schedule: by Rules in full (a schedule
// given to the Store, the scheduler or ParseFile), or by its own form only
// (a schedule read back from Redis, where it was validated when stored).
type judge struct {
	rules *Rules    // nil: the schedule's own form only
	now   time.Time // when not zero, the time an until must be after (a schedule being added)
	// from, when not zero, is when the schedule's ticks would begin (it is
	// being added): one whose first tick after from is past an until still
	// ahead never fires, and is refused. A file entry is not judged so: the
	// file is read again long after its entries began, when one may have
	// had its last tick with its until still ahead.
	from time.Time
	// found are problems found in reading the schedule (members that
	// could not be read): they come first, and what they name is not
	// judged again (see judgedAlready).
	found []tasks.FieldError
}

// judgedAlready reports whether fe is about a member one of j.found names
// already: a member that could not be read was left at its zero value, so
// a problem with that (an id or cron "required") would only mislead. A
// type that could not be read leaves out what depends on it, the payload
// and until_validated.
func (j judge) judgedAlready(fe tasks.FieldError) bool {
	member := fe.Field
	if i := strings.IndexAny(member, ".["); i >= 0 {
		member = member[:i]
	}
	return slices.ContainsFunc(j.found, func(f tasks.FieldError) bool {
		return f.Field == member || f.Field == "type" && (member == "payload" || member == "until_validated")
	})
}

// Validate checks s as Store.Add does, at time now: the same rules as every
// task entry point (payload, account and queue, by r.Enqueue), plus the id,
// the cron spec (at most MaxCronBytes; it must fire, and no more often than
// r.MinInterval), the time zone (at most MaxTimezoneBytes), until (in the future, and not before the first tick), the
// limits, a set-emails payload
// without a sequence (each tick is stamped when enqueued), and a resend-dcv
// payload without only_if_pending false unless until_validated is false
// (the ticks of an until_validated schedule carry true). Problems come back
// together in one bounded *InvalidError, payload fields prefixed with
// "payload.".
func Validate(s Schedule, r Rules, now time.Time) error {
	r = r.WithDefaults()
	_, err := compile(s, "", judge{rules: &r, now: now, from: now})
	return err
}

// sampledTicks is how many ticks of a cron spec are looked at to find its
// shortest interval.
const sampledTicks = 100

// MaxEvery is the longest @every interval a schedule may have: 43800h
// (1825 days), as far as a cron spec's next date is looked for.
const MaxEvery = 5 * 365 * 24 * time.Hour

// shortestInterval returns the shortest time between two of c's ticks that
// follow from (a sample of sampledTicks of them), as they fire (Next: once
// per wall-clock time across daylight saving changes); ok is false when
// c's spec never fires.
func (c *Compiled) shortestInterval(from time.Time) (d time.Duration, ok bool) {
	if cd, isConstant := c.spec.(cron.ConstantDelaySchedule); isConstant {
		return cd.Delay, true
	}
	t := c.Next(from)
	if t.IsZero() {
		return 0, false // robfig/cron gives up after five years without a match
	}
	d = time.Duration(math.MaxInt64)
	for range sampledTicks {
		next := c.Next(t)
		if next.IsZero() {
			break
		}
		d, t = min(d, next.Sub(t)), next
	}
	return d, true
}

// parseCron sets c's spec from cron, reporting through add a spec that
// does not parse, names a time zone, never fires or fires more often than
// the rules allow.
func (c *Compiled) parseCron(cron string, j judge, add func(field, msg string)) {
	switch spec := strings.TrimSpace(cron); {
	case spec == "":
		add("cron", "required")
	case strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ="):
		add("cron", "give the time zone in the timezone field")
	default:
		sched, err := cronParser.Parse(spec)
		if err != nil {
			add("cron", cronParseProblem(spec, err))
			return
		}
		c.spec = sched
		if msg := everyProblem(spec); msg != "" {
			add("cron", msg)
			return
		}
		if j.rules == nil {
			return
		}
		switch d, fires := c.shortestInterval(time.Now()); {
		case !fires:
			add("cron", "never fires (no date matches it)")
		case d > MaxEvery:
			// A cron spec's next date is looked for within five years
			// (robfig/cron's search): an @every longer than that is as good
			// as never.
			add("cron", "fires every "+d.String()+": the longest interval allowed is 43800h (1825 days)")
		case d < j.rules.MinInterval:
			add("cron", "fires every "+d.String()+" at times; the shortest interval allowed is "+
				j.rules.MinInterval.String()+" (CERTMAIL_SCHEDULE_MIN_INTERVAL)")
		}
	}
}

// everyPrefix starts an @every descriptor, as robfig/cron reads it.
const everyPrefix = "@every "

// everyProblem is what is wrong with spec's duration when spec is an @every
// descriptor that robfig/cron parses but would not fire as written: it
// fires every second for a duration of zero, below zero or below a
// second, and drops the fraction of a second of any other. "" when there
// is nothing wrong, or spec is no @every.
func everyProblem(spec string) string {
	arg, ok := strings.CutPrefix(spec, everyPrefix)
	if !ok {
		return ""
	}
	d, err := time.ParseDuration(arg)
	switch {
	case err != nil: // robfig/cron parsed it: cannot happen
		return "@every: " + err.Error()
	case d <= 0 || d%time.Second != 0:
		return "@every needs a positive whole number of seconds (such as 90s or 1h30m), not " + d.String()
	}
	return ""
}

// zoneComponent is one component of an IANA zone name: it starts with a
// capital letter ("Europe", "Port-au-Prince", "GMT+5", "EST5EDT"). The
// files of the zoneinfo database that are no zone (posixrules, localtime,
// zone.tab, the posix/ and right/ trees) start otherwise, and so do an
// empty, "." or ".." component.
var zoneComponent = regexp.MustCompile(`^[A-Z][A-Za-z0-9_+-]*$`)

// loadZone is the location of tz when it is an IANA zone name the zoneinfo
// database holds. time.LoadLocation also opens any file of the database
// that parses (posixrules, localtime, right/Europe/Berlin, with leap
// seconds), a path with empty or "." components (Europe//Berlin), and
// Local, the process's zone; and Factory is a zone, but the one of a
// machine whose zone is not set (its abbreviation is "-00"): none is a
// zone a user means.
func loadZone(tz string) (*time.Location, bool) {
	if tz == "Local" || tz == "Factory" {
		return nil, false
	}
	for part := range strings.SplitSeq(tz, "/") {
		if !zoneComponent.MatchString(part) {
			return nil, false
		}
	}
	loc, err := time.LoadLocation(tz)
	return loc, err == nil
}

func compile(s Schedule, source string, j judge) (*Compiled, error) {
	var errs []tasks.FieldError
	add := func(field, msg string) { errs = append(errs, tasks.FieldError{Field: field, Message: msg}) }
	if !idPattern.MatchString(s.ID) {
		add("id", "must be 1-128 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	c := &Compiled{Schedule: s, Source: source, loc: time.UTC}
	if c.Queue == "" {
		c.Queue = DefaultQueue
	}
	long := overBounds(s)
	errs = append(errs, long...)
	over := func(field string) bool {
		return slices.ContainsFunc(long, func(fe tasks.FieldError) bool { return fe.Field == field })
	}
	if tz := strings.TrimSpace(s.Timezone); tz != "" && !over("timezone") {
		if loc, ok := loadZone(tz); ok {
			c.loc = loc
		} else {
			add("timezone", "not a time zone name such as Europe/Berlin")
		}
	}
	if !over("cron") {
		c.parseCron(s.Cron, j, add)
	}
	if !j.now.IsZero() && s.Until != nil && !s.Until.After(j.now) {
		add("until", "must be in the future")
	}
	if !j.from.IsZero() && c.spec != nil && s.Until != nil && s.Until.After(j.from) {
		if first := c.Next(j.from); !first.IsZero() && first.After(*s.Until) {
			add("until", "never fires before until (first tick "+first.UTC().Format(time.RFC3339)+")")
		}
	}
	if s.MaxRuns < 0 {
		add("max_runs", "must not be negative")
	}
	switch {
	case s.Type == tasks.TypeResendDCV && s.UntilValidated == nil:
		yes := true
		c.UntilValidated = &yes
	case s.Type != tasks.TypeResendDCV && s.UntilValidated != nil:
		add("until_validated", "only resend-dcv schedules take it (it ends the schedule once the order is validated)")
	}
	if len(bytes.TrimSpace(s.Payload)) == 0 {
		add("payload", "required")
	} else if j.rules != nil {
		_, err := enqueue.Check(enqueue.Request{Type: s.Type, Payload: s.Payload, Queue: c.Queue}, j.rules.Enqueue)
		var ve *tasks.ValidationError
		switch {
		case errors.As(err, &ve):
			for _, fe := range ve.Errors {
				if fe.Field != "queue" {
					fe.Field = joinField("payload", fe.Field) // keeps the entry that counts what was left out
				}
				errs = append(errs, fe)
			}
		case errors.Is(err, tasks.ErrUnknownType):
			add("type", "unknown task type (want one of "+strings.Join(tasks.Types(), ", ")+")")
		case err != nil:
			add("payload", err.Error())
		}
		if s.Type == tasks.TypeSetEmails && hasMember(s.Payload, "sequence") && !slices.ContainsFunc(errs, isSequence) {
			add(sequenceField, msgScheduleSequence)
		}
		if c.EndsWhenValidated() && pendingOnlyFalse(s.Payload) {
			add(onlyIfPendingField, msgOnlyIfPendingFalse)
		}
	}
	if len(j.found) > 0 {
		errs = append(slices.Clone(j.found), slices.DeleteFunc(errs, j.judgedAlready)...)
	}
	if len(errs) > 0 {
		return nil, &InvalidError{Problems: tasks.NewValidationError(s.Type, errs...)}
	}
	return c, nil
}

// InvalidError lists what is wrong with a schedule, by field (payload
// fields prefixed "payload."). errors.As finds its *tasks.ValidationError
// (the API answers its list), but its text names the schedule's fields
// without calling them a payload's: "cron: never fires (no date matches
// it); until: must be in the future", bounded as the list is.
type InvalidError struct {
	Problems *tasks.ValidationError
}

func (e *InvalidError) Error() string { return problemOf(e.Problems) }

func (e *InvalidError) Unwrap() error { return e.Problems }

// sequenceField and msgScheduleSequence refuse a set-emails schedule whose
// payload has a sequence: every tick would carry that one sequence, and the
// worker would skip all of them as superseded once a newer set-emails of
// the order is applied.
const (
	sequenceField       = "payload.sequence"
	msgScheduleSequence = "a schedule must leave it out: each run is stamped when it is enqueued"
)

func isSequence(fe tasks.FieldError) bool { return fe.Field == sequenceField }

// onlyIfPendingField and msgOnlyIfPendingFalse refuse an until_validated
// resend-dcv schedule (the default) whose payload says only_if_pending
// false: its ticks carry only_if_pending true, which the schedule needs to
// learn that the order is validated, so the false would be dropped
// without a word.
const (
	onlyIfPendingField    = "payload.only_if_pending"
	msgOnlyIfPendingFalse = "false contradicts until_validated (true unless given), whose ticks carry only_if_pending true: " +
		"give until_validated: false to resend at every tick, or leave only_if_pending out"
)

// pendingOnlyFalse reports whether payload is a JSON object whose member
// only_if_pending is false.
func pendingOnlyFalse(payload []byte) bool {
	var p struct {
		OnlyIfPending *bool `json:"only_if_pending"`
	}
	return json.Unmarshal(payload, &p) == nil && p.OnlyIfPending != nil && !*p.OnlyIfPending
}

// hasMember reports whether payload is a JSON object with a member name.
func hasMember(payload []byte, name string) bool {
	var members map[string]json.RawMessage
	if json.Unmarshal(payload, &members) != nil {
		return false
	}
	_, ok := members[name]
	return ok
}

func joinField(prefix, field string) string {
	if field == "" {
		return prefix
	}
	if strings.HasPrefix(field, "[") {
		return prefix + field
	}
	return prefix + "." + field
}

// fileKey is the one top-level key of the schedules file.
const fileKey = "schedules"

// MaxFileEntries is the most entries the schedules file may list: each is
// judged when the file is read (a cron spec's next 100 ticks), and each
// valid one is a schedule the leader tracks and a label value of its
// metrics. A file with more cannot be parsed.
const MaxFileEntries = 10_000

// errNoList is a schedules file without its list: an empty, truncated or
// mistyped file must not read as "no schedules", which would stop every file
// schedule.
var errNoList = errors.New("no " + fileKey + " key (write " + fileKey + ": [] for none)")

// fileEntries returns the entries of the schedules file's list. The file is
// one mapping whose only key is schedules, a list (the key without a value
// is none too): any other key, a missing key, a value of another kind, or
// another document shape is an error of one line.
func fileEntries(data []byte) ([]*yaml.Node, error) {
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); errors.Is(err, io.EOF) {
		return nil, errNoList // empty, or only comments
	} else if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	doc := resolve(&root)
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = resolve(doc.Content[0])
	}
	if doc.Kind != yaml.MappingNode {
		return nil, errors.New("the file must be a mapping with a " + fileKey + " list")
	}
	var list *yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		key, val := doc.Content[i], resolve(doc.Content[i+1])
		switch {
		case key.Value != fileKey:
			return nil, fmt.Errorf("line %d: unknown top-level key %s (the file holds one key, %s)", key.Line, memberField(key.Value), fileKey)
		case list != nil:
			return nil, fmt.Errorf("line %d: %s given twice", key.Line, fileKey)
		case val.Kind == yaml.ScalarNode && val.ShortTag() == "!!null": // the key written without a list: none
			list = &yaml.Node{Kind: yaml.SequenceNode}
		case val.Kind != yaml.SequenceNode:
			return nil, fmt.Errorf("line %d: %s must be a list (write %s: [] for none)", key.Line, fileKey, fileKey)
		default:
			list = val
		}
	}
	if list == nil {
		return nil, errNoList
	}
	return list.Content, nil
}

// resolve returns the node an alias stands for, or node itself.
func resolve(node *yaml.Node) *yaml.Node {
	if node.Kind == yaml.AliasNode && node.Alias != nil {
		return node.Alias
	}
	return node
}

// EntryError is an invalid entry of the schedules file.
type EntryError struct {
	Index int    // position in the schedules list, from 0
	ID    string // "" when the entry has none, or not a valid one (never echoed)
	Err   error
}

func (e *EntryError) Error() string {
	if e.ID == "" {
		return fmt.Sprintf("schedules[%d]: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("schedules[%d] (%s): %v", e.Index, e.ID, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// ParseFile reads a schedules file and judges each entry by r, as Validate
// does. Valid entries are returned compiled (with their defaults filled
// in); each invalid one (or a repeated id) is an *EntryError in bad, so that
// the others keep running. err is set only when the file as a whole cannot
// be read: it is not YAML, or not one mapping whose only key is schedules,
// a list (an empty file, or a mistyped key, is such an error; `schedules:
// []`, or the key without a value, has no schedules), it lists more than
// MaxFileEntries entries, or an entry's cron or
// timezone is over its bound (MaxCronBytes, MaxTimezoneBytes; err is then
// an *EntryError). An until in the past does not make an entry
// invalid (the schedule has ended), nor does one before the next tick (the
// scheduler ends it; see Scheduler's endIfOver).
func ParseFile(data []byte, r Rules) (good []*Compiled, bad []*EntryError, err error) {
	r = r.WithDefaults()
	entries, err := fileEntries(data)
	if err != nil {
		return nil, nil, err
	}
	if len(entries) > MaxFileEntries {
		return nil, nil, fmt.Errorf("%s lists %d entries: at most %d are allowed", fileKey, len(entries), MaxFileEntries)
	}
	seen := map[string]int{}
	for i, node := range entries {
		s, found, err := decodeYAML(node)
		if err != nil {
			bad = append(bad, &EntryError{Index: i, Err: err})
			continue
		}
		if long := overBounds(s); len(long) > 0 {
			// Not a schedule anyone meant (a broken file, as one that is
			// not YAML): the file is refused, and a reload keeps its last
			// good version.
			return nil, nil, &EntryError{Index: i, ID: plainID(s.ID), Err: fieldProblems(long)}
		}
		if first, dup := seen[s.ID]; dup && s.ID != "" {
			bad = append(bad, &EntryError{Index: i, ID: plainID(s.ID), Err: fmt.Errorf("id already used by schedules[%d]", first)})
			continue
		}
		seen[s.ID] = i
		c, err := compile(s, SourceFile, judge{rules: &r, found: found})
		if err != nil {
			bad = append(bad, &EntryError{Index: i, ID: plainID(s.ID), Err: err})
			continue
		}
		good = append(good, c)
	}
	return good, bad, nil
}

// plainID is id when it is a valid schedule id, "" otherwise: an error that
// names an entry of the file never echoes much of it.
func plainID(id string) string {
	if idPattern.MatchString(id) {
		return id
	}
	return ""
}

// fieldProblems is problems as one error of one line, "field: message; ...".
func fieldProblems(problems []tasks.FieldError) error {
	parts := make([]string, 0, len(problems))
	for _, fe := range problems {
		parts = append(parts, fe.Field+": "+fe.Message)
	}
	return errors.New(strings.Join(parts, "; "))
}

// Sources of a schedule.
const (
	SourceFile = "file"
	SourceAPI  = "api"
)
