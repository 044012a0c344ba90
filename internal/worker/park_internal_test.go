package worker

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/redistest"
)

// The unparker's claims are leases: a claimed entry stays until its task
// has been moved, comes back when a claimer dies, and gives way to an error
// handler that parks or dead-letters the task meanwhile.
func TestUnparkerClaimsAreLeases(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	client := asynq.NewClientFromRedisClient(rdb)
	u := &unparker{rdb: rdb, inspector: insp, log: zap.NewNop(), interval: time.Second}
	now := time.Now()

	// An archived task, parked and due.
	info, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": 1}`)), asynq.MaxRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := insp.ArchiveTask("default", info.ID); err != nil {
		t.Fatal(err)
	}
	p := deadletter.Parked{Queue: "default", ID: info.ID}
	if err := deadletter.Park(ctx, rdb, p, now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}

	// A claimer that dies after its claim: the entry stays, leased.
	due, err := deadletter.ClaimDue(ctx, rdb, now, now.Add(claimLease), 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("claim = %v, %v", due, err)
	}
	until, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", info.ID)
	if err != nil || !parked || until.Before(now.Add(claimLease-time.Second)) {
		t.Fatalf("after a claim: parked %v until %v (%v), want the lease's end", parked, until, err)
	}
	if err := u.once(ctx, now); err != nil {
		t.Fatal(err)
	}
	if st, err := insp.GetTaskInfo("default", info.ID); err != nil || st.State != asynq.TaskStateArchived {
		t.Fatalf("a leased entry was moved by another worker: %v (%v)", st, err)
	}
	// When the lease ends, another worker moves it and removes the entry.
	if err := u.once(ctx, now.Add(claimLease+time.Second)); err != nil {
		t.Fatal(err)
	}
	if st, err := insp.GetTaskInfo("default", info.ID); err != nil || st.State != asynq.TaskStatePending {
		t.Errorf("after the lease: task %v (%v), want pending", st, err)
	}
	if n, err := rdb.ZCard(ctx, deadletter.ParkedKey).Result(); err != nil || n != 0 {
		t.Errorf("%d entries left (%v), want 0", n, err)
	}

	// An error handler that parks the task again after a claim wins: the
	// claimer's settle does not remove the new entry.
	if err := deadletter.Park(ctx, rdb, p, now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	lease := now.Add(claimLease)
	if _, err := deadletter.ClaimDue(ctx, rdb, now, lease, 10); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Hour)
	if err := deadletter.Park(ctx, rdb, p, later); err != nil {
		t.Fatal(err)
	}
	u.settle(ctx, p.Member(), lease, time.Time{})
	if until, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", info.ID); err != nil || !parked || until.UnixMilli() != later.UnixMilli() {
		t.Errorf("the error handler's new entry: parked %v until %v (%v), want %v", parked, until, err, later)
	}
	// With its own lease still in place, settle removes it.
	if err := rdb.ZAdd(ctx, deadletter.ParkedKey, redis.Z{Score: float64(lease.UnixMilli()), Member: p.Member()}).Err(); err != nil {
		t.Fatal(err)
	}
	u.settle(ctx, p.Member(), lease, time.Time{})
	if _, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", info.ID); err != nil || parked {
		t.Errorf("settle left its own claimed entry (%v)", err)
	}
}
