package worker_test

import (
	"context"
	"net"
	"net/http"
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

	admin := waitingAdminAddr(t, logs)
	if got := getStatus(admin + "/healthz"); got != http.StatusOK {
		t.Errorf("/healthz while waiting for Redis: %d, want 200", got)
	}
	if got := getStatus(admin + "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz while waiting for Redis: %d, want 503", got)
	}
	select {
	case <-started:
		t.Fatal("started was called before Redis answered")
	default:
	}

	r.Relaunch()
	select {
	case a := <-started:
		if "http://"+a.String() != admin {
			t.Errorf("started with %v; the admin server is at %s", a, admin)
		}
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not started within 30s of Redis answering")
	}
	if got := getStatus(admin + "/readyz"); got != http.StatusOK {
		t.Errorf("/readyz once started: %d, want 200", got)
	}
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

// waitingAdminAddr returns the admin server's base URL, as the first
// "waiting for Redis" line gives it.
func waitingAdminAddr(t *testing.T, logs *certmailtest.Logs) string {
	t.Helper()
	var addr string
	waitFor(t, 10*time.Second, func() bool {
		for _, l := range logs.Lines("warn", "waiting for Redis") {
			if a, ok := l["admin_addr"].(string); ok {
				addr = a
				return true
			}
		}
		return false
	}, func() string { return "no \"waiting for Redis\" line with admin_addr" })
	return "http://" + addr
}

// getStatus is the status of a GET of url; 0 when no answer came.
func getStatus(url string) int {
	res, err := http.Get(url)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}
