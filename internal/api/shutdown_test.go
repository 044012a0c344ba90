package api_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// stalledOps is a Service on srv whose commands, while srv is paused, keep
// trying until their context ends: each try times out after 200 ms (as one
// does after go-redis's 3 s) and is tried again, where go-redis would give
// up after a few. Its clean-up of a key takes 300 ms at most. sent counts
// the commands it began.
func stalledOps(t *testing.T, srv *redistest.Server) (svc *ops.Service, sent *atomic.Int64) {
	t.Helper()
	const timeout = 200 * time.Millisecond
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = client.Close() })
	sent = &atomic.Int64{}
	client.AddHook(retryHook{sent})
	conn := &redisconn.Conn{Opt: asynq.RedisClientOpt{Addr: srv.Addr(), DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout},
		Client: client, Target: srv.URL()}
	svc, err := ops.New(ops.Config{Redis: conn, CleanupTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc, sent
}

// retryHook counts the commands a go-redis client begins, and tries each
// again after a timeout until its context ends.
type retryHook struct{ n *atomic.Int64 }

func (h retryHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h retryHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		for {
			err := next(ctx, cmd)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || ctx.Err() != nil {
				return err
			}
		}
	}
}

func (h retryHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Stopped while Redis stalls, the API cancels the requests still waiting on
// it StopReserve before its shutdown timeout: each answers 503 with
// Retry-After, and Run returns nil, where it used to fail at the timeout
// ("context deadline exceeded") and close their connections without an
// answer.
func TestShutdownWhileRedisStallsAnswersEveryRequest(t *testing.T) {
	t.Parallel()
	const shutdownTimeout, stopReserve, requests = 5 * time.Second, 2500 * time.Millisecond, 3
	b := setup(t)
	svc, sent := stalledOps(t, b.redis)
	log, logs := certmailtest.NewLogger(t)
	s, err := api.New(api.Config{Ops: svc, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}},
		Addr: "127.0.0.1:0", Logger: log, ShutdownTimeout: shutdownTimeout, StopReserve: stopReserve})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(a net.Addr) { addrc <- a }) }()
	addr := (<-addrc).String()

	b.redis.Pause()
	var wg sync.WaitGroup
	answers := make([]response, requests)
	errs := make([]error, requests)
	for i := range requests {
		wg.Go(func() { answers[i], errs[i] = postTask(b.http, addr, fmt.Sprintf("stop-%d", i)) })
	}
	waitFor(t, 10*time.Second, func() bool { return sent.Load() >= requests }, func() string {
		return fmt.Sprintf("%d commands sent, want a claim of each of %d requests", sent.Load(), requests)
	})
	stopped := time.Now()
	stop()
	var runErr error
	select {
	case runErr = <-done:
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return after its shutdown timeout")
	}
	took := time.Since(stopped)
	wg.Wait()
	t.Logf("Run returned %v after its context ended: %v", took, runErr)
	if runErr != nil {
		t.Errorf("Run: %v; want nil, every request answered", runErr)
	}
	if took > shutdownTimeout+500*time.Millisecond {
		t.Errorf("Run returned %v after its context ended; want within the shutdown timeout %v", took, shutdownTimeout)
	}
	for i := range requests {
		if errs[i] != nil {
			t.Errorf("request %d got no answer: %v", i, errs[i])
			continue
		}
		p := mustProblem(t, answers[i], http.StatusServiceUnavailable)
		if answers[i].header.Get("Retry-After") == "" || !strings.Contains(p.Detail, "shutting down") {
			t.Errorf("request %d: %s, Retry-After %q; want 503 saying the API is shutting down, with Retry-After",
				i, answers[i].body, answers[i].header.Get("Retry-After"))
		}
	}
	warned := logs.Lines("warn", "requests still running near the shutdown timeout are stopped: they answer 503")
	if len(warned) != 1 || warned[0]["running"] != int64(requests) {
		t.Errorf("WARN lines %v; want one with running %d:\n%s", warned, requests, logs.Text())
	}
}
