package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/tasks"
)

const (
	benchKey         = "bench-key-7f1c2d"
	benchConcurrency = 20
	defaultQueues    = "critical=6,default=3,bulk=1"
	oneQueue         = "default=1"
	// looseLimits are two rate-limit windows, as by default, that never
	// bind at these rates but keep the limiter's work in every delivery:
	// what a deployment pays. Their sets stay as small as the default's.
	looseLimits = "1000000/100ms,1000000/1s"
)

// flush empties Redis between runs.
func flush(ctx context.Context, rc *redis.Client) error {
	return rc.FlushAll(ctx).Err()
}

// enqueueResends puts n resend-dcv tasks (distinct orders from first) in
// queue, built by the tasks package, with concurrent clients.
func enqueueResends(ctx context.Context, r *redisServer, n int, first int64, queue string) error {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: r.addr, PoolSize: 20})
	defer client.Close()
	_, err := concurrently(16, n, func(i int64) error {
		t, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: first + i}, asynq.Queue(queue))
		if err == nil {
			_, err = client.EnqueueContext(ctx, t)
		}
		return err
	})
	return err
}

// concurrently runs fn for i in [0, n) from workers goroutines and returns
// the time taken, or the first error.
func concurrently(workers, n int, fn func(i int64) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}

// unfinished is the number of tasks of queue pending or active: two LLENs,
// as cheap a progress probe as Redis offers, the same for every program.
func unfinished(ctx context.Context, rc *redis.Client, queue string) (int64, error) {
	var pending, active *redis.IntCmd
	_, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, "asynq:{"+queue+"}:pending")
		active = p.LLen(ctx, "asynq:{"+queue+"}:active")
		return nil
	})
	if err != nil {
		return 0, err
	}
	return pending.Val() + active.Val(), nil
}

// waitFor polls cond every 2 ms until it holds, p exits, ctx ends or limit
// passes.
func waitFor(ctx context.Context, p *process, limit time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v", what, limit)
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited while waiting for %s: %v", p.name, what, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// waitUnfinished waits until at most left tasks of queue are unfinished.
func waitUnfinished(ctx context.Context, rc *redis.Client, p *process, queue string, left int64) error {
	return waitFor(ctx, p, 5*time.Minute, fmt.Sprintf("%d tasks left", left), func() (bool, error) {
		n, err := unfinished(ctx, rc, queue)
		return n <= left, err
	})
}

// waitRegistered waits until p's asynq server announced itself in Redis
// (its first heartbeat, written when it starts processing).
func waitRegistered(ctx context.Context, rc *redis.Client, p *process) error {
	return waitFor(ctx, p, 30*time.Second, "the asynq server's first heartbeat", func() (bool, error) {
		n, err := rc.ZCard(ctx, "asynq:servers").Result()
		return n > 0, err
	})
}

// checkCompleted fails unless queue holds n completed tasks and none to
// retry or archived: every program must have succeeded on every task.
func checkCompleted(ctx context.Context, rc *redis.Client, queue string, n int) error {
	done, err1 := rc.ZCard(ctx, "asynq:{"+queue+"}:completed").Result()
	retry, err2 := rc.ZCard(ctx, "asynq:{"+queue+"}:retry").Result()
	archived, err3 := rc.ZCard(ctx, "asynq:{"+queue+"}:archived").Result()
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	if done != int64(n) || retry != 0 || archived != 0 {
		return fmt.Errorf("%d of %d tasks completed, %d to retry, %d archived", done, n, retry, archived)
	}
	return nil
}

// fakeCertCentral is the fake CertCentral served on a loopback port.
type fakeCertCentral struct {
	*digicerttest.Server
	baseURL string
	stop    func()
}

// startFake serves a fake CertCentral that accepts benchKey and every id,
// through wrap when given (to observe the calls).
func startFake(cfg digicerttest.Config, wrap func(http.Handler) http.Handler) (*fakeCertCentral, error) {
	cfg.APIKeys, cfg.AnyIDExists = []string{benchKey}, true
	if cfg.RecordLimit == 0 {
		cfg.RecordLimit = 1
	}
	fake := digicerttest.New(cfg)
	var h http.Handler = fake
	if wrap != nil {
		h = wrap(fake)
	}
	addr, stop, err := serve(h)
	if err != nil {
		fake.Close()
		return nil, err
	}
	return &fakeCertCentral{Server: fake, baseURL: "http://" + addr + "/services/v2", stop: func() { stop(); fake.Close() }}, nil
}

// program names a measured program: "worker" (`certmail worker`), "plain",
// "guarded" or "noop" (baselines, this binary re-executed).
type program struct {
	kind              string
	queues            string
	taskCheckInterval time.Duration // baselines; 0 is asynq's default
	env               []string      // worker: added to its environment
}

func (prog program) String() string { return prog.kind }

// start runs prog against the fake at baseURL (the worker on looseLimits).
func (prog program) start(ctx context.Context, o options, r *redisServer, baseURL string) (*process, error) {
	if prog.kind != "worker" {
		return startChild(ctx, childOptions{mode: prog.kind, redisAddr: r.addr, baseURL: baseURL, apiKey: benchKey,
			queues: prog.queues, concurrency: benchConcurrency, taskCheckInterval: prog.taskCheckInterval})
	}
	env := append([]string{"REDIS_URL=" + r.url(), "DIGICERT_API_KEY=" + benchKey, "DIGICERT_BASE_URL=" + baseURL,
		"DIGICERT_RATE_LIMITS=" + looseLimits, fmt.Sprintf("CERTMAIL_CONCURRENCY=%d", benchConcurrency), "CERTMAIL_QUEUES=" + prog.queues},
		prog.env...)
	return startCertmail(ctx, o.binary, env, "worker")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// percentile is the p-th percentile (0 < p < 100) of sorted d.
func percentile(d []time.Duration, p int) time.Duration {
	return d[min(len(d)-1, len(d)*p/100)]
}

func ms(d time.Duration) float64 { return round(float64(d.Microseconds())/1000, 2) }
