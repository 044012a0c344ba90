package queues_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redistest"
)

// TestAsynqKeys: the keys certmail reads of asynq's are where asynq writes:
// the set of queues, a task's hash, and the pending list and archive of its
// queue.
func TestAsynqKeys(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	rdb := s.Client()
	ctx := context.Background()
	c := asynq.NewClient(s.ConnOpt())
	t.Cleanup(func() { _ = c.Close() })
	info, err := c.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.Queue("bulk"))
	if err != nil {
		t.Fatal(err)
	}
	if state := rdb.HGet(ctx, queues.AsynqTaskKey("bulk", info.ID), "state").Val(); state != "pending" {
		t.Errorf("state in %s = %q, want pending", queues.AsynqTaskKey("bulk", info.ID), state)
	}
	if !rdb.SIsMember(ctx, queues.AsynqQueuesKey, "bulk").Val() {
		t.Errorf("%s does not hold bulk", queues.AsynqQueuesKey)
	}
	if ids := rdb.LRange(ctx, queues.AsynqKey("bulk", "pending"), 0, -1).Val(); len(ids) != 1 || ids[0] != info.ID {
		t.Errorf("%s = %v, want [%s]", queues.AsynqKey("bulk", "pending"), ids, info.ID)
	}
	in := asynq.NewInspector(s.ConnOpt())
	t.Cleanup(func() { _ = in.Close() })
	if err := in.ArchiveTask("bulk", info.ID); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZScore(ctx, queues.AsynqKey("bulk", "archived"), info.ID).Err(); err != nil {
		t.Errorf("the archived task in %s: %v", queues.AsynqKey("bulk", "archived"), err)
	}
}
