package ops_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/ops"
)

// TestTrimmedFromTheArchive: what asynq leaves of a task it trimmed from
// the archive (its hash, state archived) is gone for certmail, as a task
// deleted after its retention: not found to Task and TaskInQueue, not
// archived in its dead letter, not found to Requeue, never asynq's internal
// error; DeleteDeadLetter deletes it, so that a producer may send its id
// again. A parked task trimmed so is still waiting to be retried.
func TestTrimmedFromTheArchive(t *testing.T) {
	t.Parallel()
	b, dead := setupDead(t, 401, 402)
	ctx := context.Background()
	plain := b.enqueue(t, 7) // archived from the dashboard: no dead-letter entry
	parked := b.enqueue(t, 8)
	for _, id := range []string{plain, parked} {
		if err := b.inspector.ArchiveTask("default", id); err != nil {
			t.Fatal(err)
		}
	}
	member := `{"queue":"default","id":"` + parked + `"}` // as the worker parks it
	if err := b.rdb.ZAdd(ctx, "certmail:parked", redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: member}).Err(); err != nil {
		t.Fatal(err)
	}
	b.redis.TrimArchive(t, "default")
	exists := func(id string) bool {
		t.Helper()
		n, err := b.rdb.Exists(ctx, "asynq:{default}:t:"+id).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	for _, id := range append([]string{plain, parked}, dead...) {
		if !exists(id) {
			t.Fatalf("task %s: asynq deleted its hash; the test wants what asynq's archive_all leaves", id)
		}
	}

	for _, id := range []string{dead[0], plain} {
		if st, err := b.svc.Task(ctx, id); !errors.Is(err, ops.ErrNotFound) {
			t.Errorf("Task(%s) = %+v, %v; want not found", id, st, err)
		}
		if st, err := b.svc.TaskInQueue(ctx, "default", id); !errors.Is(err, ops.ErrNotFound) {
			t.Errorf("TaskInQueue(%s) = %+v, %v; want not found", id, st, err)
		}
		_, err := b.svc.Requeue(ctx, id)
		if !errors.Is(err, ops.ErrNotFound) || !strings.Contains(err.Error(), "no longer archived in queue default (asynq trimmed it") ||
			strings.Contains(err.Error(), "internal") {
			t.Errorf("Requeue(%s): %v; want not found, saying asynq trimmed it from the archive", id, err)
		}
	}
	if dl, err := b.svc.DeadLetter(ctx, dead[0]); err != nil || dl.Archived {
		t.Errorf("DeadLetter = %+v, %v; want the entry, not archived", dl, err)
	}
	page, err := b.svc.DeadLetters(ctx, 0, "")
	if err != nil || len(page.Entries) != 2 || page.Entries[0].Archived || page.Entries[1].Archived {
		t.Errorf("DeadLetters = %+v, %v; want both entries, neither archived", page.Entries, err)
	}

	// A parked task is alive, trimmed or not: the worker moves it on.
	if st, err := b.svc.TaskInQueue(ctx, "default", parked); err != nil || st.State != "retry" {
		t.Errorf("TaskInQueue of the parked task: %+v, %v; want retry", st, err)
	}
	if _, err := b.svc.DeleteDeadLetter(ctx, parked); !errors.Is(err, ops.ErrNotFound) || !exists(parked) {
		t.Errorf("DeleteDeadLetter of the parked task: %v (hash kept: %v); want not found, the task kept", err, exists(parked))
	}

	d, err := b.svc.DeleteDeadLetter(ctx, dead[1])
	if err != nil || d.Task == nil || *d.Task != (ops.TaskRef{ID: dead[1], Type: "set-emails", Queue: "default", State: "deleted"}) ||
		d.Entries != 1 || exists(dead[1]) {
		t.Errorf("DeleteDeadLetter of a dead letter = %+v, %v (hash left: %v); want its hash and its entry deleted", d, err, exists(dead[1]))
	}
	d, err = b.svc.DeleteDeadLetter(ctx, plain)
	if err != nil || d.Task == nil || d.Task.Type != "set-emails" || d.Entries != 0 || exists(plain) {
		t.Errorf("DeleteDeadLetter of a task archived from the dashboard = %+v, %v (hash left: %v); want its hash deleted", d, err, exists(plain))
	}
	c := asynq.NewClient(b.redis.ConnOpt())
	defer c.Close()
	if _, err := c.Enqueue(asynq.NewTask("set-emails", []byte(`{}`)), asynq.TaskID(plain)); err != nil {
		t.Errorf("enqueue under the deleted task's id: %v", err)
	}
	if _, err := b.svc.DeleteDeadLetter(ctx, dead[1]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("second DeleteDeadLetter: %v, want not found", err)
	}
}

// A task without an entry, trimmed from the archive while DeleteDeadLetter
// deletes it (asynq's delete then fails) and parked again before what is
// left of it goes, is kept; the error says it is no dead letter, and does
// not claim the stream names it.
func TestDeleteDeadLetterTrimmedThenChangedMeanwhile(t *testing.T) {
	t.Parallel()
	b, proxy := setupProxied(t, ops.Config{})
	ctx := context.Background()
	id := b.archivedIn(t, "default", true)
	member := deadletter.Parked{Queue: "default", ID: id}.Member()
	args := func(del string) string { return member + "\r\n$1\r\n" + del + "\r\n" } // of trimmedScript
	// The task is read archived, not parked, not trimmed; then, before the
	// read again and asynq's delete, it is trimmed; then, before what is
	// left of it is deleted, parked.
	proxy.BeforeOnce(args("0"), func() {
		proxy.BeforeOnce("evalsha", func() {
			if err := b.rdb.ZRem(ctx, "asynq:{default}:archived", id).Err(); err != nil {
				t.Error(err)
			}
			proxy.BeforeOnce(args("1"), func() {
				if err := deadletter.Park(ctx, b.rdb, deadletter.Parked{Queue: "default", ID: id}, time.Now().Add(time.Minute)); err != nil {
					t.Error(err)
				}
			})
		})
	})
	d, err := b.svc.DeleteDeadLetter(ctx, id)
	const want = "(the task is changed meanwhile)"
	if !errors.Is(err, ops.ErrNotFound) || !strings.HasSuffix(err.Error(), want) || d.Task != nil {
		t.Errorf("DeleteDeadLetter = %+v, %v; want not found, ending %q", d, err, want)
	}
	if n, err := b.rdb.Exists(ctx, "asynq:{default}:t:"+id).Result(); err != nil || n != 1 {
		t.Errorf("task hash after the delete: %d (%v), want it kept", n, err)
	}
}
