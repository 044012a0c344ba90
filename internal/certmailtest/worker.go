package certmailtest

import (
	"context"
	"net"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/worker"
)

// Worker is a worker a test started.
type Worker struct {
	// Admin is the address of its /metrics, nil without an admin server.
	Admin net.Addr
	stop  func()
}

// StartWorker runs a worker configured by cfg on the Redis at redisURL
// until Stop is called or the test ends: cfg.Redis, unless set (the caller
// then owns it), is a connection of its own, closed once the worker
// stopped, and cfg.Logger is a no-op logger unless set. The test fails when
// the worker cannot start or its Run ends with an error.
func StartWorker(tb testing.TB, redisURL string, cfg worker.Config) *Worker {
	tb.Helper()
	if cfg.Redis == nil {
		cfg.Redis = Conn(tb, redisURL) // closed after Stop: cleanups run last first
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	w, err := worker.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan net.Addr, 1)
	go func() { done <- w.Run(ctx, func(a net.Addr) { started <- a }) }()
	tw := &Worker{}
	select {
	case tw.Admin = <-started:
	case err := <-done:
		cancel()
		tb.Fatalf("worker stopped at start: %v", err)
	}
	var once sync.Once
	tw.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("worker Run: %v", err)
			}
		})
	}
	tb.Cleanup(tw.stop)
	return tw
}

// Stop stops the worker gracefully and waits for it; it may be called more
// than once.
func (w *Worker) Stop() { w.stop() }
