package worker

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redistest"
)

// The unparker moves a parked task out of asynq's archive at once, into
// asynq's retry set due when its wait is over, with its retry count and last
// error, and removes its entry. An entry whose task asynq has not archived
// yet stays, and is counted as waiting; one parked again meanwhile stays
// too. A task asynq's inspector trimmed from the archive (it keeps the
// task's hash) is moved as well.
func TestUnparkerMovesParkedTasksToRetry(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	client := asynq.NewClientFromRedisClient(rdb)
	u := &unparker{rdb: rdb, log: zap.NewNop(), interval: time.Second,
		lost: func(context.Context, deadletter.Parked) { t.Error("a task reported lost") }}
	enqueue := func() string {
		t.Helper()
		info, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": 1}`)), asynq.MaxRetry(0))
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	park := func(id string, due time.Time) {
		t.Helper()
		if err := deadletter.Park(ctx, rdb, deadletter.Parked{Queue: "default", ID: id}, due); err != nil {
			t.Fatal(err)
		}
	}
	due := time.Now().Add(time.Hour).Truncate(time.Second).Add(300 * time.Millisecond)

	archived, trimmed, pending := enqueue(), enqueue(), enqueue()
	for _, id := range []string{archived, trimmed} {
		if err := insp.ArchiveTask("default", id); err != nil {
			t.Fatal(err)
		}
		park(id, due)
	}
	if err := rdb.ZRem(ctx, queues.AsynqKey("default", "archived"), trimmed).Err(); err != nil {
		t.Fatal(err)
	}
	// Not archived yet: as a task whose error handler runs, asynq's dequeue
	// made it active.
	if err := rdb.Eval(ctx, `redis.call('LREM', KEYS[1], 0, ARGV[1]); redis.call('LPUSH', KEYS[2], ARGV[1]);
		return redis.call('HSET', KEYS[3], 'state', 'active')`,
		[]string{"asynq:{default}:pending", "asynq:{default}:active", queues.AsynqTaskKey("default", pending)}, pending).Err(); err != nil {
		t.Fatal(err)
	}
	park(pending, due)

	waiting, err := u.once(ctx)
	if err != nil || waiting != 1 {
		t.Fatalf("once = %d waiting, %v; want the active task's", waiting, err)
	}
	for _, id := range []string{archived, trimmed} {
		info, err := insp.GetTaskInfo("default", id)
		if err != nil || info.State != asynq.TaskStateRetry || !info.NextProcessAt.Equal(due.Truncate(time.Second).Add(time.Second)) {
			t.Errorf("task %s: %+v (%v); want in retry at %v, the due time rounded up to asynq's seconds", id, info, err, due)
		}
		if _, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", id); err != nil || parked {
			t.Errorf("task %s still parked after its move (%v)", id, err)
		}
	}
	if n, err := rdb.ZCard(ctx, queues.AsynqKey("default", "archived")).Result(); err != nil || n != 0 {
		t.Errorf("archive holds %d tasks (%v), want 0", n, err)
	}
	if _, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", pending); err != nil || !parked {
		t.Errorf("the entry of a task not archived yet was dropped (%v)", err)
	}
	// asynq's forwarder runs it at its time: retried still 0, as the park left it.
	q, err := insp.ListRetryTasks("default")
	if err != nil || len(q) != 2 || q[0].Retried != 0 {
		t.Errorf("retry set: %+v (%v)", q, err)
	}

	// asynq archives it: the next look moves it.
	if err := rdb.Eval(ctx, `redis.call('LREM', KEYS[1], 0, ARGV[1]); redis.call('ZADD', KEYS[2], 1, ARGV[1]);
		return redis.call('HSET', KEYS[3], 'state', 'archived')`,
		[]string{"asynq:{default}:active", queues.AsynqKey("default", "archived"), queues.AsynqTaskKey("default", pending)}, pending).Err(); err != nil {
		t.Fatal(err)
	}
	// Parked again (a new due time) between the read and the removal: the
	// new entry stands.
	entries, err := deadletter.ListParked(ctx, rdb, 0, 10)
	if err != nil || len(entries) != 1 {
		t.Fatalf("ListParked = %v, %v", entries, err)
	}
	later := due.Add(time.Hour)
	park(pending, later)
	if _, _, err := u.movePage(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if until, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", pending); err != nil || !parked || !until.Equal(later.Truncate(time.Millisecond)) {
		t.Errorf("the new entry: parked %v until %v (%v), want %v", parked, until, err, later)
	}
	if info, err := insp.GetTaskInfo("default", pending); err != nil || info.State != asynq.TaskStateRetry {
		t.Errorf("task %s: %+v (%v); want in retry", pending, info, err)
	}
	if waiting, err := u.once(ctx); err != nil || waiting != 0 {
		t.Errorf("once = %d waiting, %v", waiting, err)
	}
	if n, err := rdb.ZCard(ctx, deadletter.ParkedKey).Result(); err != nil || n != 0 {
		t.Errorf("%d entries left (%v), want 0", n, err)
	}
}
