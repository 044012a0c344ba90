// Package asynqsched writes the scheduler records that asynq keeps in Redis
// for its dashboard: the entries of the Schedulers tab (what each periodic
// task is, its options, when it runs next and last ran) and each entry's
// enqueue history (which task every run became). certmail's scheduler is not
// asynq's Scheduler (see internal/scheduler), so it writes these records
// itself, and asynq.Inspector and the asynqmon dashboard read them as they
// read asynq's own.
//
// The format is asynq v0.26's. Its types live in asynq's internal packages,
// which cannot be imported, so the two protobuf messages of its
// internal/proto/asynq.proto (SchedulerEntry, SchedulerEnqueueEvent) are
// encoded here with protowire. The package's tests read what it writes back
// through asynq.Inspector, field by field, so that an asynq upgrade that
// changes the format fails them.
//
// The entry functions queue commands on a redis.Pipeliner and leave running
// them to the caller, who decides what fences them (the scheduler writes
// entries only while it holds the leader lease). An event is added by a Lua
// function, RecordEventLua, that the caller's own script calls, so that the
// event is written in one step with whatever it goes with (the schedule
// store records a tick and its event together, and only while the schedule
// exists).
package asynqsched

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// SchedulersKey is asynq's sorted set of scheduler entry lists: each member
// is an EntriesKey, scored by the Unix time (seconds) it expires. Readers
// skip, and drop, members whose time has passed.
const SchedulersKey = "asynq:schedulers"

// MaxEvents is how many enqueue events one entry's history keeps, as asynq
// keeps them: recording one more drops the oldest.
const MaxEvents = 1000

// EntriesKey is the list of one scheduler's entries, each an encoded
// SchedulerEntry message; it expires with the scheduler's heartbeat.
func EntriesKey(schedulerID string) string { return "asynq:schedulers:{" + schedulerID + "}" }

// HistoryKey is the sorted set of one entry's enqueue events, each an
// encoded SchedulerEnqueueEvent message scored by its Unix time (seconds).
func HistoryKey(entryID string) string { return "asynq:scheduler_history:" + entryID }

// Entry is one periodic task as the dashboard lists it.
type Entry struct {
	// ID identifies the entry and its history. The dashboard puts it in a
	// URL path, so it must not contain '/'.
	ID      string
	Spec    string // the schedule, such as "0 9 * * *" or "@every 1h"
	Type    string // the task type
	Payload []byte
	// Options are those every run's task is enqueued with. asynq's reader
	// keeps Queue, MaxRetry, Timeout, Deadline, Unique, ProcessAt,
	// ProcessIn and Retention, and drops the others.
	Options []asynq.Option
	Next    time.Time // the next run
	Prev    time.Time // the last run; zero when it never ran
}

// Field numbers of asynq's protobuf messages (internal/proto/asynq.proto).
const (
	entryID       protowire.Number = 1 // string
	entrySpec     protowire.Number = 2 // string
	entryType     protowire.Number = 3 // string
	entryPayload  protowire.Number = 4 // bytes
	entryOptions  protowire.Number = 5 // repeated string
	entryNext     protowire.Number = 6 // google.protobuf.Timestamp
	entryPrev     protowire.Number = 7 // google.protobuf.Timestamp
	eventTaskID   protowire.Number = 1 // string
	eventTime     protowire.Number = 2 // google.protobuf.Timestamp
	timestampSecs protowire.Number = 1 // int64
	timestampNano protowire.Number = 2 // int32
)

// Marshal encodes e as asynq's SchedulerEntry message.
func (e Entry) Marshal() []byte {
	var b []byte
	b = appendString(b, entryID, e.ID)
	b = appendString(b, entrySpec, e.Spec)
	b = appendString(b, entryType, e.Type)
	if len(e.Payload) > 0 {
		b = protowire.AppendTag(b, entryPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, e.Payload)
	}
	for _, o := range e.Options {
		// A repeated field keeps empty elements.
		b = protowire.AppendTag(b, entryOptions, protowire.BytesType)
		b = protowire.AppendString(b, o.String())
	}
	b = appendTimestamp(b, entryNext, e.Next)
	return appendTimestamp(b, entryPrev, e.Prev)
}

// Event is one run of an entry: the task it enqueued, and when.
type Event struct {
	TaskID     string
	EnqueuedAt time.Time
}

// Marshal encodes e as asynq's SchedulerEnqueueEvent message.
func (e Event) Marshal() []byte {
	b := appendString(nil, eventTaskID, e.TaskID)
	return appendTimestamp(b, eventTime, e.EnqueuedAt)
}

// appendString appends a singular string field; proto3 leaves out empty ones.
func appendString(b []byte, n protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendTimestamp appends t as a google.protobuf.Timestamp field. It is
// always written, as asynq writes it: the zero time is a Timestamp of year 1,
// which reads back as the zero time, whereas a missing one would read back
// as 1970.
func appendTimestamp(b []byte, n protowire.Number, t time.Time) []byte {
	var ts []byte
	if s := t.Unix(); s != 0 {
		ts = protowire.AppendTag(ts, timestampSecs, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(s))
	}
	if ns := t.Nanosecond(); ns != 0 {
		ts = protowire.AppendTag(ts, timestampNano, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(ns))
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendBytes(b, ts)
}

// WriteEntries queues on p the commands that replace schedulerID's entries
// with entries, listed in their order and kept for ttl from now (the
// heartbeat must come back before then). No entries clears them. Run p as
// a transaction (TxPipeline) so that readers see the old list or the new.
func WriteEntries(ctx context.Context, p redis.Pipeliner, schedulerID string, entries []Entry, now time.Time, ttl time.Duration) {
	if len(entries) == 0 {
		ClearEntries(ctx, p, schedulerID)
		return
	}
	key := EntriesKey(schedulerID)
	values := make([]any, len(entries))
	for i, e := range entries {
		values[i] = e.Marshal()
	}
	p.Del(ctx, key)
	p.RPush(ctx, key, values...)
	p.PExpire(ctx, key, ttl)
	p.ZAdd(ctx, SchedulersKey, redis.Z{Score: float64(now.Add(ttl).Unix()), Member: key})
}

// ClearEntries queues on p the commands that remove schedulerID's entries.
func ClearEntries(ctx context.Context, p redis.Pipeliner, schedulerID string) {
	key := EntriesKey(schedulerID)
	p.ZRem(ctx, SchedulersKey, key)
	p.Del(ctx, key)
}

// RecordEventLua defines the Lua function record_event(key, score, member),
// which adds an event to a history (HistoryKey of its entry) and drops the
// oldest events beyond MaxEvents. A script that records an event starts
// with it and calls the function with the key and the event's Score and
// Marshal.
var RecordEventLua = fmt.Sprintf(`
local function record_event(key, score, member)
  redis.call('ZADD', key, score, member)
  redis.call('ZREMRANGEBYRANK', key, 0, %d)
end
`, -MaxEvents-1)

// Score is ev's score in its entry's history: the Unix time (seconds) it was
// enqueued, by which asynq orders the history.
func (e Event) Score() int64 { return e.EnqueuedAt.Unix() }
