// Package scheduler enqueues certmail tasks periodically, from schedules in
// a YAML file (CERTMAIL_SCHEDULES_FILE, reloaded when it changes) and from
// Redis (added through the API or the CLI), with any number of replicas.
//
// asynq's own Scheduler is not used: it enqueues every tick once per
// process and fixes the task at registration. Here one replica holds a leader
// lease in Redis and fires; each tick becomes one task with the id
// sched:<schedule id>:<tick unix seconds>, so a tick enqueued by a leader
// that died before recording it is recognised (asynq refuses the same task
// id) instead of enqueued twice. Each schedule's state (last tick, runs,
// ended) lives in Redis and is only advanced by the lease holder.
//
// Ticks missed while no scheduler ran are caught up when they are at most
// CatchUp old (one minute by default); older ones are skipped.
//
// So that the asynq dashboard's Schedulers tab lists the schedules, the
// leader writes asynq's scheduler records (package asynqsched): every
// Heartbeat (and after each tick) the list of running schedules with their
// next and previous run, expiring after two heartbeats and cleared when it
// stops leading; and one enqueue event per tick in the schedule's history,
// whose entry id is the schedule id, so the history outlives a failover.
//
// A resend-dcv schedule is until_validated unless it says otherwise: its
// ticks carry only_if_pending, the leader does not enqueue a tick while the
// previous tick's task is outstanding, and the first not_pending outcome in
// that task's result ends the schedule (see settle).
package scheduler

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/tasks"
)

// DefaultQueue is where scheduled tasks go unless a schedule names another.
const DefaultQueue = "bulk"

// Schedule is one periodic task, as written in the file or posted to the API.
type Schedule struct {
	ID       string          `json:"id" yaml:"id"`
	Cron     string          `json:"cron" yaml:"cron"`
	Timezone string          `json:"timezone,omitempty" yaml:"timezone"`
	Type     string          `json:"type" yaml:"type"`
	Payload  json.RawMessage `json:"payload" yaml:"-"`
	Queue    string          `json:"queue,omitempty" yaml:"queue"`
	Until    *time.Time      `json:"until,omitempty" yaml:"until"`
	MaxRuns  int             `json:"max_runs,omitempty" yaml:"max_runs"`
	// UntilValidated ends a resend-dcv schedule once its order no longer
	// waits for validation by email: its ticks carry only_if_pending, and the
	// first not_pending outcome ends it. Default true for resend-dcv (a
	// validated schedule reads back with it set); other types must leave it
	// out, as it cannot apply to them.
	UntilValidated *bool `json:"until_validated,omitempty" yaml:"until_validated"`
}

// compiled is a validated schedule ready to fire.
type compiled struct {
	Schedule
	source string // "file" or "api"
	spec   cron.Schedule
	loc    *time.Location
}

// untilValidated reports whether the schedule ends once its order is validated.
func (c *compiled) untilValidated() bool { return c.UntilValidated != nil && *c.UntilValidated }

// tickPayload returns the payload the schedule's ticks carry: its own,
// with only_if_pending for an until_validated schedule.
func (c *compiled) tickPayload() (tasks.Payload, error) {
	p, err := tasks.Parse(c.Type, c.Payload)
	if err != nil {
		return nil, err
	}
	if rd, ok := p.(tasks.ResendDCV); ok && c.untilValidated() {
		rd.OnlyIfPending = true
		p = rd
	}
	return p, nil
}

// next returns the first tick strictly after t.
func (c *compiled) next(t time.Time) time.Time { return c.spec.Next(t.In(c.loc)) }

var (
	idPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
)

// DefaultMinInterval is CERTMAIL_SCHEDULE_MIN_INTERVAL's default: the
// shortest time allowed between two ticks of a schedule.
const DefaultMinInterval = time.Minute

// rules are what a schedule is judged by beyond its own form.
type rules struct {
	// checker validates the payload, account and queue as every entry point
	// does; nil skips that part (a schedule read back from Redis).
	checker *ops.Service
	// minInterval is the shortest time allowed between two ticks; 0 skips
	// that check (a schedule read back from Redis).
	minInterval time.Duration
	// now, when not zero, is the time an until must be after (a schedule
	// being added).
	now time.Time
}

// Validate checks s as Store.Add does, at time now: the same rules as every
// task entry point (through checker, which also checks the account and the
// queue), plus the id, the cron spec (which must fire, and no more often
// than minInterval, 0 meaning DefaultMinInterval), the time zone, until (in
// the future) and the limits. Problems come back together in one bounded
// *tasks.ValidationError, payload fields prefixed with "payload.".
func Validate(s Schedule, checker *ops.Service, minInterval time.Duration, now time.Time) error {
	_, err := compile(s, "", rules{checker: checker, minInterval: cmp.Or(minInterval, DefaultMinInterval), now: now})
	return err
}

// sampledTicks is how many ticks of a cron spec are looked at to find its
// shortest interval.
const sampledTicks = 100

// shortestInterval returns the shortest time between two of the ticks of
// spec that follow from (a sample of sampledTicks of them); ok is false
// when spec never fires.
func shortestInterval(spec cron.Schedule, from time.Time) (d time.Duration, ok bool) {
	if c, isConstant := spec.(cron.ConstantDelaySchedule); isConstant {
		return c.Delay, true
	}
	t := spec.Next(from)
	if t.IsZero() {
		return 0, false // robfig/cron gives up after five years without a match
	}
	d = time.Duration(math.MaxInt64)
	for range sampledTicks {
		next := spec.Next(t)
		if next.IsZero() {
			break
		}
		d, t = min(d, next.Sub(t)), next
	}
	return d, true
}

func compile(s Schedule, source string, r rules) (*compiled, error) {
	var errs []tasks.FieldError
	add := func(field, msg string) { errs = append(errs, tasks.FieldError{Field: field, Message: msg}) }
	if !idPattern.MatchString(s.ID) {
		add("id", "must be 1-128 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	c := &compiled{Schedule: s, source: source, loc: time.UTC}
	if c.Queue == "" {
		c.Queue = DefaultQueue
	}
	if tz := strings.TrimSpace(s.Timezone); tz != "" {
		loc, err := time.LoadLocation(tz)
		if err != nil || tz == "Local" {
			add("timezone", "not a time zone name such as Europe/Berlin")
		} else {
			c.loc = loc
		}
	}
	switch spec := strings.TrimSpace(s.Cron); {
	case spec == "":
		add("cron", "required")
	case strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ="):
		add("cron", "give the time zone in the timezone field")
	default:
		sched, err := cronParser.Parse(spec)
		if err != nil {
			add("cron", "not a 5-field cron spec or a descriptor such as @every 1h: "+err.Error())
			break
		}
		c.spec = sched
		if r.minInterval <= 0 {
			break
		}
		switch d, fires := shortestInterval(sched, time.Now().In(c.loc)); {
		case !fires:
			add("cron", "never fires (no date matches it)")
		case d < r.minInterval:
			add("cron", "fires every "+d.String()+" at times; the shortest interval allowed is "+
				r.minInterval.String()+" (CERTMAIL_SCHEDULE_MIN_INTERVAL)")
		}
	}
	if !r.now.IsZero() && s.Until != nil && !s.Until.After(r.now) {
		add("until", "must be in the future")
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
	} else if checker := r.checker; checker != nil {
		err := checker.Validate(enqueue.Request{Type: s.Type, Payload: s.Payload, Queue: c.Queue})
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
	}
	if len(errs) > 0 {
		return nil, tasks.NewValidationError(s.Type, errs...)
	}
	return c, nil
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

// fileDoc is the schedules file.
type fileDoc struct {
	Schedules []yaml.Node `yaml:"schedules"`
}

// yamlSchedule decodes one file entry; the payload is any YAML mapping,
// turned into JSON.
type yamlSchedule struct {
	Schedule `yaml:",inline"`
	Payload  map[string]any `yaml:"payload"`
}

// EntryError is an invalid entry of the schedules file.
type EntryError struct {
	Index int    // position in the schedules list, from 0
	ID    string // "" when the entry has none
	Err   error
}

func (e *EntryError) Error() string {
	if e.ID == "" {
		return fmt.Sprintf("schedules[%d]: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("schedules[%d] (%s): %v", e.Index, e.ID, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// ParseFile reads a schedules file. Valid entries are returned (with their
// defaults filled in); each invalid one (or a repeated id) is an
// *EntryError in bad, so that the others keep running. err is set only when
// the file as a whole cannot be read. checker validates payloads as every
// entry point does; nil skips that part. A cron spec that never fires or
// fires more often than minInterval (0 means DefaultMinInterval) is
// invalid; an until in the past is not (the schedule has ended).
func ParseFile(data []byte, checker *ops.Service, minInterval time.Duration) (good []Schedule, bad []*EntryError, err error) {
	compiled, bad, err := parseFile(data, rules{checker: checker, minInterval: cmp.Or(minInterval, DefaultMinInterval)})
	for _, c := range compiled {
		good = append(good, c.Schedule)
	}
	return good, bad, err
}

func parseFile(data []byte, r rules) (good []*compiled, bad []*EntryError, err error) {
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) { // an empty file has no schedules
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	seen := map[string]int{}
	for i, node := range doc.Schedules {
		var ys yamlSchedule
		if err := decodeStrict(&node, &ys); err != nil {
			bad = append(bad, &EntryError{Index: i, ID: idOf(&node), Err: err})
			continue
		}
		s := ys.Schedule
		if ys.Payload != nil {
			b, err := json.Marshal(ys.Payload)
			if err != nil {
				bad = append(bad, &EntryError{Index: i, ID: s.ID, Err: fmt.Errorf("payload: %w", err)})
				continue
			}
			s.Payload = b
		}
		if first, dup := seen[s.ID]; dup && s.ID != "" {
			bad = append(bad, &EntryError{Index: i, ID: s.ID, Err: fmt.Errorf("id already used by schedules[%d]", first)})
			continue
		}
		seen[s.ID] = i
		c, err := compile(s, SourceFile, r)
		if err != nil {
			bad = append(bad, &EntryError{Index: i, ID: s.ID, Err: err})
			continue
		}
		good = append(good, c)
	}
	return good, bad, nil
}

func decodeStrict(node *yaml.Node, v any) error {
	// yaml.Node.Decode has no KnownFields; re-encode and decode strictly.
	b, err := yaml.Marshal(node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func idOf(node *yaml.Node) string {
	var probe struct {
		ID string `yaml:"id"`
	}
	_ = node.Decode(&probe) // best effort: only names the entry in an error
	return probe.ID
}

// Sources of a schedule.
const (
	SourceFile = "file"
	SourceAPI  = "api"
)
