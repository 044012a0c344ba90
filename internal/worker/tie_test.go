package worker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// setEmailsPayload is the payload of a set-emails of order for one address, at
// sequence seq.
func setEmailsPayload(order int64, email string, seq int64) string {
	return `{"order_id": ` + strconv.FormatInt(order, 10) + `, "additional_emails": ["` + email +
		`"], "sequence": ` + strconv.FormatInt(seq, 10) + `}`
}

// Two different set-emails of one order with the same sequence (a producer
// whose clock is coarse): both are sent, and the one delivered later wins.
// The second is not taken for a redelivery of the first (duplicate, its
// list never sent). README "No stale address lists".
func TestEqualSequencesTheLaterDeliveryWins(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	const order = 81
	seq := time.Now().UnixNano()
	for i, email := range []string{"first@example.com", "second@example.com"} {
		id := b.enqueue(t, tasks.TypeSetEmails, setEmailsPayload(order, email, seq))
		if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Delivered {
			t.Fatalf("task %d (%s): outcome %q, want delivered", i, email, r.Outcome)
		}
	}
	if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "second@example.com" {
		t.Errorf("order %d holds %v, want the list delivered later", order, got)
	}
	if n := b.fake.RequestCount(); n != 2 {
		t.Errorf("fake saw %d requests, want 2", n)
	}
}

// Of two set-emails of one order with the same sequence, the first is
// applied, its worker stops before asynq records the completion, and the
// second is applied meanwhile. The first's redelivery finds its own
// duplicate guard: duplicate, its older list not sent over the second.
func TestEqualSequenceRedeliveryOfTheFirstIsDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	stopA := dyingAfterDelivery(t, b, "first")
	const order = 82
	seq := time.Now().UnixNano()
	first := b.enqueue(t, tasks.TypeSetEmails, setEmailsPayload(order, "first@example.com", seq), asynq.TaskID("first"))
	<-stopA.hit
	second := b.enqueue(t, tasks.TypeSetEmails, setEmailsPayload(order, "second@example.com", seq))
	if r := result(t, b.waitState(t, second, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Delivered {
		t.Fatalf("the second task's outcome = %q, want delivered", r.Outcome)
	}
	stopA.stop(t) // asynq hands the first task back to its queue
	b.startWorker(t, setupOpts{})
	if r := result(t, b.waitState(t, first, asynq.TaskStateCompleted, 15*time.Second)); r.Outcome != taskresult.Duplicate {
		t.Errorf("the first task's redelivery: outcome %q, want duplicate", r.Outcome)
	}
	if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "second@example.com" {
		t.Errorf("order %d holds %v after the first task's redelivery, want the second list", order, got)
	}
	if n := b.fake.RequestCount(); n != 2 {
		t.Errorf("fake saw %d requests, want 2", n)
	}
}

// A set-emails whose worker stops after DigiCert applied its list, before
// asynq records the completion, is handed back; its redelivery, with no
// other update of the order since, is duplicate: nothing sent again.
func TestSetEmailsRedeliveryAfterSuccessIsDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	stopA := dyingAfterDelivery(t, b, "only")
	const order = 83
	id := b.enqueue(t, tasks.TypeSetEmails, setEmailsPayload(order, "only@example.com", time.Now().UnixNano()), asynq.TaskID("only"))
	<-stopA.hit
	stopA.stop(t)
	b.startWorker(t, setupOpts{})
	if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)); r.Outcome != taskresult.Duplicate {
		t.Errorf("outcome = %q, want duplicate", r.Outcome)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1", n)
	}
}

// dyingWorker is a worker that "dies" after the round trip that follows
// the 2xx of one task, before asynq records its completion.
type dyingWorker struct {
	hit    chan struct{} // receives when the task's call and its round trip after it are done
	stopFn func()
	b      *bundle
	id     string
}

// dyingAfterDelivery starts a dyingWorker for the task id.
func dyingAfterDelivery(t *testing.T, b *bundle, id string) *dyingWorker {
	t.Helper()
	w := &dyingWorker{hit: make(chan struct{}, 1), b: b, id: id}
	w.stopFn = b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = 200 * time.Millisecond
		c.AfterDelivery = func(ctx context.Context, taskID string) {
			if taskID == id {
				w.hit <- struct{}{}
				<-ctx.Done() // the process "dies" here: asynq never records the completion
			}
		}
	}})
	return w
}

// stop shuts the worker down (asynq hands the task back to its queue) and
// waits until the task's handler has returned, so that nothing of it runs
// when another worker takes the task.
func (w *dyingWorker) stop(t *testing.T) {
	t.Helper()
	w.stopFn()
	waitFor(t, 10*time.Second, func() bool {
		for _, l := range w.b.logs.Lines("info", "task done") {
			if l["task_id"] == w.id {
				return true
			}
		}
		return false
	}, func() string { return "the dying worker's handler of " + w.id + " has not returned" })
}
