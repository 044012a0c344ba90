package scheduler

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/certmailtest"
)

// A scheduler started while Redis is out of reach answers /healthz at once,
// so that a liveness probe does not restart it while it waits, and /readyz
// 503 until Redis answers and it schedules; then it is ready and leads.
func TestHealthWhileWaitingForRedis(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.redis.Kill() // the port stays the test's; nothing listens on it until Relaunch
	cfg, logs := e.deps(Config{AdminAddr: "127.0.0.1:0", Lease: testLease})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan net.Addr, 1)
	go func() { done <- s.Run(ctx, func(a net.Addr) { started <- a }) }()
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

	e.redis.Relaunch()
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
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		return logs.FilterMessage("became the scheduler leader").Len() == 1
	}, func() string { return "no leader" })
}

// waitingAdminAddr returns the admin server's base URL, as the first
// "waiting for Redis" line gives it.
func waitingAdminAddr(t *testing.T, logs *observer.ObservedLogs) string {
	t.Helper()
	var addr string
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		for _, e := range logs.FilterMessage("waiting for Redis").All() {
			if a, ok := e.ContextMap()["admin_addr"].(string); ok {
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
