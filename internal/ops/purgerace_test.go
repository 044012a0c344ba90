package ops_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
)

// The tests of this file change a dead letter between a purge's question
// (CheckPurge) and its answer (Purge), as another operator, the dashboard
// or a worker may while the operator reads the counts: Purge acts on what
// holds when it runs, within what the check counted.

// A task requeued between the question and the answer (another operator's
// `dlq requeue`, or Run on the dashboard) is pending now, no dead letter:
// the purge leaves it, although asynq's DeleteTask would delete a pending
// task too.
func TestPurgeLeavesATaskRequeuedMeanwhile(t *testing.T) {
	t.Parallel()
	for _, by := range []string{"dlq requeue", "the dashboard"} {
		t.Run(by, func(t *testing.T) {
			t.Parallel()
			b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"default"}}})
			ctx := context.Background()
			id := b.archivedIn(t, "default", false)
			check, err := b.svc.CheckPurge(ctx)
			if err != nil || check.Tasks != 1 || check.Entries != 1 {
				t.Fatalf("CheckPurge = %+v, %v; want 1 task and 1 entry to go", check, err)
			}
			switch by {
			case "dlq requeue":
				_, err = b.svc.Requeue(ctx, id)
			default:
				err = b.inspector.RunTask("default", id)
			}
			if err != nil {
				t.Fatal(err)
			}
			p, err := b.svc.Purge(ctx, check)
			if err != nil || p.Tasks != 0 {
				t.Errorf("Purge = %+v, %v; want no task deleted", p, err)
			}
			if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStatePending {
				t.Errorf("requeued task after the purge: %v, %v; want it pending", info, err)
			}
		})
	}
}
