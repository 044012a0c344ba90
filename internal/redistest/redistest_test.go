package redistest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/redistest"
)

func TestRestartKeepsAppendOnlyData(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	ctx := context.Background()
	c := srv.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// appendfsync everysec: make the write durable before the SIGKILL.
	if err := c.Do(ctx, "BGREWRITEAOF").Err(); err != nil {
		t.Fatal(err)
	}
	waitRewrite(t, c)
	srv.Restart()
	got, err := srv.Client().Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("after restart: %q, %v; want v", got, err)
	}
}

func TestKillStopsServer(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client()
	srv.Kill()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping after Kill succeeded")
	}
}

func waitRewrite(t *testing.T, c interface {
	Info(ctx context.Context, section ...string) *redis.StringCmd
}) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		info, err := c.Info(context.Background(), "persistence").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("AOF rewrite did not finish")
}
