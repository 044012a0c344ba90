package worker_test

import (
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// A key restricted to View Only in CertCentral is refused every PUT with
// 403 access_denied|missing_permission: a permanent failure of the task, as
// the README's outcome table and "When the dead-letter stream grows" say.
// Each task is dead-lettered at its first delivery with DigiCert's code, and
// the account is not paused (that is for a rejected key): no pause line, no
// probe, certmail_account_paused 0. A resend-dcv with only_if_pending reads
// the validation (a GET, which the key may make) and is refused at the PUT
// that follows, through the order (DV) or the domain (OV).
func TestViewOnlyKeyIsDeadLetteredNotPaused(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{APIKeys: []string{"some-full-key"}, ViewOnlyKeys: []string{testKey},
		AnyIDExists: true}})
	b.fake.SetOrder(digicerttest.Order{ID: 3001, Type: digicerttest.OrderOV,
		Domains: []digicerttest.Domain{{ID: 41, NameScope: "example.com"}}})
	ids := []string{
		b.enqueue(t, "set-emails", `{"order_id": 1, "additional_emails": ["a@example.com"]}`),
		b.enqueue(t, "resend-dcv", `{"order_id": 2, "only_if_pending": true}`),
		b.enqueue(t, "resend-dcv", `{"order_id": 3001, "only_if_pending": true}`),
	}
	for _, id := range ids {
		if info := b.waitState(t, id, asynq.TaskStateArchived, 15*time.Second); info.Retried != 0 {
			t.Errorf("task %s retried %d times, last error %q; want dead-lettered at once", id, info.Retried, info.LastErr)
		}
	}
	entries := b.deadLetters(t, len(ids))
	for _, e := range entries {
		if e["error_code"] != "access_denied|missing_permission" || e["http_status"] != "403" || e["attempts"] != "1" {
			t.Errorf("dead letter of %s: error_code %q http_status %q attempts %q (%s), want access_denied|missing_permission, 403, 1",
				e["type"], e["error_code"], e["http_status"], e["attempts"], e["error_message"])
		}
	}
	got := calls(b.fake)
	slices.Sort(got)
	want := []string{
		"GET /order/certificate/2/validation",
		"GET /order/certificate/3001/validation",
		"PUT /domain/41/dcv/emails",
		"PUT /order/certificate/1/additional-emails",
		"PUT /order/certificate/2/resend-emails",
	}
	if !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q (one each: no retry, no probe)", got, want)
	}
	if n := b.fake.StatusCount(200); n != 2 {
		t.Errorf("%d validation reads answered 200, want 2", n)
	}
	if n := b.fake.StatusCount(403); n != 3 {
		t.Errorf("%d PUTs answered 403, want 3", n)
	}
	if lines := b.logs.Lines("error", ""); len(lines) != len(ids) {
		t.Errorf("%d ERROR lines, want one per dead-lettered task and none for a pause: %v", len(lines), lines)
	}
	if lines := b.logs.Lines("error", "task dead-lettered"); len(lines) != len(ids) {
		t.Errorf("%d dead-letter lines, want %d", len(lines), len(ids))
	}
	if v, ok := sum(b.scrape(t, 0), "certmail_account_paused", "account", "default"); !ok || v != 0 {
		t.Errorf("certmail_account_paused{account=default} = %v (%t), want 0", v, ok)
	}
	if v, ok := sum(b.scrape(t, 0), "certmail_dead_letters_total", "error_code", "access_denied|missing_permission"); !ok || v != float64(len(ids)) {
		t.Errorf("certmail_dead_letters_total{error_code=access_denied|missing_permission} = %v (%t), want %d", v, ok, len(ids))
	}

	// The account still works: a task the key may carry out (none with a
	// View Only key but a read that finds nothing to send) completes.
	b.fake.SetOrderStatus(4, "issued")
	done := b.enqueue(t, "resend-dcv", `{"order_id": 4, "only_if_pending": true}`)
	if r := result(t, b.waitState(t, done, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != "not_pending" {
		t.Errorf("outcome %q, want not_pending", r.Outcome)
	}
}
