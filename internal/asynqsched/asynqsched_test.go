package asynqsched_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/asynqsched"
	"github.com/certmail/certmail/internal/redistest"
)

// bundle is what each test gets: its own Redis, a client and an Inspector.
type bundle struct {
	rdb  *redis.Client
	insp *asynq.Inspector
}

func setup(t *testing.T) bundle {
	t.Helper()
	srv := redistest.Start(t)
	insp := asynq.NewInspector(srv.ConnOpt())
	t.Cleanup(func() { _ = insp.Close() })
	return bundle{rdb: srv.Client(), insp: insp}
}

// tx runs queue's commands in one transaction.
func (b bundle) tx(t *testing.T, queue func(p redis.Pipeliner)) {
	t.Helper()
	if _, err := b.rdb.TxPipelined(context.Background(), func(p redis.Pipeliner) error { queue(p); return nil }); err != nil {
		t.Fatal(err)
	}
}

func optionStrings(opts []asynq.Option) []string {
	out := make([]string, len(opts))
	for i, o := range opts {
		out[i] = o.String()
	}
	return out
}

// TestEntriesReadByInspector pins the entry format: every field written
// comes back through asynq.Inspector.SchedulerEntries (what the dashboard's
// Schedulers tab shows) unchanged, in the order written, with the expiry.
func TestEntriesReadByInspector(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now()
	want := []asynqsched.Entry{
		{
			ID: "dcv-order-1002", Spec: "0 9 * * *", Type: "resend-dcv", Payload: []byte(`{"order_id":1002,"locale":"en"}`),
			Options: []asynq.Option{asynq.Queue("bulk"), asynq.MaxRetry(12), asynq.Timeout(2 * time.Minute), asynq.Retention(24 * time.Hour)},
			Next:    time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC),
			Prev:    time.Date(2026, 2, 28, 9, 0, 0, 123456789, time.UTC),
		},
		// Never ran, no options, no payload, a time before 1970.
		{ID: "a", Spec: "@every 1h", Type: "set-emails", Next: time.Date(1969, 7, 20, 20, 17, 40, 5, time.UTC)},
	}
	b.tx(t, func(p redis.Pipeliner) { asynqsched.WriteEntries(ctx, p, "certmail", want, now, 10*time.Second) })

	got, err := b.insp.SchedulerEntries()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("SchedulerEntries returned %d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.ID || g.Spec != w.Spec || g.Task.Type() != w.Type || string(g.Task.Payload()) != string(w.Payload) {
			t.Errorf("entry %d = {%q %q %q %q}, want {%q %q %q %q}", i, g.ID, g.Spec, g.Task.Type(), g.Task.Payload(),
				w.ID, w.Spec, w.Type, w.Payload)
		}
		if gs, ws := optionStrings(g.Opts), optionStrings(w.Options); !slices.Equal(gs, ws) {
			t.Errorf("entry %d options = %q, want %q", i, gs, ws)
		}
		if !g.Next.Equal(w.Next) || !g.Prev.Equal(w.Prev) {
			t.Errorf("entry %d next, prev = %v, %v; want %v, %v", i, g.Next, g.Prev, w.Next, w.Prev)
		}
	}
	if !got[1].Prev.IsZero() {
		t.Errorf("an entry that never ran has prev %v, want the zero time (the dashboard shows N/A)", got[1].Prev)
	}

	// The list expires with the heartbeat, and the set says when.
	ttl, err := b.rdb.PTTL(ctx, asynqsched.EntriesKey("certmail")).Result()
	if err != nil || ttl <= 0 || ttl > 10*time.Second {
		t.Errorf("entries key TTL %v (%v), want within (0, 10s]", ttl, err)
	}
	score, err := b.rdb.ZScore(ctx, asynqsched.SchedulersKey, asynqsched.EntriesKey("certmail")).Result()
	if err != nil || int64(score) != now.Add(10*time.Second).Unix() {
		t.Errorf("score in %s = %v (%v), want %d", asynqsched.SchedulersKey, score, err, now.Add(10*time.Second).Unix())
	}
}

// TestEntriesReplacedExpiredCleared: a write replaces the list, a list
// whose time has passed is not read, and clearing removes it.
func TestEntriesReplacedExpiredCleared(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := func() []string {
		t.Helper()
		es, err := b.insp.SchedulerEntries()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	entry := func(id string) asynqsched.Entry {
		return asynqsched.Entry{ID: id, Spec: "@every 1m", Type: "resend-dcv", Next: time.Now().Add(time.Minute)}
	}
	write := func(id string, entries ...asynqsched.Entry) {
		b.tx(t, func(p redis.Pipeliner) { asynqsched.WriteEntries(ctx, p, id, entries, time.Now(), time.Minute) })
	}

	write("one", entry("a"), entry("b"))
	write("one", entry("c"))
	write("two", entry("d"))
	if got := ids(); !slices.Equal(got, []string{"c", "d"}) && !slices.Equal(got, []string{"d", "c"}) {
		t.Errorf("after rewriting: entries %q, want c and d", got)
	}
	write("one") // no entries: cleared
	if got := ids(); !slices.Equal(got, []string{"d"}) {
		t.Errorf("after writing none: entries %q, want [d]", got)
	}
	b.tx(t, func(p redis.Pipeliner) { asynqsched.ClearEntries(ctx, p, "two") })
	if got := ids(); len(got) != 0 {
		t.Errorf("after clearing: entries %q, want none", got)
	}
	if n, err := b.rdb.Exists(ctx, asynqsched.EntriesKey("one"), asynqsched.EntriesKey("two"), asynqsched.SchedulersKey).Result(); err != nil || n != 0 {
		t.Errorf("keys left after clearing: %d (%v)", n, err)
	}

	// A list written by a heartbeat long past is not read, even while its
	// key lives on (a dead scheduler's).
	b.tx(t, func(p redis.Pipeliner) {
		asynqsched.WriteEntries(ctx, p, "dead", []asynqsched.Entry{entry("e")}, time.Now().Add(-time.Hour), time.Minute)
	})
	if n, err := b.rdb.Exists(ctx, asynqsched.EntriesKey("dead")).Result(); err != nil || n != 1 {
		t.Fatalf("the dead scheduler's list: exists %d (%v), want 1", n, err)
	}
	if got := ids(); len(got) != 0 {
		t.Errorf("an expired heartbeat's entries are listed: %q", got)
	}
}

// TestHistoryReadByInspector pins the event format and the cap: events come
// back through asynq.Inspector.ListSchedulerEnqueueEvents (the dashboard's
// history of an entry) newest first, and only the newest MaxEvents are kept.
func TestHistoryReadByInspector(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const extra = 7
	var events []asynqsched.Event
	for i := range asynqsched.MaxEvents + extra {
		events = append(events, asynqsched.Event{
			TaskID:     fmt.Sprintf("sched:s:%d", start.Unix()+int64(i)),
			EnqueuedAt: start.Add(time.Duration(i)*time.Second + time.Duration(i)*time.Microsecond),
		})
	}
	// A script that calls record_event, as the schedule store's does.
	record := redis.NewScript(asynqsched.RecordEventLua + "record_event(KEYS[1], ARGV[1], ARGV[2])\nreturn 1")
	for _, ev := range events {
		if err := record.Run(ctx, b.rdb, []string{asynqsched.HistoryKey("s")}, ev.Score(), ev.Marshal()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	other := asynqsched.Event{TaskID: "x", EnqueuedAt: start}
	if err := record.Run(ctx, b.rdb, []string{asynqsched.HistoryKey("other")}, other.Score(), other.Marshal()).Err(); err != nil {
		t.Fatal(err)
	}

	got, err := b.insp.ListSchedulerEnqueueEvents("s", asynq.PageSize(2*asynqsched.MaxEvents))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != asynqsched.MaxEvents {
		t.Fatalf("history holds %d events, want the cap %d", len(got), asynqsched.MaxEvents)
	}
	for i, g := range got {
		w := events[len(events)-1-i] // newest first
		if g.TaskID != w.TaskID || !g.EnqueuedAt.Equal(w.EnqueuedAt) {
			t.Fatalf("event %d = {%s %v}, want {%s %v}", i, g.TaskID, g.EnqueuedAt, w.TaskID, w.EnqueuedAt)
		}
	}
	if last := got[len(got)-1].TaskID; last != events[extra].TaskID {
		t.Errorf("oldest kept event %s, want %s (the %d oldest dropped)", last, events[extra].TaskID, extra)
	}
	others, err := b.insp.ListSchedulerEnqueueEvents("other")
	if err != nil || len(others) != 1 || others[0].TaskID != "x" {
		t.Errorf("another entry's history = %v (%v), want its one event", others, err)
	}
}
