package dev_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/dev"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/schedule"
)

// stack runs the dev stack on free ports until the test ends and returns
// it, its banner, and a function that stops it and returns Run's error.
func stack(t *testing.T, cfg dev.Config) (*dev.Stack, string, func() error) {
	t.Helper()
	out := &certmailtest.Output{}
	cfg.HTTPAddr, cfg.Stdout = "127.0.0.1:0", out
	if !cfg.NoAdmin {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan *dev.Stack, 1)
	done := make(chan error, 1)
	go func() { done <- dev.Run(ctx, cfg, func(s *dev.Stack) { up <- s }) }()
	var st *dev.Stack
	select {
	case st = <-up:
	case err := <-done:
		cancel()
		t.Fatalf("dev stack stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("dev stack not up within 30s")
	}
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				t.Error("dev stack still running 30s after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return st, out.String(), stop
}

// testClient sends the tests' requests; its idle connections are closed
// before the goroutine check, which would count them as leaks.
var testClient = &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}

// call sends an HTTP request and returns the status and body.
func call(t *testing.T, method, url, token, user string, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case user != "":
		req.SetBasicAuth(user, token)
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// taskState polls GET /v1/tasks/{id}.
func taskState(t *testing.T, st *dev.Stack, id string) (state, outcome string) {
	t.Helper()
	status, body := call(t, "GET", st.APIURL+"/v1/tasks/"+id, st.Token, "", "")
	if status != 200 {
		t.Fatalf("GET task %s: %d %s", id, status, body)
	}
	var ts struct {
		State  string `json:"state"`
		Result struct {
			Outcome string `json:"outcome"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.State, ts.Result.Outcome
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	certmailtest.WaitFor(t, within, cond, func() string { return what })
}

var curlPattern = regexp.MustCompile(`curl -sS -X POST (\S+) \\\s+-H 'Authorization: Bearer (\S+)' -H 'Content-Type: application/json' \\\s+-d '([^']*)'`)

// TestDevStack runs `certmail dev` as a newcomer would: the printed curl
// command works, the demo reaches every state, the dashboard is guarded.
// It is not parallel: it checks that no goroutine outlives the stack.
func TestDevStack(t *testing.T) {
	// Registered first, so it runs after the stack's own cleanup.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	st, banner, stop := stack(t, dev.Config{})

	for _, want := range []string{"NOT for production", st.APIURL + "/monitoring/", "token      " + st.Token, "embedded"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	m := curlPattern.FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("no curl command in the banner:\n%s", banner)
	}
	status, body := call(t, "POST", m[1], m[2], "", m[3])
	if status != http.StatusAccepted {
		t.Fatalf("printed curl command: %d %s", status, body)
	}
	var ref struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &ref); err != nil || ref.ID == "" {
		t.Fatalf("answer %s: %v", body, err)
	}
	waitUntil(t, 30*time.Second, "the curl task is delivered", func() bool {
		state, outcome := taskState(t, st, ref.ID)
		return state == "completed" && outcome == "delivered"
	})
	if got, ok := st.Fake().AdditionalEmails(1234); !ok || len(got) != 1 || got[0] != "you@example.com" {
		t.Errorf("fake's list for order 1234 = %v (%v)", got, ok)
	}

	// The dashboard: guarded, and its JSON API shows the demo's states.
	if status, _ := call(t, "GET", st.APIURL+"/monitoring/", "", "", ""); status != http.StatusUnauthorized {
		t.Errorf("dashboard without credentials: %d, want 401", status)
	}
	if status, _ := call(t, "GET", st.APIURL+"/monitoring/", st.Token, "operator", ""); status != http.StatusOK {
		t.Errorf("dashboard with the token: %d, want 200", status)
	}
	type queue struct {
		Queue                                          string
		Scheduled, Retry, Archived, Completed, Pending int
	}
	queues := func() map[string]queue {
		status, body := call(t, "GET", st.APIURL+"/monitoring/api/queues", st.Token, "operator", "")
		if status != http.StatusOK {
			t.Fatalf("dashboard API: %d %s", status, body)
		}
		var qs struct{ Queues []queue }
		if err := json.Unmarshal(body, &qs); err != nil {
			t.Fatal(err)
		}
		out := map[string]queue{}
		for _, q := range qs.Queues {
			out[q.Queue] = q
		}
		return out
	}
	// Each state is seen at some point: the retried task leaves the retry
	// state after about 30 s.
	var scheduled, retried, archived, completed bool
	deadline := time.Now().Add(90 * time.Second)
	for {
		d := queues()["default"]
		scheduled = scheduled || d.Scheduled == 1
		retried = retried || d.Retry == 1
		archived = archived || d.Archived == 1
		completed = completed || d.Completed >= 5
		if scheduled && retried && archived && completed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 90s the default queue was seen scheduled=%v retried=%v archived=%v completed=%v; now %+v; fake requests:\n%v",
				scheduled, retried, archived, completed, d, st.Fake().Requests())
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitUntil(t, 60*time.Second, "the bulk batch is delivered", func() bool {
		return queues()["bulk"].Completed >= 250 // the demo schedule's ticks go to bulk too
	})
	if got := st.Fake().StatusCount(429); got != 0 {
		t.Errorf("the fake answered 429 %d times; the limiter should prevent it", got)
	}
	// The demo schedule reminds order 1002 until the fake approves it, then
	// ends itself, as the banner says.
	if !strings.Contains(banner, "/v1/schedules/"+dev.DemoSchedule.ID) {
		t.Errorf("the banner does not show how to watch the demo schedule:\n%s", banner)
	}
	type schedule struct {
		ID          string  `json:"id"`
		State       string  `json:"state"`
		NextRun     *string `json:"next_run"`
		Runs        int     `json:"runs"`
		EndedReason string  `json:"ended_reason"`
		OrderStatus string  `json:"order_status"`
		LastTaskID  string  `json:"last_task_id"`
	}
	var demo schedule
	waitUntil(t, 150*time.Second, "the demo schedule ends itself", func() bool {
		status, body := call(t, "GET", st.APIURL+"/v1/schedules", st.Token, "", "")
		var scheds struct{ Schedules []schedule }
		if err := json.Unmarshal(body, &scheds); status != http.StatusOK || err != nil || len(scheds.Schedules) != 1 ||
			scheds.Schedules[0].ID != dev.DemoSchedule.ID {
			t.Fatalf("schedules: %d %s (%v)", status, body, err)
		}
		demo = scheds.Schedules[0]
		return demo.State == "ended"
	})
	if demo.EndedReason != "validated" || demo.OrderStatus != "issued" || demo.NextRun != nil || demo.Runs != dev.DemoApproveAfter+1 {
		t.Errorf("demo schedule %+v, want ended as validated after %d runs", demo, dev.DemoApproveAfter+1)
	}
	if n := len(st.Fake().DCVSends(1002)); n != dev.DemoApproveAfter {
		t.Errorf("order 1002 reminded %d times, want %d", n, dev.DemoApproveAfter)
	}
	// The dashboard shows the new payloads and results: the tick that ended
	// the schedule, and the per-domain resends.
	type dashTask struct {
		Type, Payload, Result string
	}
	status, body = call(t, "GET", st.APIURL+"/monitoring/api/queues/bulk/tasks/"+url.PathEscape(demo.LastTaskID), st.Token, "operator", "")
	var last dashTask
	if err := json.Unmarshal(body, &last); status != http.StatusOK || err != nil || !strings.Contains(last.Payload, `"only_if_pending": true`) ||
		!strings.Contains(last.Result, `"outcome": "not_pending"`) || !strings.Contains(last.Result, `"order_status": "issued"`) {
		t.Errorf("dashboard, the last tick: %d %+v (%v)", status, last, err)
	}
	status, body = call(t, "GET", st.APIURL+"/monitoring/api/queues/default/completed_tasks?size=100", st.Token, "operator", "")
	var done struct{ Tasks []dashTask }
	if err := json.Unmarshal(body, &done); status != http.StatusOK || err != nil {
		t.Fatalf("dashboard, completed tasks: %d %.300s (%v)", status, body, err)
	}
	var domainTask, perDomain bool
	for _, task := range done.Tasks {
		domainTask = domainTask || task.Type == "resend-domain-dcv" && strings.Contains(task.Payload, `"domain_id": 2201`)
		perDomain = perDomain || strings.Contains(task.Result, `"via": "domain"`) && strings.Contains(task.Result, `"domain_id": 2102`)
	}
	if !domainTask || !perDomain {
		t.Errorf("dashboard, completed tasks: resend-domain-dcv shown %t, per-domain result shown %t", domainTask, perDomain)
	}
	// The OV order was resent per domain waiting for email, the domain task to its domain.
	f := st.Fake()
	if a, b, c, d := f.DomainDCVSends(2101), f.DomainDCVSends(2102), f.DomainDCVSends(2103), f.DomainDCVSends(2201); len(a) != 1 || len(b) != 1 ||
		len(c) != 0 || len(d) != 1 || len(a[0].EmailArray) != 1 || a[0].EmailArray[0] != "admin@example.com" || len(f.DCVSends(1005)) != 0 {
		t.Errorf("domain resends: 2101 %+v, 2102 %+v, 2103 %+v, 2201 %+v; order 1005 %d", a, b, c, d, len(f.DCVSends(1005)))
	}
	if status, _ := call(t, "GET", st.AdminURL+"/readyz", "", "", ""); status != http.StatusOK {
		t.Errorf("worker /readyz: %d", status)
	}

	testClient.CloseIdleConnections()
	if err := stop(); err != nil {
		t.Errorf("Run returned %v after cancel, want nil", err)
	}
}

// TestDevStackExternalRedis uses the server --redis-url names instead of the
// embedded one, and the banner says that its queued tasks are processed
// against the fake. That Redis is not dev's own: without Demo it gets no
// demo task or schedule (real workers on it would deliver the demo's tasks
// to the real DigiCert), and the banner announces none and says so.
func TestDevStackExternalRedis(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	st, banner, stop := stack(t, dev.Config{RedisURL: redis.URL(), Tokens: []api.Token{{Secret: "given-token-3f9a0c"}}})
	for _, demo := range []string{"Demo tasks", "demo schedule", dev.DemoSchedule.ID} {
		if strings.Contains(banner, demo) {
			t.Errorf("on an external Redis without Demo the banner mentions %q:\n%s", demo, banner)
		}
	}
	for _, want := range []string{"Enqueue a task:", "Stop with Ctrl-C.", "No demo: this Redis is not dev's own (--demo loads"} {
		if !strings.Contains(banner, want) {
			t.Errorf("on an external Redis without Demo the banner lacks %q:\n%s", want, banner)
		}
	}
	if st.Embedded || !strings.Contains(banner, redis.URL()+" (EXTERNAL, from --redis-url: its queued tasks are processed here against the fake DigiCert)") || st.Token != "given-token-3f9a0c" {
		t.Errorf("stack embedded=%v token=%q, banner:\n%s", st.Embedded, st.Token, banner)
	}
	status, body := call(t, "POST", st.APIURL+"/v1/tasks/resend-dcv", "given-token-3f9a0c", "", `{"order_id": 77}`)
	if status != http.StatusAccepted {
		t.Fatalf("enqueue: %d %s", status, body)
	}
	var ref struct{ ID string }
	if err := json.Unmarshal(body, &ref); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "delivered", func() bool {
		state, outcome := taskState(t, st, ref.ID)
		return state == "completed" && outcome == "delivered"
	})
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	// Run has returned: a demo would have been enqueued by now.
	if got := taskKeys(t, redis); len(got) != 1 || got[0] != "asynq:{default}:t:"+ref.ID {
		t.Errorf("%d tasks in the external Redis (%.120v…), want only the one enqueued (%s)", len(got), got, ref.ID)
	}
	if n, err := redis.Client().HLen(context.Background(), "certmail:schedules").Result(); err != nil || n != 0 {
		t.Errorf("schedules in the external Redis: %d (%v), want none", n, err)
	}
}

// TestDevStackExternalRedisDemo: with Demo, the demo tasks and schedule go
// into the external Redis, and the banner warns of it and shows how to
// delete the schedule, which outlives the stack: through dev's API while
// it runs, and with the CLI after (dev's token and API end with it).
func TestDevStackExternalRedisDemo(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	st, banner, stop := stack(t, dev.Config{RedisURL: redis.URL(), Demo: true})
	for _, want := range []string{"The demo goes into this EXTERNAL Redis (--demo)", "Demo tasks of every kind",
		"curl -sS -X DELETE -H 'Authorization: Bearer " + st.Token + "' " + st.APIURL + "/v1/schedules/" + dev.DemoSchedule.ID,
		"REDIS_URL='<the --redis-url>' certmail schedule rm " + dev.DemoSchedule.ID} {
		if !strings.Contains(banner, want) {
			t.Errorf("on an external Redis with Demo the banner lacks %q:\n%s", want, banner)
		}
	}
	waitUntil(t, 30*time.Second, "the demo is enqueued", func() bool { return len(taskKeys(t, redis)) >= demoTasks })
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if ok, err := redis.Client().HExists(context.Background(), "certmail:schedules", dev.DemoSchedule.ID).Result(); err != nil || !ok {
		t.Errorf("demo schedule in the external Redis after the stack stopped: %v (%v), want it there", ok, err)
	}
}

// demoTasks is more tasks than the demo's one-off ones: its bulk batch has
// begun.
const demoTasks = 20

// taskKeys returns the keys of the asynq tasks in redis.
func taskKeys(t *testing.T, redis *redistest.Server) []string {
	t.Helper()
	keys, err := redis.Client().Keys(context.Background(), "asynq:{*}:t:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestDevStackWithoutAdmin: with NoAdmin (CERTMAIL_ADMIN_ADDR given
// empty) the worker serves no admin address, as the worker command does,
// and the banner names no worker metrics URL; an admin address given as
// well is refused.
func TestDevStackWithoutAdmin(t *testing.T) {
	t.Parallel()
	st, banner, stop := stack(t, dev.Config{NoAdmin: true, NoDemo: true})
	if st.AdminURL != "" {
		t.Errorf("AdminURL %q, want none", st.AdminURL)
	}
	want := "  metrics    " + st.APIURL + "/metrics (API; the worker serves none: its admin address is empty)\n"
	if !strings.Contains(banner, want) || strings.Contains(banner, "(worker)") {
		t.Errorf("banner:\n%s\nwant the line %q and no worker metrics URL", banner, want)
	}
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	err := dev.Run(context.Background(), dev.Config{NoAdmin: true, AdminAddr: "127.0.0.1:0", Logger: zaptest.NewLogger(t)}, nil)
	if err == nil || !strings.Contains(err.Error(), "NoAdmin") {
		t.Errorf("NoAdmin with an AdminAddr: %v, want refused", err)
	}
}

// TestDemoEveryWholeSeconds: an interval the demo schedule cannot have is
// refused before anything starts.
func TestDemoEveryWholeSeconds(t *testing.T) {
	t.Parallel()
	for _, every := range []time.Duration{1500 * time.Millisecond, time.Millisecond, -time.Second} {
		err := dev.Run(context.Background(), dev.Config{DemoEvery: every, Logger: zaptest.NewLogger(t)}, nil)
		if err == nil || !strings.Contains(err.Error(), "whole seconds") {
			t.Errorf("DemoEvery %v: Run = %v, want a refusal", every, err)
		}
	}
}

// TestScheduleMinInterval: unset, the floor between two ticks is lowered to
// the demo schedule's interval while the demo runs; set, it holds, and the
// demo schedule fires at it when it is longer (in whole seconds).
func TestScheduleMinInterval(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg             dev.Config
		floor, demoEach time.Duration
	}{
		{dev.Config{}, dev.DefaultDemoEvery, dev.DefaultDemoEvery},
		{dev.Config{NoDemo: true}, schedule.DefaultMinInterval, dev.DefaultDemoEvery},
		{dev.Config{ScheduleMinInterval: 5 * time.Minute}, 5 * time.Minute, 5 * time.Minute},
		{dev.Config{ScheduleMinInterval: 30 * time.Second}, 30 * time.Second, 30 * time.Second},
		{dev.Config{ScheduleMinInterval: 30500 * time.Millisecond}, 30500 * time.Millisecond, 31 * time.Second},
		{dev.Config{ScheduleMinInterval: 5 * time.Second}, 5 * time.Second, dev.DefaultDemoEvery},
		{dev.Config{ScheduleMinInterval: 5 * time.Minute, NoDemo: true}, 5 * time.Minute, dev.DefaultDemoEvery},
		{dev.Config{ScheduleMinInterval: time.Hour, DemoEvery: 2 * time.Second}, time.Hour, time.Hour},
		// An external Redis gets no demo unless asked: its floor is not lowered.
		{dev.Config{RedisURL: "redis://127.0.0.1:1/0"}, schedule.DefaultMinInterval, dev.DefaultDemoEvery},
		{dev.Config{RedisURL: "redis://127.0.0.1:1/0", Demo: true}, dev.DefaultDemoEvery, dev.DefaultDemoEvery},
	} {
		got := tt.cfg.WithDefaults()
		if got.ScheduleMinInterval != tt.floor || got.DemoEvery != tt.demoEach {
			t.Errorf("ScheduleMinInterval %v, DemoEvery %v, NoDemo %t: floor %v, demo every %v; want %v, %v", tt.cfg.ScheduleMinInterval,
				tt.cfg.DemoEvery, tt.cfg.NoDemo, got.ScheduleMinInterval, got.DemoEvery, tt.floor, tt.demoEach)
		}
	}

	// The stack holds a floor set above the demo's: an API schedule below it
	// is refused, and the demo schedule fires at the floor.
	st, banner, _ := stack(t, dev.Config{ScheduleMinInterval: 5 * time.Minute})
	status, body := call(t, "POST", st.APIURL+"/v1/schedules", st.Token, "",
		`{"id": "dev-1", "cron": "@every 21s", "type": "resend-dcv", "payload": {"order_id": 5}}`)
	if status != http.StatusBadRequest || !strings.Contains(string(body), "cron") {
		t.Errorf("a schedule every 21s under a 5m floor: %d %s, want 400 on cron", status, body)
	}
	if !strings.Contains(banner, "A demo schedule (@every 5m0s)") {
		t.Errorf("the banner does not announce the demo schedule at the floor:\n%s", banner)
	}
	waitUntil(t, 30*time.Second, "the demo schedule is added", func() bool {
		status, body := call(t, "GET", st.APIURL+"/v1/schedules/"+dev.DemoSchedule.ID, st.Token, "", "")
		if status == http.StatusOK && !strings.Contains(string(body), `"cron":"@every 5m0s"`) {
			t.Fatalf("demo schedule: %s, want it every 5m0s", body)
		}
		return status == http.StatusOK
	})
}

// The embedded Redis (miniredis) answers no INFO memory: the worker, the
// scheduler and the API do not warn that its eviction policy could not be
// read.
func TestEmbeddedRedisIsNotCheckedForEviction(t *testing.T) {
	t.Parallel()
	logger, logs := certmailtest.NewLogger(t)
	stack(t, dev.Config{NoDemo: true, Logger: logger})
	waitUntil(t, 30*time.Second, "a scheduler leader", func() bool {
		return len(logs.Lines("info", "became the scheduler leader")) == 1
	})
	if n := len(logs.Lines("warn", "")) + len(logs.Lines("error", "")); n != 0 {
		t.Errorf("%d WARN or ERROR lines:\n%s", n, logs.Text())
	}
}

// A --guard-replicas given with the embedded Redis, which has no replica,
// is ignored, and one INFO line says so: the worker asks none and warns
// of none missing.
func TestEmbeddedRedisIgnoresGuardReplicas(t *testing.T) {
	t.Parallel()
	logger, logs := certmailtest.NewLogger(t)
	stack(t, dev.Config{NoDemo: true, GuardReplicas: 2, Logger: logger})
	waitUntil(t, 30*time.Second, "the worker started", func() bool {
		return len(logs.Lines("info", "worker started")) == 1
	})
	if lines := logs.Lines("info", "the embedded Redis has no replica: --guard-replicas is ignored"); len(lines) != 1 || lines[0]["guard_replicas"] != int64(2) {
		t.Errorf("want one INFO line naming guard_replicas 2, got %v:\n%s", lines, logs.Text())
	}
	if started := logs.Lines("info", "worker started"); started[0]["guard_replicas"] != int64(0) {
		t.Errorf("worker started asking %v replicas, want 0", started[0]["guard_replicas"])
	}
}

// TestDevAPIHosts: the stack's API answers the host names of APIHosts
// (CERTMAIL_API_HOSTS) and the rebind-safe ones, and refuses any other on
// every route, as certmail api does.
func TestDevAPIHosts(t *testing.T) {
	t.Parallel()
	st, _, _ := stack(t, dev.Config{NoDemo: true, APIHosts: []string{"dev.example.test"}})
	for host, want := range map[string]int{"dev.example.test:8080": 200, "localhost": 200, "": 200, "evil.example": 403} {
		req, err := http.NewRequest(http.MethodGet, st.APIURL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		res, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("Host %q: %d, want %d", host, res.StatusCode, want)
		}
	}
}

// TestEmbeddedRedisClock: the embedded Redis tells the wall clock's time,
// the fake CertCentral's, at every call (TIME, which the rate limiter's
// scripts stamp requests with), and expires keys as it passes. A clock that
// lags, even between two settings 100ms apart, makes the limiter drop a
// request from its 5s window while the fake still counts it: a 429.
func TestEmbeddedRedisClock(t *testing.T) {
	t.Parallel()
	st, _, _ := stack(t, dev.Config{NoDemo: true})
	opt, err := goredis.ParseURL(st.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	for range 5 {
		before := time.Now().Truncate(time.Microsecond) // TIME tells microseconds
		got, err := rdb.Time(ctx).Result()
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if got.Before(before) || got.After(after) {
			t.Fatalf("TIME %s, asked between %s and %s: the embedded Redis's clock is %v off the wall clock",
				got.Format(time.StampMicro), before.Format(time.StampMicro), after.Format(time.StampMicro), before.Sub(got))
		}
	}
	if err := rdb.Set(ctx, "clock-test", "x", 20*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "a key set for 20ms expires", func() bool {
		n, err := rdb.Exists(ctx, "clock-test").Result()
		return err == nil && n == 0
	})
}
