package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// rateLimitShare runs three worker processes on scaled-down windows.
func rateLimitShare(ctx context.Context, r *redisServer, o options) (figures []figure, err error) {
	const limits = "20/1s,100/6s"
	windows := []digicerttest.Window{{Limit: 20, Period: time.Second}, {Limit: 100, Period: 6 * time.Second}}
	sustained := 100.0 / 6 // the tighter of 20/s and 100/6s
	rc := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rc.Close()
	if err := flush(ctx, rc); err != nil {
		return nil, err
	}
	backlog := int(sustained*float64(o.rateSeconds)) * 2
	if err := enqueueResends(ctx, r, backlog, 100000, "default"); err != nil {
		return nil, err
	}
	fake, err := startFake(digicerttest.Config{RateLimits: windows, RecordLimit: 10 * backlog}, nil)
	if err != nil {
		return nil, err
	}
	defer fake.stop()
	env := []string{"REDIS_URL=" + r.url(), "DIGICERT_API_KEY=" + benchKey, "DIGICERT_BASE_URL=" + fake.baseURL,
		"DIGICERT_RATE_LIMITS=" + limits, "CERTMAIL_CONCURRENCY=20"}
	var procs []*process
	defer func() {
		for _, p := range procs {
			err = errors.Join(err, p.stop())
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
	err = waitFor(ctx, procs[0], 30*time.Second, "the first DigiCert call", func() (bool, error) { return fake.RequestCount() > 0, nil })
	if err != nil {
		return nil, err
	}
	first := fake.Requests()[0].At
	span := time.Duration(o.rateSeconds) * time.Second
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Until(first.Add(span + time.Second))):
	}
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
		target("ratelimit_share", round(share, 3), atLeast, 0.95),
		target("ratelimit_429", float64(n429), atMost, 0),
	}, nil
}

// workerRSS runs one worker process at concurrency 50 under load.
func workerRSS(ctx context.Context, r *redisServer, o options) (figures []figure, err error) {
	rc := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rc.Close()
	if err := flush(ctx, rc); err != nil {
		return nil, err
	}
	if err := enqueueResends(ctx, r, o.rssTasks, 100000, "default"); err != nil {
		return nil, err
	}
	fake, err := startFake(digicerttest.Config{}, nil)
	if err != nil {
		return nil, err
	}
	defer fake.stop()
	fake.SetFaults(digicerttest.Faults{Latency: 50 * time.Millisecond})
	p, err := startCertmail(ctx, o.binary, []string{"REDIS_URL=" + r.url(), "DIGICERT_API_KEY=" + benchKey,
		"DIGICERT_BASE_URL=" + fake.baseURL, "DIGICERT_RATE_LIMITS=" + looseLimits, "CERTMAIL_CONCURRENCY=50"}, "worker")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, p.stop()) }()
	start := time.Now()
	if err := waitUnfinished(ctx, rc, p, "default", 0); err != nil {
		return nil, err
	}
	took := time.Since(start)
	if err := checkCompleted(ctx, rc, "default", o.rssTasks); err != nil {
		return nil, err
	}
	rss, err := peakRSS(p.pid())
	if err != nil {
		return nil, err
	}
	fmt.Printf("  1 worker process, concurrency 50, 50 ms latency: %d tasks in %v, peak RSS %.1f MiB\n",
		o.rssTasks, took.Round(time.Millisecond), rss)
	return []figure{target("worker_rss_mb", round(rss, 1), atMost, 80)}, nil
}
