package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/tasks"
)

var testAccounts = account.Set{"default": {Name: "default"}, "eu": {Name: "eu"}}

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

func (e *env) conn() *redisconn.Conn {
	e.t.Helper()
	c, err := redisconn.Open(e.redis.URL())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// store returns a Store with its own connection, closed at the test's end.
func (e *env) store() *Store {
	c := e.conn()
	svc := ops.New(c, ops.Options{Rules: enqueue.Rules{Accounts: testAccounts.Names()}})
	e.t.Cleanup(func() { svc.Close(); c.Client.Close() })
	return NewStore(StoreConfig{Redis: c.Client, Checker: svc, MinInterval: time.Second})
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
// its logs go to the returned observer.
func (e *env) start(cfg Config) (*observer.ObservedLogs, func()) {
	e.t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	cfg.Redis, cfg.Logger, cfg.Accounts = e.conn(), zap.New(core), testAccounts
	if cfg.MinInterval == 0 {
		cfg.MinInterval = time.Second // the tests' schedules fire every second
	}
	if cfg.Lease == 0 {
		cfg.Lease = 2 * time.Second
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

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
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

func TestValidate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	good := Schedule{ID: "dcv-order-1002", Cron: "0 9 * * *", Timezone: "Europe/Berlin", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1002, "locale": "en"}`)}
	if err := Validate(good, st.checker, 0, time.Now()); err != nil {
		t.Fatalf("valid schedule: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Schedule)
		fields []string
	}{
		{"bad id", func(s *Schedule) { s.ID = "Has Spaces" }, []string{"id"}},
		{"no cron", func(s *Schedule) { s.Cron = "" }, []string{"cron"}},
		{"bad cron", func(s *Schedule) { s.Cron = "61 * * * *" }, []string{"cron"}},
		{"six fields", func(s *Schedule) { s.Cron = "0 0 9 * * *" }, []string{"cron"}},
		{"zone in cron", func(s *Schedule) { s.Cron = "CRON_TZ=UTC 0 9 * * *" }, []string{"cron"}},
		{"bad zone", func(s *Schedule) { s.Timezone = "Mars/Olympus" }, []string{"timezone"}},
		{"unknown type", func(s *Schedule) { s.Type = "send-fax" }, []string{"type"}},
		{"no payload", func(s *Schedule) { s.Payload = nil }, []string{"payload"}},
		{"payload rules", func(s *Schedule) { s.Payload = json.RawMessage(`{"order_id": 0, "locale": "english"}`) },
			[]string{"payload.order_id", "payload.locale"}},
		{"unknown account", func(s *Schedule) { s.Payload = json.RawMessage(`{"order_id": 1, "account": "us"}`) },
			[]string{"payload.account"}},
		{"bad queue", func(s *Schedule) { s.Queue = "Bulk!" }, []string{"queue"}},
		{"negative max_runs", func(s *Schedule) { s.MaxRuns = -1 }, []string{"max_runs"}},
		{"never fires", func(s *Schedule) { s.Cron = "0 0 30 2 *" }, []string{"cron"}},
		{"below the floor", func(s *Schedule) { s.Cron = "@every 30s" }, []string{"cron"}},
		{"until in the past", func(s *Schedule) { past := time.Now().Add(-time.Minute); s.Until = &past }, []string{"until"}},
		{"queue no worker serves", func(s *Schedule) { s.Queue = "nobody" }, []string{"queue"}},
		{"everything at once", func(s *Schedule) { s.ID, s.Cron, s.Timezone = "", "soon", "nowhere" },
			[]string{"id", "timezone", "cron"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := good
			tt.change(&s)
			err := Validate(s, st.checker, 0, time.Now())
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *tasks.ValidationError", err)
			}
			var fields []string
			for _, fe := range ve.Errors {
				fields = append(fields, fe.Field)
			}
			if strings.Join(fields, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("fields %v, want %v (%v)", fields, tt.fields, err)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	data := `schedules:
  - id: good
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1002, locale: en}
    until: 2030-12-31T00:00:00Z
    max_runs: 30
  - id: bad-payload
    cron: "@daily"
    type: set-emails
    payload: {order_id: 7, additional_emails: ["not an email"]}
  - id: good
    cron: "@hourly"
    type: resend-dcv
    payload: {order_id: 1}
  - cron: "@hourly"
    type: resend-dcv
    payload: {order_id: 1}
  - id: typo
    crom: "@hourly"
    type: resend-dcv
    payload: {order_id: 1}
`
	good, bad, err := ParseFile([]byte(data), st.checker, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(good) != 1 || good[0].ID != "good" || good[0].Queue != DefaultQueue || good[0].MaxRuns != 30 ||
		good[0].Until == nil || string(good[0].Payload) != `{"locale":"en","order_id":1002}` {
		t.Fatalf("good = %+v", good)
	}
	want := []string{
		"schedules[1] (bad-payload): invalid set-emails",
		"schedules[2] (good): id already used by schedules[0]",
		"schedules[3]: invalid resend-dcv",
		"schedules[4] (typo): ",
	}
	if len(bad) != len(want) {
		t.Fatalf("bad = %v, want %d entries", bad, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(bad[i].Error(), w) {
			t.Errorf("bad[%d] = %q, want it to start with %q", i, bad[i].Error(), w)
		}
	}
	if !strings.Contains(bad[0].Error(), "payload.additional_emails[0]") || !strings.Contains(bad[3].Error(), "crom") {
		t.Errorf("errors lack the field paths: %v", bad)
	}
	if _, _, err := ParseFile([]byte("schedules: [\n"), st.checker, 0); err == nil {
		t.Error("broken YAML parsed")
	}
	if good, bad, err := ParseFile(nil, st.checker, 0); err != nil || len(good)+len(bad) != 0 {
		t.Errorf("empty file: %v %v %v", good, bad, err)
	}
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
	if _, err := st.Add(context.Background(), Schedule{ID: "from-api", Cron: "@every 1s", Type: "send-cert", Queue: "bulk",
		Payload: json.RawMessage(`{"certificate_id": 5, "emails": ["ops@example.com"], "certificate_collect_format": "attachment"}`)}); err != nil {
		t.Fatal(err)
	}
	e.start(Config{File: file})
	waitFor(t, 15*time.Second, "both schedules fire 3 times", func() bool {
		ticks := e.ticks("bulk")
		return len(ticks["from-file"]) >= 3 && len(ticks["from-api"]) >= 3
	})
	for id, ticks := range e.ticks("bulk") {
		if !consecutive(ticks) {
			t.Errorf("%s ticks %v are not one per second", id, ticks)
		}
	}
	all, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != "from-api" || all[0].Source != SourceAPI || all[1].Source != SourceFile ||
		all[0].Runs < 3 || all[0].LastRun == nil || all[0].NextRun == nil || !strings.HasPrefix(all[0].LastTaskID, "sched:from-api:") {
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
	e.start(Config{File: file})
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
	if err != nil || s.Runs != 3 || s.NextRun != nil || s.State != StateEnded || s.EndedReason != EndedMaxRuns || s.EndedAt == nil {
		t.Errorf("status %+v (%v), want 3 runs, no next run, ended at max_runs", s, err)
	}
}

func TestUntilEndsSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	until := time.Now().Add(4 * time.Second).UTC().Format(time.RFC3339)
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
	waitFor(t, 15*time.Second, "the schedule ends", func() bool {
		s, err := st.Get(context.Background(), "briefly")
		return err == nil && s.Ended
	})
	if s, _ := st.Get(context.Background(), "briefly"); s.EndedReason != EndedUntil || s.State != StateEnded {
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
`)
	logs, _ := e.start(Config{File: file})
	waitFor(t, 10*time.Second, "the valid schedule fires twice", func() bool { return len(e.ticks("bulk")["fine"]) >= 2 })
	reports := logs.FilterMessage("invalid schedule skipped").All()
	if len(reports) != 1 {
		t.Fatalf("%d reports of the invalid entry, want 1", len(reports))
	}
	fields := reports[0].ContextMap()
	if reports[0].Level != zapcore.ErrorLevel || fields["schedule"] != "broken" || fields["position"] != "schedules[1]" ||
		!strings.Contains(fields["error"].(string), "payload.order_id") {
		t.Errorf("report %v %v", reports[0].Level, fields)
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
	e.start(Config{File: file})
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
	logsA, stopA := e.start(Config{File: file})
	logsB, stopB := e.start(Config{File: file})
	waitFor(t, 30*time.Second, "10 ticks", func() bool { return len(e.ticks("bulk")["both"]) >= 10 })
	leaderships := func(l *observer.ObservedLogs) int { return l.FilterMessage("became the scheduler leader").Len() }
	stopLeader, follower := stopA, logsB
	switch {
	case leaderships(logsA) == 1 && leaderships(logsB) == 0:
	case leaderships(logsA) == 0 && leaderships(logsB) == 1:
		stopLeader, follower = stopB, logsA
	default:
		t.Fatalf("leaderships: A %d, B %d; want exactly one", leaderships(logsA), leaderships(logsB))
	}
	stopLeader()
	waitFor(t, 10*time.Second, "the follower takes over", func() bool { return leaderships(follower) == 1 })
	n := len(e.ticks("bulk")["both"])
	waitFor(t, 20*time.Second, "5 more ticks", func() bool { return len(e.ticks("bulk")["both"]) >= n+5 })
	ticks := e.ticks("bulk")["both"]
	if !consecutive(ticks) {
		t.Errorf("ticks %v: a gap or a double", ticks)
	}
}

// TestRecordFenced: a scheduler whose lease another holds cannot record.
func TestRecordFenced(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	ctx := context.Background()
	if err := rdb.Set(ctx, leaderKey, "other", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := recordScript.Run(ctx, rdb, []string{leaderKey, stateKey("x")}, "mine", 100, 100, "sched:x:100", 0).Int()
	if err != nil || res != -1 {
		t.Fatalf("record without the lease = %d, %v; want -1", res, err)
	}
	for i, want := range []int{1, 0, 2} { // forward, repeat, forward and end at max_runs
		tick := []int{100, 100, 101}[i]
		res, err := recordScript.Run(ctx, rdb, []string{leaderKey, stateKey("x")}, "other", tick, tick, "t", 2).Int()
		if err != nil || res != want {
			t.Errorf("record tick %d = %d, %v; want %d", tick, res, err, want)
		}
	}
	state, err := rdb.HGetAll(ctx, stateKey("x")).Result()
	if err != nil || state["runs"] != "2" || state["last_tick"] != "101" || state["ended"] != "1" || state["ended_reason"] != "max_runs" {
		t.Errorf("state %v, %v; want 2 runs, last tick 101, ended at max_runs 2", state, err)
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	s := Schedule{ID: "api-1", Cron: "0 9 * * 1", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}
	got, err := st.Add(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != SourceAPI || got.Queue != DefaultQueue || got.NextRun == nil || got.NextRun.Weekday() != time.Monday || got.NextRun.Hour() != 9 {
		t.Errorf("Add = %+v", got)
	}
	if _, err := st.Add(ctx, s); !errors.Is(err, ErrExists) {
		t.Errorf("second Add = %v, want ErrExists", err)
	}
	// A file schedule (as mirrored by the leader) cannot be added or deleted.
	c, err := compile(Schedule{ID: "file-1", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 2}`)}, SourceFile, rules{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.mirrorFile(ctx, []*compiled{c}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Add(ctx, Schedule{ID: "file-1", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 2}`)}); !errors.Is(err, ErrExists) {
		t.Errorf("Add over a file schedule = %v, want ErrExists", err)
	}
	if err := st.Delete(ctx, "file-1"); !errors.Is(err, ErrFileSchedule) {
		t.Errorf("Delete of a file schedule = %v", err)
	}
	if err := st.Delete(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of an unknown id = %v", err)
	}
	if err := st.Delete(ctx, "api-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "api-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v", err)
	}
	if n, err := e.redis.Client().Exists(ctx, stateKey("api-1")).Result(); err != nil || n != 0 {
		t.Errorf("Delete left the schedule's state (%v)", err)
	}
}

// A cron spec is judged by its shortest interval, whatever its form.
func TestMinInterval(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	for _, tt := range []struct {
		cron  string
		floor time.Duration
		ok    bool
	}{
		{"@every 1m", time.Minute, true},
		{"@every 59s", time.Minute, false},
		{"* * * * *", time.Minute, true},
		{"* * * * *", 5 * time.Minute, false},
		{"*/5 * * * *", 5 * time.Minute, true},
		{"0,1 9 * * *", 5 * time.Minute, false}, // one minute apart once a day
		{"@hourly", time.Hour, true},
		{"0 0 29 2 *", time.Hour, true}, // leap days only, but it fires
	} {
		s := Schedule{ID: "s", Cron: tt.cron, Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}
		err := Validate(s, st.checker, tt.floor, time.Now())
		if (err == nil) != tt.ok {
			t.Errorf("%q with a floor of %v: %v, want ok %v", tt.cron, tt.floor, err, tt.ok)
		}
	}
}

// A schedule posted as JSON is read strictly: a member given twice is a
// problem named after it, as are unknown members and wrong types.
func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, body string
		fields     []string
	}{
		{"good", `{"id":"a","cron":"@daily","type":"resend-dcv","payload":{"order_id":1},"until":"2030-01-01T00:00:00Z","max_runs":3,"until_validated":false}`, nil},
		{"duplicate id", `{"id":"a","cron":"@daily","id":"b","type":"resend-dcv","payload":{"order_id":1}}`, []string{"id"}},
		{"duplicate payload", `{"id":"a","cron":"@daily","type":"resend-dcv","payload":{"order_id":1},"payload":{"order_id":2}}`, []string{"payload"}},
		{"unknown member", `{"id":"a","crom":"@daily"}`, []string{"crom"}},
		{"unknown member with an odd name", `{"id":"a","a b\n":1}`, []string{`"a b\n"`}},
		{"wrong types", `{"id":1,"cron":"@daily","until":"tomorrow","max_runs":"3","until_validated":"yes"}`, []string{"id", "until", "max_runs", "until_validated"}},
		{"not an object", `[1]`, []string{""}},
		{"trailing data", `{"id":"a"} {}`, []string{""}},
	} {
		s, err := DecodeJSON([]byte(tt.body))
		var fields []string
		var ve *tasks.ValidationError
		if errors.As(err, &ve) {
			for _, fe := range ve.Errors {
				fields = append(fields, fe.Field)
			}
		} else if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if strings.Join(fields, ",") != strings.Join(tt.fields, ",") {
			t.Errorf("%s: fields %q, want %q (%v)", tt.name, fields, tt.fields, err)
		}
		if tt.fields == nil && (s.ID != "a" || s.MaxRuns != 3 || s.Until == nil || string(s.Payload) != `{"order_id":1}` ||
			s.UntilValidated == nil || *s.UntilValidated) {
			t.Errorf("%s: decoded %+v", tt.name, s)
		}
	}
}

// A malformed schedule in Redis is skipped and named; the rest is listed.
func TestListingSkipsUnreadableEntries(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	if _, err := st.Add(ctx, Schedule{ID: "fine", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client()
	for _, kv := range [][3]string{
		{apiSchedulesKey, "garbage", "not JSON"},
		{apiSchedulesKey, "bad-cron", `{"id":"bad-cron","cron":"whenever","type":"resend-dcv","payload":{"order_id":1}}`},
		{fileSchedulesKey, "elsewhere", `{"id":"other","cron":"@daily","type":"resend-dcv","payload":{"order_id":1}}`},
	} {
		if err := rdb.HSet(ctx, kv[0], kv[1], kv[2]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := st.Listing(ctx)
	if err != nil {
		t.Fatalf("Listing: %v", err)
	}
	if len(l.Schedules) != 1 || l.Schedules[0].ID != "fine" {
		t.Errorf("schedules %+v, want only fine", l.Schedules)
	}
	if l.SkippedCount != 3 || len(l.Skipped) != 3 || l.Skipped[0].ID != "bad-cron" || l.Skipped[1].ID != "elsewhere" ||
		l.Skipped[2].ID != "garbage" || l.Skipped[2].Problem != "not a schedule as JSON" {
		t.Errorf("skipped %d: %+v", l.SkippedCount, l.Skipped)
	}
	if got, err := st.Get(ctx, "fine"); err != nil || got.ID != "fine" {
		t.Errorf("Get = %+v, %v", got, err)
	}
}

// The series of a schedule deleted, or ended, are removed, so that their
// number follows the schedules that exist.
func TestSeriesOfGoneSchedulesAreRemoved(t *testing.T) {
	t.Parallel()
	e := setup(t)
	reg := prometheus.NewRegistry()
	st := e.store()
	ctx := context.Background()
	no := false // every tick fires: no worker completes the tasks here
	for _, s := range []Schedule{
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
	waitFor(t, 15*time.Second, "the series of deleted and ended schedules go", func() bool {
		s := series()
		return !s["deleted"] && !s["ends"] && s["stays"]
	})
}
