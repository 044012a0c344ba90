package redistest_test

import (
	"context"
	"fmt"
	"strconv"
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
	ctx := context.Background()
	// A mark of this server: once it is gone, its free port may be given
	// to a server another test starts, which the client would then reach.
	if err := c.Set(ctx, "killed-server", srv.Addr(), 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if got, err := c.Get(ctx, "killed-server").Result(); err == nil && got == srv.Addr() {
		t.Fatal("the server answers after Kill")
	}
}

// A paused server takes connections and commands in and answers none until
// Continue; then it answers again.
func TestPauseWithholdsAnswers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	if err := c.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "i/o timeout") {
		t.Fatalf("ping while paused: %v, want an i/o timeout", err)
	}
	srv.Continue()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after Continue: %v", err)
	}
}

// A disconnected proxy's clients cannot reach the server, on the
// connections they had or on new ones, while others still use it; after
// Resume they reach it again.
func TestProxyDisconnect(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	proxy := srv.Proxy()
	c := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	proxy.Disconnect()
	for i := range 3 { // the pooled connection, then new ones
		if err := c.Set(ctx, "k", "cut off", 0).Err(); err == nil {
			t.Fatalf("write %d through a disconnected proxy succeeded", i)
		}
	}
	if got, err := srv.Client().Get(ctx, "k").Result(); err != nil || got != "before" {
		t.Fatalf("server holds %q, %v; want the value written before the cut", got, err)
	}
	proxy.Resume()
	if err := c.Set(ctx, "k", "after", 0).Err(); err != nil {
		t.Fatalf("write after Resume: %v", err)
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

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	g := redistest.StartSentinel(t)
	ctx := context.Background()
	if m, err := g.CurrentMaster(ctx); err != nil || m != g.Master.Addr() {
		t.Fatalf("master %q (%v), want %s", m, err, g.Master.Addr())
	}
	g.Master.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := g.CurrentMaster(ctx)
		if err == nil && m == g.Replica.Addr() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failover to the replica within 30s: master %q, %v", m, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(g.URL(), "redis-sentinel://127.0.0.1:") || !strings.HasSuffix(g.URL(), "?master=mymaster") {
		t.Errorf("URL %q", g.URL())
	}
}

// A group of two replicas knows both at start; after an orderly failover
// (SENTINEL FAILOVER) one of them is the master, and the other replica
// and the old master are its replicas, in sync.
func TestSentinelTwoReplicasFailover(t *testing.T) {
	t.Parallel()
	g := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 2})
	if len(g.Replicas) != 2 || g.Replica != g.Replicas[0] {
		t.Fatalf("%d replicas, want 2, the first of them Replica", len(g.Replicas))
	}
	ctx := context.Background()
	for _, r := range g.Replicas {
		if role := replicationField(r.Client(), "role"); role != "slave" {
			t.Fatalf("%s is a %s, want a replica", r.Addr(), role)
		}
	}
	var promoted *redistest.Server
	waitUntil(t, 30*time.Second, func() error { return g.Failover(ctx) })
	waitUntil(t, 30*time.Second, func() error {
		m, err := g.CurrentMaster(ctx)
		if err != nil {
			return err
		}
		if promoted = g.Member(m); promoted == nil || promoted == g.Master {
			return fmt.Errorf("the master is %s, not one of the replicas", m)
		}
		return nil
	})
	for _, s := range append([]*redistest.Server{g.Master}, g.Replicas...) {
		if s == promoted {
			continue
		}
		c := s.Client()
		waitUntil(t, 60*time.Second, func() error {
			port, link := replicationField(c, "master_port"), replicationField(c, "master_link_status")
			if port != strconv.Itoa(promoted.Port()) || link != "up" {
				return fmt.Errorf("%s replicates from port %q (link %q), not from %s", s.Addr(), port, link, promoted.Addr())
			}
			return nil
		})
	}
}

// replicationField is field's value in c's INFO replication, "" when it
// has none or does not answer.
func replicationField(c *redis.Client, field string) string {
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	return ""
}

// waitUntil calls cond until it returns nil, failing the test with its
// last error when within passes first.
func waitUntil(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Server.Client honours the deadline of a call's context, as certmail's
// own clients do (redisconn.Open sets go-redis's ContextTimeoutEnabled):
// a command on a paused server ends at the caller's deadline, not at the
// 3 s read timeout and its retries, so that a test of a deadline sees
// what production code would.
func TestClientHonoursDeadlines(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if !c.Options().ContextTimeoutEnabled {
		t.Error("Client: ContextTimeoutEnabled is off")
	}
	srv.Pause()
	t.Cleanup(srv.Continue)
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx).Err()
	if took := time.Since(start); err == nil || took > deadline+time.Second {
		t.Errorf("PING of a paused server with a %v deadline: %v after %v, want an error by the deadline", deadline, err, took)
	}
}
