package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// TestCallNearTheTaskDeadlineIsHandedBack: a delivery with less of its
// deadline left than a call needs (a tenth of the 20 s budget) sends
// nothing and hands the task back as a wait, without using a retry,
// rather than send a PUT that the deadline cuts and the retry repeats.
func TestCallNearTheTaskDeadlineIsHandedBack(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *worker.Config) {
		c.Client = digicert.Config{} // the defaults: 10 s per attempt, 20 s per call, headroom 2 s
	}})
	id := b.enqueue(t, tasks.TypeSendCert, `{"certificate_id": 2002, "emails": ["a@example.com"], "certificate_collect_format": "plaintext"}`,
		asynq.Timeout(1500*time.Millisecond))
	var lines []map[string]any
	waitFor(t, 10*time.Second, func() bool {
		lines = b.logs.Lines("info", "delivery deferred")
		return len(lines) > 0
	}, func() string { return "no delivery deferred; log:\n" + b.logs.Text() })
	if code := fmt.Sprint(lines[0]["error_code"]); code != "deadline_near" {
		t.Errorf("deferred with error_code %q, want deadline_near", code)
	}
	const reason = "deadline_near: not sent to DigiCert, the delivery's deadline is too near: "
	if r := fmt.Sprint(lines[0]["error"]); !strings.HasPrefix(r, reason) {
		t.Errorf("reason %q, want it to start with %q", r, reason)
	}
	if n := b.fake.RequestCount(); n != 0 {
		t.Errorf("DigiCert got %d requests, want none", n)
	}
	if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.Retried != 0 {
		t.Errorf("task %v (%v), want it handed back without a retry used", info, err)
	}
	if n := len(b.logs.Lines("warn", "")) + len(b.logs.Lines("error", "")); n != 0 {
		t.Errorf("%d WARN or ERROR lines for a wait, want none:\n%s", n, b.logs.Text())
	}
}
