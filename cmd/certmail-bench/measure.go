package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

const benchKey = "bench-key-7f1c2d"

// flush empties Redis between runs.
func flush(ctx context.Context, r *redisServer) error {
	c := redis.NewClient(&redis.Options{Addr: r.addr})
	defer c.Close()
	return c.FlushAll(ctx).Err()
}

// enqueueResends puts n resend-dcv tasks (distinct orders) in the default
// queue, built by the tasks package, with concurrent pipelines.
func enqueueResends(ctx context.Context, r *redisServer, n int, queue string) error {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: r.addr, PoolSize: 20})
	defer client.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				t, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 100000 + i}, asynq.Queue(queue))
				if err == nil {
					_, err = client.EnqueueContext(ctx, t)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// drain waits until queue has n completed tasks and returns the time taken
// since start.
func drain(ctx context.Context, r *redisServer, queue string, n int, start time.Time, limit time.Duration) (time.Duration, error) {
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: r.addr})
	defer insp.Close()
	deadline := start.Add(limit)
	for {
		info, err := insp.GetQueueInfo(queue)
		if err == nil && info.Completed >= n {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			done := 0
			if info != nil {
				done = info.Completed
			}
			return 0, fmt.Errorf("%d of %d tasks completed within %v", done, n, limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// throughput alternates no-op and certmail worker runs and reports medians.
func throughput(ctx context.Context, r *redisServer, o options) ([]figure, error) {
	fake := digicerttest.New(digicerttest.Config{APIKeys: []string{benchKey}, AnyIDExists: true, RecordLimit: 1})
	defer fake.Close()
	addr, stopFake, err := serve(fake)
	if err != nil {
		return nil, err
	}
	defer stopFake()
	baseURL := "http://" + addr + "/services/v2"

	var noop, work []float64
	for i := range o.rounds {
		for _, kind := range []string{"noop", "worker"} {
			if err := flush(ctx, r); err != nil {
				return nil, err
			}
			if err := enqueueResends(ctx, r, o.tasks, "default"); err != nil {
				return nil, err
			}
			var took time.Duration
			if kind == "noop" {
				took, err = runNoop(ctx, r, o.tasks)
			} else {
				took, err = runWorker(ctx, r, baseURL, o.tasks)
			}
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", kind, i+1, err)
			}
			tps := float64(o.tasks) / took.Seconds()
			fmt.Printf("  round %d %-6s %6d tasks in %-8v %8.0f tasks/s\n", i+1, kind, o.tasks, took.Round(time.Millisecond), tps)
			if kind == "noop" {
				noop = append(noop, tps)
			} else {
				work = append(work, tps)
			}
		}
	}
	n, w := median(noop), median(work)
	return []figure{
		{name: "worker_tps", value: round(w, 0)},
		{name: "noop_tps", value: round(n, 0)},
		{name: "worker_vs_noop_ratio", value: round(w/n, 3), ok: func(v float64) bool { return v >= 0.8 }, want: ">= 0.8"},
	}, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[len(s)/2]
}

const benchConcurrency = 20

func runNoop(ctx context.Context, r *redisServer, n int) (time.Duration, error) {
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: r.addr}, asynq.Config{
		Concurrency: benchConcurrency, Queues: map[string]int{"default": 1}, LogLevel: asynq.ErrorLevel,
		TaskCheckInterval: 10 * time.Millisecond,
	})
	start := time.Now()
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		return 0, err
	}
	defer srv.Shutdown()
	return drain(ctx, r, "default", n, start, 5*time.Minute)
}

func runWorker(ctx context.Context, r *redisServer, baseURL string, n int) (time.Duration, error) {
	conn, err := redisconn.Open(r.url())
	if err != nil {
		return 0, err
	}
	defer conn.Client.Close()
	w, err := worker.New(worker.Config{
		Redis:             conn,
		Accounts:          account.Set{"default": {Name: "default", BaseURL: baseURL, APIKey: account.Secret(benchKey)}},
		Concurrency:       benchConcurrency,
		Queues:            map[string]int{"default": 1},
		TaskCheckInterval: 10 * time.Millisecond,
		Logger:            zap.NewNop(),
	})
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- w.Run(wctx, nil) }()
	took, err := drain(ctx, r, "default", n, start, 5*time.Minute)
	cancel()
	return took, errors.Join(err, <-done)
}

// rateLimitShare runs three worker processes on scaled-down windows.
func rateLimitShare(ctx context.Context, r *redisServer, o options) ([]figure, error) {
	const limits = "20/1s,100/6s"
	windows := []digicerttest.Window{{Limit: 20, Period: time.Second}, {Limit: 100, Period: 6 * time.Second}}
	sustained := 100.0 / 6 // the tighter of 20/s and 100/6s
	if err := flush(ctx, r); err != nil {
		return nil, err
	}
	backlog := int(sustained*float64(o.rateSeconds)) * 2
	if err := enqueueResends(ctx, r, backlog, "default"); err != nil {
		return nil, err
	}
	fake := digicerttest.New(digicerttest.Config{APIKeys: []string{benchKey}, AnyIDExists: true, RateLimits: windows})
	defer fake.Close()
	addr, stopFake, err := serve(fake)
	if err != nil {
		return nil, err
	}
	defer stopFake()
	env := []string{"REDIS_URL=" + r.url(), "DIGICERT_API_KEY=" + benchKey, "DIGICERT_BASE_URL=http://" + addr + "/services/v2",
		"DIGICERT_RATE_LIMITS=" + limits, "CERTMAIL_CONCURRENCY=20"}
	var procs []*process
	defer func() {
		for _, p := range procs {
			_ = p.stop()
		}
	}()
	for range 3 {
		p, err := startCertmail(ctx, o.binary, env, "worker")
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	// Wait for the first call, then for the measurement span to pass.
	deadline := time.Now().Add(30 * time.Second)
	for fake.RequestCount() == 0 {
		if time.Now().After(deadline) {
			return nil, errors.New("no DigiCert call within 30s of starting the workers")
		}
		time.Sleep(20 * time.Millisecond)
	}
	reqs := fake.Requests()
	first := reqs[0].At
	span := time.Duration(o.rateSeconds) * time.Second
	time.Sleep(time.Until(first.Add(span + time.Second)))
	calls := 0
	for _, q := range fake.Requests() {
		if !q.At.Before(first) && q.At.Before(first.Add(span)) {
			calls++
		}
	}
	share := float64(calls) / (sustained * span.Seconds())
	n429 := fake.StatusCount(429)
	fmt.Printf("  rate limit %s, 3 worker processes: %d calls in %v from the first (allowed %.0f), %d answered 429\n",
		limits, calls, span, sustained*span.Seconds(), n429)
	return []figure{
		{name: "ratelimit_share", value: round(share, 3), ok: func(v float64) bool { return v >= 0.95 }, want: ">= 0.95"},
		{name: "ratelimit_429", value: float64(n429), ok: func(v float64) bool { return v == 0 }, want: "0"},
	}, nil
}

// workerRSS runs one worker process at concurrency 50 under load.
func workerRSS(ctx context.Context, r *redisServer, o options) ([]figure, error) {
	if err := flush(ctx, r); err != nil {
		return nil, err
	}
	if err := enqueueResends(ctx, r, o.rssTasks, "default"); err != nil {
		return nil, err
	}
	fake := digicerttest.New(digicerttest.Config{APIKeys: []string{benchKey}, AnyIDExists: true, RecordLimit: 1})
	fake.SetFaults(digicerttest.Faults{Latency: 50 * time.Millisecond})
	defer fake.Close()
	addr, stopFake, err := serve(fake)
	if err != nil {
		return nil, err
	}
	defer stopFake()
	p, err := startCertmail(ctx, o.binary, []string{"REDIS_URL=" + r.url(), "DIGICERT_API_KEY=" + benchKey,
		"DIGICERT_BASE_URL=http://" + addr + "/services/v2", "DIGICERT_RATE_LIMITS=", "CERTMAIL_CONCURRENCY=50"}, "worker")
	if err != nil {
		return nil, err
	}
	took, err := drain(ctx, r, "default", o.rssTasks, time.Now(), 5*time.Minute)
	rss, rerr := peakRSS(p.cmd.Process.Pid)
	serr := p.stop()
	if err := errors.Join(err, rerr, serr); err != nil {
		return nil, err
	}
	fmt.Printf("  1 worker process, concurrency 50, 50 ms latency: %d tasks in %v, peak RSS %.1f MiB\n",
		o.rssTasks, took.Round(time.Millisecond), rss)
	return []figure{{name: "worker_rss_mb", value: round(rss, 1), ok: func(v float64) bool { return v <= 80 }, want: "<= 80"}}, nil
}

// apiEnqueue compares enqueueing through the HTTP API with asynq.Client.
func apiEnqueue(ctx context.Context, r *redisServer, o options) ([]figure, error) {
	if err := flush(ctx, r); err != nil {
		return nil, err
	}
	conn, err := redisconn.Open(r.url())
	if err != nil {
		return nil, err
	}
	defer conn.Client.Close()
	svc, err := ops.New(ops.Config{Redis: conn})
	if err != nil {
		return nil, err
	}
	defer svc.Close()
	store, err := schedule.NewStore(schedule.Config{Redis: conn.Client})
	if err != nil {
		return nil, err
	}
	const token = "bench-token-7d2f91c4"
	srv, err := api.New(api.Config{Ops: svc, Redis: conn, Schedules: store, Tokens: []api.Token{{Secret: token}}, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	addr, stopAPI, err := serve(srv)
	if err != nil {
		return nil, err
	}
	defer stopAPI()
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.clients,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}, Timeout: 10 * time.Second}
	body := []byte(`{"order_id": 4242, "additional_emails": ["bench@example.com"]}`)

	var latencies []time.Duration
	var mu sync.Mutex
	apiTook, err := concurrently(o.clients, o.apiRequests, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/tasks/set-emails", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("API answered %d", resp.StatusCode)
		}
		mu.Lock()
		latencies = append(latencies, d)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("API enqueue: %w", err)
	}
	if err := flush(ctx, r); err != nil {
		return nil, err
	}
	// The same connection options as the API's (asynq's default pool), so that only HTTP differs.
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: r.addr})
	defer client.Close()
	clientTook, err := concurrently(o.clients, o.apiRequests, func() error {
		t, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 4242, AdditionalEmails: []string{"bench@example.com"}})
		if err != nil {
			return err
		}
		_, err = client.EnqueueContext(ctx, t)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("client enqueue: %w", err)
	}
	apiTPS := float64(o.apiRequests) / apiTook.Seconds()
	clientTPS := float64(o.apiRequests) / clientTook.Seconds()
	slices.Sort(latencies)
	p99 := latencies[len(latencies)*99/100]
	fmt.Printf("  %d enqueues by %d clients: API %.0f/s (p99 %v), asynq.Client %.0f/s\n",
		o.apiRequests, o.clients, apiTPS, p99.Round(10*time.Microsecond), clientTPS)
	return []figure{
		{name: "api_vs_client_enqueue_ratio", value: round(apiTPS/clientTPS, 3), ok: func(v float64) bool { return v >= 0.5 }, want: ">= 0.5"},
		{name: "api_enqueue_p99_ms", value: round(float64(p99.Microseconds())/1000, 2)},
	}, nil
}

// concurrently runs fn n times from workers goroutines and returns the
// time taken, or the first error.
func concurrently(workers, n int, fn func() error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := fn(); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}
