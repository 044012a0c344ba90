package worker_test

import (
	"context"
	"net"
	"net/http"
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
