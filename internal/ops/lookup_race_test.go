package ops_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
)

// afterStateRead runs fn once, right after the lookup's first pipeline (the
// HGET of the task's state in each queue) has been answered.
type afterStateRead struct {
	once sync.Once
	fn   func()
}

func (h *afterStateRead) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *afterStateRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *afterStateRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if len(cmds) > 0 && cmds[0].Name() == "hget" && strings.Contains(cmds[0].String(), ":t:") {
			h.once.Do(h.fn)
		}
		return err
	}
}

// A task that leaves the archive (run from the dashboard, or unparked)
// between the lookup's read of its state and the look at the archive is
// still found, in the state asynq holds it in now: not answered 404, which a
// producer could take for a lost task and enqueue again.
func TestTaskLeavingTheArchiveMidLookup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(b.rdb)
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)),
		asynq.TaskID("moving-1"), asynq.Queue("default")); err != nil {
		t.Fatal(err)
	}
	if err := b.inspector.ArchiveTask("default", "moving-1"); err != nil {
		t.Fatal(err)
	}
	conn := b.open(t)
	rdb := redis.NewClient(&redis.Options{Addr: b.redis.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	moved := make(chan error, 1)
	rdb.AddHook(&afterStateRead{fn: func() { moved <- b.inspector.RunTask("default", "moving-1") }})
	svc, err := ops.New(ops.Config{Redis: &redisconn.Conn{Opt: conn.Opt, Client: rdb, Target: conn.Target}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	st, err := svc.Task(ctx, "moving-1")
	select {
	case err := <-moved:
		if err != nil {
			t.Fatalf("moving the task out of the archive: %v", err)
		}
	default:
		t.Fatal("the task was not moved during the lookup: the test's hook did not run")
	}
	if err != nil || st.Queue != "default" || st.State != "pending" {
		t.Errorf("Task of a task run out of the archive mid-lookup: %s %s, %v; want default pending", st.Queue, st.State, err)
	}
}
