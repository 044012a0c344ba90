package worker_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/worker"
)

// dequeues is a hook on asynq's client that counts its dequeue attempts:
// the script run with a queue's pending, paused, active and lease keys.
type dequeues struct{ n atomic.Int64 }

func (d *dequeues) DialHook(next redis.DialHook) redis.DialHook { return next }

func (d *dequeues) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && len(args) > 3 {
			if key, _ := args[3].(string); strings.HasSuffix(key, ":pending") {
				d.n.Add(1)
			}
		}
		return next(ctx, cmd)
	}
}

func (d *dequeues) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// idleWorker starts a worker serving one queue, every one of them empty,
// that polls every interval, and returns the count of its dequeue attempts.
func idleWorker(t *testing.T, interval time.Duration) *dequeues {
	t.Helper()
	b := setup(t, setupOpts{startWorkers: -1})
	d := &dequeues{}
	b.startWorker(t, setupOpts{configure: func(cfg *worker.Config) {
		cfg.Redis = certmailtest.Conn(t, b.redis.URL())
		cfg.Redis.Opt = hookedOpt{RedisConnOpt: cfg.Redis.Opt, hook: d}
		cfg.Queues = map[string]int{"default": 1}
		cfg.TaskCheckInterval = interval
	}})
	return d
}

// CERTMAIL_TASK_CHECK_INTERVAL reaches asynq: an idle worker polling every
// 20 ms looks into its empty queue many times more often than one polling
// every 400 ms (asynq sleeps between half and one and a half intervals).
func TestTaskCheckIntervalReachesAsynq(t *testing.T) {
	t.Parallel()
	fast, slow := idleWorker(t, 20*time.Millisecond), idleWorker(t, 400*time.Millisecond)
	slowStart := slow.n.Load()
	fastStart := fast.n.Load()
	// 40 polls of the fast worker take about 0.8 s: the slow one makes
	// about 2 in that time, and at most 6 even if every sleep is its shortest.
	waitFor(t, 30*time.Second, func() bool { return fast.n.Load()-fastStart >= 40 },
		func() string { return "the fast worker polled too rarely" })
	if n := slow.n.Load() - slowStart; n > 10 {
		t.Errorf("the worker polling every 400ms dequeued %d times while the one polling every 20ms did 40", n)
	}
}

// DefaultTaskCheckInterval is within the bounds Validate enforces, and
// Validate accepts the bounds themselves and refuses an interval outside them.
func TestTaskCheckIntervalValidated(t *testing.T) {
	t.Parallel()
	base := worker.Config{Redis: &redisconn.Conn{}, Logger: zap.NewNop(),
		Accounts: account.Set{"default": account.Account{Name: "default", APIKey: account.Secret(testKey)}}}.WithDefaults()
	if base.TaskCheckInterval != worker.DefaultTaskCheckInterval {
		t.Fatalf("default %v, want %v", base.TaskCheckInterval, worker.DefaultTaskCheckInterval)
	}
	if err := base.Validate(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for _, d := range []time.Duration{worker.MinTaskCheckInterval, worker.MaxTaskCheckInterval} {
		cfg := base
		cfg.TaskCheckInterval = d
		if err := cfg.Validate(); err != nil {
			t.Errorf("TaskCheckInterval %v, a bound: %v, want accepted", d, err)
		}
	}
	for _, d := range []time.Duration{-time.Second, time.Millisecond, worker.MinTaskCheckInterval - 1, worker.MaxTaskCheckInterval + 1} {
		cfg := base
		cfg.TaskCheckInterval = d
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "task check interval") {
			t.Errorf("TaskCheckInterval %v: %v, want refused", d, err)
		}
	}
	// A negative cap would leave the dead-letter stream without one.
	cfg := base
	cfg.DeadLetterMaxLen = -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "dead-letter") {
		t.Errorf("DeadLetterMaxLen -1: %v, want refused", err)
	}
	// asynq lists each queue as often as its weight before every fetch.
	for _, w := range []int{0, queues.MaxWeight + 1} {
		cfg := base
		cfg.Queues = map[string]int{"default": w}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "weight from 1 to 100") {
			t.Errorf("a queue of weight %d: %v, want refused", w, err)
		}
	}
	// The queue metrics sum the unserved queues under this name: a served
	// queue of that name would report their figures as its own.
	cfg = base
	cfg.Queues = map[string]int{"default": 3, queues.Reserved: 1}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "reserved for the metrics of the queues no process serves") {
		t.Errorf("a served queue named %q: %v, want refused", queues.Reserved, err)
	}
}
