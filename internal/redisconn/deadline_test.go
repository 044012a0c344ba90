package redisconn_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// A deadline the caller sets ends a command on a Redis that takes it in and
// never answers (a partition, a paused VM, a failover's dark old master),
// rather than the client's 3 s read timeout and its retries: /readyz's and
// the metrics' short deadlines hold. Both the connection in the pool and a
// new one (dial, then the handshake no one answers) are cut there.
func TestDeadlinesEndCommandsOnStalledRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	conn, err := redisconn.Open(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Client.Close() })
	if err := conn.Client.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	const deadline = 300 * time.Millisecond
	for _, name := range []string{"pooled connection", "new connection"} {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		err := conn.Client.Ping(ctx).Err()
		cancel()
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s: PING answered by a paused server", name)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v, want a deadline error", name, err)
		}
		if took > deadline+time.Second {
			t.Errorf("%s: PING with a %v deadline took %v", name, deadline, took)
		}
	}
}
