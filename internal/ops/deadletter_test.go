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

// setupDead starts a worker, has it dead-letter one task per order id
// given, stops it (so that nothing runs a requeued task) and returns the
// task ids, oldest first.
func setupDead(t *testing.T, orderIDs ...int64) (*bundle, []string) {
	t.Helper()
	b := setup(t)
	stop := b.startWorker(t)
	ids := b.deadLetters(t, orderIDs...)
	stop()
	return b, ids
}

func TestDeadLetterEntry(t *testing.T) {
	t.Parallel()
	before := time.Now().Add(-time.Second).Truncate(time.Second)
	b, ids := setupDead(t, 404)
	dl, err := b.svc.DeadLetter(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if dl.EntryID == "" || dl.TaskID != ids[0] || dl.Type != "set-emails" || dl.Queue != "default" ||
		dl.HTTPStatus != 404 || dl.Attempts != 1 || dl.ErrorCode == "" || dl.ErrorMessage == "" || !dl.Archived {
		t.Errorf("DeadLetter = %+v", dl)
	}
	if dl.FailedAt.Before(before) || dl.FailedAt.After(time.Now()) {
		t.Errorf("failed_at %v, want between %v and now", dl.FailedAt, before)
	}
	if !strings.HasPrefix(string(dl.Payload), `{"order_id":404,"additional_emails":["jill@example.com"]`) {
		t.Errorf("payload = %s, want the task's JSON", dl.Payload)
	}
	if _, err := b.svc.DeadLetter(context.Background(), "no-such-task"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("DeadLetter(no-such-task): error = %v, want ErrNotFound", err)
	}
}

func TestDeadLettersPaging(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401, 402, 403, 404, 405)
	newestFirst := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	ctx := context.Background()

	var got []string
	pages := 0
	for cursor := ""; ; {
		page, err := b.svc.DeadLetters(ctx, 2, cursor)
		entries, next := page.Entries, page.Next
		if err != nil {
			t.Fatalf("DeadLetters(2, %q): %v", cursor, err)
		}
		pages++
		for _, e := range entries {
			if !e.Archived {
				t.Errorf("entry %+v not archived", e)
			}
			got = append(got, e.TaskID)
		}
		if next == "" {
			break
		}
		if next != entries[len(entries)-1].EntryID {
			t.Errorf("next = %s, want the last entry's id %s", next, entries[len(entries)-1].EntryID)
		}
		cursor = next
	}
	if strings.Join(got, ",") != strings.Join(newestFirst, ",") || pages != 3 {
		t.Errorf("pages %d, task ids %v; want 3 pages of %v", pages, got, newestFirst)
	}

	page, err := b.svc.DeadLetters(ctx, 0, "")
	all, next := page.Entries, page.Next
	if err != nil || len(all) != 5 || next != "" {
		t.Errorf("DeadLetters(0, \"\") = %d entries, next %q, %v; want 5, \"\"", len(all), next, err)
	}
	page, err = b.svc.DeadLetters(ctx, 5, "")
	exact, next := page.Entries, page.Next
	if err != nil || len(exact) != 5 || next != "" {
		t.Errorf("DeadLetters(5, \"\") = %d entries, next %q, %v; want 5 and no next page", len(exact), next, err)
	}
	page, err = b.svc.DeadLetters(ctx, 10, "0-0")
	none, next := page.Entries, page.Next
	if err != nil || len(none) != 0 || next != "" {
		t.Errorf("DeadLetters before 0-0 = %v, %q, %v; want nothing", none, next, err)
	}
}

func TestDeadLettersBadArguments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		limit  int
		before string
	}{
		{-1, ""}, {1001, ""}, {10, "yesterday"}, {10, "123"}, {10, "1-2-3"}, {10, "+"},
	}
	for _, tt := range tests {
		if _, err := b.svc.DeadLetters(context.Background(), tt.limit, tt.before); !errors.Is(err, ops.ErrInvalidArgument) {
			t.Errorf("DeadLetters(%d, %q): error = %v, want ErrInvalidArgument", tt.limit, tt.before, err)
		}
	}
	page, err := b.svc.DeadLetters(context.Background(), 1000, "")
	entries, next := page.Entries, page.Next
	if err != nil || len(entries) != 0 || next != "" {
		t.Errorf("DeadLetters of an empty stream = %v, %q, %v", entries, next, err)
	}
}

func TestRequeue(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401, 402)
	ctx := context.Background()
	ref, err := b.svc.Requeue(ctx, ids[0])
	if err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	if ref != (ops.TaskRef{ID: ids[0], Type: "set-emails", Queue: "default", State: "pending"}) {
		t.Errorf("Requeue = %+v", ref)
	}
	st, err := b.svc.Task(ctx, ids[0])
	if err != nil || st.State != "pending" {
		t.Errorf("requeued task = %+v, %v; want pending", st, err)
	}
	if _, err := b.svc.DeadLetter(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("DeadLetter of the requeued task: error = %v, want ErrNotFound", err)
	}
	if dl, err := b.svc.DeadLetter(ctx, ids[1]); err != nil || !dl.Archived {
		t.Errorf("the other dead letter = %+v, %v; want it untouched", dl, err)
	}
	if _, err := b.svc.Requeue(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("Requeue of a pending task: error = %v, want ErrNotFound", err)
	}
}

func TestRequeueNotFound(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401)
	ctx := context.Background()
	if _, err := b.svc.Requeue(ctx, "no-such-task"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("Requeue(no-such-task): error = %v, want ErrNotFound", err)
	}
	// Retention deleted the archived task; the stream entry stays.
	if err := b.inspector.DeleteTask("default", ids[0]); err != nil {
		t.Fatal(err)
	}
	_, err := b.svc.Requeue(ctx, ids[0])
	if !errors.Is(err, ops.ErrNotFound) || !strings.Contains(err.Error(), "no longer archived") {
		t.Errorf("Requeue of a task gone from the archive: error = %v, want ErrNotFound saying it is no longer archived", err)
	}
	if dl, err := b.svc.DeadLetter(ctx, ids[0]); err != nil || dl.Archived {
		t.Errorf("DeadLetter = %+v, %v; want the entry kept, not archived", dl, err)
	}
}

// TestDeadLetterIDTooLong: no dead letter has an id longer than
// deadletter.MaxID; every operation on one says not found without repeating
// it.
func TestDeadLetterIDTooLong(t *testing.T) {
	t.Parallel()
	b, _ := setupDead(t, 402)
	ctx := context.Background()
	id := strings.Repeat("x", deadletter.MaxID+1)
	_, showErr := b.svc.DeadLetter(ctx, id)
	_, requeueErr := b.svc.Requeue(ctx, id)
	for name, err := range map[string]error{"DeadLetter": showErr, "Requeue": requeueErr, "DeleteDeadLetter": b.svc.DeleteDeadLetter(ctx, id)} {
		if !errors.Is(err, ops.ErrNotFound) || strings.Contains(err.Error(), "xxxx") {
			t.Errorf("%s of a %d-byte id: %v, want ErrNotFound without the id", name, len(id), err)
		}
	}
}

func TestRequeueArchivedWithoutEntry(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401)
	ctx := context.Background()
	if err := b.rdb.Del(ctx, deadletter.Stream).Err(); err != nil { // as if the worker's XADD had failed
		t.Fatal(err)
	}
	ref, err := b.svc.Requeue(ctx, ids[0])
	if err != nil || ref.State != "pending" {
		t.Errorf("Requeue of an archived task without stream entry = %+v, %v", ref, err)
	}
}

func TestDeleteDeadLetter(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401, 402)
	ctx := context.Background()
	if err := b.svc.DeleteDeadLetter(ctx, ids[0]); err != nil {
		t.Fatalf("DeleteDeadLetter: %v", err)
	}
	if _, err := b.svc.Task(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("Task after delete: error = %v, want ErrNotFound", err)
	}
	if _, err := b.svc.DeadLetter(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("DeadLetter after delete: error = %v, want ErrNotFound", err)
	}
	if err := b.svc.DeleteDeadLetter(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("second DeleteDeadLetter: error = %v, want ErrNotFound", err)
	}
	if n, err := b.svc.CountDeadLetters(ctx); err != nil || n != 1 {
		t.Errorf("CountDeadLetters = %d, %v; want 1", n, err)
	}

	// An entry whose task retention already deleted goes too.
	if err := b.inspector.DeleteTask("default", ids[1]); err != nil {
		t.Fatal(err)
	}
	if err := b.svc.DeleteDeadLetter(ctx, ids[1]); err != nil {
		t.Errorf("DeleteDeadLetter of an entry without task: %v", err)
	}
	if n, err := b.svc.CountDeadLetters(ctx); err != nil || n != 0 {
		t.Errorf("CountDeadLetters = %d, %v; want 0", n, err)
	}
}

func TestDeleteDeadLetterLeavesLiveTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.enqueue(t, 12)
	if err := b.svc.DeleteDeadLetter(context.Background(), id); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("DeleteDeadLetter of a pending task: error = %v, want ErrNotFound", err)
	}
	if st, err := b.svc.Task(context.Background(), id); err != nil || st.State != "pending" {
		t.Errorf("task = %+v, %v; want it still pending", st, err)
	}
}

func TestPurgeDeadLetters(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401, 402, 403)
	ctx := context.Background()
	live := b.enqueue(t, 12)
	// A parked task (archived, waiting to be tried again, as the worker
	// parks one) and another asynq application's archived task.
	parked := b.enqueue(t, 13)
	if err := b.inspector.ArchiveTask("default", parked); err != nil {
		t.Fatal(err)
	}
	member := deadletter.Parked{Queue: "default", ID: parked}.Member()
	if err := b.rdb.ZAdd(ctx, deadletter.ParkedKey, redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: member}).Err(); err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(b.rdb)
	foreign, err := client.Enqueue(asynq.NewTask("other:job", nil), asynq.Queue("otherapp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.inspector.ArchiveTask("otherapp", foreign.ID); err != nil {
		t.Fatal(err)
	}
	p, err := b.svc.PurgeDeadLetters(ctx)
	if err != nil || p != (ops.Purged{Entries: 3, Tasks: 3}) {
		t.Fatalf("PurgeDeadLetters = %+v, %v; want 3 entries and 3 tasks", p, err)
	}
	if exists, err := b.rdb.Exists(ctx, deadletter.Stream).Result(); err != nil || exists != 0 {
		t.Errorf("stream exists = %d, %v; want it gone", exists, err)
	}
	for _, id := range ids {
		if _, err := b.svc.Task(ctx, id); !errors.Is(err, ops.ErrNotFound) {
			t.Errorf("Task(%s) after purge: error = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := b.svc.Task(ctx, live); err != nil {
		t.Errorf("a pending task was purged: %v", err)
	}
	if st, err := b.svc.Task(ctx, parked); err != nil || st.State != "retry" {
		t.Errorf("parked task after purge: %+v, %v; want it kept, waiting", st, err)
	}
	if info, err := b.inspector.GetTaskInfo("otherapp", foreign.ID); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("another application's archived task after purge: %v, %v; want it kept", info, err)
	}
	if p, err := b.svc.PurgeDeadLetters(ctx); err != nil || p != (ops.Purged{}) {
		t.Errorf("second PurgeDeadLetters = %+v, %v; want nothing", p, err)
	}
}
