package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/tasks"
)

// testRules are the rules of the tests: accounts default and eu, the
// default queues, and schedules may fire every second.
var testRules = schedule.Rules{Enqueue: enqueue.Rules{Accounts: []string{"default", "eu"}}, MinInterval: time.Second}

// stateKey is the state hash of schedule id (package schedule's), which the
// tests write behind the store's back to stand for a crashed leader.
func stateKey(id string) string { return "certmail:schedule:" + id }

// TestMain runs every test of the package at once unless -parallel says
// otherwise: each has its own Redis server and spends its time waiting for
// whole-second ticks and leases, not on the CPU, so the default of one test
// per CPU only made the package as slow as the sum of its longest tests.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", "64"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// testLease is the leader lease of the tests' schedulers: short, so that a
// takeover after a leader died comes within seconds, and long enough that a
// leader stalled for a moment on a loaded machine does not lose it (a
// replica renews every third of it).
const testLease = 4 * time.Second

// env is one Redis server and what the tests need around it.
type env struct {
	t     *testing.T
	redis *redistest.Server
	dir   string
}

func setup(t *testing.T) *env {
	t.Helper()
	return &env{t: t, redis: redistest.Start(t), dir: t.TempDir()}
}

// conn returns a connection to the test's Redis, closed at the test's end.
func (e *env) conn() *redisconn.Conn {
	e.t.Helper()
	return certmailtest.Conn(e.t, e.redis.URL())
}

// store returns a schedule store judging by testRules, with its own
// connection.
func (e *env) store() *schedule.Store {
	e.t.Helper()
	st, err := schedule.NewStore(schedule.Config{Redis: e.conn().Client, Rules: testRules})
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// deps fills in cfg what a scheduler is given: its connection, an ops
// service by opts (testRules' accounts and queues) and a schedule store,
// closed at the test's end, and a logger writing to the returned observer.
func (e *env) deps(cfg Config, opts ...ops.Config) (Config, *observer.ObservedLogs) {
	e.t.Helper()
	var o ops.Config
	if len(opts) > 0 {
		o = opts[0]
	}
	o.Rules = testRules.Enqueue
	core, logs := observer.New(zapcore.DebugLevel)
	cfg.Redis, cfg.Logger, cfg.Store = e.conn(), zap.New(core), e.store()
	o.Redis = cfg.Redis
	var err error
	if cfg.Ops, err = ops.New(o); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cfg.Ops.Close() })
	return cfg, logs
}

// writeFile writes the schedules file and returns its path.
func (e *env) writeFile(content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, "schedules.yaml")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// start runs a scheduler until the returned stop is called or the test ends;
// its tasks are given opts' retries and retention, and its logs go to the
// returned observer.
func (e *env) start(cfg Config, opts ...ops.Config) (*observer.ObservedLogs, func()) {
	e.t.Helper()
	cfg, logs := e.deps(cfg, opts...)
	if cfg.Lease == 0 {
		cfg.Lease = testLease
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = 200 * time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("scheduler did not stop within 10s")
		}
	}
	e.t.Cleanup(stop)
	return logs, stop
}

// ticks returns, per schedule id, the tick times (Unix seconds) of the
// tasks in the queue, sorted.
func (e *env) ticks(queue string) map[string][]int64 {
	e.t.Helper()
	insp := asynq.NewInspector(e.redis.ConnOpt())
	defer insp.Close()
	out := map[string][]int64{}
	tasks, err := insp.ListPendingTasks(queue, asynq.PageSize(10000))
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		e.t.Fatal(err)
	}
	for _, ti := range tasks {
		parts := strings.Split(ti.ID, ":")
		if len(parts) != 3 || parts[0] != "sched" {
			e.t.Fatalf("task id %q is not sched:<id>:<tick>", ti.ID)
		}
		n, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil {
			e.t.Fatal(err)
		}
		out[parts[1]] = append(out[parts[1]], n)
	}
	for _, v := range out {
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	}
	return out
}

// takeLead makes s the leader, as a round's lead would: it takes the
// lease and says so.
func takeLead(t *testing.T, s *Scheduler) {
	t.Helper()
	if ok, err := s.lease.Acquire(context.Background()); err != nil || !ok {
		t.Fatalf("Acquire = %v, %v", ok, err)
	}
	s.leader = true
}

// leads reports whether the scheduler whose metrics are in reg says it leads
// (certmail_scheduler_is_leader): what it believes now, unlike its log,
// which keeps every leadership it ever took.
func leads(t *testing.T, reg *prometheus.Registry) bool {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "certmail_scheduler_is_leader" {
			return len(f.GetMetric()) == 1 && f.GetMetric()[0].GetGauge().GetValue() == 1
		}
	}
	return false
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	certmailtest.WaitFor(t, within, cond, func() string { return what })
}

// consecutive reports whether ticks are one second apart, without doubles.
func consecutive(ticks []int64) bool {
	for i := 1; i < len(ticks); i++ {
		if ticks[i] != ticks[i-1]+1 {
			return false
		}
	}
	return true
}

// TestFileAndAPISchedulesFire: a file schedule and an API schedule at
// @every 1s both fire, once per tick.
func TestFileAndAPISchedulesFire(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile(`schedules:
  - id: from-file
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1002}
    until_validated: false
`)
	st := e.store()
	if _, err := st.Add(context.Background(), schedule.Schedule{ID: "from-api", Cron: "@every 1s", Type: "send-cert", Queue: "bulk",
		Payload: json.RawMessage(`{"certificate_id": 5, "emails": ["ops@example.com"], "certificate_collect_format": "attachment"}`)}); err != nil {
		t.Fatal(err)
	}
	e.start(Config{File: file})
	// A tick is enqueued before its run is recorded: wait for both.
	var all []schedule.Status
	var ticks map[string][]int64
	certmailtest.WaitFor(t, 15*time.Second, func() bool {
		ticks = e.ticks("bulk")
		var err error
		if all, err = st.List(context.Background()); err != nil {
			t.Fatal(err)
		}
		return len(ticks["from-file"]) >= 3 && len(ticks["from-api"]) >= 3 && len(all) == 2 && all[0].Runs >= 3 && all[1].Runs >= 3
	}, func() string {
		return fmt.Sprintf("want 3 ticks and 3 runs of each schedule; ticks %v, List %+v", ticks, all)
	})
	for id, ticks := range e.ticks("bulk") {
		if !consecutive(ticks) {
			t.Errorf("%s ticks %v are not one per second", id, ticks)
		}
	}
	if all[0].ID != "from-api" || all[0].Source != schedule.SourceAPI || all[1].ID != "from-file" || all[1].Source != schedule.SourceFile ||
		all[0].LastRun == nil || all[0].NextRun == nil || !strings.HasPrefix(all[0].LastTaskID, "sched:from-api:") {
		t.Errorf("List = %+v", all)
	}
	// The payload reached the task as the tasks package builds it.
	insp := asynq.NewInspector(e.redis.ConnOpt())
	defer insp.Close()
	list, err := insp.ListPendingTasks("bulk")
	if err != nil || len(list) == 0 {
		t.Fatal(list, err)
	}
	for _, ti := range list {
		if _, err := tasks.Parse(ti.Type, ti.Payload); err != nil {
			t.Errorf("task %s payload %s: %v", ti.ID, ti.Payload, err)
		}
	}
}

func TestMaxRunsEndsSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile(`schedules:
  - id: thrice
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 3}
    until_validated: false
    max_runs: 3
  - id: clock
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 4}
    until_validated: false
`)
	logs, _ := e.start(Config{File: file})
	st := e.store()
	waitFor(t, 15*time.Second, "the schedule ends", func() bool {
		s, err := st.Get(context.Background(), "thrice")
		return err == nil && s.Ended
	})
	// Two more ticks of the other schedule: thrice had its chance to fire again.
	n := len(e.ticks("bulk")["clock"])
	waitFor(t, 15*time.Second, "two more ticks of clock", func() bool { return len(e.ticks("bulk")["clock"]) >= n+2 })
	if got := e.ticks("bulk")["thrice"]; len(got) != 3 || !consecutive(got) {
		t.Errorf("ticks %v, want exactly 3 consecutive", got)
	}
	s, err := st.Get(context.Background(), "thrice")
	if err != nil || s.Runs != 3 || s.NextRun != nil || s.State != schedule.StateEnded || s.EndedReason != schedule.EndedMaxRuns || s.EndedAt == nil {
		t.Errorf("status %+v (%v), want 3 runs, no next run, ended at max_runs", s, err)
	}
	// The line an operator reads says the runs made, the ending one counted.
	// It was written before clock's later ticks, in an earlier round.
	ended := logs.FilterMessage("schedule ended").FilterField(zap.String("schedule", "thrice")).All()
	if len(ended) != 1 || ended[0].ContextMap()["reason"] != schedule.EndedMaxRuns || ended[0].ContextMap()["runs"] != int64(3) {
		t.Errorf("INFO lines of the ending: %v, want one for max_runs after 3 runs", ended)
	}
}

func TestUntilEndsSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// until leaves room for two ticks even when the scheduler's first
	// round comes seconds late (parallel tests, -race); RFC 3339 drops the
	// fraction.
	until := time.Now().Add(10 * time.Second).UTC().Format(time.RFC3339)
	file := e.writeFile(`schedules:
  - id: briefly
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 3}
    until_validated: false
    until: ` + until + `
  - id: clock
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 4}
    until_validated: false
`)
	e.start(Config{File: file})
	st := e.store()
	limit, err := time.Parse(time.RFC3339, until)
	if err != nil {
		t.Fatal(err)
	}
	// It fires while until is ahead...
	waitFor(t, 15*time.Second, "briefly fires twice", func() bool { return len(e.ticks("bulk")["briefly"]) >= 2 })
	waitFor(t, 30*time.Second, "the schedule ends", func() bool {
		s, err := st.Get(context.Background(), "briefly")
		return err == nil && s.Ended
	})
	if s, _ := st.Get(context.Background(), "briefly"); s.EndedReason != schedule.EndedUntil || s.State != schedule.StateEnded {
		t.Errorf("status %+v, want ended for until", s)
	}
	// ...and not after it: the other schedule ticks two seconds past until.
	waitFor(t, 15*time.Second, "clock ticks past until", func() bool {
		ticks := e.ticks("bulk")["clock"]
		return len(ticks) > 0 && ticks[len(ticks)-1] >= limit.Unix()+2
	})
	ticks := e.ticks("bulk")["briefly"]
	if len(ticks) < 2 || !consecutive(ticks) {
		t.Errorf("ticks %v, want consecutive ticks until %s", ticks, until)
	}
	for _, tick := range ticks {
		if tick > limit.Unix() {
			t.Errorf("tick %d after until %s", tick, until)
		}
	}
}

// TestFileEntryThatNeverFires: a file entry whose first tick comes after
// its until (the API and the CLI refuse such a schedule; the file is read
// again long after its entries began, so it is not judged so) ends at once
// with one WARN line naming both times, and nothing is enqueued.
func TestFileEntryThatNeverFires(t *testing.T) {
	t.Parallel()
	e := setup(t)
	far := time.Now().AddDate(0, 6, 0)
	until := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	file := e.writeFile(fmt.Sprintf(`schedules:
  - id: never
    cron: "0 9 %d %d *"
    type: resend-dcv
    payload: {order_id: 5}
    until: %s
`, far.Day(), far.Month(), until))
	logs, _ := e.start(Config{File: file})
	st := e.store()
	const ending = "schedule ended without firing: its first tick comes after its until"
	// The line follows the write that ends it: wait for both.
	waitFor(t, 15*time.Second, "the schedule ends, with its line", func() bool {
		s, err := st.Get(context.Background(), "never")
		return err == nil && s.Ended && logs.FilterMessage(ending).Len() > 0
	})
	if s, _ := st.Get(context.Background(), "never"); s.EndedReason != schedule.EndedUntil || s.Runs != 0 {
		t.Errorf("status %+v, want ended for until with no run", s)
	}
	lines := logs.FilterMessage(ending).All()
	if len(lines) != 1 || lines[0].Level != zapcore.WarnLevel || lines[0].ContextMap()["schedule"] != "never" {
		t.Errorf("%d WARN lines of the ending (%v), want 1 naming the schedule", len(lines), lines)
	}
	if n := len(logs.FilterMessage("schedule ended").All()); n != 0 {
		t.Errorf("%d INFO lines \"schedule ended\" beside the WARN", n)
	}
	if got := e.ticks("bulk")["never"]; len(got) != 0 {
		t.Errorf("the schedule fired: %v", got)
	}
}

// TestInvalidEntrySkipped: an invalid entry is reported by id and position,
// once, and the others run.
func TestInvalidEntrySkipped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile(`schedules:
  - id: fine
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1}
    until_validated: false
  - id: broken
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: -4}
  - id: never
    cron: "0 0 30 2 *"
    type: resend-dcv
    payload: {order_id: 1}
`)
	logs, _ := e.start(Config{File: file})
	waitFor(t, 10*time.Second, "the valid schedule fires twice", func() bool { return len(e.ticks("bulk")["fine"]) >= 2 })
	reports := logs.FilterMessage("invalid schedule skipped").All()
	if len(reports) != 2 {
		t.Fatalf("%d reports of the invalid entries, want 2", len(reports))
	}
	fields := reports[0].ContextMap()
	if reports[0].Level != zapcore.ErrorLevel || fields["schedule"] != "broken" || fields["position"] != "schedules[1]" ||
		!strings.HasPrefix(fields["error"].(string), "payload.order_id: ") {
		t.Errorf("report %v %v", reports[0].Level, fields)
	}
	// A problem of the schedule's own fields is not called a payload's.
	if fields := reports[1].ContextMap(); fields["schedule"] != "never" || fields["error"] != "cron: never fires (no date matches it)" {
		t.Errorf("report %v", fields)
	}
	if got := e.ticks("bulk")["broken"]; len(got) != 0 {
		t.Errorf("the invalid schedule fired: %v", got)
	}
}

// TestFileReload: an edit of the file is picked up without a restart.
func TestFileReload(t *testing.T) {
	t.Parallel()
	e := setup(t)
	entry := func(id string) string {
		return "  - id: " + id + "\n    cron: \"@every 1s\"\n    type: resend-dcv\n    payload: {order_id: 9}\n    until_validated: false\n"
	}
	file := e.writeFile("schedules:\n" + entry("first"))
	logs, _ := e.start(Config{File: file})
	waitFor(t, 10*time.Second, "first fires", func() bool { return len(e.ticks("bulk")["first"]) >= 1 })
	e.writeFile("schedules:\n" + entry("second"))
	waitFor(t, 10*time.Second, "second fires", func() bool { return len(e.ticks("bulk")["second"]) >= 2 })
	before := len(e.ticks("bulk")["first"])
	n := len(e.ticks("bulk")["second"])
	waitFor(t, 10*time.Second, "second fires twice more", func() bool { return len(e.ticks("bulk")["second"]) >= n+2 })
	if after := len(e.ticks("bulk")["first"]); after != before {
		t.Errorf("first kept firing after its removal: %d → %d ticks", before, after)
	}
	if all, err := e.store().List(context.Background()); err != nil || len(all) != 1 || all[0].ID != "second" {
		t.Errorf("List after the edit = %+v, %v", all, err)
	}
	if n := logs.FilterMessage("could not publish the file's schedules").Len(); n != 0 {
		t.Errorf("%d warnings that the file's schedules could not be published, want none", n)
	}
}

// TestUnreadableFileKeepsTheLastGoodVersion: a schedules file that can no
// longer be read is reported once, and its last good version stays.
func TestUnreadableFileKeepsTheLastGoodVersion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile("schedules: [{id: kept, cron: \"@every 1s\", type: resend-dcv, payload: {order_id: 1}}]\n")
	cfg, logs := e.deps(Config{File: file})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.reloadFile()
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s.reloadFile()
	}
	if n := logs.FilterMessage("cannot read the schedules file; keeping its last good version").Len(); n != 1 {
		t.Errorf("%d reports of the unreadable file, want 1", n)
	}
	if len(s.fileScheds) != 1 || s.fileScheds[0].ID != "kept" {
		t.Errorf("file schedules %v, want the last good version's", s.fileScheds)
	}
}

// TestFileWithoutItsListKeepsTheLastGoodVersion: a schedules file whose
// list is gone (the key mistyped, the file emptied as a non-atomic write
// does for a moment) is refused at start, and on reload it is reported
// once while the last good version goes on; schedules: [] has none.
func TestFileWithoutItsListKeepsTheLastGoodVersion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const entry = "  - {id: kept, cron: \"@every 1s\", type: resend-dcv, payload: {order_id: 1}}\n"
	cfg, logs := e.deps(Config{File: e.writeFile("schedule:\n" + entry)})
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "unknown top-level key schedule") {
		t.Fatalf("New with a mistyped key = %v, want the key named", err)
	}
	e.writeFile("schedules:\n" + entry)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.reloadFile()
	for _, broken := range []string{"schedule:\n" + entry, ""} {
		e.writeFile(broken)
		for range 3 {
			s.reloadFile()
		}
		if len(s.fileScheds) != 1 || s.fileScheds[0].ID != "kept" {
			t.Errorf("file %q: schedules %v, want the last good version's", broken, s.fileScheds)
		}
	}
	reports := logs.FilterMessage("cannot parse the schedules file; keeping its last good version").All()
	if len(reports) != 2 || reports[0].Level != zapcore.ErrorLevel {
		t.Errorf("%d reports of the two broken versions, want 2 at ERROR", len(reports))
	}
	e.writeFile("schedules: []\n")
	s.reloadFile()
	if len(s.fileScheds) != 0 {
		t.Errorf("schedules: [] left %v", s.fileScheds)
	}
}

// TestFileOverTheBoundsKeepsTheLastGoodVersion: a schedules file edited to
// give an entry a cron spec or a time zone over its bound cannot be parsed:
// on reload it is reported once, at ERROR, and the last good version goes
// on, the entry's included.
func TestFileOverTheBoundsKeepsTheLastGoodVersion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const kept = "  - {id: kept, cron: \"@every 1s\", type: resend-dcv, payload: {order_id: 1}}\n"
	cfg, logs := e.deps(Config{File: e.writeFile("schedules:\n" + kept)})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.reloadFile()
	pad := strings.Repeat(" ", 900_000)
	for _, wide := range []string{
		"  - {id: kept, cron: \"@every 1s" + pad + "\", type: resend-dcv, payload: {order_id: 1}}\n",
		kept + "  - {id: zoned, cron: \"@daily\", timezone: \"UTC" + pad + "\", type: resend-dcv, payload: {order_id: 2}}\n",
	} {
		e.writeFile("schedules:\n" + wide)
		for range 3 {
			s.reloadFile()
		}
		if len(s.fileScheds) != 1 || s.fileScheds[0].ID != "kept" || s.fileScheds[0].Cron != "@every 1s" {
			t.Errorf("file schedules %v, want the last good version's", s.fileScheds)
		}
	}
	reports := logs.FilterMessage("cannot parse the schedules file; keeping its last good version").All()
	if len(reports) != 2 || reports[0].Level != zapcore.ErrorLevel {
		t.Fatalf("%d reports of the two versions over the bounds, want 2 at ERROR", len(reports))
	}
	for i, want := range []string{"schedules[0] (kept): cron: must be at most", "schedules[1] (zoned): timezone: must be at most"} {
		if msg := fmt.Sprint(reports[i].ContextMap()["error"]); !strings.HasPrefix(msg, want) || len(msg) > 100 {
			t.Errorf("report %d: error %q, want a short one starting with %q", i, msg, want)
		}
	}
}

// TestTwoSchedulersOneTaskPerTick: two replicas, one task per tick; the
// leader stops and the other takes over without a gap or a double.
func TestTwoSchedulersOneTaskPerTick(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile(`schedules:
  - id: both
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1}
    until_validated: false
`)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	_, stopA := e.start(Config{File: file, Registry: regA})
	_, stopB := e.start(Config{File: file, Registry: regB})
	waitFor(t, 30*time.Second, "5 ticks", func() bool { return len(e.ticks("bulk")["both"]) >= 5 })
	// The leader is the replica that leads now: a leader stalled past its
	// lease may have lost it to the other since it first took it.
	var stopLeader func()
	var follower *prometheus.Registry
	waitFor(t, 10*time.Second, "exactly one replica leads", func() bool {
		switch a, b := leads(t, regA), leads(t, regB); {
		case a && !b:
			stopLeader, follower = stopA, regB
		case b && !a:
			stopLeader, follower = stopB, regA
		default:
			return false
		}
		return true
	})
	stopLeader()
	waitFor(t, 10*time.Second, "the follower takes over", func() bool { return leads(t, follower) })
	n := len(e.ticks("bulk")["both"])
	waitFor(t, 20*time.Second, "3 more ticks", func() bool { return len(e.ticks("bulk")["both"]) >= n+3 })
	ticks := e.ticks("bulk")["both"]
	if !consecutive(ticks) {
		t.Errorf("ticks %v: a gap or a double", ticks)
	}
}

// The series of a schedule deleted are removed, so that their number
// follows the schedules that exist; those of a schedule ended stay
// keepEndedSeries, so that scrapes see its last ticks (TestSkippedTicksWithinMaxRuns
// sees them go).
func TestSeriesOfGoneSchedulesAreRemoved(t *testing.T) {
	t.Parallel()
	e := setup(t)
	reg := prometheus.NewRegistry()
	st := e.store()
	ctx := context.Background()
	no := false // every tick fires: no worker completes the tasks here
	for _, s := range []schedule.Schedule{
		{ID: "deleted", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no},
		{ID: "ends", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 2}`), MaxRuns: 2, UntilValidated: &no},
		{ID: "stays", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 3}`), UntilValidated: &no},
	} {
		if _, err := st.Add(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	e.start(Config{Registry: reg})
	series := func() map[string]bool {
		out := map[string]bool{}
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != "certmail_scheduler_ticks_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				out[m.GetLabel()[0].GetValue()] = true
			}
		}
		return out
	}
	waitFor(t, 15*time.Second, "every schedule ticks", func() bool {
		s := series()
		return s["deleted"] && s["stays"] && len(e.ticks("bulk")["ends"]) == 2
	})
	if err := st.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the series of the deleted schedule go", func() bool {
		s := series()
		return !s["deleted"] && s["ends"] && s["stays"]
	})
}

// TestCatchUp: ticks missed while no scheduler ran are enqueued at start
// when they are at most CatchUp old, older ones are skipped, and a catch-up
// of several ticks in one round stops at max_runs.
func TestCatchUp(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	no := false
	for _, s := range []schedule.Schedule{
		{ID: "old", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no},
		{ID: "twice", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 2}`), UntilValidated: &no, MaxRuns: 2},
	} {
		if _, err := st.Add(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// Both were added a while ago, before any scheduler ran.
	start := time.Now().Unix()
	rdb := e.redis.Client()
	for id, ago := range map[string]int64{"old": 100, "twice": 4} {
		if err := rdb.HSet(ctx, stateKey(id), "since", start-ago).Err(); err != nil {
			t.Fatal(err)
		}
	}
	const catchUp = 10 * time.Second
	e.start(Config{CatchUp: catchUp})
	waitFor(t, 15*time.Second, "twice ends", func() bool {
		s, err := st.Get(ctx, "twice")
		return err == nil && s.Ended
	})
	waitFor(t, 15*time.Second, "old ticks past the start", func() bool {
		ticks := e.ticks("bulk")["old"]
		return len(ticks) > 0 && ticks[len(ticks)-1] > start+1
	})
	if got := e.ticks("bulk")["twice"]; len(got) != 2 || got[0] != start-3 || got[1] != start-2 {
		t.Errorf("twice's ticks %v, want the 2 missed ticks %d and %d (max_runs 2)", got, start-3, start-2)
	}
	old := e.ticks("bulk")["old"]
	if !consecutive(old) || old[0] < start-int64(catchUp/time.Second) || old[0] >= start {
		t.Errorf("old's ticks %v from a start at %d: want the missed ticks of the last %v, and none older", old, start, catchUp)
	}
}

// TestMissedTicksEndAsUsual: a schedule whose every tick before its until
// was missed (no scheduler led then, older than the catch-up) ends with the
// usual INFO line and no run, not as one that could never fire.
func TestMissedTicksEndAsUsual(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	no := false
	until := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second)
	if _, err := st.Add(ctx, schedule.Schedule{ID: "missed", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no, Until: &until}); err != nil {
		t.Fatal(err)
	}
	// Added a while ago; no scheduler runs until its until has passed.
	if err := e.redis.Client().HSet(ctx, stateKey("missed"), "since", time.Now().Unix()-100).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(until.Add(1100 * time.Millisecond)))
	logs, _ := e.start(Config{CatchUp: time.Second})
	waitFor(t, 15*time.Second, "the schedule ends", func() bool {
		s, err := st.Get(ctx, "missed")
		return err == nil && s.Ended
	})
	// The line follows the store's record of the ending.
	waitFor(t, 5*time.Second, "the line of the ending", func() bool {
		return logs.FilterMessage("schedule ended").Len()+
			logs.FilterMessage("schedule ended without firing: its first tick comes after its until").Len() > 0
	})
	if n := len(logs.FilterMessage("schedule ended without firing: its first tick comes after its until").All()); n != 0 {
		t.Errorf("%d WARN lines saying the schedule could never fire: its ticks were missed", n)
	}
	if ended := logs.FilterMessage("schedule ended").All(); len(ended) != 1 || ended[0].ContextMap()["reason"] != schedule.EndedUntil {
		t.Errorf("INFO lines of the ending: %v, want one for until", ended)
	}
}

// TestMaxRunsLoweredEndsTheSchedule: a file schedule whose max_runs is
// edited down to the runs it has already made ends at once, without
// another tick.
func TestMaxRunsLoweredEndsTheSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	// Two runs were made while the file said max_runs: 5.
	if err := e.redis.Client().HSet(ctx, stateKey("lowered"), "since", time.Now().Unix()-60, "last_tick", time.Now().Unix()-30, "runs", 2).Err(); err != nil {
		t.Fatal(err)
	}
	file := e.writeFile(`schedules:
  - id: lowered
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 3}
    until_validated: false
    max_runs: 2
`)
	e.start(Config{File: file})
	st := e.store()
	waitFor(t, 10*time.Second, "lowered ends", func() bool {
		s, err := st.Get(ctx, "lowered")
		return err == nil && s.Ended
	})
	if s, err := st.Get(ctx, "lowered"); err != nil || s.EndedReason != schedule.EndedMaxRuns || s.Runs != 2 {
		t.Errorf("status %+v (%v), want ended at max_runs after 2 runs", s, err)
	}
	if got := e.ticks("bulk")["lowered"]; len(got) != 0 {
		t.Errorf("ticks %v after max_runs was reached, want none", got)
	}
}

// TestEditedEndedFileScheduleResumes: a file schedule that ended at
// max_runs stays ended when its file is written again unchanged, and starts
// anew, its runs from 0, once its entry is edited (max_runs raised).
func TestEditedEndedFileScheduleResumes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	entry := func(maxRuns int) string {
		return fmt.Sprintf(`schedules:
  - {id: edited, cron: "@every 1s", type: resend-dcv, payload: {order_id: 3}, until_validated: false, max_runs: %d}
  - {id: clock, cron: "@every 1s", type: resend-dcv, payload: {order_id: 4}, until_validated: false}
`, maxRuns)
	}
	logs, _ := e.start(Config{File: e.writeFile(entry(2))})
	st := e.store()
	ended := func(runs int) func() bool {
		return func() bool {
			s, err := st.Get(ctx, "edited")
			return err == nil && s.Ended && s.Runs == runs
		}
	}
	waitFor(t, 15*time.Second, "edited ends after 2 runs", ended(2))
	e.writeFile("# written again\n" + entry(2))
	waitFor(t, 10*time.Second, "the file reloaded", func() bool { return logs.FilterMessage("schedules file loaded").Len() >= 2 })
	n := len(e.ticks("bulk")["clock"])
	waitFor(t, 15*time.Second, "two more ticks of clock", func() bool { return len(e.ticks("bulk")["clock"]) >= n+2 })
	if s, err := st.Get(ctx, "edited"); err != nil || !s.Ended || s.Runs != 2 || len(e.ticks("bulk")["edited"]) != 2 {
		t.Fatalf("status %+v (%v), %d ticks; want still ended after 2 runs", s, err, len(e.ticks("bulk")["edited"]))
	}
	e.writeFile(entry(3))
	waitFor(t, 15*time.Second, "edited ends again after 3 new runs", ended(3))
	if got := e.ticks("bulk")["edited"]; len(got) != 5 {
		t.Errorf("ticks %v, want 2 before the edit and 3 after", got)
	}
}

// TestOneRoundCatchesUpToTheBound: one round of the leader enqueues every
// missed tick of a schedule, up to the README's 100 (maxFiresPerRound), so
// that a long catch-up of one schedule does not hold the others back; an
// until_validated schedule that far behind fires one tick, not none.
func TestOneRoundCatchesUpToTheBound(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	cfg, _ := e.deps(Config{CatchUp: time.Hour, Lease: time.Minute})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	takeLead(t, s)
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: few, cron: "@every 1s", type: resend-dcv, payload: {order_id: 1}, until_validated: false}
  - {id: many, cron: "@every 1s", type: resend-dcv, payload: {order_id: 2}, until_validated: false}
  - {id: one-at-a-time, cron: "@every 1s", type: resend-dcv, payload: {order_id: 3}}
`), testRules)
	if err != nil || len(good) != 3 || len(bad) != 0 {
		t.Fatal(good, bad, err)
	}
	if err := s.store.MirrorFile(ctx, s.lease, good); err != nil { // as a round does before firing them
		t.Fatal(err)
	}
	now := time.Now().Unix()
	for id, ago := range map[string]int64{"few": 5, "many": 300, "one-at-a-time": 300} {
		if err := e.redis.Client().HSet(ctx, stateKey(id), "since", now-ago).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range good {
		if !s.fire(ctx, c) {
			t.Fatalf("%s: the leadership was lost", c.ID)
		}
	}
	const bound = 100 // as the README promises; not maxFiresPerRound, which is what is checked
	ticks := e.ticks("bulk")
	if few := ticks["few"]; len(few) < 5 || few[0] != now-4 || !consecutive(few) {
		t.Errorf("few's ticks after one round %v, want every tick from %d on", few, now-4)
	}
	if many := ticks["many"]; len(many) != bound || many[0] != now-299 || !consecutive(many) {
		t.Errorf("many's ticks after one round: %d from %v, want the %d from %d on", len(many), many[:min(len(many), 1)], bound, now-299)
	}
	if st, err := s.store.State(ctx, "many"); err != nil || st.Runs != bound || st.LastTick.Unix() != now-300+bound {
		t.Errorf("many's state %+v (%v), want %d runs up to %d", st, err, bound, now-300+bound)
	}
	// An until_validated schedule fires one tick, the last the bound reaches.
	if got := ticks["one-at-a-time"]; len(got) != 1 || got[0] != now-300+bound {
		t.Errorf("one-at-a-time's ticks after one round %v, want only %d", got, now-300+bound)
	}
}

// TestLeaderRidesOutARedisHiccup: a renewal that fails keeps the
// leadership while two thirds of the lease since the last renewal are
// left, and loses it after.
func TestLeaderRidesOutARedisHiccup(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	cfg, logs := e.deps(Config{Lease: 3 * time.Second})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	s.lead(ctx, t0)
	if !s.leader {
		t.Fatal("did not take the free lease")
	}
	// Every renewal fails from now on: the lease key is not a string.
	rdb := e.redis.Client()
	if err := rdb.Del(ctx, leaderKey).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, leaderKey, "not", "a lease").Err(); err != nil {
		t.Fatal(err)
	}
	s.lead(ctx, t0.Add(1100*time.Millisecond)) // a renewal is due (a third of the lease) and fails
	if !s.leader || logs.FilterMessage("lost the scheduler leadership").Len() != 0 {
		t.Fatal("a failed renewal 1.1 s into a 3 s lease gave up the leadership")
	}
	s.lead(ctx, t0.Add(2100*time.Millisecond)) // past two thirds of the lease
	if s.leader || logs.FilterMessage("lost the scheduler leadership").Len() != 1 {
		t.Error("still the leader after failed renewals for over two thirds of the lease")
	}
}

// TestChangedForgetsGoneSchedules: when the schedules change, the leader
// forgets when each that changed or is gone is due and its state, and the
// metric series and awaited task of the schedules that are gone, not of
// those that remain.
func TestChangedForgetsGoneSchedules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg, _ := e.deps(Config{})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	good, bad, err := schedule.ParseFile([]byte(`schedules: [{id: stays, cron: "@every 1s", type: resend-dcv, payload: {order_id: 1}}]`), testRules)
	if err != nil || len(good) != 1 || len(bad) != 0 {
		t.Fatal(good, bad, err)
	}
	s.fileScheds = good
	edited := *good[0] // the same id, an earlier definition
	for _, c := range []*schedule.Compiled{good[0], &edited} {
		s.due[c] = time.Now()
		s.states[c] = schedule.State{Runs: 1}
	}
	for _, id := range []string{"stays", "gone"} {
		s.series[id] = true
		s.metrics.ticks.WithLabelValues(id).Inc()
		s.awaiting[id] = &awaiting{taskID: "sched:" + id + ":1"}
	}
	s.changed()
	if _, ok := s.due[good[0]]; !ok || len(s.due) != 1 {
		t.Errorf("due %v, want only the schedule that stays", s.due)
	}
	if _, ok := s.states[good[0]]; !ok || len(s.states) != 1 {
		t.Errorf("states %v, want only the schedule that stays", s.states)
	}
	if s.awaiting["stays"] == nil || s.awaiting["gone"] != nil || !s.series["stays"] || s.series["gone"] {
		t.Errorf("awaiting %v, series %v: want only stays'", s.awaiting, s.series)
	}
	if got := testutil.CollectAndCount(s.metrics.ticks); got != 1 {
		t.Errorf("%d tick series, want stays' only", got)
	}
}

// TestInvalidAPIScheduleReportedOnce: an API schedule that no longer
// passes the rules (its account was removed) is skipped and reported once,
// not at every refresh.
func TestInvalidAPIScheduleReportedOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	cfg, logs := e.deps(Config{})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Added while account us was configured.
	if err := e.redis.Client().HSet(ctx, "certmail:schedules", "gone-account",
		`{"id":"gone-account","cron":"@daily","type":"resend-dcv","payload":{"order_id":1,"account":"us"}}`).Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.refreshAPI(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var reports []string
	for _, l := range logs.FilterLevelExact(zapcore.ErrorLevel).All() {
		reports = append(reports, l.Message)
		if l.ContextMap()["schedule"] != "gone-account" || !strings.HasPrefix(l.Message, "invalid API schedule skipped: payload.account: ") {
			t.Errorf("report %q %v", l.Message, l.ContextMap())
		}
	}
	if len(reports) != 1 || len(s.apiScheds) != 0 {
		t.Errorf("%d reports after 3 refreshes %q, %d schedules to fire; want 1 report, none to fire", len(reports), reports, len(s.apiScheds))
	}
}

// TestFileScheduleOutlivesItsLostMirror: a file schedule whose copy in Redis
// (the mirror the state writes check) is lost, by hand or with Redis's
// data, is published again by the leader and keeps firing and recording.
func TestFileScheduleOutlivesItsLostMirror(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile(`schedules:
  - {id: kept, cron: "@every 1s", type: resend-dcv, payload: {order_id: 7}, until_validated: false}
`)
	e.start(Config{File: file})
	st, ctx := e.store(), context.Background()
	runs := func() int {
		state, err := st.State(ctx, "kept")
		if err != nil {
			t.Fatal(err)
		}
		return state.Runs
	}
	certmailtest.WaitFor(t, 15*time.Second, func() bool { return runs() >= 1 }, func() string {
		return fmt.Sprintf("runs %d, want a first tick recorded", runs())
	})
	if err := e.redis.Client().Del(ctx, "certmail:schedules:file").Err(); err != nil {
		t.Fatal(err)
	}
	before := runs()
	certmailtest.WaitFor(t, 15*time.Second, func() bool { return runs() >= before+2 }, func() string {
		return fmt.Sprintf("runs %d, want %d: the schedule stopped when its mirror was lost", runs(), before+2)
	})
	if n, err := e.redis.Client().HExists(ctx, "certmail:schedules:file", "kept").Result(); err != nil || !n {
		t.Errorf("the file's schedule is published again = %v, %v; want true", n, err)
	}
}

// A replica stopped between enqueueing a tick's task and recording the
// tick still records it, so the schedule's runs and last task match the
// queue at once, and begins no further tick, though thirty are due.
func TestStopMidTickRecordsTheTick(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	no := false
	if _, err := e.store().Add(ctx, schedule.Schedule{ID: "stop", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 5}`), UntilValidated: &no}); err != nil {
		t.Fatal(err)
	}
	// Added 30 s ago, before any scheduler ran: 30 missed ticks to catch up.
	if err := e.redis.Client().HSet(ctx, stateKey("stop"), "since", time.Now().Unix()-30).Err(); err != nil {
		t.Fatal(err)
	}
	cfg, _ := e.deps(Config{Lease: testLease, ReloadInterval: 200 * time.Millisecond, CatchUp: time.Minute})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The stop comes as the first tick's task is in its queue: the line
	// saying so is written between the enqueue and the record.
	cfg.Logger = cfg.Logger.WithOptions(zap.Hooks(func(en zapcore.Entry) error {
		if en.Message == "tick enqueued" {
			cancel()
		}
		return nil
	}))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx, nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the scheduler did not fire and stop within 20s")
	}
	ticks := e.ticks("bulk")["stop"]
	if len(ticks) != 1 {
		t.Fatalf("ticks %v, want only the one enqueued as the stop came", ticks)
	}
	st, err := e.store().Get(ctx, "stop")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("sched:stop:%d", ticks[0]); st.Runs != 1 || st.LastTaskID != want {
		t.Errorf("status: %d runs, last task %q; want 1 run, last task %s", st.Runs, st.LastTaskID, want)
	}
}

// leader builds a scheduler on e with cfg and makes it the leader without
// starting its rounds, so that a test drives them; logs are its lines.
func (e *env) leader(t *testing.T, cfg Config) (*Scheduler, *observer.ObservedLogs) {
	t.Helper()
	cfg, logs := e.deps(cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	takeLead(t, s)
	return s, logs
}

// TestRefusedWritesBackOff: while Redis refuses writes (out of memory, or a
// read-only old master during a failover) and reads still work, a due tick
// that cannot be enqueued (or, until_validated, noted first) is counted
// once in certmail_scheduler_enqueue_errors_total and logged once, however
// often the leader's rounds come, and is tried again after a pause that
// doubles, up to maxRetry; once writes work again it fires, with one line
// saying so.
func TestRefusedWritesBackOff(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	s, logs := e.leader(t, Config{Lease: time.Minute, CatchUp: 2 * time.Hour})
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: plain, cron: "@every 1h", type: resend-dcv, payload: {order_id: 1}, until_validated: false}
  - {id: noted, cron: "@every 1h", type: resend-dcv, payload: {order_id: 2}}
`), testRules)
	if err != nil || len(good) != 2 || len(bad) != 0 {
		t.Fatal(good, bad, err)
	}
	if err := s.store.MirrorFile(ctx, s.lease, good); err != nil { // as a round does before firing them
		t.Fatal(err)
	}
	// One tick of each is due, a second ago; the next is an hour away.
	since := time.Now().Add(-time.Hour - time.Second).Unix()
	rdb := e.redis.Client()
	for _, c := range good {
		if err := rdb.HSet(ctx, stateKey(c.ID), "since", since).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.ConfigSet(context.Background(), "maxmemory", "0").Err() })
	round := func() {
		for _, c := range good {
			if !s.fire(ctx, c) {
				t.Fatalf("%s: the leadership was lost", c.ID)
			}
		}
	}
	// try runs a round and returns the pause before plain's next try, which
	// must be measured from the failed try itself: not before the round
	// began, not after it ended, however long the machine took.
	try := func() time.Duration {
		t.Helper()
		before := time.Now()
		round()
		after := time.Now()
		r := s.retrying["plain"]
		if r.at.Before(before.Add(r.pause)) || r.at.After(after.Add(r.pause)) {
			t.Fatalf("next try at %v after the round began (which took %v), want the pause %v after the try", r.at.Sub(before), after.Sub(before), r.pause)
		}
		return r.pause
	}
	pauses := []time.Duration{try()}
	// Rounds come every 200 ms; the 19 more here all come before the next
	// try is due. So that they do however slow the machine is, the tries
	// are put off while they run.
	for _, c := range good {
		s.retrying[c.ID].at = time.Now().Add(time.Hour)
	}
	for range 19 {
		round()
	}
	failed := func(id string) float64 { return testutil.ToFloat64(s.metrics.failed.WithLabelValues(id)) }
	warned := func(msg string) int { return logs.FilterMessage(msg).Len() }
	if failed("plain") != 1 || failed("noted") != 1 {
		t.Errorf("enqueue errors plain %v, noted %v; want 1 each: one tick each", failed("plain"), failed("noted"))
	}
	if n, m := warned("could not enqueue a tick; trying again"), warned("could not record the tick about to be enqueued; trying again"); n != 1 || m != 1 {
		t.Errorf("%d warnings that a tick could not be enqueued, %d that it could not be noted; want 1 each", n, m)
	}
	if n := s.retrying["plain"].tries + s.retrying["noted"].tries; n != 2 {
		t.Errorf("%d tries in 20 rounds before the next was due, want the first of each schedule", n)
	}
	if got := e.ticks("bulk"); len(got) != 0 {
		t.Fatalf("ticks %v enqueued while writes are refused", got)
	}
	// Each try comes after a pause twice as long as the one before, up to
	// maxRetry; each is one more failure of the same tick, not reported
	// again. (The test makes each try due at once instead of waiting.)
	for range 6 {
		s.retrying["plain"].at = time.Now()
		pauses = append(pauses, try())
	}
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	if want := []time.Duration{sec(0.5), sec(1), sec(2), sec(4), sec(5), sec(5), sec(5)}; !slices.Equal(pauses, want) {
		t.Errorf("pauses %v, want %v", pauses, want)
	}
	if failed("plain") != 1 || warned("could not enqueue a tick; trying again") != 1 {
		t.Errorf("after more tries: %v enqueue errors, %d warnings; want 1 and 1", failed("plain"), warned("could not enqueue a tick; trying again"))
	}
	// Writes work again: at its next try each tick fires, with one line.
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range good {
		s.retrying[c.ID].at = time.Now()
	}
	round()
	fired := logs.FilterMessage("tick fired after failed tries").All()
	if len(fired) != 2 || len(s.retrying) != 0 {
		t.Errorf("%d lines that a tick fired after failed tries, %d schedules retrying; want 2 and none", len(fired), len(s.retrying))
	}
	for _, l := range fired {
		if n := l.ContextMap()["failed_tries"]; n != int64(7) && l.ContextMap()["schedule"] == "plain" {
			t.Errorf("plain fired after %v failed tries, want 7", n)
		}
	}
	if got := e.ticks("bulk"); len(got["plain"]) != 1 || len(got["noted"]) != 1 || got["plain"][0] != since+3600 {
		t.Errorf("ticks %v, want the tick of each that was due, %d", got, since+3600)
	}
}

// TestRefusedWriteGivenUp: a tick that could not be fired and is no longer
// due when it is tried again (older than the catch-up by then) is given up
// with one WARN line, and the schedule is no longer retried.
func TestRefusedWriteGivenUp(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	s, logs := e.leader(t, Config{Lease: time.Minute, CatchUp: 2 * time.Hour})
	good, bad, err := schedule.ParseFile([]byte(`schedules: [{id: late, cron: "@every 1h", type: resend-dcv, payload: {order_id: 1}, until_validated: false}]`), testRules)
	if err != nil || len(good) != 1 || len(bad) != 0 {
		t.Fatal(good, bad, err)
	}
	if err := s.store.MirrorFile(ctx, s.lease, good); err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client()
	if err := rdb.HSet(ctx, stateKey("late"), "since", time.Now().Add(-time.Hour-time.Second).Unix()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.ConfigSet(context.Background(), "maxmemory", "0").Err() })
	if !s.fire(ctx, good[0]) || s.retrying["late"] == nil {
		t.Fatalf("retrying %v after a refused enqueue, want late", s.retrying)
	}
	s.cfg.CatchUp = time.Millisecond // the failed tick is now older than the catch-up
	s.retrying["late"].at = time.Now()
	if !s.fire(ctx, good[0]) {
		t.Fatal("the leadership was lost")
	}
	given := logs.FilterMessage("tick given up after failed tries; the ticks after it fire").All()
	if len(given) != 1 || given[0].Level != zapcore.WarnLevel || len(s.retrying) != 0 {
		t.Errorf("%d lines that the tick was given up, %d schedules retrying; want 1 WARN, none", len(given), len(s.retrying))
	}
}

// TestEveryLongerThanTheCatchUpFires: an @every schedule whose interval is
// longer than the catch-up fires when its tick falls due, and a schedule
// that missed ticks for longer than the catch-up fires the one that is not
// too late, keeping its phase. Counting the next tick from the catch-up's
// edge instead put it in the future at every look, so such a schedule
// never fired.
func TestEveryLongerThanTheCatchUpFires(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	cfg, _ := e.deps(Config{Lease: time.Minute}) // the default catch-up, a minute
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	takeLead(t, s)
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: first, cron: "@every 2m", type: resend-dcv, payload: {order_id: 1}, until_validated: false}
  - {id: hourly, cron: "@every 1h", type: resend-dcv, payload: {order_id: 2}, until_validated: false}
  - {id: behind, cron: "@every 2m", type: resend-dcv, payload: {order_id: 3}, until_validated: false}
`), testRules)
	if err != nil || len(good) != 3 || len(bad) != 0 {
		t.Fatal(good, bad, err)
	}
	if err := s.store.MirrorFile(ctx, s.lease, good); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	state := map[string][]any{
		"first":  {"since", now - 125},                           // its first tick, 5 s ago
		"hourly": {"since", now - 7230, "last_tick", now - 3630}, // its tick of 30 s ago
		"behind": {"since", now - 3630, "last_tick", now - 630},  // ticks missed for 10 min
	}
	for id, fields := range state {
		if err := e.redis.Client().HSet(ctx, stateKey(id), fields...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range good {
		if !s.fire(ctx, c) {
			t.Fatalf("%s: the leadership was lost", c.ID)
		}
	}
	ticks := e.ticks("bulk")
	for id, want := range map[string]int64{"first": now - 5, "hourly": now - 30, "behind": now - 30} {
		if got := ticks[id]; len(got) != 1 || got[0] != want {
			t.Errorf("%s's ticks %v, want only %d", id, got, want)
		}
	}
}

// A schedule moved from the API to the file under the same id, with the
// API copy ended: the file schedule used to take the API copy's state,
// stayed ended and never fired, while the log claimed that the file's ran;
// removing the API copy then reset its runs. It now fires, with runs of
// its own, which removing the API copy leaves alone.
func TestFileScheduleTakesAnEndedAPIScheduleID(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	st := e.store()
	if _, err := st.Add(ctx, schedule.Schedule{ID: "dup", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1111}`)}); err != nil {
		t.Fatal(err)
	}
	// Ended as the leader ends it.
	if err := e.redis.Client().HSet(ctx, "certmail:schedule:dup", "ended", "1", "ended_reason", "validated", "order_status", "issued", "runs", 4).Err(); err != nil {
		t.Fatal(err)
	}
	logs, _ := e.start(Config{File: e.writeFile(`schedules:
  - {id: dup, cron: "@every 1s", type: resend-dcv, payload: {order_id: 2222}, until_validated: false}
`)})
	runs := func() int {
		s, err := st.Get(ctx, "dup")
		if err != nil || s.Source != schedule.SourceFile || s.Ended {
			return -1
		}
		return s.Runs
	}
	waitFor(t, 15*time.Second, "the file schedule fires twice", func() bool { return runs() >= 2 })
	if got := logs.FilterMessageSnippet("only the file's fires, with a state of its own").Len(); got != 1 {
		t.Errorf("%d lines saying that the file's schedule fires with its own state, want 1", got)
	}
	if err := st.Delete(ctx, "dup"); err != nil {
		t.Fatal(err)
	}
	before := runs()
	waitFor(t, 15*time.Second, "the file schedule fires on after the API copy is removed", func() bool { return runs() > before })
	insp := asynq.NewInspector(e.redis.ConnOpt())
	defer insp.Close()
	pending, err := insp.ListPendingTasks("bulk")
	if err != nil || len(pending) == 0 {
		t.Fatalf("pending tasks %d, %v", len(pending), err)
	}
	for _, ti := range pending {
		if !strings.Contains(string(ti.Payload), "2222") {
			t.Errorf("task %s carries %s; want the file's order 2222", ti.ID, ti.Payload)
		}
	}
}
