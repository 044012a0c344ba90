package ops_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/deadletter"
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
			id, check := oneToPurge(t, b)
			var err error
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

// A task archived and not parked at the question, and parked before the
// answer (requeued from the dashboard, then parked by a wait on its last
// delivery), waits to be tried again: the purge leaves it and its entry.
func TestPurgeLeavesATaskParkedMeanwhile(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"default"}}})
	ctx := context.Background()
	id, check := oneToPurge(t, b)
	if err := deadletter.Park(ctx, b.rdb, deadletter.Parked{Queue: "default", ID: id}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	p, err := b.svc.Purge(ctx, check)
	if err != nil || p != (ops.Purged{Kept: 1}) {
		t.Errorf("Purge = %+v, %v; want nothing deleted, the parked task's entry kept", p, err)
	}
	if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("parked task after the purge: %v, %v; want it kept, archived", info, err)
	}
	if got := b.streamTasks(t); !slices.Equal(got, []string{id}) {
		t.Errorf("stream after the purge holds tasks %v, want the parked one's", got)
	}
}

// A task with an entry, out of the archive at the question (retrying, or
// run from the dashboard), and archived again before the answer (it failed
// again) is a dead letter again: the purge keeps its entry (Purged.Kept),
// and does not delete the task, which the check did not count.
func TestPurgeKeepsTheEntriesOfATaskArchivedMeanwhile(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"default"}}})
	ctx := context.Background()
	id := b.archivedIn(t, "default", false)
	if err := b.inspector.RunTask("default", id); err != nil {
		t.Fatal(err)
	}
	check, err := b.svc.CheckPurge(ctx)
	if err != nil || check.Tasks != 0 || check.Entries != 1 {
		t.Fatalf("CheckPurge = %+v, %v; want no task and 1 entry to go", check, err)
	}
	if err := b.inspector.ArchiveTask("default", id); err != nil {
		t.Fatal(err)
	}
	p, err := b.svc.Purge(ctx, check)
	if err != nil || p != (ops.Purged{Kept: 1}) {
		t.Errorf("Purge = %+v, %v; want nothing deleted, the archived task's entry kept", p, err)
	}
	if got := b.streamTasks(t); !slices.Equal(got, []string{id}) {
		t.Errorf("stream after the purge holds tasks %v, want the archived one's", got)
	}
	if _, err := b.inspector.GetTaskInfo("default", id); errors.Is(err, asynq.ErrTaskNotFound) {
		t.Error("the task archived after the check was deleted")
	}
}

// oneToPurge dead-letters one task in default and asks the purge's
// question: one task and its entry are to go.
func oneToPurge(t *testing.T, b *bundle) (string, ops.PurgeCheck) {
	t.Helper()
	id := b.archivedIn(t, "default", false)
	check, err := b.svc.CheckPurge(context.Background())
	if err != nil || check.Tasks != 1 || check.Entries != 1 {
		t.Fatalf("CheckPurge = %+v, %v; want 1 task and 1 entry to go", check, err)
	}
	return id, check
}
