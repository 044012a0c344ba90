package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

const limited = `{"errors":[{"code":"request_limit_exceeded","message":"Service unavailable, please limit request volume"}]}`

// asynq archives a task on its last delivery whatever the error; a 429
// there must still cost no retry: the task is parked, then delivered.
func TestWaitOnLastDeliveryIsParkedNotDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(9)
	b.fake.FailNext(2, 429, limited, "application/json")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 9}`, asynq.MaxRetry(0))
	info := b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)
	if info.Retried != 0 {
		t.Errorf("retried = %d, want 0", info.Retried)
	}
	if n, ok := b.fake.StatusCount(429), b.fake.StatusCount(204); n != 2 || ok != 1 {
		t.Errorf("fake answered %d×429 and %d×204, want 2 and 1", n, ok)
	}
	if r := result(t, info); r.Outcome != taskresult.Delivered {
		t.Errorf("outcome = %q", r.Outcome)
	}
	b.deadLetters(t, 0)
	if n := len(b.logs.Lines("error", "")); n != 0 {
		t.Errorf("%d ERROR lines, want none", n)
	}
	parked := b.logs.Lines("info", "delivery deferred on the task's last retry: parked until the wait is over")
	if len(parked) != 2 || parked[0]["task_id"] != id || parked[0]["error_class"] != "rate_limited" {
		t.Errorf("parking lines = %v, want two for task %s", parked, id)
	}
	// The unparker moves the task to retry, removes its entry, then logs
	// the move: the task may be delivered, and the entry gone, before the
	// line comes. Wait for both.
	left := func() int64 { return intVal(t, b.redis.Client().ZCard(context.Background(), "certmail:parked")) }
	moved := func() int {
		return len(b.logs.Lines("info", "parked task moved from the archive to retry: asynq runs it when its wait is over"))
	}
	waitFor(t, 10*time.Second, func() bool { return left() == 0 && moved() >= 2 }, func() string {
		return strconv.FormatInt(left(), 10) + " parked entries left and " + strconv.Itoa(moved()) + " unparking lines, want 0 and 2"
	})
	if n := moved(); n != 2 {
		t.Errorf("%d unparking lines, want 2", n)
	}
}

// heldAnswer passes requests on to the fake; once armed, it holds the next
// one until release is closed, and closes arrived when that one comes: the
// task that sent it is running (asynq's state "active") until then.
type heldAnswer struct {
	fake    http.Handler
	armed   atomic.Bool
	arrived chan struct{}
	release chan struct{}
}

func newHeldAnswer(fake http.Handler) *heldAnswer {
	return &heldAnswer{fake: fake, arrived: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldAnswer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.armed.CompareAndSwap(true, false) {
		close(h.arrived)
		select {
		case <-h.release:
		case <-r.Context().Done():
			return
		}
	}
	h.fake.ServeHTTP(w, r)
}

// A parked task's retries are still spent: its next failure, not its next
// wait, dead-letters it, once, and leaves no parked entry behind.
func TestParkedTaskStillDeadLettersOnFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1}) // order 404 does not exist at the fake
	held := newHeldAnswer(b.fake)
	ts := httptest.NewServer(held)
	t.Cleanup(ts.Close)
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) {
		c.Accounts = account.Set{"default": account.Account{Name: "default", BaseURL: ts.URL + "/services/v2", APIKey: account.Secret(testKey)}}
		c.Client.Timeout = digicert.DefaultTimeout // the held answer is not cut by a stall of the test
	}})
	b.fake.FailNext(1, 429, limited, "application/json")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 404}`, asynq.MaxRetry(0))
	b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	waitFor(t, 10*time.Second, func() bool { return b.fake.RequestCount() == 2 }, func() string {
		return strconv.Itoa(b.fake.RequestCount()) + " requests, want 2 (the 429, then the 404)"
	})
	b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("error", "task dead-lettered")) == 1 },
		func() string { return "no dead-letter line" })
	if e := b.deadLetters(t, 1)[0]; e["task_id"] != id || e["error_code"] != "not_found|order" {
		t.Errorf("dead letter = %v", e)
	}
	if n := intVal(t, b.redis.Client().ZCard(context.Background(), "certmail:parked")); n != 0 {
		t.Errorf("%d parked entries left, want 0", n)
	}
	// With no entry left, nothing brings it back: it stays archived.
	if info := b.waitState(t, id, asynq.TaskStateArchived, time.Second); info.Retried != 0 {
		t.Errorf("retried = %d", info.Retried)
	}
	if n := b.fake.RequestCount(); n != 2 {
		t.Errorf("fake saw %d requests, want 2", n)
	}

	// One an operator ran before its wait was over leaves no entry either,
	// or the unparker would bring the dead letter back at the due time. Its
	// entry is written while it runs (its call is held): the unparker
	// keeps the entry of a running task, and drops that of a task waiting
	// to run.
	ctx := context.Background()
	held.armed.Store(true)
	id = b.enqueue(t, "resend-dcv", `{"order_id": 404}`, asynq.MaxRetry(0))
	select {
	case <-held.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the second task's call did not reach DigiCert")
	}
	entry := `{"queue":"default","id":"` + id + `"}`
	if err := b.redis.Client().ZAdd(ctx, "certmail:parked", redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: entry}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, parked, err := deadletter.ParkedUntil(ctx, b.redis.Client(), "default", id); !parked || err != nil {
		t.Fatalf("the test's entry is not read as parked: %v", err)
	}
	close(held.release)
	b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("error", "task dead-lettered")) == 2 },
		func() string { return "no second dead-letter line" })
	// Only the dead letter clears the entry of an archived task: the
	// unparker would move the task to retry first, then remove the entry.
	if n := intVal(t, b.redis.Client().ZCard(ctx, "certmail:parked")); n != 0 {
		t.Errorf("%d parked entries left after the dead letter, want 0", n)
	}
	if info := b.waitState(t, id, asynq.TaskStateArchived, time.Second); info.Retried != 0 {
		t.Errorf("retried = %d", info.Retried)
	}
	if lines := b.logs.Lines("info", "parked task moved from the archive to retry: asynq runs it when its wait is over"); len(lines) != 1 {
		t.Errorf("%d unparking lines, want 1 (the first task's)", len(lines))
	}
}

// Tasks without retries wait out a paused account as the others do: none
// is dead-lettered, the API reports them as waiting to be retried, and
// they are delivered once the key works again.
func TestPausedAccountParksTasksWithoutRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{APIKeys: []string{"another-key"}, AnyIDExists: true}})
	conn, err := redisconn.Open(b.redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Client.Close() })
	svc, err := ops.New(ops.Config{Redis: conn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })

	var ids []string
	for i := range 3 {
		ids = append(ids, b.enqueue(t, "resend-dcv", `{"order_id": `+strconv.Itoa(i+1)+`}`, asynq.MaxRetry(0)))
	}
	waitFor(t, 30*time.Second, func() bool { return b.fake.StatusCount(403) >= 3 }, func() string { return "fewer than 3 probes" })
	// Wherever each task is in its cycle, none is dead-lettered, and one
	// that is parked (moved to asynq's retry set: with no retries, asynq
	// itself archives it on every failure) is reported as waiting.
	sawParked := false
	waitFor(t, 10*time.Second, func() bool {
		for _, id := range ids {
			st, err := svc.Task(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if st.State == "archived" {
				t.Fatalf("task %s reported archived while the account is paused", id)
			}
			info, err := b.inspector.GetTaskInfo("default", id)
			if err == nil && info.State == asynq.TaskStateRetry && st.State == "retry" && st.NextProcessAt != nil {
				sawParked = true
			}
		}
		return sawParked
	}, func() string { return "no task seen parked" })
	b.deadLetters(t, 0)

	b.fake.SetAPIKeys("another-key", testKey)
	for _, id := range ids {
		if info := b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second); info.Retried != 0 {
			t.Errorf("task %s retried %d times", id, info.Retried)
		}
	}
	b.deadLetters(t, 0)
	if n := len(b.logs.Lines("error", "")); n != 1 {
		t.Errorf("%d ERROR lines, want exactly 1 for the pause", n)
	}
}

// An entry whose task ran to completion is dropped without touching the
// task. One whose task no longer exists is a lost task: asynq deleted it
// from its archive (or an operator did) before the unparker moved it out.
// It is dead-lettered, so that the operator sees it and the alert fires.
func TestUnparkerLeavesTasksNoLongerArchived(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	ctx := context.Background()
	done := b.enqueue(t, "resend-dcv", `{"order_id": 5}`)
	b.waitState(t, done, asynq.TaskStateCompleted, 10*time.Second)
	past := float64(time.Now().Add(-time.Second).UnixMilli())
	for _, id := range []string{done, "deleted-task"} {
		if err := b.redis.Client().ZAdd(ctx, "certmail:parked", redis.Z{Score: past, Member: `{"queue":"default","id":"` + id + `"}`}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, func() bool { return intVal(t, b.redis.Client().ZCard(ctx, "certmail:parked")) == 0 },
		func() string { return "entries not dropped" })
	// A task moved back to its queue is pending from that moment, before its
	// entry goes: it would now be pending or active, or completed again
	// after a second DigiCert call.
	info, err := b.inspector.GetTaskInfo("default", done)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStateCompleted {
		t.Errorf("the completed task is %v after its entry was dropped: it was run again", info.State)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1: the completed task was run again", n)
	}
	// The entry goes first, then the dead letter.
	waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("error", "task dead-lettered")) > 0 },
		func() string { return "the lost task is not dead-lettered" })
	lost := b.logs.Lines("error", "task dead-lettered")
	if len(lost) != 1 || lost[0]["task_id"] != "deleted-task" || lost[0]["error_code"] != "lost_from_archive" {
		t.Errorf("ERROR lines for the deleted task: %v, want one with code lost_from_archive", lost)
	}
	if e := b.deadLetters(t, 1)[0]; e["task_id"] != "deleted-task" || e["queue"] != "default" || e["error_code"] != "lost_from_archive" {
		t.Errorf("dead letter = %v", e)
	}
	if v, _ := sum(b.scrape(t, 0), "certmail_dead_letters_total", "error_code", "lost_from_archive"); v != 1 {
		t.Errorf("certmail_dead_letters_total{error_code=lost_from_archive} = %v, want 1", v)
	}
	// No task is left for the lease sweep to find: a producer that sends the
	// task again under its id gets its own dead letter if it fails.
	if n := intVal(t, b.redis.Client().Exists(ctx, deadletter.MarkerKey("default", "deleted-task"))); n != 0 {
		t.Errorf("the lost task's dead-letter marker is set: a task sent again under its id would get no dead letter")
	}
}

// asynq keeps at most 10 000 archived tasks per queue, deleting the oldest
// on every archive. Parked tasks must not count among them: with more than
// that many tasks parked at once (a paused account and tasks without
// retries), every one is still there, waiting to be retried.
func TestParkedTasksSurviveTheArchiveCap(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		workerKey: "rejected-key-0123456789",
		configure: func(c *worker.Config) {
			c.Concurrency = 20
			c.AuthProbeInterval = 10 * time.Minute
		},
	})
	const n = 10_050 // asynq's cap, and some
	ids := make([]string, n)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := g; k < n; k += 8 {
				info, err := b.client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": `+strconv.Itoa(k+1)+`}`)),
					asynq.MaxRetry(0))
				if err != nil {
					t.Error(err)
					return
				}
				ids[k] = info.ID
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var q *asynq.QueueInfo
	waitFor(t, 3*time.Minute, func() bool {
		var err error
		q, err = b.inspector.GetQueueInfo("default")
		return err == nil && q.Pending == 0 && q.Active == 0
	}, func() string { return fmt.Sprintf("queue %+v, want every task delivered once", q) })
	if alive := q.Archived + q.Retry; alive != n {
		t.Fatalf("%d of %d tasks left (%d archived, %d in retry): %d parked tasks were deleted with asynq's archive",
			alive, n, q.Archived, q.Retry, n-alive)
	}
	// Each ends in asynq's retry set, due when the pause ends.
	waitFor(t, time.Minute, func() bool {
		var err error
		q, err = b.inspector.GetQueueInfo("default")
		return err == nil && q.Retry == n
	}, func() string { return fmt.Sprintf("queue %+v, want every task in retry", q) })
	info, err := b.inspector.GetTaskInfo("default", ids[n-1])
	if err != nil {
		t.Fatal(err)
	}
	if info.Retried != 0 || info.NextProcessAt.Before(time.Now().Add(5*time.Minute)) {
		t.Errorf("task %s: retried %d, next process at %v; want 0 and the pause's end", info.ID, info.Retried, info.NextProcessAt)
	}
	b.deadLetters(t, 0)
	if n := intVal(t, b.redis.Client().ZCard(context.Background(), "certmail:parked")); n != 0 {
		t.Errorf("%d parked entries left, want 0", n)
	}
}
