package worker_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

// commandCounter is a go-redis hook that counts the round trips made on
// certmail's own client (asynq has a client of its own): one per command,
// one per pipeline, by command name.
type commandCounter struct {
	mu    sync.Mutex
	trips int
	names map[string]int
}

func (c *commandCounter) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trips++
	c.names[name]++
}

// reset starts a new count and returns the last one and its account.
func (c *commandCounter) reset() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for n, k := range c.names {
		parts = append(parts, fmt.Sprintf("%s×%d", n, k))
	}
	sort.Strings(parts)
	n := c.trips
	c.trips, c.names = 0, map[string]int{}
	return n, strings.Join(parts, " ")
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd.Name())
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add("pipeline")
		return next(ctx, cmds)
	}
}

// resultWrites is a hook on asynq's own client that counts, among asynq's
// commands, the one certmail's handler asks of it: the HSET of a task's
// result through asynq's ResultWriter.
type resultWrites struct{ c *commandCounter }

func (r resultWrites) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r resultWrites) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "hset" {
			r.c.add("asynq-result-hset")
		}
		return next(ctx, cmd)
	}
}

func (r resultWrites) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// hookedOpt gives asynq a client with the resultWrites hook.
type hookedOpt struct {
	asynq.RedisConnOpt
	hook redis.Hook
}

func (o hookedOpt) MakeRedisClient() any {
	c := o.RedisConnOpt.MakeRedisClient().(redis.UniversalClient)
	c.AddHook(o.hook)
	return c
}

// countedWorker starts a worker whose Redis round trips of certmail's own
// are counted: every command of its client, and the result writes it asks
// of asynq's. The unparker and the rate-limit check, the only other users
// of that client while no metrics are scraped, look once an hour (the check
// once at start, awaited here), so every command counted is a handler's.
// The account has DigiCert's windows, as it has by default. before, when
// given, runs before the worker starts.
func countedWorker(t *testing.T, before ...func(*bundle, *worker.Config)) (*bundle, *commandCounter) {
	t.Helper()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	counter := &commandCounter{names: map[string]int{}}
	b.startWorker(t, setupOpts{configure: func(cfg *worker.Config) {
		cfg.Redis = certmailtest.Conn(t, b.redis.URL())
		cfg.Redis.Client.AddHook(counter)
		cfg.Redis.Opt = hookedOpt{RedisConnOpt: cfg.Redis.Opt, hook: resultWrites{c: counter}}
		cfg.DelayedTaskCheckInterval = time.Hour
		cfg.RateLimitCheckInterval = time.Hour
		windows, err := ratelimit.ParseWindows(ratelimit.DefaultWindows)
		if err != nil {
			t.Fatal(err)
		}
		acct := cfg.Accounts["default"]
		acct.RateLimits = windows // DigiCert's: admission and restamp count
		cfg.Accounts["default"] = acct
		for _, f := range before {
			f(b, cfg)
		}
	}})
	waitFor(t, 10*time.Second, func() bool {
		return b.redis.Client().Exists(context.Background(), "certmail:ratelimit:{default}:settings").Val() == 1
	}, func() string { return "the rate-limit check at start has not run" })
	return b, counter
}

// tripsPerTask runs n tasks made by payload one after the other, after one
// that loads the scripts, and returns certmail's own round trips per task.
func tripsPerTask(t *testing.T, b *bundle, counter *commandCounter, typ string, payload func(i int) string) (float64, string) {
	t.Helper()
	const n = 10
	run := func(i int) {
		id := b.enqueue(t, typ, payload(i))
		if got := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)).Outcome; got != taskresult.Delivered {
			t.Fatalf("%s %d: outcome %s, want delivered", typ, i, got)
		}
	}
	run(0) // steady state: every script loaded (EVALSHA, not EVAL)
	counter.reset()
	for i := 1; i <= n; i++ {
		run(i)
	}
	trips, by := counter.reset()
	return float64(trips) / n, by
}

// A delivered resend-dcv costs certmail two Redis round trips of its own
// besides asynq's dequeue and completion: one before the DigiCert call
// (auth gate, duplicate guard, limiter admission) and one after it (limiter
// restamp, duplicate guard, result). README "How a task flows".
func TestResendDCVRoundTrips(t *testing.T) {
	t.Parallel()
	b, counter := countedWorker(t)
	perTask, by := tripsPerTask(t, b, counter, "resend-dcv", func(i int) string {
		return fmt.Sprintf(`{"order_id": %d}`, 100+i)
	})
	if perTask > 2 {
		t.Errorf("resend-dcv: %.1f round trips of certmail's own per delivered task, want at most 2 (%s)", perTask, by)
	}
	t.Logf("resend-dcv: %.1f round trips per task (%s)", perTask, by)
}

// A delivered set-emails costs the same two: before the call the order
// lock, the applied-sequence compare, the auth gate and the limiter; after
// it the restamp, the applied sequence, the result and the lock's release.
func TestSetEmailsRoundTrips(t *testing.T) {
	t.Parallel()
	b, counter := countedWorker(t)
	perTask, by := tripsPerTask(t, b, counter, "set-emails", func(i int) string {
		return fmt.Sprintf(`{"order_id": %d, "additional_emails": ["a%d@example.com"], "sequence": %d}`, 200+i, i, 1000+i)
	})
	if perTask > 2 {
		t.Errorf("set-emails: %.1f round trips of certmail's own per delivered task, want at most 2 (%s)", perTask, by)
	}
	t.Logf("set-emails: %.1f round trips per task (%s)", perTask, by)
}

// A worker that waits for a replica to acknowledge the guard, and the
// round trip before the call, sends WAIT in those round trips, not in ones
// of its own: still two, both pipelines.
func TestGuardWaitKeepsTwoRoundTrips(t *testing.T) {
	t.Parallel()
	b, counter := countedWorker(t, func(b *bundle, cfg *worker.Config) {
		redistest.StartReplica(t, b.redis, redistest.Options{})
		cfg.GuardReplicas = 1
	})
	perTask, by := tripsPerTask(t, b, counter, "send-cert", func(i int) string {
		return fmt.Sprintf(`{"certificate_id": %d, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`, 300+i)
	})
	if perTask > 2 || !strings.Contains(by, "pipeline×20") {
		t.Errorf("send-cert with a replica asked: %.1f round trips of certmail's own per delivered task (%s), want at most 2, both pipelines (WAIT with each)", perTask, by)
	}
	t.Logf("send-cert with a replica asked: %.1f round trips per task (%s)", perTask, by)
}
