package scheduler

import (
	"context"
	"net"
	"testing"
	"time"

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

	certmailtest.HealthWhileWaiting(t, logs, started, done, e.redis.Relaunch)
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		return logs.FilterMessage("became the scheduler leader").Len() == 1
	}, func() string { return "no leader" })
}
