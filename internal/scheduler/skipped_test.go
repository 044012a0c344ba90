package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/taskresult"
)

// series returns, per metric name of reg, the label values of its series
// (joined with ","; "" for a series without labels) and their values.
func series(t *testing.T, reg *prometheus.Registry) map[string]map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, f := range families {
		out[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			label := ""
			for i, l := range m.GetLabel() {
				if i > 0 {
					label += ","
				}
				label += l.GetValue()
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out[f.GetName()][label] = v
		}
	}
	return out
}

// TestSkippedTicksReported: ticks older than the catch-up window when a
// leader can fire them (Redis stalled, or no leader, for longer) are
// skipped with one WARN line naming how many and the first and last of
// them, and counted in certmail_scheduler_ticks_skipped_total; the first
// tick enqueued is the one after the last skipped, and later rounds report
// nothing more.
func TestSkippedTicksReported(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	no := false
	if _, err := e.store().Add(ctx, schedule.Schedule{ID: "lz", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no}); err != nil {
		t.Fatal(err)
	}
	last := time.Now().Unix() - 100 // the last tick before the stall
	if err := e.redis.Client().HSet(ctx, stateKey("lz"), "since", last-10, "last_tick", last, "runs", 10).Err(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, logs := e.leader(t, Config{Lease: time.Minute, CatchUp: 10 * time.Second, Registry: reg})
	s.renewedAt = time.Now() // no renewal is due in this test
	waitFor(t, 10*time.Second, "lz fires", func() bool {
		s.refreshedAt = time.Time{}
		s.round(ctx)
		return len(e.ticks("bulk")["lz"]) > 2
	})
	s.round(ctx)
	warns := logs.FilterMessage("ticks skipped: they fell due longer ago than the catch-up window (Redis out of reach or no leader meanwhile)").All()
	if len(warns) != 1 {
		t.Fatalf("%d WARN lines of skipped ticks, want 1", len(warns))
	}
	f := warns[0].ContextMap()
	n, _ := f["skipped"].(int64)
	first, _ := f["first_tick"].(time.Time)
	lastSkipped, _ := f["last_tick"].(time.Time)
	fired := e.ticks("bulk")["lz"]
	if first.Unix() != last+1 || lastSkipped.Unix() != fired[0]-1 || n != lastSkipped.Unix()-last || n < 80 {
		t.Errorf("WARN line %v with the last tick at %d and the first fired at %d: want every tick in between, about 90",
			f, last, fired[0])
	}
	if got := series(t, reg)["certmail_scheduler_ticks_skipped_total"]["lz"]; got != float64(n) {
		t.Errorf("certmail_scheduler_ticks_skipped_total{schedule=lz} = %v, want %d", got, n)
	}
}

// TestSkippedTicksBounded: the ticks skipped are counted one by one up to
// maxSkippedCounted, beyond which the count says so; the first and last
// are found however many there are, for @every and cron specs.
func TestSkippedTicksBounded(t *testing.T) {
	t.Parallel()
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: fast, cron: '@every 1s', type: resend-dcv, payload: {order_id: 1}}
  - {id: minutely, cron: '* * * * *', type: resend-dcv, payload: {order_id: 1}}
`), schedule.Rules{MinInterval: time.Second})
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	fast, minutely := good[0], good[1]
	base := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		c           *schedule.Compiled
		from, to    time.Time
		n           int
		first, last time.Time
		more        bool
	}{
		{fast, base, base, 0, time.Time{}, time.Time{}, false},
		{fast, base, base.Add(90 * time.Second), 90, base.Add(time.Second), base.Add(90 * time.Second), false},
		{fast, base, base.Add(30 * 24 * time.Hour), maxSkippedCounted, base.Add(time.Second), base.Add(30 * 24 * time.Hour), true},
		{minutely, base.Add(30 * time.Second), base.Add(5*time.Minute + 30*time.Second), 5, base.Add(time.Minute), base.Add(5 * time.Minute), false},
		{minutely, base, base.Add(365*24*time.Hour + 30*time.Second), maxSkippedCounted, base.Add(time.Minute), base.Add(365 * 24 * time.Hour), true},
	} {
		n, first, last, more := skippedTicks(tt.c, tt.from, tt.to)
		if n != tt.n || !first.Equal(tt.first) || !last.Equal(tt.last) || more != tt.more {
			t.Errorf("%s from %v to %v: %d, %v, %v, %v; want %d, %v, %v, %v", tt.c.Cron, tt.from, tt.to, n, first, last, more,
				tt.n, tt.first, tt.last, tt.more)
		}
	}
}

// TestFollowerDropsTheLeadersSeries: a scheduler that stops leading drops
// the per-schedule series and the count of API schedules, which only a
// leader keeps up to date: a schedule deleted while it follows leaves
// nothing behind. The count of the file's schedules, which every replica
// reads, stays.
func TestFollowerDropsTheLeadersSeries(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	no := false
	if _, err := e.store().Add(ctx, schedule.Schedule{ID: "lz2", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no}); err != nil {
		t.Fatal(err)
	}
	file := e.writeFile("schedules:\n  - {id: f1, cron: '@every 1h', type: resend-dcv, payload: {order_id: 2}}\n")
	reg := prometheus.NewRegistry()
	s, _ := e.leader(t, Config{Lease: time.Minute, Registry: reg, File: file})
	s.renewedAt = time.Now()
	s.reloadFile()
	waitFor(t, 10*time.Second, "lz2 ticks", func() bool {
		s.round(ctx)
		s.beat(ctx, time.Now())
		return series(t, reg)["certmail_scheduler_ticks_total"]["lz2"] > 0
	})
	if got := series(t, reg)["certmail_schedules"]; got["api"] != 1 || got["file"] != 1 {
		t.Fatalf("certmail_schedules %v while leading, want api 1 and file 1", got)
	}
	// Another replica takes the lease; this one notices at its next renewal.
	if err := e.redis.Client().Set(ctx, leaderKey, "another", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	s.renewedAt = time.Time{}
	s.lead(ctx, time.Now())
	s.beat(ctx, time.Now())
	if s.leader {
		t.Fatal("still the leader")
	}
	got := series(t, reg)
	if len(got["certmail_scheduler_ticks_total"]) != 0 || len(got["certmail_scheduler_enqueue_errors_total"]) != 0 {
		t.Errorf("per-schedule series %v kept by a follower", got)
	}
	if sc := got["certmail_schedules"]; len(sc) != 1 || sc["file"] != 1 {
		t.Errorf("certmail_schedules %v on a follower, want only file 1", sc)
	}
}

// TestUnservedQueueWarnedOnce: an until_validated schedule whose last
// tick's task has been pending for unservedAfter in a queue that no live
// asynq server lists gets one WARN line, however often the leader looks
// at the task; when a worker lists the queue (here paused, so the task
// stays pending), none.
func TestUnservedQueueWarnedOnce(t *testing.T) {
	t.Parallel()
	const msg = "the last tick's task waits in a queue no live worker serves; no tick fires until it is done, " +
		"so the schedule does not go on: run a worker that serves the queue (CERTMAIL_QUEUES), or remove the schedule"
	for _, served := range []bool{false, true} {
		e := setup(t)
		ctx := context.Background()
		if served {
			if err := asynq.NewInspectorFromRedisClient(e.redis.Client()).PauseQueue("bulk"); err != nil {
				t.Fatal(err)
			}
			e.fakeWorker(func(int, *asynq.Task) (*taskresult.Result, error) { return nil, nil }, 0)
		}
		if _, err := e.store().Add(ctx, schedule.Schedule{ID: "xq", Cron: "@every 1s", Type: "resend-dcv",
			Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
			t.Fatal(err)
		}
		s, logs := e.leader(t, Config{Lease: time.Minute})
		s.renewedAt = time.Now()
		waitFor(t, 10*time.Second, "a tick fires", func() bool {
			s.round(ctx)
			return s.awaiting["xq"] != nil
		})
		look := func() { // a look at the task, without waiting for it
			s.awaiting["xq"].next = time.Time{}
			clear(s.due)
			s.round(ctx)
		}
		look()
		if p := s.notes.pending["xq"]; p != nil {
			p.since = time.Now().Add(-unservedAfter) // pending for long enough
		}
		for range 4 {
			look()
		}
		want := 1
		if served {
			want = 0
		}
		if warns := logs.FilterMessage(msg).All(); len(warns) != want {
			t.Errorf("served %v: %d WARN lines of the unserved queue, want %d", served, len(warns), want)
		} else if want == 1 && (warns[0].ContextMap()["queue"] != "bulk" || warns[0].ContextMap()["schedule"] != "xq") {
			t.Errorf("WARN line %v, want schedule xq and queue bulk", warns[0].ContextMap())
		}
		if ticks := e.allTicks("xq"); len(ticks) != 1 {
			t.Errorf("served %v: ticks %v, want the one pending", served, ticks)
		}
	}
}

// TestSkippedTicksWithinMaxRuns: a schedule with one run left before its
// max_runs reports one tick skipped, not every tick of the outage (no more
// would have fired), and its series stay keepEndedSeries after it ends, so
// that a scrape sees the skip; then they are removed.
func TestSkippedTicksWithinMaxRuns(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	no := false
	if _, err := e.store().Add(ctx, schedule.Schedule{ID: "mr", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no, MaxRuns: 11}); err != nil {
		t.Fatal(err)
	}
	last := time.Now().Unix() - 100
	if err := e.redis.Client().HSet(ctx, stateKey("mr"), "since", last-10, "last_tick", last, "runs", 10).Err(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, logs := e.leader(t, Config{Lease: time.Minute, CatchUp: 10 * time.Second, Registry: reg})
	s.renewedAt = time.Now()
	for range 3 {
		s.refreshedAt = time.Time{}
		clear(s.due)
		s.round(ctx)
	}
	if st, err := e.store().State(ctx, "mr"); err != nil || !st.Ended {
		t.Fatalf("state %+v, %v: want mr ended", st, err)
	}
	warns := logs.FilterMessageSnippet("ticks skipped").All()
	if len(warns) != 1 {
		t.Fatalf("%d WARN lines of skipped ticks, want 1", len(warns))
	}
	f := warns[0].ContextMap()
	first, _ := f["first_tick"].(time.Time)
	lastSkipped, _ := f["last_tick"].(time.Time)
	if f["skipped"] != int64(1) || first.Unix() != last+1 || !lastSkipped.Equal(first) {
		t.Errorf("WARN line %v: want 1 skipped, the tick at %d, the one run left", f, last+1)
	}
	if got := series(t, reg)["certmail_scheduler_ticks_skipped_total"]["mr"]; got != 1 {
		t.Errorf("certmail_scheduler_ticks_skipped_total{schedule=mr} = %v after it ended, want 1 until a scrape sees it", got)
	}
	s.dropAt["mr"] = time.Now() // keepEndedSeries later
	s.round(ctx)
	if got, ok := series(t, reg)["certmail_scheduler_ticks_skipped_total"]["mr"]; ok {
		t.Errorf("certmail_scheduler_ticks_skipped_total{schedule=mr} = %v kept after keepEndedSeries, want it removed", got)
	}
}

// TestSkippedTicksBoundedPerRound: a round that finds many schedules with
// many ticks skipped (the first after a long outage) counts at most
// maxSkippedPerRound of them one by one in all, so that the ticks due
// meanwhile are not held back; each schedule is still reported once, those
// counted beyond the bound with a lower bound said so and the last tick
// skipped, so that the next round reports nothing more.
func TestSkippedTicksBoundedPerRound(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	no := false
	const schedules = 5 // each with a day of ticks a second apart skipped
	last := time.Now().Unix() - 24*3600
	for i := range schedules {
		id := fmt.Sprintf("out%d", i)
		if _, err := e.store().Add(ctx, schedule.Schedule{ID: id, Cron: "@every 1s", Type: "resend-dcv",
			Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no}); err != nil {
			t.Fatal(err)
		}
		if err := e.redis.Client().HSet(ctx, stateKey(id), "since", last-10, "last_tick", last).Err(); err != nil {
			t.Fatal(err)
		}
	}
	s, logs := e.leader(t, Config{Lease: time.Minute, CatchUp: 10 * time.Second})
	s.renewedAt = time.Now()
	s.round(ctx)
	if s.skipCounted > maxSkippedPerRound+schedules {
		t.Errorf("the round counted %d skipped ticks one by one, want at most %d", s.skipCounted, maxSkippedPerRound+schedules)
	}
	warns := logs.FilterMessageSnippet("ticks skipped").All()
	if len(warns) != schedules {
		t.Fatalf("%d WARN lines of skipped ticks, want %d", len(warns), schedules)
	}
	total := int64(0)
	for _, w := range warns {
		f := w.ContextMap()
		n, _ := f["skipped"].(int64)
		lastSkipped, _ := f["last_tick"].(time.Time)
		total += n
		if f["skipped_counted_up_to_a_bound"] != true || n < 1 || time.Since(lastSkipped) > time.Minute {
			t.Errorf("WARN line %v: want a lower bound of at least 1, said so, and the last tick skipped", f)
		}
	}
	if total > maxSkippedPerRound+schedules {
		t.Errorf("%d skipped ticks counted in one round, want at most %d", total, maxSkippedPerRound+schedules)
	}
	clear(s.due)
	s.round(ctx)
	if n := logs.FilterMessageSnippet("ticks skipped").Len(); n != schedules {
		t.Errorf("%d WARN lines of skipped ticks after another round, want still %d", n, schedules)
	}
}
