package redisconn_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// An outage of the Conn's Redis gets one WARN line at its first failed
// command and one INFO line at the first command answered after it, with
// how long it lasted and how many commands failed; answers, error replies
// included, write nothing, and nothing is written once the watch stops.
func TestWatchOutages(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	conn := fixedPoolConn(t, srv)
	core, logs := observer.New(zapcore.DebugLevel)
	stop := conn.WatchOutages(zap.New(core))
	ctx := context.Background()
	rdb := conn.Client

	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Get(ctx, "certmail:none").Err(); err != redis.Nil {
		t.Fatalf("GET of a missing key: %v", err)
	}
	if err := rdb.Do(ctx, "NOSUCHCOMMAND").Err(); err == nil {
		t.Fatal("an unknown command was answered without an error")
	}
	if n := logs.Len(); n != 0 {
		t.Fatalf("%d lines while Redis answers: %v", n, logs.All())
	}

	srv.Kill()
	const failures = 3
	for range failures {
		if err := rdb.Ping(ctx).Err(); err == nil {
			t.Fatal("PING answered by a killed server")
		}
	}
	warns := logs.FilterMessage("Redis is not answering; certmail keeps trying").All()
	if len(warns) != 1 || warns[0].Level != zapcore.WarnLevel || logs.Len() != 1 {
		t.Fatalf("after %d failed commands, want one WARN line, got %v", failures, logs.All())
	}
	if f := warns[0].ContextMap(); f["redis"] != conn.Target || f["error"] == nil {
		t.Errorf("WARN line's fields: %v", f)
	}

	srv.Relaunch()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	back := logs.FilterMessage("Redis is answering again").All()
	if len(back) != 1 || back[0].Level != zapcore.InfoLevel || logs.Len() != 2 {
		t.Fatalf("after Redis came back, want one INFO line, got %v", logs.All())
	}
	f := back[0].ContextMap()
	if f["failed_commands"] != int64(failures) || f["redis"] != conn.Target {
		t.Errorf("INFO line's fields: %v, want failed_commands %d", f, failures)
	}
	if d, ok := f["down_for"].(time.Duration); !ok || d <= 0 {
		t.Errorf("down_for: %v", f["down_for"])
	}

	stop()
	srv.Kill()
	_ = rdb.Ping(ctx).Err()
	srv.Relaunch()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if n := logs.Len(); n != 2 {
		t.Errorf("lines after the watch stopped: %v", logs.All()[2:])
	}
}

// fixedPoolConn is the Conn Open gives for srv, its client's pool of a
// size that does not depend on GOMAXPROCS: go-redis refuses to dial once
// PoolSize dials have failed (its default, 10 per GOMAXPROCS) until a probe,
// once a second, reaches Redis again, and answers each command with the last
// dial error meanwhile. TestWatchOutages' failed commands make 16 failed
// dials (4 tries each), which with one CPU would fail the first commands
// after a relaunch.
func fixedPoolConn(t *testing.T, srv *redistest.Server) *redisconn.Conn {
	t.Helper()
	conn, err := redisconn.Open(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.Client.Close()
	conn = &redisconn.Conn{Opt: conn.Opt, Target: conn.Target,
		Client: redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64, ContextTimeoutEnabled: true})}
	t.Cleanup(func() { _ = conn.Client.Close() })
	return conn
}
