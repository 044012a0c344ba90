package ops_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/enqueue"
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
	// Both ends of the range are limits.
	for _, limit := range []int{1, ops.MaxDeadLetterLimit} {
		page, err := b.svc.DeadLetters(context.Background(), limit, "")
		entries, next := page.Entries, page.Next
		if err != nil || len(entries) != 0 || next != "" {
			t.Errorf("DeadLetters(%d) of an empty stream = %v, %q, %v", limit, entries, next, err)
		}
	}
}

func TestRequeue(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401, 402)
	ctx := context.Background()
	marker := deadletter.MarkerKey("default", ids[0])
	if n, err := b.rdb.Exists(ctx, marker).Result(); err != nil || n != 1 {
		t.Fatalf("dead letter's marker: %d (%v), want it set", n, err)
	}
	ref, err := b.svc.Requeue(ctx, ids[0])
	if err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	if ref != (ops.TaskRef{ID: ids[0], Type: "set-emails", Queue: "default", State: "pending"}) {
		t.Errorf("Requeue = %+v", ref)
	}
	// Its next failure is a dead letter of its own, even one the workers'
	// lease sweep writes.
	if n, err := b.rdb.Exists(ctx, marker).Result(); err != nil || n != 0 {
		t.Errorf("marker of the requeued task: %d (%v), want it deleted", n, err)
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
	_, deleteErr := b.svc.DeleteDeadLetter(ctx, id)
	for name, err := range map[string]error{"DeadLetter": showErr, "Requeue": requeueErr, "DeleteDeadLetter": deleteErr} {
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
	if d, err := b.svc.DeleteDeadLetter(ctx, ids[0]); err != nil || d.Task == nil || d.Task.Queue != "default" || d.Entries != 1 {
		t.Fatalf("DeleteDeadLetter = %+v, %v; want the task and its entry deleted", d, err)
	}
	// Sent again under its id, the task's next failure is a dead letter of
	// its own, even one the workers' lease sweep writes.
	if n, err := b.rdb.Exists(ctx, deadletter.MarkerKey("default", ids[0])).Result(); err != nil || n != 0 {
		t.Errorf("marker of the deleted task: %d (%v), want it deleted", n, err)
	}
	if _, err := b.svc.Task(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("Task after delete: error = %v, want ErrNotFound", err)
	}
	if _, err := b.svc.DeadLetter(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("DeadLetter after delete: error = %v, want ErrNotFound", err)
	}
	if _, err := b.svc.DeleteDeadLetter(ctx, ids[0]); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("second DeleteDeadLetter: error = %v, want ErrNotFound", err)
	}
	if n, err := b.svc.CountDeadLetters(ctx); err != nil || n != 1 {
		t.Errorf("CountDeadLetters = %d, %v; want 1", n, err)
	}

	// An entry whose task retention already deleted goes too.
	if err := b.inspector.DeleteTask("default", ids[1]); err != nil {
		t.Fatal(err)
	}
	if d, err := b.svc.DeleteDeadLetter(ctx, ids[1]); err != nil || d.Task != nil || d.Entries != 1 || !strings.Contains(d.Kept, "deleted, after its retention or by an operator") {
		t.Errorf("DeleteDeadLetter of an entry without task = %+v, %v; want the entry alone deleted, saying why", d, err)
	}
	if n, err := b.svc.CountDeadLetters(ctx); err != nil || n != 0 {
		t.Errorf("CountDeadLetters = %d, %v; want 0", n, err)
	}
}

func TestDeleteDeadLetterLeavesLiveTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.enqueue(t, 12)
	if _, err := b.svc.DeleteDeadLetter(context.Background(), id); !errors.Is(err, ops.ErrNotFound) {
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
	if n, err := b.rdb.XLen(ctx, deadletter.Stream).Result(); err != nil || n != 0 {
		t.Errorf("stream holds %d entries (%v); want none", n, err)
	}
	for _, id := range ids {
		if _, err := b.svc.Task(ctx, id); !errors.Is(err, ops.ErrNotFound) {
			t.Errorf("Task(%s) after purge: error = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := b.svc.Task(ctx, live); err != nil {
		t.Errorf("a pending task was purged: %v", err)
	}
	for _, id := range ids {
		if n, err := b.rdb.Exists(ctx, deadletter.MarkerKey("default", id)).Result(); err != nil || n != 0 {
			t.Errorf("marker of purged task %s: %d (%v), want it deleted", id, n, err)
		}
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

// archivedIn enqueues a raw task to queue q, archives it and, unless
// noEntry, appends its dead-letter entry, as a worker would; it returns the
// task id.
func (b *bundle) archivedIn(t *testing.T, q string, noEntry bool) string {
	t.Helper()
	client := asynq.NewClientFromRedisClient(b.rdb)
	info, err := client.Enqueue(asynq.NewTask("set-emails-v2", []byte(`{}`)), asynq.Queue(q))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.inspector.ArchiveTask(q, info.ID); err != nil {
		t.Fatal(err)
	}
	if !noEntry {
		e := deadletter.Entry{TaskID: info.ID, Type: "set-emails-v2", Queue: q, ErrorCode: "unknown_type", FailedAt: time.Now()}
		if _, err := deadletter.Append(context.Background(), b.rdb, e, 1000); err != nil {
			t.Fatal(err)
		}
	}
	return info.ID
}

// streamTasks returns the task ids of the stream's entries, sorted.
func (b *bundle) streamTasks(t *testing.T) []string {
	t.Helper()
	msgs, err := b.rdb.XRange(context.Background(), deadletter.Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range msgs {
		id, _ := m.Values["task_id"].(string)
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// A purge of some queues deletes the entries of those queues only (and the
// malformed ones, which name no queue): the dead letters of the others keep
// theirs, and so does a parked task of a purged queue.
func TestPurgeDeadLettersKeepsOtherQueues(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"critical", "default"}}})
	ctx := context.Background()
	inDefault := b.archivedIn(t, "default", false)
	inCritical := b.archivedIn(t, "critical", false)
	inBulk := b.archivedIn(t, "bulk", false)
	parked := b.archivedIn(t, "default", false)
	if err := deadletter.Park(ctx, b.rdb, deadletter.Parked{Queue: "default", ID: parked}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: deadletter.Stream, Values: []any{"junk", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}

	check, err := b.svc.CheckPurge(ctx)
	if err != nil || check.Tasks != 2 || check.Entries != 3 || check.OtherEntries != 1 || !slices.Equal(check.Other, []string{"bulk"}) ||
		len(check.Unknown) != 0 {
		t.Fatalf("CheckPurge = %+v, %v; want 2 tasks and 3 entries to go (not the parked task's), 1 of bulk to stay", check, err)
	}
	p, err := b.svc.PurgeDeadLetters(ctx)
	if err != nil || p != (ops.Purged{Entries: 3, Tasks: 2, Kept: 1}) {
		t.Fatalf("PurgeDeadLetters = %+v, %v; want 3 entries (2 tasks' and the junk), 2 tasks, 1 entry kept", p, err)
	}
	if got, want := b.streamTasks(t), slices.Sorted(slices.Values([]string{inBulk, parked})); !slices.Equal(got, want) {
		t.Errorf("stream after purge holds tasks %v, want bulk's and the parked one's %v", got, want)
	}
	if info, err := b.inspector.GetTaskInfo("bulk", inBulk); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("archived task of an unlisted queue after purge: %v, %v; want it kept", info, err)
	}
	for q, id := range map[string]string{"default": inDefault, "critical": inCritical} {
		if _, err := b.inspector.GetTaskInfo(q, id); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("archived task of %s after purge: %v, want it deleted", q, err)
		}
	}
}

// CheckPurge counts what Purge deletes, however the archive and the stream
// differ: archived tasks without an entry (the stream capped lower than the
// archive, or a task archived from the dashboard), a task with two entries,
// a parked task and its entry (both kept). Purge of that check deletes
// exactly that, and no task archived after the check.
func TestCheckPurgeCountsWhatPurgeDeletes(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"default"}}})
	ctx := context.Background()
	for range 5 {
		b.archivedIn(t, "default", true) // no entry
	}
	twice := b.archivedIn(t, "default", false)
	e := deadletter.Entry{TaskID: twice, Type: "set-emails-v2", Queue: "default", ErrorCode: "unknown_type", FailedAt: time.Now()}
	if _, err := deadletter.Append(ctx, b.rdb, e, 1000); err != nil {
		t.Fatal(err)
	}
	b.archivedIn(t, "default", false)
	parked := b.archivedIn(t, "default", false)
	if err := deadletter.Park(ctx, b.rdb, deadletter.Parked{Queue: "default", ID: parked}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}

	check, err := b.svc.CheckPurge(ctx)
	if err != nil || check.Tasks != 7 || check.Entries != 3 {
		t.Fatalf("CheckPurge = %+v, %v; want 7 tasks (not the parked one) and 3 entries (not the parked task's) to go", check, err)
	}
	late := b.archivedIn(t, "default", true) // after the question was asked
	p, err := b.svc.Purge(ctx, check)
	if err != nil || p != (ops.Purged{Tasks: check.Tasks, Entries: check.Entries, Kept: 1}) {
		t.Fatalf("Purge = %+v, %v; want the check's %d tasks and %d entries, the parked task's entry kept", p, err, check.Tasks, check.Entries)
	}
	if got := b.streamTasks(t); !slices.Equal(got, []string{parked}) {
		t.Errorf("stream after purge holds tasks %v, want the parked one's", got)
	}
	for _, id := range []string{parked, late} {
		if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStateArchived {
			t.Errorf("task %s after purge: %v, %v; want it still archived", id, info, err)
		}
	}
}

// A parked task's entry, left out of the check's count, stays when the
// worker moves the task out of the archive between the question and the
// answer: the purge deletes the entries it counted and no others.
func TestPurgeLeavesTheEntriesItDidNotCount(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"default"}}})
	ctx := context.Background()
	failed := b.archivedIn(t, "default", false)
	parked := b.archivedIn(t, "default", false) // an entry of an earlier failure, parked on a wait now
	if err := deadletter.Park(ctx, b.rdb, deadletter.Parked{Queue: "default", ID: parked}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	check, err := b.svc.CheckPurge(ctx)
	if err != nil || check.Tasks != 1 || check.Entries != 1 {
		t.Fatalf("CheckPurge = %+v, %v; want 1 task and 1 entry to go, not the parked task's", check, err)
	}
	// The worker moves the parked task to the retry set (here: pending)
	// and removes its parked entry, before the operator answers.
	if err := b.inspector.RunTask("default", parked); err != nil {
		t.Fatal(err)
	}
	if _, err := b.rdb.ZRem(ctx, deadletter.ParkedKey, deadletter.Parked{Queue: "default", ID: parked}.Member()).Result(); err != nil {
		t.Fatal(err)
	}
	p, err := b.svc.Purge(ctx, check)
	if err != nil || p != (ops.Purged{Tasks: check.Tasks, Entries: check.Entries, Kept: 1}) {
		t.Fatalf("Purge = %+v, %v; want the check's %d task and %d entry, the parked task's entry kept", p, err, check.Tasks, check.Entries)
	}
	if got := b.streamTasks(t); !slices.Equal(got, []string{parked}) {
		t.Errorf("stream after purge holds tasks %v, want the once-parked one's (and not %s)", got, failed)
	}
}

// A mistyped queue is refused before anything is deleted when dead letters
// name a queue that is not listed (the one meant), or when no queue listed
// is known to asynq; a never-used queue among known ones is only reported.
func TestPurgeDeadLettersUnknownQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		queues  []string
		entry   bool // the archived task of default has a dead-letter entry
		refused bool
		unknown []string
	}{
		{"mistype with dead letters of the queue meant", []string{"critical", "defualt"}, true, true, []string{"defualt"}},
		{"no queue known", []string{"defualt"}, false, true, []string{"defualt"}},
		{"a never-used queue", []string{"bulk", "critical", "default"}, true, false, []string{"bulk"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: tt.queues}})
			inDefault := b.archivedIn(t, "default", !tt.entry)
			inCritical := b.archivedIn(t, "critical", true)
			before := b.streamTasks(t)

			check, checkErr := b.svc.CheckPurge(ctx)
			p, err := b.svc.PurgeDeadLetters(ctx)
			var unknownErr *ops.UnknownQueuesError
			if !slices.Equal(check.Unknown, tt.unknown) || !slices.Equal(check.Known, []string{"critical", "default"}) || check.KnownCount != 2 {
				t.Errorf("CheckPurge = %+v; want unknown %v, known critical and default", check, tt.unknown)
			}
			if !tt.refused {
				if checkErr != nil || err != nil || p != (ops.Purged{Entries: 1, Tasks: 2}) {
					t.Fatalf("CheckPurge: %v; PurgeDeadLetters = %+v, %v; want both tasks and the entry deleted", checkErr, p, err)
				}
				return
			}
			for _, e := range []error{checkErr, err} {
				if !errors.As(e, &unknownErr) || !errors.Is(e, ops.ErrInvalidArgument) || !strings.Contains(e.Error(), "defualt") ||
					!strings.Contains(e.Error(), "critical, default") {
					t.Errorf("error = %v, want an UnknownQueuesError naming defualt and the queues asynq knows", e)
				}
			}
			if p != (ops.Purged{}) {
				t.Errorf("refused purge deleted %+v", p)
			}
			if got := b.streamTasks(t); !slices.Equal(got, before) {
				t.Errorf("stream after a refused purge: %v, want %v", got, before)
			}
			for q, id := range map[string]string{"default": inDefault, "critical": inCritical} {
				if info, err := b.inspector.GetTaskInfo(q, id); err != nil || info.State != asynq.TaskStateArchived {
					t.Errorf("archived task of %s after a refused purge: %v, %v; want it kept", q, info, err)
				}
			}
		})
	}
}

// What a purge check shows of the queues asynq knows, which any asynq
// producer names, is bounded: ten names at most, each cut short, and a
// count of the rest.
func TestCheckPurgeBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"default", "defualt"}}})
	long := "a" + strings.Repeat("x", 300)
	client := asynq.NewClientFromRedisClient(b.rdb)
	for i := range 12 {
		q := fmt.Sprintf("q%02d", i)
		if i == 0 {
			q = long
		}
		if _, err := client.Enqueue(asynq.NewTask("other:job", nil), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	b.enqueue(t, 1) // default
	check, err := b.svc.CheckPurge(context.Background())
	if err != nil || check.KnownCount != 13 || len(check.Known) != ops.MaxQueuesListed {
		t.Fatalf("CheckPurge = %+v, %v; want 13 known queues, %d listed", check, err, ops.MaxQueuesListed)
	}
	for _, q := range check.Known {
		if len(q) > 64 {
			t.Errorf("known queue shown with %d bytes, want at most 64", len(q))
		}
	}
	if note := check.UnknownNote(); !strings.HasPrefix(note, "asynq has never known queue defualt (it knows: ax") ||
		!strings.HasSuffix(note, " and 3 more)") || len(note) > 1000 {
		t.Errorf("UnknownNote = %q", note)
	}
}

// asynq's task ids are unique per queue only: with one id dead-lettered in
// one queue and alive in another, requeue and delete act on the queue the
// dead letter names (or, without an entry, on the archived one), whichever
// queue asynq lists first, and leave the other task alone.
func TestDeadLetterOfAnIDInTwoQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(b.rdb)
	// Each id is dead-lettered in one queue and pending in the other, both
	// ways round, so that one of them is behind the other in asynq's list.
	put := func(id, dead, alive string, entry bool) {
		t.Helper()
		for _, q := range []string{alive, dead} {
			if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":999}`)), asynq.TaskID(id), asynq.Queue(q)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.inspector.ArchiveTask(dead, id); err != nil {
			t.Fatal(err)
		}
		if entry {
			e := deadletter.Entry{TaskID: id, Type: "resend-dcv", Queue: dead, ErrorCode: "not_found|order", FailedAt: time.Now()}
			if _, err := deadletter.Append(ctx, b.rdb, e, 1000); err != nil {
				t.Fatal(err)
			}
		}
	}
	state := func(q, id string) string {
		t.Helper()
		info, err := b.inspector.GetTaskInfo(q, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			return "gone"
		case err != nil:
			return err.Error()
		}
		return info.State.String()
	}
	for _, tt := range []struct{ dead, alive string }{{"critical", "default"}, {"default", "critical"}} {
		requeued, deleted, bare := "rq-in-"+tt.dead, "del-in-"+tt.dead, "bare-in-"+tt.dead
		put(requeued, tt.dead, tt.alive, true)
		put(deleted, tt.dead, tt.alive, true)
		put(bare, tt.dead, tt.alive, false)

		if ref, err := b.svc.Requeue(ctx, requeued); err != nil || ref.Queue != tt.dead {
			t.Errorf("Requeue(%s) = %+v, %v; want it requeued in %s", requeued, ref, err, tt.dead)
		}
		if s := state(tt.dead, requeued); s != "pending" {
			t.Errorf("%s in %s after requeue: %s, want pending", requeued, tt.dead, s)
		}
		if ref, err := b.svc.Requeue(ctx, bare); err != nil || ref.Queue != tt.dead {
			t.Errorf("Requeue(%s), without entry = %+v, %v; want the archived one, in %s", bare, ref, err, tt.dead)
		}

		d, err := b.svc.DeleteDeadLetter(ctx, deleted)
		if err != nil || d.Task == nil || d.Task.Queue != tt.dead || d.Entries != 1 {
			t.Errorf("DeleteDeadLetter(%s) = %+v, %v; want the task of %s and its entry deleted", deleted, d, err, tt.dead)
		}
		if s := state(tt.dead, deleted); s != "gone" {
			t.Errorf("%s in %s after delete: %s, want it gone", deleted, tt.dead, s)
		}
		for _, id := range []string{requeued, deleted, bare} {
			if s := state(tt.alive, id); s != "pending" {
				t.Errorf("%s in %s, never dead-lettered: %s, want it left pending", id, tt.alive, s)
			}
		}
	}
	if ids := b.streamTasks(t); len(ids) != 0 {
		t.Errorf("stream entries left: %v", ids)
	}

	// The dead letter's task runs again (from the dashboard): a delete takes
	// the entry, says it left the task, and leaves it.
	put("rerun", "critical", "default", true)
	if err := b.inspector.RunTask("critical", "rerun"); err != nil {
		t.Fatal(err)
	}
	d, err := b.svc.DeleteDeadLetter(ctx, "rerun")
	if err != nil || d.Task != nil || d.Entries != 1 || d.Kept != "no longer archived in queue critical (it is pending now)" {
		t.Errorf("DeleteDeadLetter of a task run again = %+v, %v; want the entry alone deleted, saying the task is pending", d, err)
	}
	if s := state("critical", "rerun"); s != "pending" {
		t.Errorf("rerun in critical: %s, want it left pending", s)
	}
}

// Every parked task of a purged queue is left with its entry, not only the
// first ones of the parked set: the set is read whole, whatever its size.
func TestPurgeLeavesEveryParkedTask(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"default"}}})
	ctx := context.Background()
	due := time.Now().Add(time.Minute)
	var ids []string
	for i := range 3 {
		id := b.archivedIn(t, "default", false)
		if err := deadletter.Park(ctx, b.rdb, deadletter.Parked{Queue: "default", ID: id}, due.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if p, err := b.svc.PurgeDeadLetters(ctx); err != nil || p != (ops.Purged{Kept: 3}) {
		t.Errorf("PurgeDeadLetters = %+v, %v; want nothing deleted, the 3 parked tasks' entries kept", p, err)
	}
	for _, id := range ids {
		if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStateArchived {
			t.Errorf("parked task %s after the purge: %v, %v; want it kept, archived", id, info, err)
		}
	}
	slices.Sort(ids)
	if got := b.streamTasks(t); !slices.Equal(got, ids) {
		t.Errorf("stream after the purge holds tasks %v, want the parked ones' %v", got, ids)
	}
}

// A dead letter requeued while DeleteDeadLetter reads it (found archived,
// then run from the dashboard before the delete) is pending, no dead letter
// any more: the delete takes its entry and leaves the task, saying so.
func TestDeleteDeadLetterLeavesATaskRequeuedWhileRead(t *testing.T) {
	t.Parallel()
	b, proxy := setupProxied(t, ops.Config{})
	ctx := context.Background()
	id := b.archivedIn(t, "default", false)
	// The parked set is read after the task was found archived.
	proxy.BeforeOnce("certmail:parked", func() {
		if err := b.inspector.RunTask("default", id); err != nil {
			t.Error(err)
		}
	})
	d, err := b.svc.DeleteDeadLetter(ctx, id)
	if err != nil || d.Task != nil || d.Entries != 1 || d.Kept != "no longer archived in queue default (it is pending now)" {
		t.Errorf("DeleteDeadLetter = %+v, %v; want the entry alone deleted, saying the task is pending", d, err)
	}
	if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("task requeued meanwhile: %v, %v; want it left pending", info, err)
	}
}
