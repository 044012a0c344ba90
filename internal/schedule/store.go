package schedule

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/asynqsched"
	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/tasks"
)

// Redis keys of schedules (see README "Redis keys").
const (
	apiSchedulesKey  = "certmail:schedules"      // hash id → Schedule JSON, added through the API or the CLI
	fileSchedulesKey = "certmail:schedules:file" // hash id → Schedule JSON, the file's valid entries, mirrored by the leader
	// fileWithdrawnKey is when a leader without a schedules file last
	// withdrew the file's schedules (see WithdrawFile), until a leader with
	// a file publishes them again.
	fileWithdrawnKey = "certmail:schedules:file:withdrawn"
	// publishedKey is which version of the schedules file which scheduler
	// replica published last, and the version before it (see
	// publications): a hash of six short fields.
	publishedKey = "certmail:schedules:file:published"
	// changesKey counts the Adds and Deletes, ever (see Changes).
	changesKey = "certmail:schedules:changes"
	// statePrefix + id: hash since, last_tick, runs, last_run_at, last_task_id,
	// ended, ended_reason, ended_at, order_status (State), source, the
	// source of the schedule it belongs to (SourceAPI or SourceFile; absent
	// when written by an earlier version), and for an ended file schedule
	// ended_def, the digest of the entry it ended under.
	statePrefix = "certmail:schedule:"
)

// The keys of every id, as errors name them (see keyed).
var (
	stateKeys   = stateKey("<id>")
	historyKeys = asynqsched.HistoryKey("<id>")
)

// keyed wraps err, an error of op's commands on keys, as "op: err"; when
// Redis refused them for the keys themselves (a key of another type, an
// ACL refusal), the text goes on with which keys and what to do
// (redisconn.KeyAdvice), so that the scheduler's line, the API's log and
// the CLI's answer all say it. An error that says it already is not told
// again.
func keyed(op string, err error, keys ...string) error {
	var k *keysError
	advice := redisconn.KeyAdvice(err, keys...)
	if advice == "" || errors.As(err, &k) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return &keysError{fmt.Errorf("%s: %w%s", op, err, advice)}
}

// keysError is an error keyed gave advice to.
type keysError struct{ err error }

func (e *keysError) Error() string { return e.err.Error() }
func (e *keysError) Unwrap() error { return e.err }

// Reasons a schedule ended, as Status.EndedReason says.
const (
	EndedMaxRuns   = "max_runs"  // it ran max_runs times
	EndedUntil     = "until"     // its until passed
	EndedValidated = "validated" // until_validated: its order no longer waits for validation by email
)

// States of a schedule, as Status.State says.
const (
	StateActive = "active"
	StateEnded  = "ended"
)

// Errors of the Store.
var (
	ErrNotFound     = errors.New("schedule not found")
	ErrExists       = errors.New("a schedule with this id exists")
	ErrInFile       = errors.New("in the schedules file") // Add's, with ErrExists: the file holds the id
	ErrFileSchedule = errors.New("the schedule is defined in the schedules file: edit the file")
	ErrTooMany      = errors.New("the most schedules allowed exist (CERTMAIL_SCHEDULE_MAX)")
)

// Status is a schedule with its source and what it has done.
type Status struct {
	Schedule
	Source     string     `json:"source"`
	State      string     `json:"state"` // StateActive or StateEnded
	NextRun    *time.Time `json:"next_run,omitempty"`
	LastRun    *time.Time `json:"last_run,omitempty"`
	LastTaskID string     `json:"last_task_id,omitempty"`
	Runs       int        `json:"runs"`
	Ended      bool       `json:"ended"`
	// EndedReason says why an ended schedule ended: EndedMaxRuns,
	// EndedUntil or EndedValidated.
	EndedReason string     `json:"ended_reason,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	// OrderStatus is the order status DigiCert reported to the tick that
	// ended an until_validated schedule ("issued", "canceled", ...).
	OrderStatus string `json:"order_status,omitempty"`
}

// Config configures a Store. Zero values take the defaults noted.
type Config struct {
	Redis redis.UniversalClient // required; the Store does not close it
	// Rules judge the schedules added, and those the scheduler fires,
	// exactly as every task entry point judges tasks, plus the minimum
	// interval; their zero value takes their defaults.
	Rules Rules
	// Logger reports the entries a listing skips; default none.
	Logger *zap.Logger
}

// WithDefaults returns c with zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	c.Rules = c.Rules.WithDefaults()
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if c.Redis == nil {
		return errors.New("no Redis configured")
	}
	return c.Rules.Validate()
}

// Store keeps the schedules and their state in Redis: the API's (Add,
// Delete), the file's as the scheduler's leader mirrors them, and each
// schedule's State and dashboard history, which only the leader advances,
// while the schedule exists. Its methods are safe for concurrent use.
type Store struct {
	rdb   redis.UniversalClient
	rules Rules
	log   *zap.Logger
	now   func() time.Time
	reads readCache
	// beforeMirrorWrite, when set (by a test), runs in mirror between its
	// read and its write.
	beforeMirrorWrite func()
}

// NewStore returns a Store configured by cfg (after WithDefaults and
// Validate).
func NewStore(cfg Config) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: cfg.Redis, rules: cfg.Rules, log: cfg.Logger, now: time.Now}, nil
}

// Rules returns the rules the Store judges schedules by, defaults filled in.
func (st *Store) Rules() Rules { return st.rules }

// Skipped is a schedule kept in Redis that the scheduler does not fire: one
// that cannot be read (written by hand, or damaged), or an API schedule the
// rules in force refuse (stored by an earlier version that took it, or
// before an account was removed or the minimum interval raised). It is left
// out of listings, which name it with its problem, and logged.
type Skipped struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	// Problem says what is wrong, by field for a schedule that reads
	// ("cron: fires every 3s at times; ..."), bounded as a
	// *tasks.ValidationError is.
	Problem string `json:"problem"`
}

// SkippedError is Get's error for a schedule listings skip. It matches
// ErrNotFound: there is no schedule to show.
type SkippedError struct{ Skipped }

func (e *SkippedError) Error() string {
	return e.ID + ": skipped: " + e.Problem
}

// Is reports whether target is ErrNotFound.
func (e *SkippedError) Is(target error) bool { return target == ErrNotFound }

// MaxSkippedListed is the most skipped schedules a listing names; the others
// are counted.
const MaxSkippedListed = 20

// Listing is every schedule the scheduler fires and what was skipped.
type Listing struct {
	Schedules []Status
	// Skipped names at most MaxSkippedListed entries the scheduler does not
	// fire; SkippedCount counts them all.
	Skipped      []Skipped
	SkippedCount int
}

// addScript stores schedule ARGV[2] under id ARGV[1] in the API's hash
// KEYS[1], with a fresh state KEYS[3] whose ticks count from ARGV[4] and no
// history KEYS[4]: 1 when stored; 0 when the id is taken there, 2 when the
// file's hash KEYS[2] has it; -1 when KEYS[1] holds ARGV[3] schedules
// already. The state is written in the same step, so that a file schedule
// published meanwhile never finds it (see claimLua), and the count of
// changes KEYS[5] moves with it, so that the leader looks at the state
// again (Changes).
var addScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 2 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[3], 'since', ARGV[4], 'source', 'api')
redis.call('INCR', KEYS[5])
return 1
`)

// Add validates s (an *InvalidError, whose *tasks.ValidationError
// errors.As finds, listing every problem) and
// stores it. found are problems already found in reading s (DecodeJSON's,
// or a command line's): they are listed first with the others, what they
// name is not judged again, and s is not stored. An id used by the API or
// the file gives ErrExists (for the file's, matching ErrInFile too). Ticks
// count from now, with no earlier state or history of the id: Delete
// removes them, but a schedule that left the file keeps them for
// LeftoverTTL, and its id may be added here. When the store holds Rules.MaxSchedules API
// schedules already, the one that ended first is deleted to make room
// (logged; more when the bound was lowered); when too few have ended, Add
// gives ErrTooMany.
func (st *Store) Add(ctx context.Context, s Schedule, found ...tasks.FieldError) (Status, error) {
	now := st.now()
	c, err := compile(s, SourceAPI, judge{rules: &st.rules, now: now, from: now, found: found})
	if err != nil {
		return Status{}, err
	}
	b, err := json.Marshal(c.Schedule)
	if err != nil {
		return Status{}, fmt.Errorf("encode schedule: %w", err)
	}
	add := func() (int, error) {
		keys := []string{apiSchedulesKey, fileSchedulesKey, stateKey(s.ID), asynqsched.HistoryKey(s.ID), changesKey}
		return addScript.Run(ctx, st.rdb, keys, s.ID, b, st.rules.MaxSchedules, now.Unix()).Int()
	}
	added, err := add()
	if err == nil && added < 0 {
		var dropped bool
		if dropped, err = st.makeRoom(ctx); err == nil && dropped {
			added, err = add()
		}
	}
	switch {
	case err != nil:
		return Status{}, keyed("store schedule", err, apiSchedulesKey, fileSchedulesKey, stateKeys, historyKeys, changesKey)
	case added == 0:
		return Status{}, fmt.Errorf("%s: %w", s.ID, ErrExists)
	case added == 2:
		return Status{}, fmt.Errorf("%s: %w (%w)", s.ID, ErrExists, ErrInFile)
	case added < 0:
		return Status{}, fmt.Errorf("%w: %d, and not enough of them ended to make room", ErrTooMany, st.rules.MaxSchedules)
	}
	return st.status(c, State{Since: time.Unix(now.Unix(), 0)}), nil
}

// makeRoom deletes, as Delete does, the API schedules that ended first,
// as many as it takes to bring them under Rules.MaxSchedules (one, unless
// the bound was lowered), and reports whether it deleted any. It reads
// every API schedule's state, only when the store is full.
func (st *Store) makeRoom(ctx context.Context) (bool, error) {
	ids, err := st.rdb.HKeys(ctx, apiSchedulesKey).Result()
	if err != nil {
		return false, keyed("read schedules", err, apiSchedulesKey)
	}
	pipe := st.rdb.Pipeline()
	states := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		states[i] = pipe.HMGet(ctx, stateKey(id), "ended", "ended_at")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, keyed("read schedule states", err, stateKeys)
	}
	type ended struct {
		id string
		at int64
	}
	var done []ended
	for i, cmd := range states {
		if v := cmd.Val(); len(v) == 2 && v[0] == "1" {
			at, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
			done = append(done, ended{ids[i], at})
		}
	}
	slices.SortFunc(done, func(a, b ended) int { return cmp.Or(cmp.Compare(a.at, b.at), strings.Compare(a.id, b.id)) })
	done = done[:min(len(done), len(ids)-st.rules.MaxSchedules+1)]
	for _, e := range done {
		if err := st.Delete(ctx, e.id); err != nil && !errors.Is(err, ErrNotFound) {
			return false, err
		}
		st.log.Info("ended schedule deleted to make room for a new one (CERTMAIL_SCHEDULE_MAX)", zap.String("schedule", e.id),
			zap.Time("ended_at", time.Unix(e.at, 0)), zap.Int("max", st.rules.MaxSchedules))
	}
	return len(done) > 0, nil
}

// deleteScript deletes schedule ARGV[1] from the API's hash KEYS[1] with
// its state KEYS[3] and history KEYS[4], or those alone for a schedule that
// left the file's hash KEYS[2]. Returns 1 deleted; 2 only the API's entry
// deleted, the file holding the id (the state and history are the file
// schedule's); -1 a file schedule; 0 nothing to delete. A state deleted
// moves the count of changes KEYS[5] (Changes).
var deleteScript = redis.NewScript(`
local inFile = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if inFile then return 2 end
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('INCR', KEYS[5])
  return 1
end
if inFile then return -1 end
if redis.call('DEL', KEYS[3], KEYS[4]) == 0 then return 0 end
redis.call('INCR', KEYS[5])
return 1
`)

// Delete removes an API schedule, its state and its history on the
// dashboard, or what is left of a schedule that left the file (its state
// and history, until they expire). An API schedule whose id the file holds
// (added before the file's entry) is removed alone: the state and history
// are the file schedule's, which goes on as it was (FileHas tells). A file
// schedule gives ErrFileSchedule, an id with nothing to delete ErrNotFound;
// neither repeats the id, which the caller has (and bounds as it shows it).
func (st *Store) Delete(ctx context.Context, id string) error {
	keys := []string{apiSchedulesKey, fileSchedulesKey, stateKey(id), asynqsched.HistoryKey(id), changesKey}
	n, err := deleteScript.Run(ctx, st.rdb, keys, id).Int()
	switch {
	case err != nil:
		return keyed("delete schedule", err, apiSchedulesKey, fileSchedulesKey, stateKeys, historyKeys, changesKey)
	case n < 0:
		return ErrFileSchedule
	case n == 0:
		return ErrNotFound
	}
	return nil
}

// FileHas reports whether the schedules file, as the scheduler's leader
// last published it, has a schedule with this id.
func (st *Store) FileHas(ctx context.Context, id string) (bool, error) {
	ok, err := st.rdb.HExists(ctx, fileSchedulesKey, id).Result()
	if err != nil {
		return false, keyed("read file schedules", err, fileSchedulesKey)
	}
	return ok, nil
}

// Get returns one schedule's status; ErrNotFound when there is none, a
// *SkippedError (which matches ErrNotFound) for one listings skip.
func (st *Store) Get(ctx context.Context, id string) (Status, error) {
	scheds, skipped, err := st.load(ctx)
	if err != nil {
		return Status{}, err
	}
	for _, c := range scheds {
		if c.ID == id {
			state, err := st.State(ctx, id)
			if err != nil {
				return Status{}, err
			}
			return st.status(c, state), nil
		}
	}
	for _, sk := range skipped {
		if sk.ID == id {
			return Status{}, &SkippedError{sk}
		}
	}
	return Status{}, fmt.Errorf("%s: %w", id, ErrNotFound)
}

// List returns every schedule the scheduler fires (the file's as last
// mirrored by the leader, then the API's), sorted by id; see Listing for
// what it skips.
func (st *Store) List(ctx context.Context) ([]Status, error) {
	l, err := st.Listing(ctx)
	return l.Schedules, err
}

// Listing returns every schedule the scheduler fires, sorted by id, and
// names the entries it does not fire (Skipped), each logged at WARN: one
// entry of Redis never fails the whole list, and none is shown as due when
// it is not. It reads the states of all the schedules in one round trip.
func (st *Store) Listing(ctx context.Context) (Listing, error) {
	scheds, skipped, err := st.load(ctx)
	if err != nil {
		return Listing{}, err
	}
	l := Listing{Schedules: make([]Status, 0, len(scheds)), SkippedCount: len(skipped)}
	for _, sk := range skipped {
		st.log.Warn("schedule in Redis skipped: the scheduler does not fire it", zap.String("schedule", sk.ID), zap.String("source", sk.Source),
			zap.String("problem", sk.Problem))
	}
	l.Skipped = skipped[:min(len(skipped), MaxSkippedListed)]
	ids := make([]string, len(scheds))
	for i, c := range scheds {
		ids[i] = c.ID
	}
	states, err := st.States(ctx, ids)
	if err != nil {
		return Listing{}, err
	}
	for i, c := range scheds {
		l.Schedules = append(l.Schedules, st.status(c, states[i]))
	}
	return l, nil
}

// maxSkippedID bounds the id of a skipped entry as reported, in bytes.
const maxSkippedID = 128

// load reads both sources from Redis; a file schedule wins over an API one
// with the same id (Add prevents that, but the file can change later). An
// entry the scheduler does not fire (readStored) is skipped; what readAll
// read before is not judged again.
func (st *Store) load(ctx context.Context) ([]*Compiled, []Skipped, error) {
	byID := map[string]*Compiled{}
	var skipped []Skipped
	for _, src := range []struct{ key, name string }{{apiSchedulesKey, SourceAPI}, {fileSchedulesKey, SourceFile}} {
		raw, err := st.rdb.HGetAll(ctx, src.key).Result()
		if err != nil {
			return nil, nil, keyed("read schedules", err, src.key)
		}
		for id, r := range st.readAll(src.name, raw) {
			skip := func(problem string) {
				if len(id) > maxSkippedID {
					id = fmt.Sprintf("%.64q…", id)
				}
				skipped = append(skipped, Skipped{ID: strings.ToValidUTF8(id, "\uFFFD"), Source: src.name, Problem: problem})
			}
			c := r.c
			switch {
			case r.err != nil:
				skip(problemOf(r.err))
				continue
			case c.ID != id:
				skip(errStoredUnderAnotherID.Error())
				continue
			}
			byID[id] = c
		}
	}
	out := make([]*Compiled, 0, len(byID))
	for _, c := range byID {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].ID < skipped[j].ID })
	return out, skipped, nil
}

// problemOf is err as Skipped.Problem names it: a schedule's problems as
// "field: message; ...", without the "invalid <type> payload" of
// tasks.ValidationError's text, bounded as it is.
func problemOf(err error) string {
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	parts := make([]string, 0, len(ve.Errors))
	for _, fe := range ve.Errors {
		if fe.Field == "" {
			parts = append(parts, fe.Message)
			continue
		}
		parts = append(parts, fe.Field+": "+fe.Message)
	}
	return strings.Join(parts, "; ")
}

// LeftoverTTL is how long the state and dashboard history of a schedule
// that left the file are kept: long enough for the schedule to come back
// (a file rolled back) where it stopped, bounded when it does not (one
// file schedule per order, replaced as orders come and go).
const LeftoverTTL = 7 * 24 * time.Hour

// claimLua makes the state KEYS[1] and history KEYS[2] those of the file
// schedule ARGV[2], whose entry's digest is ARGV[1]:
//   - a state of an API schedule of the same id (one added before the
//     file's entry, which does not fire while the file has the id) is not
//     the file schedule's: it is cleared, returns 2. A state written by an
//     earlier version names no source: it is the API schedule's when the
//     API's hash KEYS[3] has the id, unless it ended under a file entry
//     (ended_def, which only a file schedule records).
//   - a file schedule that ended under another definition than ARGV[1]
//     starts anew: cleared, returns 1. A state ended without a digest (by
//     an earlier version) takes ARGV[1] as the one it ended under.
//   - otherwise it is kept, returns 0.
//
// The state is marked as the file's.
const claimLua = `
local src = redis.call('HGET', KEYS[1], 'source')
local def = redis.call('HGET', KEYS[1], 'ended_def')
if src == 'api' or (not src and not def and redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1) then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'source', 'file')
  return 2
end
redis.call('HSET', KEYS[1], 'source', 'file')
if redis.call('HGET', KEYS[1], 'ended') ~= '1' then return 0 end
if def == ARGV[1] then return 0 end
if not def then
  redis.call('HSET', KEYS[1], 'ended_def', ARGV[1])
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'source', 'file')
return 1`

// leaveLua handles the state KEYS[1] and history KEYS[2] of schedule
// ARGV[1], which left the file: when the API's hash KEYS[3] has the id, its
// schedule fires again, with a fresh state of its own (returns 1);
// otherwise they expire after ARGV[2] seconds (returns 0).
const leaveLua = `
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'source', 'api')
  return 1
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 0`

// MirrorFile replaces the file schedules kept in Redis, so that listings
// show them (the scheduler's leader calls it when the file changes). The
// state and history of a schedule that left the file expire after
// LeftoverTTL; those of a schedule in the file are kept, except that an
// ended schedule whose entry was edited since it ended (any member: a
// higher max_runs, a later until, another payload) starts anew: its state
// and history are cleared, so that its runs count from 0 and its ticks
// from when the leader fires it next (logged at INFO).
//
// A schedule's state belongs to one source at a time. A file schedule
// whose id an API schedule has (added before the file's entry) does not
// take that schedule's state: it starts with a state of its own, and the
// API schedule does not fire while the file has the id (logged at WARN).
// When the id leaves the file, the API schedule fires again, with a fresh
// state too: the file schedule's is not its own.
//
// When a leader without a schedules file had withdrawn the file's schedules
// (WithdrawFile) since one with a file last published them, MirrorFile says
// so at WARN: the replicas differ.
//
// fence is the publishing scheduler's leader lease: the schedules are
// published only while it holds the lease (ErrNotLeader otherwise), so
// that a leader deposed meanwhile does not replace its successor's. Its
// token names the replica: the Store records which version of the file which replica published, and the
// version before it (publishedKey). A version that replaces another
// replica's says so at INFO (a rolling deploy does it once), and at WARN
// when the replaced version had itself replaced this one: replicas with
// different files, whose schedules swap at each change of leader. A
// replica's edit of its own file says nothing.
func (st *Store) MirrorFile(ctx context.Context, fence *lease.Lease, scheds []*Compiled) error {
	return st.mirror(ctx, fence, scheds, false)
}

// WithdrawFile is what a scheduler leader without a schedules file
// publishes: none. The file schedules kept in Redis, published by a leader
// that had a file, become leftovers as when they leave the file (see
// MirrorFile): they no longer fire or hold their ids, and their state and
// history expire after LeftoverTTL. When there were any, it says so at WARN
// and notes when, so that the next leader with a file says so too: a
// scheduler replica without the file was given another configuration. The
// record of which replica published which version of the file is left as it
// was: the withdrawal and the next publication say so in lines of their own.
// It is fenced by the leader lease as MirrorFile is.
func (st *Store) WithdrawFile(ctx context.Context, fence *lease.Lease) error {
	n, err := st.rdb.HLen(ctx, fileSchedulesKey).Result()
	if err != nil {
		return keyed("read file schedules", err, fileSchedulesKey)
	}
	if n == 0 {
		return nil
	}
	if err := st.mirror(ctx, fence, nil, true); err != nil {
		return err
	}
	st.log.Warn("this scheduler has no schedules file (CERTMAIL_SCHEDULES_FILE) and withdrew the schedules a scheduler with one "+
		"published: they no longer fire, and their state expires in 7 days unless a scheduler with the file leads again; "+
		"give every scheduler the same CERTMAIL_SCHEDULES_FILE", zap.Int64("schedules", n))
	return nil
}

// mirrorTries is how many times mirror reads and writes the file schedules
// when another client changed them between its read and its write.
const mirrorTries = 5

// mirror replaces the file schedules kept in Redis with scheds (see
// MirrorFile), published by fence's holder; withdraw notes that a leader
// without a file did (see WithdrawFile), otherwise the note of an earlier
// withdrawal is read and deleted, and the publication recorded. What it
// reads (the lease's holder, the ids published before, the record of
// publications) is watched, so that a change of leader between the read
// and the write makes it read again, and find that it no longer leads,
// rather than write from what it read before. Its own lease's renewal
// makes it read again too.
func (st *Store) mirror(ctx context.Context, fence *lease.Lease, scheds []*Compiled, withdraw bool) error {
	entries := make([]string, len(scheds))
	encoded := make([][]byte, len(scheds))
	for i, c := range scheds {
		b, err := json.Marshal(c.Schedule)
		if err != nil {
			return fmt.Errorf("encode schedule %s: %w", c.ID, err)
		}
		digest := sha1.Sum(b) // as endedDefLua's redis.sha1hex of the same JSON: it tells edits apart, it guards nothing
		entries[i], encoded[i] = hex.EncodeToString(digest[:]), b
	}
	var w *mirrorWrite
	var err error = redis.TxFailedErr
	for try := 0; try < mirrorTries && errors.Is(err, redis.TxFailedErr); try++ {
		err = st.rdb.Watch(ctx, func(tx *redis.Tx) error {
			var err error
			w, err = st.mirrorTx(ctx, tx, fence, scheds, encoded, entries, withdraw)
			return err
		}, fence.Key(), fileSchedulesKey, publishedKey)
	}
	switch {
	case errors.Is(err, ErrNotLeader):
		return fmt.Errorf("mirror file schedules: %w", err)
	case errors.Is(err, redis.TxFailedErr):
		return fmt.Errorf("mirror file schedules: another client changed them during each of %d tries: %w", mirrorTries, err)
	case err != nil:
		return keyed("mirror file schedules", err, fileSchedulesKey, publishedKey, fileWithdrawnKey, stateKeys, historyKeys,
			apiSchedulesKey)
	}
	if !withdraw {
		st.reportPublication(w.record, fence.Token(), fileDigest(entries))
	}
	st.reportMirror(scheds, w.claimed, w.left, w.withdrawn)
	return nil
}

// mirrorWrite is what one transaction of mirror read and wrote, for its
// report.
type mirrorWrite struct {
	record    publications
	claimed   []*redis.Cmd
	left      map[string]*redis.Cmd
	withdrawn *redis.SliceCmd
}

// mirrorTx is one try of mirror, on a connection watching what it reads:
// the write fails with redis.TxFailedErr when any of it changed meanwhile,
// and none is made (ErrNotLeader) when fence no longer holds the lease.
func (st *Store) mirrorTx(ctx context.Context, tx *redis.Tx, fence *lease.Lease, scheds []*Compiled, encoded [][]byte,
	entries []string, withdraw bool,
) (*mirrorWrite, error) {
	var holder, published *redis.SliceCmd
	var keys *redis.StringSliceCmd
	if _, err := tx.Pipelined(ctx, func(read redis.Pipeliner) error {
		holder = read.MGet(ctx, fence.Key()) // never redis.Nil, which would fail the pipeline
		keys, published = read.HKeys(ctx, fileSchedulesKey), read.HMGet(ctx, publishedKey, publicationFields...)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read file schedules: %w", err)
	}
	if token, _ := holder.Val()[0].(string); token != fence.Token() {
		return nil, ErrNotLeader
	}
	if st.beforeMirrorWrite != nil {
		st.beforeMirrorWrite()
	}
	w := &mirrorWrite{record: decodePublications(published.Val()), claimed: make([]*redis.Cmd, len(scheds)),
		left: map[string]*redis.Cmd{}}
	_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Del(ctx, fileSchedulesKey)
		inFile := make(map[string]bool, len(scheds))
		for i, c := range scheds {
			pipe.HSet(ctx, fileSchedulesKey, c.ID, encoded[i])
			w.claimed[i] = pipe.Eval(ctx, claimLua, []string{stateKey(c.ID), asynqsched.HistoryKey(c.ID), apiSchedulesKey},
				entries[i], c.ID)
			pipe.Persist(ctx, stateKey(c.ID))
			pipe.Persist(ctx, asynqsched.HistoryKey(c.ID))
			inFile[c.ID] = true
		}
		for _, id := range keys.Val() {
			if !inFile[id] {
				w.left[id] = pipe.Eval(ctx, leaveLua, []string{stateKey(id), asynqsched.HistoryKey(id), apiSchedulesKey}, id,
					int64(LeftoverTTL/time.Second))
			}
		}
		now := st.now().UTC().Format(time.RFC3339)
		if withdraw {
			pipe.Set(ctx, fileWithdrawnKey, now, LeftoverTTL)
			return nil
		}
		w.withdrawn = pipe.MGet(ctx, fileWithdrawnKey) // never redis.Nil, which would fail Exec
		pipe.Del(ctx, fileWithdrawnKey)
		w.record.after(fence.Token(), fileDigest(entries), now).write(ctx, pipe)
		return nil
	})
	return w, err
}

// reportMirror logs what mirror found once Redis answered: the file's
// schedules published again after a withdrawal (withdrawn; nil for a
// withdrawal), ended file schedules edited and file schedules with an API
// schedule's id (claimed), and API schedules that fire again (left).
func (st *Store) reportMirror(scheds []*Compiled, claimed []*redis.Cmd, left map[string]*redis.Cmd, withdrawn *redis.SliceCmd) {
	if withdrawn != nil {
		if at, ok := withdrawn.Val()[0].(string); ok {
			st.log.Warn("published the schedules file's schedules again, which a scheduler without a schedules file "+
				"(CERTMAIL_SCHEDULES_FILE) had withdrawn: they fire again; give every scheduler the same CERTMAIL_SCHEDULES_FILE",
				zap.String("withdrawn_at", at), zap.Int("schedules", len(scheds)))
		}
	}
	for i, cmd := range claimed {
		switch n, _ := cmd.Int(); n {
		case 1:
			st.log.Info("ended file schedule edited in the file: it starts anew", zap.String("schedule", scheds[i].ID))
		case 2:
			st.log.Warn("a file schedule has the id of an API schedule: the file's fires, with a state of its own, "+
				"and the API's does not; remove the API's (certmail schedule rm) or give it up in the file", zap.String("schedule", scheds[i].ID))
		}
	}
	for id, cmd := range left {
		if n, _ := cmd.Int(); n == 1 {
			st.log.Warn("a schedule left the file; the API schedule of its id fires again, with a fresh state", zap.String("schedule", id))
		}
	}
}

// status computes what GET shows from a schedule and its state: the next
// run is the next tick the scheduler fires (see Compiled.TickBase).
func (st *Store) status(c *Compiled, state State) Status {
	s := Status{Schedule: c.Schedule, Source: c.Source, State: StateActive, LastTaskID: state.LastTaskID, Ended: state.Ended,
		Runs: state.Runs}
	if s.Ended {
		s.State, s.EndedReason, s.OrderStatus = StateEnded, state.EndedReason, state.OrderStatus
		if at := state.EndedAt; !at.IsZero() {
			at = at.UTC()
			s.EndedAt = &at
		}
	}
	if !state.LastRunAt.IsZero() {
		t := state.LastRunAt.UTC()
		s.LastRun = &t
	}
	if !s.Ended {
		// The next tick as the scheduler fires it (from the last one), not
		// an interval from now: the two differ for @every.
		if next := c.Next(c.TickBase(state, st.now(), DefaultCatchUp)); c.Until == nil || !next.After(*c.Until) {
			next = next.UTC()
			s.NextRun = &next
		}
	}
	return s
}
