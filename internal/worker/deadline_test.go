package worker_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// TestCallNearTheTaskDeadlineIsHandedBack: a delivery whose timeout was long
// enough (tasks.MinTimeout) but that reaches a call with less of its
// deadline left than the call needs (a tenth of the 20 s budget, here after
// a slow validation read) sends nothing and hands the task back as a wait,
// without using a retry, rather than send a PUT that the deadline cuts and
// the retry repeats; the next delivery has a deadline of its own and makes
// the call.
func TestCallNearTheTaskDeadlineIsHandedBack(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *worker.Config) {
		c.Client = digicert.Config{} // the defaults: 10 s per attempt, 20 s per call, headroom 2 s
	}})
	b.fake.AddOrder(1001) // a pending DV order: a read, then a resend through the order
	// The read takes more than the second the 3 s timeout leaves above the
	// headroom: the resend after it is not sent.
	b.fake.SetFaults(digicerttest.Faults{Latency: 1200 * time.Millisecond})
	id := b.enqueueTask(t)(tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 1001, OnlyIfPending: true},
		asynq.Timeout(tasks.MinTimeout)))
	var lines []map[string]any
	waitFor(t, 10*time.Second, func() bool {
		lines = b.logs.Lines("info", "delivery deferred")
		return len(lines) > 0
	}, func() string { return "no delivery deferred; log:\n" + b.logs.Text() })
	b.fake.SetFaults(digicerttest.Faults{}) // the next delivery's read is quick
	if code := fmt.Sprint(lines[0]["error_code"]); code != "deadline_near" {
		t.Errorf("deferred with error_code %q, want deadline_near", code)
	}
	const reason = "deadline_near: not sent to DigiCert, the delivery's deadline is too near: "
	if r := fmt.Sprint(lines[0]["error"]); !strings.HasPrefix(r, reason) {
		t.Errorf("reason %q, want it to start with %q", r, reason)
	}
	info := b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)
	if r := result(t, info); r.Outcome != taskresult.Delivered || info.Retried != 0 {
		t.Errorf("outcome %q after %d retries, want delivered without a retry used", r.Outcome, info.Retried)
	}
	want := []string{"GET /order/certificate/1001/validation", "GET /order/certificate/1001/validation",
		"PUT /order/certificate/1001/resend-emails"}
	if got := calls(b.fake); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q: the resend sent once, by the second delivery", got, want)
	}
	if n := len(b.logs.Lines("info", "delivery deferred")); n != 1 {
		t.Errorf("%d deliveries deferred, want 1", n)
	}
	if n := len(b.logs.Lines("warn", "")) + len(b.logs.Lines("error", "")); n != 0 {
		t.Errorf("%d WARN or ERROR lines for a wait, want none:\n%s", n, b.logs.Text())
	}
}

// TestTimeoutTooShortIsDeadLettered: a task whose timeout leaves a delivery
// less than a call needs to start (a raw producer's, which tasks.NewTask
// would refuse) could only be handed back for ever: its first delivery
// dead-letters it (timeout_too_short, naming what it had and what a call
// needs) without a DigiCert request or a wait. asynq keeps a timeout in
// whole seconds, so 1.5 s is 1 s, and 2 s leaves a delivery a little less
// than 2 s.
func TestTimeoutTooShortIsDeadLettered(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		timeout time.Duration
		left    string // how what the reason says the delivery had begins
	}{
		{1500 * time.Millisecond, "9"}, // 9xxms
		{2 * time.Second, "1.9"},
	} {
		t.Run(tt.timeout.String(), func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{configure: func(c *worker.Config) {
				c.Client = digicert.Config{} // the defaults: headroom 2 s
			}})
			id := b.enqueue(t, tasks.TypeSendCert, `{"certificate_id": 2002, "emails": ["a@example.com"], "certificate_collect_format": "plaintext"}`,
				asynq.Timeout(tt.timeout), asynq.MaxRetry(2))
			info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
			const code = "timeout_too_short"
			wantEnd := "s, and a DigiCert call needs 2s left to start; give it a timeout of 3s or more"
			if !strings.HasPrefix(info.LastErr, code+": the task's timeout or deadline leaves a delivery "+tt.left) ||
				!strings.HasSuffix(info.LastErr, wantEnd) || info.Retried != 0 {
				t.Errorf("last_error %q after %d retries, want %s at once, naming %s… and the 2s a call needs",
					info.LastErr, info.Retried, code, tt.left)
			}
			entry := b.deadLetters(t, 1)[0]
			if entry["error_code"] != code || entry["error_code"]+": "+entry["error_message"] != info.LastErr {
				t.Errorf("dead letter %v, want %s and the task's reason", entry, code)
			}
			if n := b.fake.RequestCount(); n != 0 {
				t.Errorf("DigiCert got %d requests, want none", n)
			}
			if n := len(b.logs.Lines("info", "delivery deferred")); n != 0 {
				t.Errorf("%d deliveries deferred, want none", n)
			}
			if lines := b.logs.Lines("error", "task dead-lettered"); len(lines) != 1 || lines[0]["error_code"] != code {
				t.Errorf("ERROR lines %v, want one with %s", lines, code)
			}
		})
	}
}

// The least timeout the producer package accepts is the least that leaves
// a delivery what a call of a default client needs, in asynq's whole
// seconds: tasks cannot import the client to read it.
func TestMinTimeoutLeavesTheHeadroom(t *testing.T) {
	t.Parallel()
	c, err := digicert.New(digicert.Config{APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Headroom(); tasks.MinTimeout != h.Truncate(time.Second)+time.Second {
		t.Errorf("tasks.MinTimeout %s, want the whole second above the default headroom %s", tasks.MinTimeout, h)
	}
}
