package worker

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"

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
	case <-time.After(guardPatience + 5*time.Second):
		t.Fatal("writeGuard still running")
	}
	if n, err := srv.Client().Exists(context.Background(), d.dedupKey).Result(); err != nil || n != 1 {
		t.Fatalf("guard not written after the restart: %d, %v", n, err)
	}
	if logs.FilterMessage("duplicate guard written after Redis came back").Len() != 1 {
		t.Errorf("logs: %v", logs.All())
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
