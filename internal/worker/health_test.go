package worker_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/worker"
)

// A worker started while Redis is out of reach answers /healthz at once,
// so that a liveness probe does not restart it while it waits, and /readyz
// 503 until Redis answers and it processes tasks; then it is ready and
// delivers.
func TestHealthWhileWaitingForRedis(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	r.Kill() // the port stays the test's; nothing listens on it until Relaunch
	fake, baseURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{testKey}, AnyIDExists: true})
	log, logs := certmailtest.NewLogger(t)
	w, err := worker.New(worker.Config{
		Redis: certmailtest.Conn(t, r.URL()),
		Accounts: account.Set{"default": account.Account{
			Name: "default", BaseURL: baseURL, APIKey: account.Secret(testKey)}},
		Concurrency:     2,
		AdminAddr:       "127.0.0.1:0",
		ShutdownTimeout: 2 * time.Second,
		Client:          digicert.Config{Timeout: 2 * time.Second},
		Logger:          log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan net.Addr, 1)
	go func() { done <- w.Run(ctx, func(a net.Addr) { started <- a }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	certmailtest.HealthWhileWaiting(t, logs.ObservedLogs, started, done, r.Relaunch)
	client := asynq.NewClient(r.ConnOpt())
	defer client.Close()
	info, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": 7}`)), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(r.ConnOpt())
	defer insp.Close()
	waitFor(t, 10*time.Second, func() bool {
		ti, err := insp.GetTaskInfo("default", info.ID)
		return err == nil && ti.State == asynq.TaskStateCompleted
	}, func() string { return "task not completed" })
	if n := len(fake.DCVSends(7)); n != 1 {
		t.Errorf("%d DCV sends for order 7, want 1", n)
	}
	if n := logs.FilterMessage("Redis is not answering; certmail keeps trying").Len(); n != 0 {
		t.Errorf("waiting for Redis at start logged %d outage lines, want none", n)
	}
}

// A Redis that takes commands in and never answers (a partition, a paused
// VM, a failover's dark old master) gets /readyz 503 within
// admin.ReadyTimeout, not at go-redis's 5 s read timeout, which ignored
// the deadline.
func TestStalledRedisReadyzAnswersInTime(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	get := func() (int, time.Duration) {
		t.Helper()
		start := time.Now()
		res, err := http.Get("http://" + b.admins[0] + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode, time.Since(start)
	}
	if status, _ := get(); status != http.StatusOK {
		t.Fatalf("/readyz with Redis up: %d, want 200", status)
	}
	b.redis.Pause()
	if status, took := get(); status != http.StatusServiceUnavailable || took > admin.ReadyTimeout+time.Second {
		t.Errorf("/readyz with Redis stalled: %d after %v, want 503 within %v", status, took, admin.ReadyTimeout)
	}
}

// holdSend is a transport that holds the first send-cert request until
// release is closed (or the request is given up), having closed sent.
type holdSend struct {
	once          sync.Once
	sent, release chan struct{}
}

func (h *holdSend) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/sendemail") {
		h.once.Do(func() {
			close(h.sent)
			select {
			case <-h.release:
			case <-r.Context().Done():
			}
		})
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A stopping worker answers /readyz 503 and logs the cause as "stopping",
// not "waiting for Redis": Redis is fine, and the line must not send the
// reader to look at it while each worker of a rollout stops.
func TestReadyzWhileStopping(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	hold := &holdSend{sent: make(chan struct{}), release: make(chan struct{})}
	stop := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = 20 * time.Second
		c.Client.Timeout = 20 * time.Second
		c.Client.HTTPClient = &http.Client{Transport: hold}
	}})
	b.enqueue(t, "send-cert", `{"certificate_id": 41, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	<-hold.sent // a delivery in flight keeps the worker stopping until release
	stopped := b.stopping(t, stop)
	res, err := http.Get("http://" + b.admins[0] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz of a stopping worker: %d, want 503", res.StatusCode)
	}
	close(hold.release)
	<-stopped
	lines := b.logs.Lines("warn", "not ready")
	if len(lines) != 1 || lines[0]["error"] != "stopping" {
		t.Errorf("the stopping worker's /readyz logged %v, want one line with the cause \"stopping\"", lines)
	}
}
