package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redistest"
)

// Of several workers' sweeps, and of a sweep's later looks, one writes the
// dead letter of a task asynq's recoverer archived; a task an operator
// archived, or one archived before the sweep's look back, is left alone.
func TestLeaseSweepDeadLettersOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	enqueue := func() string {
		t.Helper()
		info, err := client.Enqueue(asynq.NewTask("send-cert", []byte(`{"certificate_id": 7}`)), asynq.MaxRetry(0))
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	killed, archived := enqueue(), enqueue()
	if err := insp.ArchiveTask("default", archived); err != nil {
		t.Fatal(err)
	}
	// killed: taken by a worker that died a minute ago (asynq's dequeue, no heartbeat since).
	if err := rdb.Eval(ctx, `redis.call('LREM', KEYS[1], 0, ARGV[1]); redis.call('LPUSH', KEYS[2], ARGV[1])
		redis.call('HSET', KEYS[4], 'state', 'active'); return redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])`,
		[]string{"asynq:{default}:pending", "asynq:{default}:active", "asynq:{default}:lease", queues.AsynqTaskKey("default", killed)},
		killed, time.Now().Add(-time.Minute).Unix()).Err(); err != nil {
		t.Fatal(err)
	}
	// A server of no worker of certmail's: its recoverer archives it at start.
	recoverer := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{"default": 1}, LogLevel: asynq.FatalLevel})
	if err := recoverer.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := insp.GetTaskInfo("default", killed)
		if err == nil && info.State == asynq.TaskStateArchived {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recoverer did not archive the task: %+v (%v)", info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	recoverer.Shutdown()

	errs := &errorHandler{rdb: rdb, log: zap.NewNop(), metrics: newMetrics(prometheus.NewRegistry(), rdb, nil),
		maxLen: 1000, isFailure: IsFailure, maxRetry: 12}
	sweeps := []*leaseSweep{newLeaseSweep(rdb, errs, []string{"default", "bulk"}, time.Second),
		newLeaseSweep(rdb, errs, []string{"default"}, time.Second)}
	now := time.Now()
	for _, s := range []*leaseSweep{sweeps[0], sweeps[1], sweeps[0], sweeps[1]} {
		if err := s.once(ctx, now); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}
	msgs, err := rdb.XRange(ctx, deadletter.Stream, "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stream: %d entries (%v), want one", len(msgs), err)
	}
	e, problem := deadletter.Decode(msgs[0])
	if problem != "" || e.TaskID != killed || e.Type != "send-cert" || e.ErrorCode != "lease_expired" || e.Attempts != 1 ||
		!strings.Contains(e.ErrorMessage, "lease expired") || string(e.Payload) != `{"certificate_id": 7}` {
		t.Errorf("dead letter = %+v (%q)", e, problem)
	}
	if _, ok := sweeps[0].judged["default"][archived]; !ok {
		t.Error("the task an operator archived was not looked at")
	}

	// A worker that starts later looks back sweepLookback, no further.
	late := newLeaseSweep(rdb, errs, []string{"default"}, time.Second)
	if err := rdb.Del(ctx, deadletter.MarkerKey("default", killed)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := late.once(ctx, time.Now().Add(sweepLookback+skewMargin+2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.XLen(ctx, deadletter.Stream).Result(); err != nil || n != 1 {
		t.Errorf("stream: %d entries (%v) after a look past the task, want 1", n, err)
	}
}
