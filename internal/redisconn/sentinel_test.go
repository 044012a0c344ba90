package redisconn_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// TestSentinelURLReachesProtectedMasterInItsDatabase: through real
// sentinels that ask for their own password, both handles reach a master
// with requirepass, in the database the URL names, and nothing lands in
// database 0.
func TestSentinelURLReachesProtectedMasterInItsDatabase(t *testing.T) {
	t.Parallel()
	const masterPW, sentinelPW = "master-pw-5d1c", "sentinel-pw-9e07"
	g := redistest.StartSentinel(t, redistest.SentinelOptions{Password: masterPW, SentinelPassword: sentinelPW})
	c, err := redisconn.Open("redis-sentinel://:" + masterPW + "@" + strings.Join(g.Addrs(), ",") +
		"/3?master=" + redistest.SentinelMaster + "&sentinel_password=" + sentinelPW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Client.Close() })
	if strings.Contains(c.Target, masterPW) || strings.Contains(c.Target, sentinelPW) || !strings.Contains(c.Target, "/3?") {
		t.Errorf("target %q: want database 3 and no password", c.Target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Wait(ctx, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Set(ctx, "certmail:test:own", "v", 0).Err(); err != nil {
		t.Fatalf("go-redis client: %v", err)
	}
	client := asynq.NewClient(c.Opt)
	t.Cleanup(func() { client.Close() })
	info, err := client.EnqueueContext(ctx, asynq.NewTask("test-task", nil), asynq.Queue("q"))
	if err != nil {
		t.Fatalf("asynq client: %v", err)
	}

	db3 := redis.NewClient(&redis.Options{Addr: g.Master.Addr(), Password: masterPW, DB: 3})
	t.Cleanup(func() { db3.Close() })
	if v, err := db3.Get(ctx, "certmail:test:own").Result(); err != nil || v != "v" {
		t.Errorf("go-redis client's key in database 3 of the master: %q, %v", v, err)
	}
	if n, err := db3.Exists(ctx, "asynq:{q}:t:"+info.ID).Result(); err != nil || n != 1 {
		t.Errorf("asynq's task in database 3 of the master: %d, %v", n, err)
	}
	if n, err := g.Master.Client().DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("database 0 of the master holds %d keys (%v), want none", n, err)
	}
}
