package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
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
	addr, logs, stop, done := runAPI(t, b, svc, shutdownTimeout, stopReserve)
	defer stop()

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

// An enqueue without an Idempotency-Key whose script reached a stalled
// Redis when the API's shutdown stops it answers 503 with Retry-After and
// the task's id, saying that the task may be stored and to look it up
// before sending the request again: it is stored once Redis answers, so a
// client told only to try again would enqueue it twice.
func TestShutdownStopsAKeylessEnqueueNamingItsTask(t *testing.T) {
	t.Parallel()
	// The script's read gives up after go-redis's 5 s read timeout, not at
	// the cancel (1 s after the stop): the answer comes within the timeout.
	const shutdownTimeout, stopReserve = 8 * time.Second, 7 * time.Second
	b := setup(t)
	proxy := b.redis.Proxy() // to tell when the enqueue's script is sent; Redis itself stalls
	conn, err := redisconn.Open(strings.Replace(b.redis.URL(), b.redis.Addr(), proxy.Addr(), 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Client.Close() })
	svc, err := ops.New(ops.Config{Redis: conn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	addr, logs, stop, done := runAPI(t, b, svc, shutdownTimeout, stopReserve)
	defer stop()

	// A first enqueue registers the queue and loads the script: the next
	// sends only the script (EVALSHA).
	var primed api.TaskRef
	res, err := postKeyless(b.http, addr)
	if err != nil {
		t.Fatalf("first POST: %v", err)
	}
	mustJSON(t, res, http.StatusAccepted, &primed)
	sent := make(chan struct{})
	proxy.BeforeOnce("evalsha", func() { close(sent) })
	b.redis.Pause()
	answered := make(chan response, 1)
	go func() {
		res, err := postKeyless(b.http, addr)
		if err != nil {
			t.Errorf("POST: %v", err)
		}
		answered <- res
	}()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the enqueue's script was not sent within 10 s")
	}
	stopped := time.Now()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v; want nil, the request answered", err)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return after its shutdown timeout")
	}
	res = <-answered
	t.Logf("answer %v after the stop: %d Retry-After %q %s", time.Since(stopped), res.status, res.header.Get("Retry-After"), res.body)
	p := mustProblem(t, res, http.StatusServiceUnavailable)
	if got := res.header.Get("Retry-After"); got != strconv.Itoa(api.RetryAfterUnavailable) {
		t.Errorf("Retry-After %q, want %d", got, api.RetryAfterUnavailable)
	}
	if p.TaskID == "" || !strings.Contains(p.Detail, "may have stored the task under task_id") || !strings.Contains(p.Detail, "look it up") {
		t.Fatalf("answer %s; want the task's id and a detail saying it may be stored and to look it up before sending again", res.body)
	}
	if warned := logs.Lines("warn", "requests still running near the shutdown timeout are stopped: they answer 503"); len(warned) != 1 {
		t.Errorf("WARN lines %v; want one: the request was stopped by the shutdown:\n%s", warned, logs.Text())
	}
	b.redis.Continue()
	waitFor(t, 10*time.Second, func() bool {
		info, err := b.inspector.GetTaskInfo(primed.Queue, p.TaskID)
		return err == nil && info.ID == p.TaskID
	}, func() string {
		return fmt.Sprintf("task %s not stored in queue %q once Redis answered", p.TaskID, primed.Queue)
	})
}

// postKeyless sends an enqueue without an Idempotency-Key to the API at addr
// and returns its answer read in full.
func postKeyless(client *http.Client, addr string) (response, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/tasks/resend-dcv", strings.NewReader(`{"order_id":7}`))
	if err != nil {
		return response{}, err
	}
	req.Header = authJSON()
	res, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: body}, err
}

// runAPI runs an API over svc with the given shutdown timeout and stop
// reserve, and returns its address, its log, the stop that starts its
// shutdown, and what Run returns once it has stopped.
func runAPI(t *testing.T, b *bundle, svc *ops.Service, shutdownTimeout, stopReserve time.Duration) (addr string, logs *certmailtest.Logs, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	log, logs := certmailtest.NewLogger(t)
	s, err := api.New(api.Config{Ops: svc, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}},
		Addr: "127.0.0.1:0", Logger: log, ShutdownTimeout: shutdownTimeout, StopReserve: stopReserve})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	addrc := make(chan net.Addr, 1)
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx, func(a net.Addr) { addrc <- a }) }()
	return (<-addrc).String(), logs, stop, ran
}
