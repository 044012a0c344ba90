package worker

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/redistest"
)

// WAIT counts the replicas that acknowledged its connection's last write,
// so the round trip before a call must write whatever the limiter does
// (here no limiter at all): with replicas asked, a verdict that lets the
// call go ahead increments the wait mark; one that does not (a paused
// account), or a worker that asks no replica, leaves it.
func TestBeforeScriptWritesWhenReplicasAsked(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client()
	ctx := context.Background()
	mark := func() int64 {
		n, err := rdb.Get(ctx, waitMarkKey).Int64()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return n
	}
	g := newAuthGate(rdb, "default", time.Minute)
	if v, _, err := g.check(ctx, deliveredKey("t-1"), nil); err != nil || v != gateGo || mark() != 0 {
		t.Fatalf("no replica asked: verdict %v, %v, wait mark %d; want go and no write", v, err, mark())
	}
	g.replicated = func(ctx context.Context, s *script, cmd []any) (*redis.Cmd, error) { return s.run(ctx, rdb, cmd), nil }
	if v, _, err := g.check(ctx, deliveredKey("t-1"), nil); err != nil || v != gateGo || mark() != 1 {
		t.Fatalf("replicas asked: verdict %v, %v, wait mark %d; want go and the mark written", v, err, mark())
	}
	if _, err := g.pause(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _, err := g.check(ctx, deliveredKey("t-1"), nil); err != nil || v != gateWait || mark() != 1 {
		t.Fatalf("paused account: verdict %v, %v, wait mark %d; want wait and no write", v, err, mark())
	}
}
