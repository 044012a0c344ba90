package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

const cdn503 = "<html><body>503 Service Unavailable</body></html>"

// A task whose every DigiCert call fails transiently is retried on the
// documented schedule, each retry one WARN line with its next delay, until
// its retries run out: then it is archived, written to the dead-letter
// stream with every field, logged once at ERROR, and counted by the metrics
// the dead-letter alert reads. Retries are brought forward with the
// inspector (the schedule's first delays are 30 s and 75 s).
func TestTransientFailureExhaustsRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(21)
	b.fake.FailPath("/services/v2/order/certificate/21/resend-emails", 1000, 503, cdn503, "text/html")
	before := b.scrape(t, 0)
	if v, _ := sum(before, "certmail_dead_letters_total"); v != 0 {
		t.Fatalf("certmail_dead_letters_total = %v before any failure", v)
	}
	const payload = `{"order_id": 21}`
	start := time.Now()
	id := b.enqueue(t, "resend-dcv", payload, asynq.MaxRetry(2))

	// Nominal delays of retries 1 and 2 (README "Retries"), ±20 %.
	nominal := []time.Duration{30 * time.Second, 75 * time.Second}
	for retry := 1; retry <= 2; retry++ {
		info := b.waitState(t, id, asynq.TaskStateRetry, 20*time.Second)
		if info.Retried != retry || !strings.Contains(info.LastErr, "503") {
			t.Fatalf("after delivery %d: retried %d, last error %q", retry, info.Retried, info.LastErr)
		}
		lo, hi := time.Duration(0.8*float64(nominal[retry-1])), time.Duration(1.2*float64(nominal[retry-1]))
		// Read some time after the failure: the lower bound allows for it.
		if wait := time.Until(info.NextProcessAt); wait < lo-10*time.Second || wait > hi {
			t.Errorf("retry %d is due in %v, want %v to %v", retry, wait, lo, hi)
		}
		warns := b.logs.Lines("warn", "delivery failed; will retry")
		if len(warns) != retry {
			t.Fatalf("%d WARN retry lines after delivery %d, want %d", len(warns), retry, retry)
		}
		w := warns[retry-1]
		next, ok := w["next_delay"].(time.Duration)
		if !ok || next < lo || next > hi {
			t.Errorf("WARN line %d next_delay = %v, want %v to %v", retry, w["next_delay"], lo, hi)
		}
		for k, v := range map[string]any{"task_id": id, "attempt": int64(retry), "http_status": int64(503),
			"error_code": "http_503", "error_class": "transient", "order_id": int64(21)} {
			if w[k] != v {
				t.Errorf("WARN line %d field %s = %v, want %v", retry, k, w[k], v)
			}
		}
		if err := b.inspector.RunTask("default", id); err != nil {
			t.Fatal(err)
		}
	}

	info := b.waitState(t, id, asynq.TaskStateArchived, 20*time.Second)
	if info.Retried != 2 {
		t.Errorf("archived after %d retries, want 2", info.Retried)
	}
	e := b.deadLetters(t, 1)[0]
	want := map[string]string{"task_id": id, "type": "resend-dcv", "queue": "default", "payload": payload,
		"error_code": "http_503", "http_status": "503", "attempts": "3"}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("dead-letter field %s = %q, want %q", k, e[k], v)
		}
	}
	if !strings.Contains(e["error_message"], "503") {
		t.Errorf("dead-letter error_message = %q", e["error_message"])
	}
	failed, err := time.Parse(time.RFC3339, e["failed_at"])
	if err != nil || failed.Before(start.Truncate(time.Second)) || failed.After(time.Now()) {
		t.Errorf("dead-letter failed_at = %q (%v), want an RFC 3339 time within the test", e["failed_at"], err)
	}
	if len(e) != 9 {
		t.Errorf("dead-letter entry has %d fields, want the 9 documented: %v", len(e), e)
	}
	errs := b.logs.Lines("error", "task dead-lettered")
	if len(errs) != 1 || errs[0]["task_id"] != id || errs[0]["attempt"] != int64(3) {
		t.Errorf("ERROR lines = %v, want one for task %s at attempt 3", errs, id)
	}
	if n := len(b.logs.Lines("warn", "delivery failed; will retry")); n != 2 {
		t.Errorf("%d WARN retry lines in all, want 2 (the last failure is the dead letter)", n)
	}
	// Each delivery makes at most the client's 4 quick attempts.
	if n := b.fake.RequestCount(); n < 3 || n > 3*4 {
		t.Errorf("fake saw %d requests for 3 deliveries, want 3 to 12", n)
	}

	after := b.scrape(t, 0)
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"certmail_dead_letters_total", []string{"type", "resend-dcv", "error_code", "http_503"}, 1},
		{"certmail_tasks_total", []string{"type", "resend-dcv", "outcome", "retry"}, 2},
		{"certmail_tasks_total", []string{"type", "resend-dcv", "outcome", "dead_lettered"}, 1},
		{"certmail_deadletter_stream_length", nil, 1},
		{"certmail_digicert_requests_total", []string{"account", "default", "status", "503"}, float64(b.fake.RequestCount())},
	} {
		if got, _ := sum(after, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
}

// The worker's own cap on retries (CERTMAIL_MAX_RETRY) wins over a
// producer's larger MaxRetry: with a cap of 1, the second failed delivery
// dead-letters the task although the task itself allows 5 retries, and the
// log lines show that cap as max_retry.
func TestWorkerRetryCapOverridesProducer(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *worker.Config) { c.MaxRetry = 1 }})
	b.fake.AddOrder(22)
	b.fake.FailPath("/services/v2/order/certificate/22/resend-emails", 1000, 503, cdn503, "text/html")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 22}`, asynq.MaxRetry(5))
	if info := b.waitState(t, id, asynq.TaskStateRetry, 20*time.Second); info.Retried != 1 || info.MaxRetry != 5 {
		t.Fatalf("after the first delivery: retried %d of %d, want 1 of the task's 5", info.Retried, info.MaxRetry)
	}
	if err := b.inspector.RunTask("default", id); err != nil {
		t.Fatal(err)
	}
	info := b.waitState(t, id, asynq.TaskStateArchived, 20*time.Second)
	if info.Retried != 1 {
		t.Errorf("archived with %d retries, want 1 (the worker's cap)", info.Retried)
	}
	e := b.deadLetters(t, 1)[0]
	if e["task_id"] != id || e["attempts"] != "2" || e["error_code"] != "http_503" {
		t.Errorf("dead letter = %v, want task %s after 2 attempts with http_503", e, id)
	}
	errs := b.logs.Lines("error", "task dead-lettered")
	if len(errs) != 1 || errs[0]["attempt"] != int64(2) || errs[0]["max_retry"] != int64(1) {
		t.Errorf("ERROR lines = %v, want one at attempt 2 of max_retry 1 (the cap that applies)", errs)
	}
	warns := b.logs.Lines("warn", "delivery failed; will retry")
	if len(warns) != 1 || warns[0]["attempt"] != int64(1) || warns[0]["max_retry"] != int64(1) {
		t.Errorf("WARN lines = %v, want one at attempt 1 of max_retry 1 (the cap that applies)", warns)
	}
	if n := b.fake.RequestCount(); n < 2 || n > 2*4 {
		t.Errorf("fake saw %d requests for 2 deliveries", n)
	}
}

// A result's attempts counts deliveries, not HTTP attempts: a task whose
// first delivery spends its quick retries on 503s and whose second is
// answered 204 reports attempts 2, and duration_ms covers the second
// delivery alone.
func TestResultCountsDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(23)
	b.fake.FailPath("/services/v2/order/certificate/23/resend-emails", 1000, 503, cdn503, "text/html")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 23}`, asynq.MaxRetry(3))
	b.waitState(t, id, asynq.TaskStateRetry, 20*time.Second)
	if n := b.fake.RequestCount(); n < 2 {
		t.Fatalf("the first delivery made %d requests, want its quick retries too", n)
	}
	b.fake.Reset()
	if err := b.inspector.RunTask("default", id); err != nil {
		t.Fatal(err)
	}
	rerun := time.Now()
	r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 20*time.Second))
	if r.Outcome != taskresult.Delivered || r.HTTPStatus != 204 || r.Attempts != 2 {
		t.Errorf("result = %+v, want delivered/204 at attempt 2", r)
	}
	if limit := time.Since(rerun).Milliseconds(); r.DurationMS < 0 || r.DurationMS > limit {
		t.Errorf("duration_ms = %d, want the second delivery's, at most %d", r.DurationMS, limit)
	}
}
