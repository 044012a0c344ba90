package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/certmailtest"
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

// TestTaskOfAnIDInSeveralQueues: asynq's task ids are unique per queue
// only, so one id can be in several queues (a producer's own asynq.TaskID
// sent to two, a task moved by hand). Task shows the first queue asynq lists
// that holds it and names the others, sorted and capped; TaskInQueue finds
// each one.
func TestTaskOfAnIDInSeveralQueues(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, ops.MaxQueuesListed + 3} {
		t.Run(fmt.Sprintf("%d queues", n), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			client := asynq.NewClientFromRedisClient(b.rdb)
			const id = "own-id-7"
			var holders []string
			for i := range n {
				q := fmt.Sprintf("q%02d", i)
				holders = append(holders, q)
				if _, err := client.Enqueue(asynq.NewTask("resend-dcv", fmt.Appendf(nil, `{"order_id":%d}`, i+1)),
					asynq.TaskID(id), asynq.Queue(q)); err != nil {
					t.Fatal(err)
				}
			}
			b.enqueue(t, 5) // a queue that does not hold it
			first := firstListed(t, b, holders)

			st, err := b.svc.Task(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			others := slices.DeleteFunc(slices.Clone(holders), func(q string) bool { return q == first })
			listed := others[:min(len(others), ops.MaxQueuesListed)]
			if st.Queue != first || !slices.Equal(st.OtherQueues, listed) || st.OtherQueuesCount != n-1 {
				t.Errorf("Task = queue %s, other queues %q (%d); want %s, %q (%d)",
					st.Queue, st.OtherQueues, st.OtherQueuesCount, first, listed, n-1)
			}
			for i, q := range holders {
				st, err := b.svc.TaskInQueue(ctx, q, id)
				want := fmt.Sprintf(`{"order_id":%d}`, i+1)
				if err != nil || st.Queue != q || string(st.Payload) != want || st.OtherQueues != nil || st.OtherQueuesCount != 0 {
					t.Errorf("TaskInQueue(%s) = %+v, %v; want the task of %s alone", q, st, err, q)
				}
			}
		})
	}
}

// TestTaskOfAnIDInOneQueueNamesNoOther: other_queues stays out of the
// answer for the usual task.
func TestTaskOfAnIDInOneQueueNamesNoOther(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ref, _, err := b.svc.Enqueue(t.Context(), enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id":12}`), Queue: "bulk"})
	if err != nil {
		t.Fatal(err)
	}
	b.enqueue(t, 5) // another queue
	st, err := b.svc.Task(t.Context(), ref.ID)
	if err != nil || st.Queue != "bulk" || st.OtherQueues != nil || st.OtherQueuesCount != 0 {
		t.Errorf("Task = %+v, %v; want the task of bulk, no other queue", st, err)
	}
	body, err := json.Marshal(st)
	if err != nil || strings.Contains(string(body), "other_queues") {
		t.Errorf("JSON %s, %v; want no other_queues", body, err)
	}
}

// TestTaskLookupFailingAfterAHit: once a queue holds the task, a failed
// lookup in a later queue does not fail Task: the task found is the answer,
// with the queues found before the failure, and the failure is logged.
func TestTaskLookupFailingAfterAHit(t *testing.T) {
	t.Parallel()
	logger, logs := certmailtest.NewLogger(t)
	b := setup(t, ops.Config{Logger: logger})
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(b.rdb)
	const id = "own-id-8"
	// The queues exist first, so that their order is known before the
	// task is put where the test needs it.
	for _, q := range []string{"qa", "qb", "qc", "qd"} {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	order, err := b.inspector.Queues()
	if err != nil || len(order) != 4 {
		t.Fatalf("queues %q, %v", order, err)
	}
	for _, q := range order[:3] {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":2}`)), asynq.TaskID(id), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	// The third queue's task cannot be read: asynq fails on its state.
	if err := b.rdb.HSet(ctx, "asynq:{"+order[2]+"}:t:"+id, "state", "bogus").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.inspector.GetTaskInfo(order[2], id); err == nil || errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("lookup of the broken task: %v, want a failure", err)
	}
	st, err := b.svc.Task(ctx, id)
	if err != nil || st.Queue != order[0] || !slices.Equal(st.OtherQueues, order[1:2]) || st.OtherQueuesCount != 1 {
		t.Errorf("Task = queue %s, other queues %q (%d), %v; want %s, [%s]", st.Queue, st.OtherQueues, st.OtherQueuesCount, err, order[0], order[1])
	}
	if lines := logs.Lines("warn", "task lookup failed in a further queue; other_queues may be incomplete"); len(lines) != 1 || lines[0]["queue"] != order[2] {
		t.Errorf("log lines %v; want one naming queue %s", lines, order[2])
	}
}

// firstListed returns the first of asynq's queues that is among holders.
func firstListed(t *testing.T, b *bundle, holders []string) string {
	t.Helper()
	queues, err := b.inspector.Queues()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if slices.Contains(holders, q) {
			return q
		}
	}
	t.Fatalf("asynq lists none of %q: %q", holders, queues)
	return ""
}

// A task looked for in a queue asynq has never known (a mistyped name) is
// not found, and the error says that asynq has never known the queue and
// which queues it knows; in a known queue that does not hold it, it is
// only not found.
func TestTaskInAQueueAsynqHasNeverKnown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.enqueue(t, 5) // in default
	_, err := b.svc.TaskInQueue(t.Context(), "defualt", id)
	var unknown *ops.UnknownQueueError
	if !errors.Is(err, ops.ErrNotFound) || !errors.As(err, &unknown) ||
		!strings.HasSuffix(err.Error(), ": not found: asynq has never known queue defualt (it knows: default)") {
		t.Errorf("TaskInQueue(defualt) error = %v; want not found, naming the queues asynq knows", err)
	}
	if _, _, err := b.svc.Enqueue(t.Context(), enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id":12}`), Queue: "bulk"}); err != nil {
		t.Fatal(err)
	}
	_, err = b.svc.TaskInQueue(t.Context(), "bulk", id)
	if !errors.Is(err, ops.ErrNotFound) || errors.As(err, &unknown) || strings.Contains(err.Error(), "never known") {
		t.Errorf("TaskInQueue(bulk) error = %v; want not found alone", err)
	}
}

// TestTaskLookupBoundsTheWork: however many queue names asynq knows (any
// producer adds one with each queue it enqueues into, and asynq never
// forgets them), a lookup by id alone reads them ops.LookupBatch per round
// trip, one command each, and asks asynq's Inspector only about a queue
// that holds the id. One Inspector lookup
// per queue took 20 000 names to 40 000 round trips and 2 s.
func TestTaskLookupBoundsTheWork(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	const names = 5000
	members := make([]any, names)
	for i := range members {
		members[i] = fmt.Sprintf("typo-%d", i)
	}
	if err := b.rdb.SAdd(ctx, "asynq:queues", members...).Err(); err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(b.rdb)
	const id, lone = "own-id-10", "lone-11"
	for _, q := range []string{"typo-4321", "bulk"} {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.TaskID(id), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	// Archived without a dead-letter entry (from the dashboard): requeue
	// looks for it by id alone.
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":2}`)), asynq.TaskID(lone), asynq.Queue("typo-777")); err != nil {
		t.Fatal(err)
	}
	if err := b.inspector.ArchiveTask("typo-777", lone); err != nil {
		t.Fatal(err)
	}
	first := firstListed(t, b, []string{"typo-4321", "bulk"})
	other := map[string]string{"typo-4321": "bulk", "bulk": "typo-4321"}[first]
	batches := int64((names + 1 + ops.LookupBatch - 1) / ops.LookupBatch) // the names and bulk
	for _, tc := range []struct {
		name   string
		lookup func() error
	}{
		{"Task of an id in two queues", func() error {
			st, err := b.svc.Task(ctx, id)
			if err == nil && (st.Queue != first || !slices.Equal(st.OtherQueues, []string{other}) || st.OtherQueuesCount != 1) {
				err = fmt.Errorf("queue %s, other queues %q (%d); want %s and [%s]", st.Queue, st.OtherQueues, st.OtherQueuesCount, first, other)
			}
			return err
		}},
		{"Task of an unknown id", func() error {
			if _, err := b.svc.Task(ctx, "no-such-task"); !errors.Is(err, ops.ErrNotFound) {
				return fmt.Errorf("%v, want not found", err)
			}
			return nil
		}},
		{"Requeue of a task archived without an entry", func() error {
			ref, err := b.svc.Requeue(ctx, lone)
			if err == nil && ref.Queue != "typo-777" {
				err = fmt.Errorf("requeued in %s, want typo-777", ref.Queue)
			}
			return err
		}},
	} {
		b.redis.ResetStats()
		if err := tc.lookup(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		reads := b.redis.Reads()
		var commands int64
		for _, n := range b.redis.Commands() {
			commands += n
		}
		// A pipeline of LookupBatch short commands takes the server a few
		// reads; what comes before and after (listing the queues, asynq's
		// lookup of the task found, the requeue, the counting itself) a
		// few dozen at most.
		if most := 4*batches + 40; reads > most {
			t.Errorf("%s ran %d reads in Redis with %d queue names, want at most %d", tc.name, reads, names, most)
		}
		if most := int64(names) + 60; commands > most {
			t.Errorf("%s ran %d Redis commands with %d queue names, want at most %d (one per queue and a few)", tc.name, commands, names, most)
		}
		t.Logf("%s: %d reads, %d commands", tc.name, reads, commands)
	}
}

// TestTaskLookupFailingInALaterBatch: a read that fails in a later round
// trip of a lookup (here a task key of the wrong type, which fails the whole
// round trip) does not fail Task once a queue held the task: the task found
// is the answer, and the failure is logged. Before any queue held it, the
// failure is Task's error, not a not-found.
func TestTaskLookupFailingInALaterBatch(t *testing.T) {
	t.Parallel()
	logger, logs := certmailtest.NewLogger(t)
	b := setup(t, ops.Config{Logger: logger})
	ctx := t.Context()
	members := make([]any, 2*ops.LookupBatch)
	for i := range members {
		members[i] = fmt.Sprintf("typo-%d", i)
	}
	if err := b.rdb.SAdd(ctx, "asynq:queues", members...).Err(); err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(b.rdb)
	const id = "own-id-12"
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.TaskID(id), asynq.Queue("bulk")); err != nil {
		t.Fatal(err)
	}
	// The queues are read in asynq's order: a queue LookupBatch after
	// bulk is read in a later round trip, and if bulk comes too late for
	// that, the test holds the task in another queue early enough.
	known, err := b.inspector.Queues()
	if err != nil {
		t.Fatal(err)
	}
	hit := slices.Index(known, "bulk")
	if hit+ops.LookupBatch >= len(known) {
		hit = 0
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.TaskID(id), asynq.Queue(known[hit])); err != nil {
			t.Fatal(err)
		}
	}
	broken, first := known[hit+ops.LookupBatch], known[hit]
	for _, key := range []string{"asynq:{" + broken + "}:t:" + id, "asynq:{" + known[0] + "}:t:lost-13"} {
		if err := b.rdb.Set(ctx, key, "not a hash", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := b.svc.Task(ctx, id)
	if err != nil || st.Queue != first || st.OtherQueuesCount != 0 {
		t.Errorf("Task = queue %s, other queues %q (%d), %v; want %s alone", st.Queue, st.OtherQueues, st.OtherQueuesCount, err, first)
	}
	if lines := logs.Lines("warn", "task lookup failed in a further queue; other_queues may be incomplete"); len(lines) != 1 ||
		lines[0]["from_queue"] == nil || lines[0]["queue"] != nil {
		t.Errorf("log lines %v; want one naming the failed batch's first queue as from_queue", lines)
	}
	if _, err := b.svc.Task(ctx, "lost-13"); err == nil || errors.Is(err, ops.ErrNotFound) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Errorf("Task(lost-13) error = %v; want the failed read", err)
	}
}
