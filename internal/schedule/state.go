package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/certmail/certmail/internal/asynqsched"
	"github.com/certmail/certmail/internal/lease"
)

// State is what a schedule has done, as the scheduler's leader records it
// (the hash certmail:schedule:<id>).
type State struct {
	Since      time.Time // ticks count from here (when the schedule was first seen or added)
	LastTick   time.Time // the latest tick fired
	LastRunAt  time.Time // when it was fired
	Runs       int
	LastTaskID string // the task of the latest tick, named before it is enqueued
	Ended      bool
	// EndedReason says why an ended schedule ended: EndedMaxRuns, EndedUntil
	// or EndedValidated.
	EndedReason string
	EndedAt     time.Time
	// OrderStatus is the order status DigiCert reported to the tick that
	// ended an until_validated schedule.
	OrderStatus string
}

// DefaultCatchUp is how late a missed tick may be and still be fired (the
// scheduler's Config.CatchUp); older ones are skipped.
const DefaultCatchUp = time.Minute

// TickBase returns the time after which the next tick of c in state falls
// at now, as the scheduler fires it: its last tick, or when its ticks began
// when it has not ticked (now when they have not begun). Ticks older than
// catchUp before now are skipped: the base then moves on to just before the
// first tick that is not, on the schedule's own ticks, so an @every
// schedule keeps its phase and a tick that is due and not yet fired stays
// due until it is catchUp late. Compiled.Next of it is the next tick; it is
// before now when a tick is due that no scheduler has fired yet.
func (c *Compiled) TickBase(state State, now time.Time, catchUp time.Duration) time.Time {
	base := state.LastTick
	if base.IsZero() {
		base = state.Since
	}
	if base.IsZero() {
		return now // the leader begins its ticks from when it first sees it
	}
	oldest := now.Add(-catchUp)
	if !c.Next(base).Before(oldest) {
		return base
	}
	if every, ok := c.spec.(cron.ConstantDelaySchedule); ok && every.Delay > 0 {
		// Ticks fall at base + k×Delay: the base becomes the tick before
		// the first one at or after oldest.
		k := (oldest.Sub(base) + every.Delay - 1) / every.Delay
		return base.Add((k - 1) * every.Delay)
	}
	return oldest // a cron spec's ticks do not depend on the base
}

// stateFields are the fields of the state hash, in State's order.
var stateFields = []string{"since", "last_tick", "last_run_at", "runs", "last_task_id", "ended", "ended_reason", "ended_at", "order_status"}

func stateKey(id string) string { return statePrefix + id }

// stateOf reads a state hash; a field that is missing or malformed is left
// at its zero value.
func stateOf(h map[string]string) State {
	runs, _ := strconv.Atoi(h["runs"])
	return State{
		Since:       unixField(h, "since"),
		LastTick:    unixField(h, "last_tick"),
		LastRunAt:   unixField(h, "last_run_at"),
		Runs:        runs,
		LastTaskID:  h["last_task_id"],
		Ended:       h["ended"] == "1",
		EndedReason: h["ended_reason"],
		EndedAt:     unixField(h, "ended_at"),
		OrderStatus: h["order_status"],
	}
}

// unixField reads a Unix-seconds field; zero time when absent.
func unixField(state map[string]string, name string) time.Time {
	n, err := strconv.ParseInt(state[name], 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// State returns the state of schedule id (the zero State for a schedule
// that has none yet).
func (st *Store) State(ctx context.Context, id string) (State, error) {
	h, err := st.rdb.HGetAll(ctx, stateKey(id)).Result()
	if err != nil {
		return State{}, keyed("read schedule state", err, stateKeys)
	}
	return stateOf(h), nil
}

// States returns the states of the schedules ids, in one round trip.
func (st *Store) States(ctx context.Context, ids []string) ([]State, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := st.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, stateKey(id), stateFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, keyed("read schedule states", err, stateKeys)
	}
	out := make([]State, len(ids))
	for i, cmd := range cmds {
		h := map[string]string{}
		for j, name := range stateFields {
			if v, ok := cmd.Val()[j].(string); ok {
				h[name] = v
			}
		}
		out[i] = stateOf(h)
	}
	return out, nil
}

// ErrNotLeader is returned by the fenced writes of the state when the
// fence's lease is no longer its holder's: another scheduler leads.
var ErrNotLeader = errors.New("not the scheduler leader")

// guardLua starts every script that writes a schedule's state: only the
// lease holder writes (-1 otherwise), and only while the schedule exists,
// from the API or as the file's mirror (-2 otherwise). A tick fired as its
// schedule is deleted thus brings back neither its state nor its history,
// which a later Add of the same id would inherit. KEYS[1] is the lease,
// KEYS[2] the state, KEYS[3] and KEYS[4] the two schedule hashes; ARGV[1]
// is the lease's token, ARGV[2] the schedule id.
const guardLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 and redis.call('HEXISTS', KEYS[4], ARGV[2]) == 0 then return -2 end
`

// beginScript sets since to ARGV[3] unless it is set. Returns 1.
var beginScript = redis.NewScript(guardLua + `
redis.call('HSETNX', KEYS[2], 'since', ARGV[3])
return 1`)

// endedDefLua records, in the state KEYS[2] of a file schedule being ended,
// the digest of its definition as mirrored in KEYS[4] (the SHA-1 of its
// JSON, as MirrorFile computes it), so that MirrorFile can tell when the
// entry it ended under is edited.
const endedDefLua = `
local function note_definition()
  local def = redis.call('HGET', KEYS[4], ARGV[2])
  if def then redis.call('HSET', KEYS[2], 'ended_def', redis.sha1hex(def)) end
end
`

// recordScript advances a schedule's state to the tick ARGV[3], fired at
// ARGV[4] as the task ARGV[5], only forwards, and adds the event (score
// ARGV[7], member ARGV[8]) to the history KEYS[5]; it ends the schedule at
// max_runs ARGV[6]. Returns 1 recorded, 2 recorded and ended, 0 already
// recorded.
var recordScript = redis.NewScript(guardLua + asynqsched.RecordEventLua + endedDefLua + `
local last = tonumber(redis.call('HGET', KEYS[2], 'last_tick') or '0')
if tonumber(ARGV[3]) <= last then return 0 end
local runs = redis.call('HINCRBY', KEYS[2], 'runs', 1)
redis.call('HSET', KEYS[2], 'last_tick', ARGV[3], 'last_run_at', ARGV[4], 'last_task_id', ARGV[5])
record_event(KEYS[5], ARGV[7], ARGV[8])
local max = tonumber(ARGV[6])
if max > 0 and runs >= max and redis.call('HGET', KEYS[2], 'ended') ~= '1' then
  redis.call('HSET', KEYS[2], 'ended', '1', 'ended_reason', 'max_runs', 'ended_at', ARGV[4])
  note_definition()
  return 2
end
return 1`)

// endScript ends a schedule for the reason ARGV[3] at ARGV[4] (Unix
// seconds), recording the order status ARGV[5] when not empty. Returns 1
// when it ended it, 0 when it had ended already.
var endScript = redis.NewScript(guardLua + endedDefLua + `
if redis.call('HGET', KEYS[2], 'ended') == '1' then return 0 end
redis.call('HSET', KEYS[2], 'ended', '1', 'ended_reason', ARGV[3], 'ended_at', ARGV[4])
note_definition()
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'order_status', ARGV[5]) end
return 1`)

// intentScript names the task of the tick an until_validated schedule is
// about to enqueue, before it is enqueued, so that a leader taking over
// after a crash in between waits for that task too. Returns 1.
var intentScript = redis.NewScript(guardLua + `
redis.call('HSET', KEYS[2], 'last_task_id', ARGV[3])
return 1`)

// fenced runs script on schedule id's state for the holder of fence, with
// args from ARGV[3] on, turning its -1 into ErrNotLeader and its -2 into
// ErrNotFound.
func (st *Store) fenced(ctx context.Context, script *redis.Script, fence *lease.Lease, id string, args ...any) (int, error) {
	keys := []string{fence.Key(), stateKey(id), apiSchedulesKey, fileSchedulesKey, asynqsched.HistoryKey(id)}
	res, err := script.Run(ctx, st.rdb, keys, append([]any{fence.Token(), id}, args...)...).Int()
	switch {
	case err != nil:
		return 0, keyed("schedule "+id+" state", err, fence.Key(), stateKeys, apiSchedulesKey, fileSchedulesKey, historyKeys)
	case res == -1:
		return 0, fmt.Errorf("schedule %s state: %w", id, ErrNotLeader)
	case res < 0:
		return 0, fmt.Errorf("schedule %s state: %w", id, ErrNotFound)
	}
	return res, nil
}

// The writes below are made only while fence is its holder's (else
// ErrNotLeader) and schedule id exists (else ErrNotFound: it was deleted,
// or left the file, since the leader read the schedules).

// Begin records that schedule id's ticks count from at (whole seconds),
// unless they count from an earlier time already.
func (st *Store) Begin(ctx context.Context, fence *lease.Lease, id string, at time.Time) error {
	_, err := st.fenced(ctx, beginScript, fence, id, at.Unix())
	return err
}

// RecordTick advances schedule id's state to tick, fired at at as the task
// taskID, and adds that task to the schedule's history on the dashboard:
// runs grows by one, and reaching maxRuns (when above 0) ends the schedule.
// recorded is false when the tick was already recorded (by an earlier
// leader); ended reports that this tick ended the schedule.
func (st *Store) RecordTick(ctx context.Context, fence *lease.Lease, id string, tick, at time.Time, taskID string, maxRuns int) (recorded, ended bool, err error) {
	ev := asynqsched.Event{TaskID: taskID, EnqueuedAt: at}
	res, err := st.fenced(ctx, recordScript, fence, id, tick.Unix(), at.Unix(), taskID, maxRuns, ev.Score(), ev.Marshal())
	return res > 0, res == 2, err
}

// End ends schedule id for reason at at, keeping orderStatus when not "".
// ended is false when it had ended already.
func (st *Store) End(ctx context.Context, fence *lease.Lease, id, reason string, at time.Time, orderStatus string) (ended bool, err error) {
	res, err := st.fenced(ctx, endScript, fence, id, reason, at.Unix(), orderStatus)
	return res == 1, err
}

// NoteTask records taskID as schedule id's last task before it is enqueued.
func (st *Store) NoteTask(ctx context.Context, fence *lease.Lease, id, taskID string) error {
	_, err := st.fenced(ctx, intentScript, fence, id, taskID)
	return err
}

// APISchedules reads the API's schedules and judges each by the Store's
// rules again (readStored: an account may have been removed since it was
// added), and refuses one kept under an id its JSON does not name: good are
// those that may fire, bad names each of the others with its problem.
// Listings skip the same ones. A schedule whose JSON is the same as at the
// Store's last read is not judged again: the verdict, and the *Compiled,
// of that read are returned (see readAll).
func (st *Store) APISchedules(ctx context.Context) (good []*Compiled, bad map[string]error, err error) {
	raw, err := st.rdb.HGetAll(ctx, apiSchedulesKey).Result()
	if err != nil {
		return nil, nil, keyed("read schedules", err, apiSchedulesKey)
	}
	bad = map[string]error{}
	for id, r := range st.readAll(SourceAPI, raw) {
		err := r.err
		if err == nil && r.c.ID != id {
			err = errStoredUnderAnotherID
		}
		if err != nil {
			bad[id] = err
			continue
		}
		good = append(good, r.c)
	}
	return good, bad, nil
}

// Changes returns a count that every Add and Delete raises: the scheduler's
// leader, which judges again and looks at only the schedules whose JSON
// changed, looks at the state of every schedule again when it moves. An id
// deleted and added again with the same JSON starts anew (its state
// cleared, ended no more) under a JSON that did not change, and Delete
// clears the state kept under an id whatever its source.
func (st *Store) Changes(ctx context.Context) (int64, error) {
	n, err := st.rdb.Get(ctx, changesKey).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, keyed("read schedule changes", err, changesKey)
	}
	return n, nil
}

// read is what readStored made of one schedule's JSON js.
type read struct {
	js  string
	c   *Compiled
	err error
}

// readCache keeps, per source, the last read of each schedule kept in
// Redis, by id: judging a schedule in full (its cron spec's next 100 ticks
// sampled, its payload checked) costs up to a millisecond or more, and the
// leader reads the API's schedules every second. The rules do not change
// in a Store's life, so the same JSON gets the same verdict (a cron spec's
// ticks sampled from when its JSON was first read).
type readCache struct {
	mu       sync.Mutex
	bySource map[string]map[string]read
}

// readAll judges raw (id → JSON, the schedules kept under source) as
// readStored does, each whose JSON is the one of the last read of source
// taken from that read (its *Compiled too), and keeps this read for the
// next one; ids no longer in raw are forgotten.
func (st *Store) readAll(source string, raw map[string]string) map[string]read {
	st.reads.mu.Lock()
	defer st.reads.mu.Unlock()
	last := st.reads.bySource[source]
	out := make(map[string]read, len(raw))
	for id, js := range raw {
		if r, ok := last[id]; ok && r.js == js {
			out[id] = r
			continue
		}
		c, err := st.readStored(js, source)
		out[id] = read{js: js, c: c, err: err}
	}
	if st.reads.bySource == nil {
		st.reads.bySource = map[string]map[string]read{}
	}
	st.reads.bySource[source] = out
	return out
}

// errStoredUnderAnotherID is an API schedule whose JSON names another id
// than the one it is kept under (damaged or written by hand): neither id
// could be managed, so it is not fired.
var errStoredUnderAnotherID = errors.New("stored under another id")

// errNotJSON is a schedule kept in Redis that is not one as JSON.
var errNotJSON = errors.New("not a schedule as JSON")

// readStored decodes a schedule kept in Redis under source and judges it as
// the scheduler's leader does before it fires it. An API schedule is judged
// by the Store's rules in full, as they are now: they may refuse what they
// took when it was stored (an account removed since, a longer minimum
// interval, or an earlier version that took what this one refuses). A file
// schedule is judged by its own form: the leader published it after judging
// the file by its rules.
func (st *Store) readStored(js, source string) (*Compiled, error) {
	var s Schedule
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		return nil, errNotJSON
	}
	var j judge
	if source == SourceAPI {
		j.rules = &st.rules
	}
	return compile(s, source, j)
}
