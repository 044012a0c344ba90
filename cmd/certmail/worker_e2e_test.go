package main_test

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/redistest"
)

const e2eKey = "e2e-key-93b1f0c7d2"

type e2e struct {
	redis     *redistest.Server
	fake      *digicerttest.Server
	baseURL   string
	client    *asynq.Client
	inspector *asynq.Inspector
}

func setupE2E(t *testing.T, cfg digicerttest.Config) *e2e {
	t.Helper()
	if cfg.APIKeys == nil {
		cfg.APIKeys = []string{e2eKey}
	}
	e := &e2e{redis: redistest.Start(t)}
	e.fake, e.baseURL = digicerttest.NewTestServer(t, cfg)
	e.client = asynq.NewClient(e.redis.ConnOpt())
	t.Cleanup(func() { e.client.Close() })
	e.inspector = asynq.NewInspector(e.redis.ConnOpt())
	t.Cleanup(func() { e.inspector.Close() })
	return e
}

// worker starts `certmail worker` configured only through the environment,
// as the README shows.
func (e *e2e) worker(t *testing.T, name string, extra ...string) *proc {
	t.Helper()
	env := append([]string{
		"REDIS_URL=" + e.redis.URL(),
		"DIGICERT_API_KEY=" + e2eKey,
		"DIGICERT_BASE_URL=" + e.baseURL,
		"CERTMAIL_ADMIN_ADDR=127.0.0.1:0",
		"CERTMAIL_CONCURRENCY=4",
	}, extra...)
	p := start(t, name, env, "worker")
	if got := p.waitLog("worker started", 20*time.Second)["redis"]; got != e.redis.URL() {
		t.Errorf("%s started on redis %v, want %s", name, got, e.redis.URL())
	}
	return p
}

func (e *e2e) enqueue(t *testing.T, typ, payload string) string {
	t.Helper()
	info, err := e.client.Enqueue(asynq.NewTask(typ, []byte(payload)), asynq.Retention(time.Hour), asynq.MaxRetry(5))
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

func (e *e2e) state(id string) asynq.TaskState {
	info, err := e.inspector.GetTaskInfo("default", id)
	if err != nil {
		return 0
	}
	return info.State
}

func (e *e2e) waitCompleted(t *testing.T, ids []string, within time.Duration) {
	t.Helper()
	waitFor(t, within, func() bool {
		for _, id := range ids {
			if e.state(id) != asynq.TaskStateCompleted {
				return false
			}
		}
		return true
	}, func() string {
		var s []string
		for _, id := range ids {
			s = append(s, e.state(id).String())
		}
		return "states: " + strings.Join(s, ",")
	})
}

// A worker started as the README says delivers tasks of a raw asynq
// producer with the exact documented bodies.
func TestWorkerDeliversRawProducerTasks(t *testing.T) {
	t.Parallel()
	e := setupE2E(t, digicerttest.Config{AnyIDExists: true})
	w := e.worker(t, "worker")
	ids := []string{
		e.enqueue(t, "set-emails", `{"order_id": 10, "additional_emails": []}`),
		e.enqueue(t, "resend-dcv", `{"order_id": 11}`),
		e.enqueue(t, "send-cert", `{"certificate_id": 12, "emails": ["a@example.com"], "certificate_collect_format": "downloadlink"}`),
	}
	e.waitCompleted(t, ids, 20*time.Second)
	want := map[string]string{
		"/services/v2/order/certificate/10/additional-emails": `{"additional_emails":[]}`,
		"/services/v2/order/certificate/11/resend-emails":     `{}`,
		"/services/v2/certificate/12/sendemail":               `{"emails":["a@example.com"],"certificate_collect_format":"downloadlink"}`,
	}
	reqs := e.fake.Requests()
	if len(reqs) != len(want) {
		t.Fatalf("fake saw %d requests, want %d", len(reqs), len(want))
	}
	for _, r := range reqs {
		if body, ok := want[r.Path]; !ok || string(r.Body) != body || r.Method != "PUT" {
			t.Errorf("%s %s %s: want PUT with %s", r.Method, r.Path, r.Body, body)
		}
	}
	if err := w.stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Errorf("worker exit after SIGTERM: %v, want status 0", err)
	}
	if strings.Contains(w.log(), e2eKey) {
		t.Error("the API key appears in the worker's log")
	}
}

// SIGTERM with deliveries in flight: they finish within the shutdown
// timeout, the process exits 0, the rest stays queued and a restarted
// worker delivers it. Every order gets exactly one DCV resend.
func TestSIGTERMLosesNothing(t *testing.T) {
	t.Parallel()
	e := setupE2E(t, digicerttest.Config{AnyIDExists: true})
	e.fake.SetFaults(digicerttest.Faults{Latency: 700 * time.Millisecond})
	w := e.worker(t, "worker-1", "CERTMAIL_SHUTDOWN_TIMEOUT=10s")
	const n = 12
	var ids []string
	for i := range n {
		ids = append(ids, e.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, 100+i)))
	}
	waitFor(t, 10*time.Second, func() bool { return e.fake.RequestCount() >= 4 }, func() string { return "no deliveries in flight" })
	if err := w.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v, want status 0", err)
	}
	delivered := e.fake.StatusCount(204)
	if delivered == 0 || delivered == n {
		t.Fatalf("%d of %d delivered before the worker stopped: the test did not catch deliveries in flight", delivered, n)
	}
	e.fake.SetFaults(digicerttest.Faults{})
	e.worker(t, "worker-2")
	e.waitCompleted(t, ids, 30*time.Second)
	for i := range n {
		if got := len(e.fake.DCVSends(int64(100 + i))); got != 1 {
			t.Errorf("order %d: %d DCV resends, want 1", 100+i, got)
		}
	}
	t.Logf("%d of %d delivered before SIGTERM completed, the rest after the restart", delivered, n)
}

// SIGKILL of a worker in the middle of a delivery: another worker process
// completes the task once asynq declares the lease lost.
func TestSIGKILLAnotherWorkerCompletes(t *testing.T) {
	t.Parallel()
	const keyB = "e2e-key-b-5e7a21c9"
	e := setupE2E(t, digicerttest.Config{AnyIDExists: true, APIKeys: []string{e2eKey, keyB}})
	e.fake.SetFaults(digicerttest.Faults{Latency: 2 * time.Second})
	a := e.worker(t, "worker-a")
	id := e.enqueue(t, "set-emails", `{"order_id": 500, "additional_emails": ["a@example.com"]}`)
	waitFor(t, 10*time.Second, func() bool { return e.fake.RequestCount() >= 1 }, func() string { return "worker A did not call" })
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-a.done
	e.fake.SetFaults(digicerttest.Faults{})
	e.worker(t, "worker-b", "DIGICERT_API_KEY="+keyB)
	e.waitCompleted(t, []string{id}, 150*time.Second)
	recovery := time.Since(killed)
	var byB int
	for _, r := range e.fake.Requests() {
		if r.Header.Get("X-DC-DEVKEY") == keyB {
			byB++
		}
	}
	if byB != 1 {
		t.Errorf("worker B made %d calls, want 1", byB)
	}
	if got, _ := e.fake.AdditionalEmails(500); strings.Join(got, ",") != "a@example.com" {
		t.Errorf("order 500 list = %v", got)
	}
	// Worker B's recoverer looks at its start, before the dead worker's
	// lease (30 s) has been expired 30 s, then a minute later, when it has.
	t.Logf("time to recovery after SIGKILL: %v (worker B's recoverer's second look, a minute after B started)", recovery.Round(time.Second))
}

// CERTMAIL_MAX_RETRY caps the retries of every task the worker processes,
// below a producer's own MaxRetry: with 1, a task that allows 5 is
// dead-lettered after its second failed delivery.
func TestWorkerRetryCapFromEnvironment(t *testing.T) {
	t.Parallel()
	e := setupE2E(t, digicerttest.Config{AnyIDExists: true})
	e.fake.FailPath("/services/v2/order/certificate/61/resend-emails", 1000, 503, "<html>503</html>", "text/html")
	w := e.worker(t, "worker", "CERTMAIL_MAX_RETRY=1")
	id := e.enqueue(t, "resend-dcv", `{"order_id": 61}`) // MaxRetry(5)
	waitFor(t, 20*time.Second, func() bool { return e.state(id) == asynq.TaskStateRetry }, func() string { return "state " + e.state(id).String() })
	if err := e.inspector.RunTask("default", id); err != nil { // the retry is due in about 30 s: now
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return e.state(id) == asynq.TaskStateArchived }, func() string { return "state " + e.state(id).String() })
	info, err := e.inspector.GetTaskInfo("default", id)
	if err != nil {
		t.Fatal(err)
	}
	if info.Retried != 1 || info.MaxRetry != 5 {
		t.Errorf("archived after %d of the task's %d retries, want 1 of 5", info.Retried, info.MaxRetry)
	}
	msgs, err := e.redis.Client().XRange(t.Context(), "certmail:deadletter", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Values["task_id"] != id || msgs[0].Values["attempts"] != "2" {
		t.Errorf("dead-letter stream = %v, want one entry for %s after 2 attempts", msgs, id)
	}
	if n := w.count("error", "task dead-lettered"); n != 1 {
		t.Errorf("%d ERROR dead-letter lines, want 1", n)
	}
}

// CERTMAIL_PPROF=true serves the worker's profiles on its admin address;
// without it, there are none.
func TestWorkerProfilingSwitch(t *testing.T) {
	t.Parallel()
	e := setupE2E(t, digicerttest.Config{AnyIDExists: true})
	for _, tt := range []struct {
		env  string
		want int
	}{{"CERTMAIL_PPROF=true", http.StatusOK}, {"CERTMAIL_PPROF=false", http.StatusNotFound}} {
		w := e.worker(t, "worker "+tt.env, tt.env)
		addr, _ := w.waitLog("worker started", 20*time.Second)["admin_addr"].(string)
		resp, err := http.Get("http://" + addr + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: GET /debug/pprof/ on the admin address %s = %d, want %d", tt.env, addr, resp.StatusCode, tt.want)
		}
		if err := w.stop(syscall.SIGTERM, 20*time.Second); err != nil {
			t.Errorf("%s: worker exit after SIGTERM: %v", tt.env, err)
		}
	}
}
