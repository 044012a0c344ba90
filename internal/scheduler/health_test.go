package scheduler

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/redistest"
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
	if n := logs.FilterMessage(redisGone).Len(); n != 0 {
		t.Errorf("waiting for Redis at start logged %d outage lines, want none", n)
	}
}

const redisGone, redisBack = "Redis is not answering; certmail keeps trying", "Redis is answering again"

// A Redis outage has a first and a last line in the scheduler's log: WARN
// when Redis stops answering, INFO when it answers again.
func TestSchedulerRedisOutageFirstAndLastLine(t *testing.T) {
	t.Parallel()
	e := setup(t)
	logs, _ := e.start(Config{Lease: testLease})
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		return logs.FilterMessage("became the scheduler leader").Len() == 1
	}, func() string { return "no leader" })
	e.redis.Kill()
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		return logs.FilterMessage(redisGone).FilterLevelExact(zap.WarnLevel).Len() == 1
	}, func() string { return "no line saying Redis is not answering" })
	e.redis.Relaunch()
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		return logs.FilterMessage(redisBack).FilterLevelExact(zap.InfoLevel).Len() == 1
	}, func() string { return "no line saying Redis answers again" })
	if n := logs.FilterMessage(redisGone).Len(); n != 1 {
		t.Errorf("%d lines saying Redis is not answering, want 1", n)
	}
}

// A scheduler whose Redis may evict keys (maxmemory-policy other than
// noeviction) says so once at start, at ERROR, naming the policy, and
// leads all the same.
func TestSchedulerReportsAnEvictingRedis(t *testing.T) {
	t.Parallel()
	e := &env{t: t, redis: redistest.Start(t, redistest.Options{Args: []string{"--maxmemory-policy", "volatile-ttl"}}), dir: t.TempDir()}
	logs, _ := e.start(Config{})
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		return logs.FilterMessage("became the scheduler leader").Len() == 1
	}, func() string { return "no leader" })
	lines := logs.FilterField(zap.String("maxmemory_policy", "volatile-ttl")).FilterLevelExact(zap.ErrorLevel).All()
	if len(lines) != 1 {
		t.Fatalf("%d ERROR lines naming the policy, want 1", len(lines))
	}
	if risk, _ := lines[0].ContextMap()["risk"].(string); !strings.Contains(risk, "leader lease") {
		t.Errorf("the line's risk %q does not name the leader lease", risk)
	}
}
