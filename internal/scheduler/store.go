package scheduler

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/asynqsched"
	"github.com/certmail/certmail/internal/ops"
)

// Redis keys of the scheduler (see README "Redis keys").
const (
	apiSchedulesKey  = "certmail:schedules"      // hash id → Schedule JSON, added through the API or the CLI
	fileSchedulesKey = "certmail:schedules:file" // hash id → Schedule JSON, the file's valid entries, mirrored by the leader
	leaderKey        = "certmail:scheduler:leader"
	// statePrefix + id: hash since, last_tick, runs, last_run_at, last_task_id,
	// ended, ended_reason, ended_at, order_status.
	statePrefix = "certmail:schedule:"
)

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

func stateKey(id string) string { return statePrefix + id }

// Errors of the Store.
var (
	ErrNotFound     = errors.New("schedule not found")
	ErrExists       = errors.New("a schedule with this id exists")
	ErrFileSchedule = errors.New("the schedule is defined in the schedules file: edit the file")
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

// StoreConfig configures a Store. Zero values take the defaults noted.
type StoreConfig struct {
	Redis redis.UniversalClient // required; the Store does not close it
	// Checker validates payloads, accounts and queues exactly as every
	// other entry point does (required).
	Checker *ops.Service
	// MinInterval is the shortest time allowed between two ticks of a
	// schedule added (CERTMAIL_SCHEDULE_MIN_INTERVAL); default
	// DefaultMinInterval.
	MinInterval time.Duration
	// Logger reports the entries a listing skips; default none.
	Logger *zap.Logger
}

// Store keeps the API's schedules in Redis and reads every schedule's
// status. The API and the CLI use it; the scheduler reads from it.
type Store struct {
	rdb     redis.UniversalClient
	checker *ops.Service
	rules   rules
	log     *zap.Logger
	now     func() time.Time
}

// NewStore returns a Store configured by cfg.
func NewStore(cfg StoreConfig) *Store {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Store{rdb: cfg.Redis, checker: cfg.Checker, log: log, now: time.Now,
		rules: rules{checker: cfg.Checker, minInterval: cmp.Or(cfg.MinInterval, DefaultMinInterval)}}
}

// Skipped is a schedule kept in Redis that cannot be read (written by hand,
// by an older version, or damaged): it is left out of listings, and logged.
type Skipped struct {
	ID      string `json:"id"`
	Source  string `json:"source"`
	Problem string `json:"problem"`
}

// MaxSkippedListed is the most skipped schedules a listing names; the others
// are counted.
const MaxSkippedListed = 20

// Listing is every readable schedule and what was skipped.
type Listing struct {
	Schedules []Status
	// Skipped names at most MaxSkippedListed entries that could not be read;
	// SkippedCount counts them all.
	Skipped      []Skipped
	SkippedCount int
}

// Add validates s (a *tasks.ValidationError listing every problem) and
// stores it. An id used by the API or the file gives ErrExists.
func (st *Store) Add(ctx context.Context, s Schedule) (Status, error) {
	r := st.rules
	r.now = st.now()
	c, err := compile(s, SourceAPI, r)
	if err != nil {
		return Status{}, err
	}
	inFile, err := st.rdb.HExists(ctx, fileSchedulesKey, s.ID).Result()
	if err != nil {
		return Status{}, fmt.Errorf("read schedules: %w", err)
	}
	if inFile {
		return Status{}, fmt.Errorf("%s: %w (in the schedules file)", s.ID, ErrExists)
	}
	b, err := json.Marshal(c.Schedule)
	if err != nil {
		return Status{}, fmt.Errorf("encode schedule: %w", err)
	}
	added, err := st.rdb.HSetNX(ctx, apiSchedulesKey, s.ID, b).Result()
	if err != nil {
		return Status{}, fmt.Errorf("store schedule: %w", err)
	}
	if !added {
		return Status{}, fmt.Errorf("%s: %w", s.ID, ErrExists)
	}
	// Ticks count from now (Delete removed any earlier state of this id).
	now := st.now()
	if err := st.rdb.HSet(ctx, stateKey(s.ID), "since", now.Unix()).Err(); err != nil {
		return Status{}, fmt.Errorf("store schedule state: %w", err)
	}
	return st.status(c, map[string]string{"since": strconv.FormatInt(now.Unix(), 10)}), nil
}

// Delete removes an API schedule, its state and its history on the
// dashboard. A file schedule gives ErrFileSchedule, an unknown id
// ErrNotFound.
func (st *Store) Delete(ctx context.Context, id string) error {
	n, err := st.rdb.HDel(ctx, apiSchedulesKey, id).Result()
	if err != nil {
		return fmt.Errorf("delete schedule: %w", err)
	}
	if n == 0 {
		inFile, err := st.rdb.HExists(ctx, fileSchedulesKey, id).Result()
		switch {
		case err != nil:
			return fmt.Errorf("read schedules: %w", err)
		case inFile:
			return fmt.Errorf("%s: %w", id, ErrFileSchedule)
		default:
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
	}
	if err := st.rdb.Del(ctx, stateKey(id), asynqsched.HistoryKey(id)).Err(); err != nil {
		return fmt.Errorf("delete schedule state: %w", err)
	}
	return nil
}

// Get returns one schedule's status, or ErrNotFound.
func (st *Store) Get(ctx context.Context, id string) (Status, error) {
	all, err := st.List(ctx)
	if err != nil {
		return Status{}, err
	}
	for _, s := range all {
		if s.ID == id {
			return s, nil
		}
	}
	return Status{}, fmt.Errorf("%s: %w", id, ErrNotFound)
}

// List returns every readable schedule (the file's as last mirrored by the
// leader, then the API's), sorted by id; see Listing for what it skips.
func (st *Store) List(ctx context.Context) ([]Status, error) {
	l, err := st.Listing(ctx)
	return l.Schedules, err
}

// Listing returns every readable schedule, sorted by id, and names the
// entries that cannot be read, each logged at WARN: one entry of Redis
// never fails the whole list.
func (st *Store) Listing(ctx context.Context) (Listing, error) {
	scheds, skipped, err := st.load(ctx)
	if err != nil {
		return Listing{}, err
	}
	l := Listing{Schedules: make([]Status, 0, len(scheds)), SkippedCount: len(skipped)}
	for _, sk := range skipped {
		st.log.Warn("unreadable schedule in Redis skipped", zap.String("schedule", sk.ID), zap.String("source", sk.Source),
			zap.String("problem", sk.Problem))
	}
	l.Skipped = skipped[:min(len(skipped), MaxSkippedListed)]
	for _, c := range scheds {
		state, err := st.rdb.HGetAll(ctx, stateKey(c.ID)).Result()
		if err != nil {
			return Listing{}, fmt.Errorf("read schedule state: %w", err)
		}
		l.Schedules = append(l.Schedules, st.status(c, state))
	}
	return l, nil
}

// maxSkippedID bounds the id of a skipped entry as reported, in bytes.
const maxSkippedID = 128

// load reads both sources from Redis; a file schedule wins over an API one
// with the same id (Add prevents that, but the file can change later). An
// entry that does not decode, or is not a schedule, is skipped.
func (st *Store) load(ctx context.Context) ([]*compiled, []Skipped, error) {
	byID := map[string]*compiled{}
	var skipped []Skipped
	for _, src := range []struct{ key, name string }{{apiSchedulesKey, SourceAPI}, {fileSchedulesKey, SourceFile}} {
		raw, err := st.rdb.HGetAll(ctx, src.key).Result()
		if err != nil {
			return nil, nil, fmt.Errorf("read schedules: %w", err)
		}
		for id, js := range raw {
			skip := func(problem string) {
				if len(id) > maxSkippedID {
					id = fmt.Sprintf("%.64q…", id)
				}
				skipped = append(skipped, Skipped{ID: strings.ToValidUTF8(id, "\uFFFD"), Source: src.name, Problem: problem})
			}
			var s Schedule
			if err := json.Unmarshal([]byte(js), &s); err != nil {
				skip("not a schedule as JSON")
				continue
			}
			// Stored schedules were validated when stored; compile without
			// the payload checker so that an account removed since then
			// shows the schedule rather than hiding it (the scheduler skips
			// and reports it).
			c, err := compile(s, src.name, rules{})
			switch {
			case err != nil:
				skip(err.Error())
				continue
			case s.ID != id:
				skip("stored under another id")
				continue
			}
			byID[id] = c
		}
	}
	out := make([]*compiled, 0, len(byID))
	for _, c := range byID {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].ID < skipped[j].ID })
	return out, skipped, nil
}

// mirrorFile replaces the file schedules kept in Redis.
func (st *Store) mirrorFile(ctx context.Context, scheds []*compiled) error {
	pipe := st.rdb.TxPipeline()
	pipe.Del(ctx, fileSchedulesKey)
	for _, c := range scheds {
		b, err := json.Marshal(c.Schedule)
		if err != nil {
			return fmt.Errorf("encode schedule %s: %w", c.ID, err)
		}
		pipe.HSet(ctx, fileSchedulesKey, c.ID, b)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("mirror file schedules: %w", err)
	}
	return nil
}

// status computes what GET shows from a schedule and its state hash.
func (st *Store) status(c *compiled, state map[string]string) Status {
	s := Status{Schedule: c.Schedule, Source: c.source, State: StateActive, LastTaskID: state["last_task_id"], Ended: state["ended"] == "1"}
	s.Runs, _ = strconv.Atoi(state["runs"])
	if s.Ended {
		s.State, s.EndedReason, s.OrderStatus = StateEnded, state["ended_reason"], state["order_status"]
		if at := unixField(state, "ended_at"); !at.IsZero() {
			at = at.UTC()
			s.EndedAt = &at
		}
	}
	if at, err := strconv.ParseInt(state["last_run_at"], 10, 64); err == nil && at > 0 {
		t := time.Unix(at, 0).UTC()
		s.LastRun = &t
	}
	if !s.Ended {
		base := st.now()
		if last := unixField(state, "last_tick"); last.After(base) {
			base = last
		}
		if next := c.next(base); c.Until == nil || !next.After(*c.Until) {
			next = next.UTC()
			s.NextRun = &next
		}
	}
	return s
}

// unixField reads a Unix-seconds field; zero time when absent.
func unixField(state map[string]string, name string) time.Time {
	n, err := strconv.ParseInt(state[name], 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0)
}
