package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/taskresult"
)

func TestTaskAcrossQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	payload := `{"order_id":12,"additional_emails":[],"sequence":5}`
	refs := map[string]ops.TaskRef{}
	for _, q := range []string{"default", "bulk", "critical"} {
		ref, _, err := b.svc.Enqueue(ctx, enqueue.Request{Type: "set-emails", Payload: []byte(payload), Queue: q, ProcessIn: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		refs[q] = ref
	}
	for q, ref := range refs {
		st, err := b.svc.Task(ctx, ref.ID)
		if err != nil {
			t.Fatalf("Task(%s): %v", ref.ID, err)
		}
		if st.ID != ref.ID || st.Queue != q || st.Type != "set-emails" || st.State != "scheduled" ||
			st.MaxRetry != 12 || st.Retried != 0 || st.NextProcessAt == nil || string(st.Payload) != payload {
			t.Errorf("Task(%s) = %+v, payload %s", ref.ID, st, st.Payload)
		}
		if st.Result != nil || st.CompletedAt != nil || st.LastFailedAt != nil || st.LastError != "" {
			t.Errorf("Task(%s) of a task never run = %+v", ref.ID, st)
		}
	}
}

// TestTaskShowsTheRetryCapThatApplies: a raw producer's task carries asynq's
// MaxRetry (25 by default), but the worker stops at CERTMAIL_MAX_RETRY;
// what is shown is the lower of the two, the cap that applies.
func TestTaskShowsTheRetryCapThatApplies(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{MaxRetry: 7})
	client := asynq.NewClient(b.redis.ConnOpt())
	t.Cleanup(func() { client.Close() })
	payload := []byte(`{"order_id":12,"additional_emails":[]}`)
	for _, tc := range []struct {
		opts []asynq.Option
		want int
	}{
		{nil, 7}, // asynq's default, 25
		{[]asynq.Option{asynq.MaxRetry(30)}, 7},
		{[]asynq.Option{asynq.MaxRetry(3)}, 3},
		{[]asynq.Option{asynq.MaxRetry(0)}, 0},
	} {
		info, err := client.Enqueue(asynq.NewTask("set-emails", payload), append(tc.opts, asynq.ProcessIn(time.Hour))...)
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.svc.Task(t.Context(), info.ID)
		if err != nil {
			t.Fatal(err)
		}
		inQueue, err := b.svc.TaskInQueue(t.Context(), info.Queue, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.MaxRetry != tc.want || inQueue.MaxRetry != tc.want {
			t.Errorf("task of MaxRetry %d: max_retry %d (Task) and %d (TaskInQueue), want %d",
				info.MaxRetry, st.MaxRetry, inQueue.MaxRetry, tc.want)
		}
	}
}

func TestTaskNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for _, id := range []string{"no-such-task", ""} {
		if _, err := b.svc.Task(ctx, id); !errors.Is(err, ops.ErrNotFound) {
			t.Errorf("Task(%q) without queues: error = %v, want ErrNotFound", id, err)
		}
	}
	b.enqueue(t, 12) // now a queue exists
	if _, err := b.svc.Task(ctx, "no-such-task"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("Task(no-such-task): error = %v, want ErrNotFound", err)
	}
}

func TestTaskCompletedAndArchived(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Retention: time.Hour})
	b.startWorker(t, 1001)
	ctx := context.Background()
	done := b.enqueue(t, 1001)
	dead := b.deadLetters(t, 404)[0]

	var st ops.TaskStatus
	waitFor(t, 10*time.Second, func() error {
		var err error
		st, err = b.svc.Task(ctx, done)
		if err == nil && st.State != "completed" {
			err = errors.New("task is " + st.State)
		}
		return err
	})
	var res taskresult.Result
	if err := json.Unmarshal(st.Result, &res); err != nil {
		t.Fatalf("result %s: %v", st.Result, err)
	}
	if res.Outcome != "delivered" || res.HTTPStatus != 204 || res.Attempts != 1 || st.CompletedAt == nil {
		t.Errorf("completed task = %+v, result %+v", st, res)
	}

	st, err := b.svc.Task(ctx, dead)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "archived" || st.LastError == "" || st.LastFailedAt == nil {
		t.Errorf("dead-lettered task = %+v", st)
	}
}

func TestTaskInQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ref, _, err := b.svc.Enqueue(ctx, enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id":12}`), Queue: "bulk"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := b.svc.TaskInQueue(ctx, "bulk", ref.ID)
	if err != nil || st.ID != ref.ID || st.Queue != "bulk" || st.State != "pending" || st.Type != "resend-dcv" {
		t.Errorf("TaskInQueue = %+v, %v", st, err)
	}
	for _, q := range []string{"default", "nowhere"} { // another queue, a queue that does not exist
		if _, err := b.svc.TaskInQueue(ctx, q, ref.ID); !errors.Is(err, ops.ErrNotFound) {
			t.Errorf("TaskInQueue(%s) = %v, want ErrNotFound", q, err)
		}
	}
	if _, err := b.svc.TaskInQueue(ctx, "bulk", "no-such-task"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("unknown id: %v, want ErrNotFound", err)
	}
}

// A task the worker parked (archived while it waits, listed in
// certmail:parked) is reported waiting for a retry by TaskInQueue too, so
// that a schedule waiting for it keeps waiting.
func TestTaskInQueueParked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ref, _, err := b.svc.Enqueue(ctx, enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id":12}`), Queue: "bulk"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.inspector.ArchiveTask("bulk", ref.ID); err != nil {
		t.Fatal(err)
	}
	if st, err := b.svc.TaskInQueue(ctx, "bulk", ref.ID); err != nil || st.State != "archived" {
		t.Fatalf("archived task: %+v, %v", st, err)
	}
	due := time.Now().Add(time.Minute)
	// The worker's parked entry, as internal/worker writes it.
	member := `{"queue":"bulk","id":"` + ref.ID + `"}`
	if err := b.rdb.ZAdd(ctx, "certmail:parked", redis.Z{Score: float64(due.UnixMilli()), Member: member}).Err(); err != nil {
		t.Fatal(err)
	}
	st, err := b.svc.TaskInQueue(ctx, "bulk", ref.ID)
	if err != nil || st.State != "retry" || st.NextProcessAt == nil || st.NextProcessAt.Unix() != due.Unix() {
		t.Errorf("parked task: %+v, %v; want retry at %v", st, err, due)
	}
	// Not a dead letter: the dead-letter operations neither run nor delete it.
	if _, err := b.svc.Requeue(ctx, ref.ID); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("requeue of a parked task: %v, want not found", err)
	}
	if _, err := b.svc.DeleteDeadLetter(ctx, ref.ID); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("delete of a parked task: %v, want not found", err)
	}
	if st, err := b.svc.TaskInQueue(ctx, "bulk", ref.ID); err != nil || st.State != "retry" {
		t.Errorf("parked task after the dead-letter calls: %+v, %v; want it waiting", st, err)
	}
}
