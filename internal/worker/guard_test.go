package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
)

// TestWriteGuardOutlivesRedisRestart: the duplicate guard written while
// Redis restarts lands once Redis is back, so a redelivery does not email
// again.
func TestWriteGuardOutlivesRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	core, logs := zapobserver.New(zapcore.InfoLevel)
	p := &processor{rdb: rdb, log: zap.New(core), retention: time.Hour}
	d := &delivery{taskID: "t-1", dedupKey: deliveredKey("t-1")}

	srv.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.writeGuard(context.Background(), d)
	}()
	// Redis stays down longer than go-redis retries a dial by itself.
	time.Sleep(1500 * time.Millisecond)
	srv.Relaunch()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writeGuard still running")
	}
	if n, err := srv.Client().Exists(context.Background(), d.dedupKey).Result(); err != nil || n != 1 {
		t.Fatalf("guard not written after the restart: %d, %v", n, err)
	}
	if logs.FilterMessage("duplicate guard written after Redis came back").Len() != 1 {
		t.Errorf("logs: %v", logs.All())
	}
}

// oldGuardPatience is how long earlier versions tried to write a duplicate
// guard before they gave up, and a redelivery emailed again.
const oldGuardPatience = 30 * time.Second

// guardTestProcessor is a processor with one account on rdb, whose
// deliveries the test drives with deliverOnce and a call of its own.
func guardTestProcessor(rdb redis.UniversalClient, log *zap.Logger) *processor {
	acct := &accountRuntime{name: "default", gate: newAuthGate(rdb, "default", time.Minute),
		limiter: ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "default"})}
	return &processor{rdb: rdb, log: log, retention: time.Hour, accounts: map[string]*accountRuntime{"default": acct}}
}

// TestGuardWrittenAfterALongRedisOutage: Redis goes away right after
// DigiCert's 2xx and stays away longer than a Sentinel failover's default
// 30 s; the worker keeps trying to write the duplicate guard (one WARN
// line), writes it once Redis is back (one INFO line saying how long it
// took), and a redelivery of the task does not call DigiCert again.
func TestGuardWrittenAfterALongRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	core, logs := zapobserver.New(zapcore.DebugLevel)
	p := guardTestProcessor(rdb, zap.New(core))
	var calls atomic.Int32
	call := func(context.Context) (digicert.Result, error) {
		if calls.Add(1) == 1 {
			srv.Stop() // DigiCert acted; Redis goes before the guard is written
		}
		return digicert.Result{Status: 204, Attempts: 1}, nil
	}
	deliver := func() error {
		d := &delivery{taskID: "t-long", start: time.Now(), account: p.accounts["default"], report: &report{}}
		return p.deliverOnce(context.Background(), d, call)
	}

	done := make(chan error, 1)
	go func() { done <- deliver() }()
	waitUntil(t, 10*time.Second, func() bool { return calls.Load() == 1 }, func() string { return "DigiCert not called" })
	outage := time.Now()
	// Redis stays away longer than earlier versions tried: nothing to wait
	// on but the clock.
	select {
	case err := <-done:
		t.Fatalf("the delivery ended while Redis was away (%v): its guard is not written; logs: %v", err, logs.All())
	case <-time.After(oldGuardPatience + 2*time.Second):
	}
	srv.Relaunch()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("delivery: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the guard is still not written 10 s after Redis came back")
	}
	if n, err := srv.Client().Exists(context.Background(), deliveredKey("t-long")).Result(); err != nil || n != 1 {
		t.Fatalf("guard not written after the outage: %d, %v", n, err)
	}
	written := logs.FilterMessage("duplicate guard written after Redis came back").All()
	if len(written) != 1 {
		t.Fatalf("INFO lines after the outage: %v", logs.All())
	}
	if took, _ := written[0].ContextMap()["took"].(time.Duration); took < time.Since(outage)-10*time.Second || took > time.Since(outage)+10*time.Second {
		t.Errorf("took %v, want about the outage (%v)", took, time.Since(outage))
	}
	if logs.FilterMessage("could not write the duplicate guard; trying again until Redis answers").Len() != 1 {
		t.Errorf("no WARN line saying the guard is tried again: %v", logs.All())
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len() + logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 1 {
		t.Errorf("%d WARN/ERROR lines for one outage, want the one WARN: %v", n, logs.All())
	}

	// The task comes back (its lease expired while Redis was away).
	if err := deliver(); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("DigiCert called %d times, want once", n)
	}
}

// TestStoppingWorkerAbandonsTheGuard: a worker that stops while Redis is
// still away gives the guard's write until its shutdown deadline, then
// gives it up with one ERROR line, and does not wait for it any longer.
func TestStoppingWorkerAbandonsTheGuard(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	core, logs := zapobserver.New(zapcore.DebugLevel)
	p := &processor{rdb: rdb, log: zap.New(core), retention: time.Hour}
	srv.Kill()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.writeGuard(context.Background(), &delivery{taskID: "t-stop", dedupKey: deliveredKey("t-stop")})
	}()
	waitUntil(t, 10*time.Second, func() bool { return logs.FilterLevelExact(zapcore.WarnLevel).Len() == 1 },
		func() string { return fmt.Sprint(logs.All()) })

	start := time.Now()
	p.pending.wait(start.Add(300*time.Millisecond), 5*time.Second)
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("wait took %v, want the 300 ms left of the shutdown timeout", took)
	}
	// wait returns once the write's registration ends, a few statements
	// before writeGuard returns: that last step gets a bound that no stall
	// of a loaded machine reaches, and a write still retrying hits it.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writeGuard still running 5 s after the worker gave up on it")
	}
	if n := logs.FilterMessage("could not write the duplicate guard before the worker stopped: a redelivery of this task would email again").Len(); n != 1 {
		t.Errorf("%d ERROR lines, want 1: %v", n, logs.All())
	}
	// A write that fails after the worker stopped is not tried again.
	start = time.Now()
	p.writeGuard(context.Background(), &delivery{taskID: "t-late", dedupKey: deliveredKey("t-late")})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a write after the stop took %v", took)
	}
}

// TestGateVerdicts: one round trip answers whether the task was already
// delivered (first, even while the account is paused) and whether the
// account's auth pause lets the call through, probe or wait.
func TestGateVerdicts(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client()
	ctx := context.Background()
	g := newAuthGate(rdb, "acct", time.Minute)
	guard := deliveredKey("t-gate")

	expect := func(step string, guardKey string, want gateVerdict, wantWait bool) {
		t.Helper()
		v, wait, err := g.check(ctx, guardKey, nil)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if v != want || (wait > 0) != wantWait {
			t.Fatalf("%s: verdict %d wait %v, want verdict %d (wait: %t)", step, v, wait, want, wantWait)
		}
	}
	expect("clear account, no guard", guard, gateGo, false)
	expect("clear account, no guard key given", "", gateGo, false)

	if _, err := g.pause(ctx); err != nil {
		t.Fatal(err)
	}
	expect("paused", guard, gateWait, true)

	if err := rdb.Set(ctx, guard, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	expect("paused, guard set", guard, gateDone, false)
	expect("paused, guard not asked", "", gateWait, true)

	// The pause expires while the key is still marked broken: one delivery probes, the others wait.
	if err := rdb.Del(ctx, pausedKey("acct")).Err(); err != nil {
		t.Fatal(err)
	}
	expect("probe due", "", gateProbe, false)
	expect("another delivery while probing", "", gateWait, true)

	if _, err := g.resume(ctx); err != nil {
		t.Fatal(err)
	}
	expect("resumed", "", gateGo, false)
	expect("resumed, guard set", guard, gateDone, false)
}

// A probe whose delivery never reports back (its call got a 5xx, a 429 or
// no answer, or its worker died: nothing calls pause or resume) holds the
// account for the probe interval only. The probe key expires with it, the
// other deliveries wait no longer than what it has left, and then another
// delivery probes: the account is not paused for good.
func TestProbeThatNeverReportsBackHoldsTheAccountForTheIntervalOnly(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client()
	ctx := context.Background()
	const interval = 200 * time.Millisecond
	g := newAuthGate(rdb, "acct", interval)
	if _, err := g.pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, pausedKey("acct")).Err(); err != nil { // the pause is over, the key still broken
		t.Fatal(err)
	}
	if v, _, err := g.check(ctx, "", nil); err != nil || v != gateProbe {
		t.Fatalf("probe due: verdict %d, %v; want a probe", v, err)
	}
	if ttl := rdb.PTTL(ctx, probeKey("acct")).Val(); ttl <= 0 || ttl > interval {
		t.Errorf("probe key lifetime %v, want at most the probe interval, %v", ttl, interval)
	}
	if v, wait, err := g.check(ctx, "", nil); err != nil || v != gateWait || wait <= 0 || wait > interval {
		t.Errorf("another delivery while probing: verdict %d wait %v, %v; want a wait of at most the probe interval", v, wait, err)
	}
	waitUntil(t, 10*time.Second, func() bool {
		v, _, err := g.check(ctx, "", nil)
		return err == nil && v == gateProbe
	}, func() string {
		return fmt.Sprintf("no other probe after the first's interval; probe key lifetime %v", rdb.PTTL(ctx, probeKey("acct")).Val())
	})
}

// waitUntil polls cond until it holds, failing the test after within.
func waitUntil(t *testing.T, within time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
