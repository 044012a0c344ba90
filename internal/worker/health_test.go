package worker_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/account"
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
