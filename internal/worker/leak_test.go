package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// DigiCert's answer echoes the API key, and the answer is final (a 4xx
// that dead-letters the task, not a 5xx absorbed by a retry): the key, or
// its distinctive half, reaches no log line, no dead-letter entry, no
// series or label of /metrics and no Redis value. The key comes back in an
// error code (which becomes a metric label and a stream field), in a
// message, JSON-escaped, and in an HTML page.
func TestAPIKeyInDeadLetteredAnswerNeverLeaks(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(41, 42, 43)
	var escaped strings.Builder
	for _, r := range testKey {
		fmt.Fprintf(&escaped, `\u%04x`, r)
	}
	answers := []struct {
		order       int64
		status      int
		body        string
		contentType string
	}{
		{41, 400, `{"errors":[{"code":"invalid_value:` + testKey + `","message":"key ` + testKey + ` may not do this"}]}`, "application/json"},
		{42, 400, `{"errors":[{"code":"bad_key","message":"` + escaped.String() + `"}]}`, "application/json"},
		{43, 404, "<html><body>No route for key " + testKey + "</body></html>", "text/html"},
	}
	var ids []string
	for _, a := range answers {
		b.fake.FailPath(fmt.Sprintf("/services/v2/order/certificate/%d/resend-emails", a.order), 1, a.status, a.body, a.contentType)
		ids = append(ids, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, a.order)))
	}
	for _, id := range ids {
		b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	}
	waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("error", "task dead-lettered")) == len(ids) },
		func() string { return "not every task was dead-lettered" })
	if n := b.fake.RequestCount(); n != len(ids) {
		t.Fatalf("fake saw %d requests, want %d: each answer must be the one final answer of its task", n, len(ids))
	}

	forms := []string{testKey, testKey[len(testKey)/2:]}
	leaks := func(where, text string) {
		t.Helper()
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s holds %q of the API key", where, f)
			}
		}
	}
	leaks("the worker's log", b.logs.Text())
	entries := b.deadLetters(t, len(ids))
	for _, e := range entries {
		for k, v := range e {
			leaks("dead-letter field "+k, v)
		}
	}
	metrics := b.scrape(t, 0)
	leaks("/metrics", metrics)
	if v, _ := sum(metrics, "certmail_dead_letters_total"); v != float64(len(ids)) {
		t.Errorf("certmail_dead_letters_total = %v, want %d", v, len(ids))
	}
	values := redisValues(t, b.redis.Client())
	for k, vs := range values {
		leaks("Redis key name "+k, k)
		for _, v := range vs {
			leaks("Redis key "+k, v)
		}
	}
	// The echo was there to leak: each entry says the key was removed.
	redacted := 0
	for _, e := range entries {
		if strings.Contains(e["error_code"]+e["error_message"], "[redacted]") {
			redacted++
		}
	}
	if redacted != 2 {
		t.Errorf("%d dead letters show the key redacted, want the 2 whose JSON echoed it: %v", redacted, entries)
	}
}

// DigiCert's final answer names a recipient: the address reaches neither
// the worker's log nor the dead letter's reason nor asynq's last_error (the
// payload, which the dead letter keeps, is where the addresses live).
func TestAddressInDeadLetteredAnswerIsNotLogged(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(51)
	const addr = "jill.valentine@example.com"
	b.fake.FailPath("/services/v2/order/certificate/51/additional-emails", 1, 400,
		`{"errors":[{"code":"invalid_value:additional_emails","message":"`+addr+` is not an allowed recipient"}]}`, "application/json")
	id := b.enqueue(t, "set-emails", `{"order_id": 51, "additional_emails": ["`+addr+`"]}`)
	info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("error", "task dead-lettered")) == 1 },
		func() string { return "no dead-letter line" })
	if strings.Contains(b.logs.Text(), addr) {
		t.Errorf("the worker's log holds the address DigiCert echoed")
	}
	if strings.Contains(info.LastErr, addr) || !strings.Contains(info.LastErr, "[email] is not an allowed recipient") {
		t.Errorf("last_error = %q: want the address replaced, the rest of DigiCert's reason kept", info.LastErr)
	}
	e := b.deadLetters(t, 1)[0]
	if strings.Contains(e["error_message"], addr) || strings.Contains(e["error_code"], addr) {
		t.Errorf("dead-letter reason holds the address: %q %q", e["error_code"], e["error_message"])
	}
	if !strings.Contains(e["payload"], addr) {
		t.Errorf("dead-letter payload %q lost the task's own addresses", e["payload"])
	}
}

// A raw producer's payload whose unknown member is named by an address:
// the problem that dead-letters it names the member without the address,
// in the worker's log, asynq's last_error and the dead letter's reason.
func TestAddressAsMemberNameIsNotLogged(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	const addr = "jill@example.com"
	id := b.enqueue(t, "set-emails", `{"order_id":1,"additional_emails":[],"`+addr+`":1}`)
	info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("error", "task dead-lettered")) == 1 },
		func() string { return "no dead-letter line" })
	if strings.Contains(b.logs.Text(), "jill") {
		t.Errorf("the worker's log holds the address of the member name:\n%s", b.logs.Text())
	}
	const want = `invalid set-emails payload: "[email]": unknown field`
	if !strings.Contains(info.LastErr, want) {
		t.Errorf("last_error = %q, want it to say %q", info.LastErr, want)
	}
	e := b.deadLetters(t, 1)[0]
	if e["error_code"] != "invalid_payload" || strings.Contains(e["error_message"], "jill") || !strings.Contains(e["error_message"], want) {
		t.Errorf("dead-letter reason %q %q, want invalid_payload and %q", e["error_code"], e["error_message"], want)
	}
}
