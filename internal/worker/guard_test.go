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
