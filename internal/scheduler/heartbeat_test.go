package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/asynqsched"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/schedule"
)

// testHeartbeat keeps the tests short; entries expire after two.
const testHeartbeat = 300 * time.Millisecond

// dashboard reads what the dashboard's Schedulers tab shows.
type dashboard struct {
	t    *testing.T
	insp *asynq.Inspector
}

func (e *env) dashboard() dashboard {
	insp := asynq.NewInspector(e.redis.ConnOpt())
	e.t.Cleanup(func() { _ = insp.Close() })
	return dashboard{t: e.t, insp: insp}
}

// entries returns the listed entries by id; an id listed twice fails the test.
func (d dashboard) entries() map[string]*asynq.SchedulerEntry {
	d.t.Helper()
	list, err := d.insp.SchedulerEntries()
	if err != nil {
		d.t.Fatal(err)
	}
	out := map[string]*asynq.SchedulerEntry{}
	for _, en := range list {
		if out[en.ID] != nil {
			d.t.Fatalf("schedule %s listed twice", en.ID)
		}
		out[en.ID] = en
	}
	return out
}

// history returns an entry's task ids, newest first.
func (d dashboard) history(id string) []string {
	d.t.Helper()
	events, err := d.insp.ListSchedulerEnqueueEvents(id, asynq.PageSize(asynqsched.MaxEvents))
	if err != nil {
		d.t.Fatal(err)
	}
	var out []string
	for _, ev := range events {
		out = append(out, ev.TaskID)
	}
	return out
}

func optionStrings(opts []asynq.Option) []string {
	var out []string
	for _, o := range opts {
		out = append(out, o.String())
	}
	return out
}

// TestDashboardListsSchedules: the leader lists every schedule, from the file
// and the API, with what it enqueues and when; each tick is in the
// schedule's history; a deleted or ended schedule leaves the list within a
// heartbeat, a deleted one takes its history along; stopping clears the list.
func TestDashboardListsSchedules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	d := e.dashboard()
	ctx := context.Background()
	file := e.writeFile(`schedules:
  - id: daily
    cron: "0 9 * * *"
    timezone: Europe/Berlin
    type: resend-dcv
    payload: {order_id: 1002, locale: en}
  - id: twice
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 7}
    until_validated: false
    max_runs: 2
`)
	st := e.store()
	if _, err := st.Add(ctx, schedule.Schedule{ID: "from-api", Cron: "@every 1s", Type: "send-cert", Queue: "critical",
		Payload: json.RawMessage(`{"certificate_id": 5, "emails": ["ops@example.com"], "certificate_collect_format": "attachment"}`)}); err != nil {
		t.Fatal(err)
	}
	logs, stop := e.start(Config{File: file, Heartbeat: testHeartbeat}, ops.Config{MaxRetry: 3, Retention: time.Hour})

	waitFor(t, 10*time.Second, "from-api listed with a previous run", func() bool {
		en := d.entries()["from-api"]
		return en != nil && !en.Prev.IsZero()
	})
	entries := d.entries()
	daily := entries["daily"]
	if daily == nil {
		t.Fatalf("daily not listed: %v", entries)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	now := time.Now().In(berlin)
	wantNext := time.Date(now.Year(), now.Month(), now.Day(), 9, 0, 0, 0, berlin)
	if !wantNext.After(now) {
		wantNext = time.Date(now.Year(), now.Month(), now.Day()+1, 9, 0, 0, 0, berlin)
	}
	if daily.Spec != "0 9 * * *" || daily.Task.Type() != "resend-dcv" || !daily.Next.Equal(wantNext) || !daily.Prev.IsZero() {
		t.Errorf("daily = spec %q type %q next %v prev %v; want next %v and no prev", daily.Spec, daily.Task.Type(), daily.Next, daily.Prev, wantNext)
	}
	var payload map[string]any
	// The payload its ticks carry: a resend-dcv schedule is until_validated.
	if err := json.Unmarshal(daily.Task.Payload(), &payload); err != nil || payload["order_id"] != 1002.0 || payload["locale"] != "en" ||
		payload["only_if_pending"] != true {
		t.Errorf("daily payload %s (%v)", daily.Task.Payload(), err)
	}
	api := entries["from-api"]
	if got, want := optionStrings(api.Opts), []string{`Queue("critical")`, "MaxRetry(3)"}; !slices.Equal(got, want) {
		t.Errorf("from-api options %q, want %q (its tasks' queue and retries)", got, want)
	}
	// Every second: the next run is about a second from the last (which
	// may have been recorded late on a loaded machine).
	if gap := api.Next.Sub(api.Prev); gap < -3*time.Second || gap > 3*time.Second {
		t.Errorf("from-api next %v, prev %v: want about a second apart", api.Next, api.Prev)
	}

	// The history: the ticks' tasks, newest first, as in the queue.
	waitFor(t, 10*time.Second, "from-api's history holds 2 ticks", func() bool { return len(d.history("from-api")) >= 2 })
	hist := d.history("from-api")
	queued := map[string]bool{}
	for _, tick := range e.ticks("critical")["from-api"] {
		queued[fmt.Sprintf("sched:from-api:%d", tick)] = true
	}
	for i, id := range hist {
		if !queued[id] {
			t.Errorf("history row %s is not a tick's task in the queue", id)
		}
		if i > 0 && id >= hist[i-1] {
			t.Errorf("history %q is not newest first", hist)
		}
	}

	// Ended (max_runs: 2): off the list, its history kept.
	waitFor(t, 10*time.Second, "twice leaves the list once ended", func() bool {
		_, listed := d.entries()["twice"]
		return !listed && len(d.history("twice")) == 2
	})

	// Deleted: off the list, history gone, and it stays gone although the
	// leader may fire the schedule until it reads the API's schedules again
	// (TestTickOfADeletedSchedule holds that race still).
	if err := st.Delete(ctx, "from-api"); err != nil {
		t.Fatal(err)
	}
	if got := d.history("from-api"); len(got) != 0 {
		t.Errorf("a deleted schedule's history: %q", got)
	}
	// The entries expire after two heartbeats, which a loaded machine may
	// let pass: one list without from-api and with daily proves it.
	waitFor(t, 5*time.Second, "from-api leaves the list, daily stays", func() bool {
		entries := d.entries()
		_, api := entries["from-api"]
		_, daily := entries["daily"]
		return !api && daily
	})
	if got := d.history("from-api"); len(got) != 0 {
		t.Errorf("a deleted schedule's history is back: %q", got)
	}
	if n, err := e.redis.Client().Exists(ctx, stateKey("from-api")).Result(); err != nil || n != 0 {
		t.Errorf("a deleted schedule's state is back (%v)", err)
	}

	// Stopped: nothing listed at once, not after an expiry.
	stop()
	if got := d.entries(); len(got) != 0 {
		t.Errorf("after the scheduler stopped: %d entries listed", len(got))
	}
	// Every write and the clearing went well: nothing to warn about.
	for _, msg := range []string{"could not write the schedules for the dashboard", "could not clear the schedules from the dashboard"} {
		for _, l := range logs.FilterMessage(msg).All() {
			t.Errorf("%s %q %v", l.Level, l.Message, l.ContextMap())
		}
	}
}

// TestDashboardFailover: two replicas list each schedule once; when the
// leader stops, the other takes over the list and the same history.
func TestDashboardFailover(t *testing.T) {
	t.Parallel()
	e := setup(t)
	d := e.dashboard()
	file := e.writeFile(`schedules:
  - id: both
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1}
    until_validated: false
`)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	_, stopA := e.start(Config{File: file, Heartbeat: testHeartbeat, Registry: regA})
	_, stopB := e.start(Config{File: file, Heartbeat: testHeartbeat, Registry: regB})
	waitFor(t, 10*time.Second, "2 ticks in the history", func() bool { return len(d.history("both")) >= 2 })
	// Stop the replica that leads now (a stalled leader may have lost the
	// lease to the other since).
	var stop func()
	waitFor(t, 10*time.Second, "exactly one replica leads", func() bool {
		switch a, b := leads(t, regA), leads(t, regB); {
		case a && !b:
			stop = stopA
		case b && !a:
			stop = stopB
		default:
			return false
		}
		return true
	})
	stop()
	n := len(d.history("both"))
	// d.entries fails the test if the schedule is listed twice meanwhile.
	waitFor(t, 20*time.Second, "the new leader lists it and adds 2 ticks", func() bool {
		_, listed := d.entries()["both"]
		return listed && len(d.history("both")) >= n+2
	})
	// Every tick's task is in the history, across the failover. A tick is
	// enqueued before its history row is written: judge the ticks up to
	// the newest row.
	hist := d.history("both")
	var rows []int64
	for _, id := range hist {
		tick, err := strconv.ParseInt(strings.TrimPrefix(id, "sched:both:"), 10, 64)
		if err != nil {
			t.Fatalf("history row %q is not a tick's task", id)
		}
		rows = append(rows, tick)
	}
	slices.Sort(rows)
	var ticks []int64
	for _, tick := range e.ticks("bulk")["both"] {
		if tick <= rows[len(rows)-1] {
			ticks = append(ticks, tick)
		}
	}
	if !slices.Equal(rows, ticks) {
		t.Errorf("history rows %v for the ticks %v up to the newest row", rows, ticks)
	}
}

// TestDashboardFenced: entries are written only under the leader lease;
// a replica that lost it clears them unless another replica leads.
func TestDashboardFenced(t *testing.T) {
	t.Parallel()
	e := setup(t)
	d := e.dashboard()
	ctx := context.Background()
	rdb := e.redis.Client()
	c, bad, err := schedule.ParseFile([]byte(`schedules: [{id: one, cron: "@every 1h", type: resend-dcv, payload: {order_id: 1}}]`), testRules)
	if err != nil || len(c) != 1 || len(bad) != 0 {
		t.Fatal(c, bad, err)
	}
	cfg, _ := e.deps(Config{Heartbeat: time.Minute})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.apiScheds = c
	lease := func(holder string) {
		t.Helper()
		if err := rdb.Set(ctx, leaderKey, holder, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	listed := func() bool { _, ok := d.entries()["one"]; return ok }

	s.leader = true // believes it leads, but another holds the lease
	lease("other")
	s.beat(ctx, time.Now())
	if listed() || s.hb.written {
		t.Fatal("entries written without the lease")
	}
	lease(s.lease.Token())
	s.beat(ctx, time.Now())
	if !listed() {
		t.Fatal("entries not written under the lease")
	}
	// Lost to another replica, which writes its own: left alone.
	lease("other")
	s.leader = false
	s.beat(ctx, time.Now())
	if !listed() || s.hb.written {
		t.Errorf("listed %v, written %v: want the entries left to the new leader", listed(), s.hb.written)
	}
	// Lost with nobody leading: cleared.
	lease(s.lease.Token())
	s.leader = true
	s.beat(ctx, time.Now().Add(time.Hour)) // the heartbeat is due
	if err := rdb.Del(ctx, leaderKey).Err(); err != nil {
		t.Fatal(err)
	}
	s.leader = false
	s.beat(ctx, time.Now())
	if listed() || s.hb.written {
		t.Errorf("listed %v, written %v after losing the lease with nobody leading: want cleared", listed(), s.hb.written)
	}
	if n, err := rdb.Exists(ctx, asynqsched.EntriesKey(dashboardID)).Result(); err != nil || n != 0 {
		t.Errorf("entries key left: %d (%v)", n, err)
	}
}

// TestDashboardEntriesCapped: the list holds at most maxEntries schedules,
// the first by id, and the leader says how many it left out.
func TestDashboardEntriesCapped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	d := e.dashboard()
	var b strings.Builder
	b.WriteString("schedules:\n")
	for i := range maxEntries + 3 {
		fmt.Fprintf(&b, "  - {id: s%04d, cron: \"0 9 * * *\", type: resend-dcv, payload: {order_id: %d}}\n", i, i+1)
	}
	logs, _ := e.start(Config{File: e.writeFile(b.String()), Heartbeat: testHeartbeat})
	waitFor(t, 20*time.Second, "the list is written", func() bool { return len(d.entries()) > 0 })
	entries := d.entries()
	if len(entries) != maxEntries || entries["s0000"] == nil || entries[fmt.Sprintf("s%04d", maxEntries-1)] == nil {
		t.Errorf("%d entries listed, want the first %d by id", len(entries), maxEntries)
	}
	warns := logs.FilterMessage("the dashboard lists only the first schedules by id").All()
	if len(warns) != 1 || warns[0].ContextMap()["left_out"] != int64(3) {
		t.Errorf("warnings %v, want one saying 3 left out", warns)
	}
}

// TestTickOfADeletedSchedule: a tick of a schedule deleted while it fired
// (the leader re-reads the API's schedules once a second, and a tick may be
// between reading the state and recording when the delete comes) brings
// back neither the schedule's state nor its history, and costs the leader
// nothing; the same id added again starts afresh.
func TestTickOfADeletedSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	d := e.dashboard()
	ctx := context.Background()
	cfg, logs := e.deps(Config{Lease: time.Minute})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	takeLead(t, s)
	no := false
	sched := schedule.Schedule{ID: "again", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`),
		MaxRuns: 3, UntilValidated: &no}
	st := e.store()
	if _, err := st.Add(ctx, sched); err != nil {
		t.Fatal(err)
	}
	if err := s.refreshAPI(ctx); err != nil || len(s.apiScheds) != 1 {
		t.Fatalf("refresh: %v, %d schedules", err, len(s.apiScheds))
	}
	c := s.apiScheds[0]
	tick := time.Now().Truncate(time.Second)
	if recorded, out := s.fireTick(ctx, c, tick, fmt.Sprintf("sched:again:%d", tick.Unix()), 0); !recorded || out != goOn {
		t.Fatalf("tick before the delete: recorded %v, outcome %v", recorded, out)
	}
	if err := st.Delete(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	next := tick.Add(time.Second)
	if _, out := s.fireTick(ctx, c, next, fmt.Sprintf("sched:again:%d", next.Unix()), 1); out == lost || !s.leader {
		t.Errorf("a tick of a deleted schedule lost the leadership (outcome %v)", out)
	}
	if n, err := e.redis.Client().Exists(ctx, stateKey("again")).Result(); err != nil || n != 0 {
		t.Errorf("the deleted schedule's state is back (%v)", err)
	}
	if got := d.history("again"); len(got) != 0 {
		t.Errorf("the deleted schedule's history is back: %q", got)
	}
	for _, l := range logs.FilterLevelExact(zap.WarnLevel).All() {
		t.Errorf("warning for a tick of a deleted schedule: %s %v", l.Message, l.ContextMap())
	}

	if _, err := st.Add(ctx, sched); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Get(ctx, "again"); err != nil || got.Runs != 0 || got.LastRun != nil || got.Ended {
		t.Errorf("added again: %+v, %v; want no runs yet", got, err)
	}
}

// TestDashboardCapCountsRunningSchedulesOnly: ended schedules are dropped
// before the list is capped at maxEntries, so a store full of ended ones
// (they are deleted only to make room) does not hide the ones that run,
// and the leader's line says how many it listed and left out.
func TestDashboardCapCountsRunningSchedulesOnly(t *testing.T) {
	t.Parallel()
	e := setup(t)
	d := e.dashboard()
	ctx := context.Background()
	rdb := e.redis.Client()
	// put stores API schedules with ids prefix0000… straight into Redis,
	// ended ones with their state saying so.
	put := func(prefix string, n int, ended bool) {
		t.Helper()
		p := rdb.Pipeline()
		for i := range n {
			id := fmt.Sprintf("%s%04d", prefix, i)
			p.HSet(ctx, "certmail:schedules", id,
				fmt.Sprintf(`{"id":%q,"cron":"0 9 * * *","type":"resend-dcv","payload":{"order_id":%d}}`, id, i+1))
			p.HSet(ctx, stateKey(id), "since", time.Now().Unix())
			if ended {
				p.HSet(ctx, stateKey(id), "ended", "1", "ended_reason", schedule.EndedValidated)
			}
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	put("a", maxEntries, true)
	put("zz-active", 1, false)
	s, logs := e.leader(t, Config{Heartbeat: time.Hour, Lease: time.Minute}) // no renewals in this test
	write := func() {
		t.Helper()
		if err := s.refreshAPI(ctx); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		s.writeEntries(ctx, now)
		if !s.hb.written || !s.hb.at.Equal(now) {
			t.Fatal("the entries were not written")
		}
	}
	write()
	if got := d.entries(); len(got) != 1 || got["zz-active0000"] == nil {
		t.Errorf("%d entries listed, want only zz-active0000, the one that runs", len(got))
	}
	const capped = "the dashboard lists only the first schedules by id"
	if warns := logs.FilterMessage(capped).All(); len(warns) != 0 {
		t.Errorf("warnings %v with 1 running schedule, want none", warns)
	}

	put("b", maxEntries, false) // now 1001 run: b0000…b0999 are listed, zz-active0000 left out
	write()
	got := d.entries()
	if len(got) != maxEntries || got["b0000"] == nil || got[fmt.Sprintf("b%04d", maxEntries-1)] == nil || got["zz-active0000"] != nil {
		t.Errorf("%d entries listed, want the %d running ones first by id", len(got), maxEntries)
	}
	warns := logs.FilterMessage(capped).All()
	if len(warns) != 1 || warns[0].ContextMap()["listed"] != int64(maxEntries) || warns[0].ContextMap()["left_out"] != int64(1) {
		t.Errorf("warnings %v, want one saying %d listed, 1 left out", warns, maxEntries)
	}
}
