package worker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// Each task type makes the documented DigiCert request, and the table has
// a case of every type of tasks.Types().
func TestEachTypeEndToEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		task     func() (*asynq.Task, error)
		wantPath string
		wantBody string
		effect   func(t *testing.T, f *digicerttest.Server)
	}{
		{
			name: "set-emails",
			task: func() (*asynq.Task, error) {
				return tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1001, AdditionalEmails: []string{"jill@example.com", "leon@example.com"}})
			},
			wantPath: "/services/v2/order/certificate/1001/additional-emails",
			wantBody: `{"additional_emails":["jill@example.com","leon@example.com"]}`,
			effect: func(t *testing.T, f *digicerttest.Server) {
				got, ok := f.AdditionalEmails(1001)
				if !ok || strings.Join(got, ",") != "jill@example.com,leon@example.com" {
					t.Errorf("order 1001 emails = %v, %v", got, ok)
				}
			},
		},
		{
			name: "set-emails empty list clears",
			task: func() (*asynq.Task, error) {
				return tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1001, AdditionalEmails: []string{}})
			},
			wantPath: "/services/v2/order/certificate/1001/additional-emails",
			wantBody: `{"additional_emails":[]}`,
			effect: func(t *testing.T, f *digicerttest.Server) {
				got, ok := f.AdditionalEmails(1001)
				if !ok || len(got) != 0 {
					t.Errorf("order 1001 emails = %v, %v; want set and empty", got, ok)
				}
			},
		},
		{
			name: "resend-dcv without options",
			task: func() (*asynq.Task, error) {
				return tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 1002})
			},
			wantPath: "/services/v2/order/certificate/1002/resend-emails",
			wantBody: `{}`,
			effect: func(t *testing.T, f *digicerttest.Server) {
				if n := len(f.DCVSends(1002)); n != 1 {
					t.Errorf("DCV sends of order 1002 = %d, want 1", n)
				}
			},
		},
		{
			name: "resend-dcv with entries",
			task: func() (*asynq.Task, error) {
				return tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 1002, Locale: "en", DomainApprovalEmails: []tasks.DomainApprovalEmail{
					{Domain: "sub.example2.com", Email: "admin@example2.com", EmailDomain: "example2.com"}}})
			},
			wantPath: "/services/v2/order/certificate/1002/resend-emails",
			wantBody: `{"domain_approval_emails":[{"domain":"sub.example2.com","email":"admin@example2.com","email_domain":"example2.com"}],"locale":"en"}`,
			effect: func(t *testing.T, f *digicerttest.Server) {
				sends := f.DCVSends(1002)
				if len(sends) != 1 || sends[0].Locale != "en" || len(sends[0].DomainApprovalEmails) != 1 {
					t.Errorf("DCV sends of order 1002 = %+v", sends)
				}
			},
		},
		{
			name: "send-cert",
			task: func() (*asynq.Task, error) {
				return tasks.NewSendCertTask(tasks.SendCert{CertificateID: 2001, Emails: []string{"jill@example.com"},
					CertificateCollectFormat: "attachment", CustomMessage: "Please install"})
			},
			wantPath: "/services/v2/certificate/2001/sendemail",
			wantBody: `{"emails":["jill@example.com"],"certificate_collect_format":"attachment","custom_message":"Please install"}`,
			effect: func(t *testing.T, f *digicerttest.Server) {
				sends := f.CertSends(2001)
				if len(sends) != 1 || sends[0].Format != "attachment" || sends[0].CustomMessage != "Please install" {
					t.Errorf("certificate sends of 2001 = %+v", sends)
				}
			},
		},
		{
			name: "resend-domain-dcv",
			task: func() (*asynq.Task, error) {
				return tasks.NewResendDomainDCVTask(tasks.ResendDomainDCV{DomainID: 3001, Locale: "en"})
			},
			wantPath: "/services/v2/domain/3001/dcv/emails",
			wantBody: `{"locale":"en"}`,
			effect: func(t *testing.T, f *digicerttest.Server) {
				sends := f.DomainDCVSends(3001)
				if len(sends) != 1 || sends[0].Locale != "en" {
					t.Errorf("DCV sends of domain 3001 = %+v", sends)
				}
			},
		},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		task, err := tt.task()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		covered[task.Type()] = true
	}
	for _, typ := range tasks.Types() {
		if !covered[typ] {
			t.Errorf("no case of task type %s: add one", typ)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{})
			b.fake.AddOrder(1001, 1002)
			b.fake.AddCertificate(2001)
			b.fake.AddDomain(3001)
			task, err := tt.task()
			if err != nil {
				t.Fatal(err)
			}
			info, err := b.client.Enqueue(task)
			if err != nil {
				t.Fatal(err)
			}
			done := b.waitState(t, info.ID, asynq.TaskStateCompleted, 10*time.Second)
			r := result(t, done)
			if r.Outcome != taskresult.Delivered || r.HTTPStatus != 204 || r.Attempts != 1 {
				t.Errorf("result = %+v, want delivered/204/1 attempt", r)
			}
			reqs := b.fake.Requests()
			if len(reqs) != 1 {
				t.Fatalf("fake saw %d requests, want 1", len(reqs))
			}
			req := reqs[0]
			if req.Method != "PUT" || req.Path != tt.wantPath || string(req.Body) != tt.wantBody {
				t.Errorf("request = %s %s %s\nwant      PUT %s %s", req.Method, req.Path, req.Body, tt.wantPath, tt.wantBody)
			}
			if req.Header.Get("X-DC-DEVKEY") != testKey || req.Header.Get("Content-Type") != "application/json" ||
				!strings.HasPrefix(req.Header.Get("User-Agent"), "certmail/") {
				t.Errorf("headers: key ok=%v, content type %q, user agent %q", req.Header.Get("X-DC-DEVKEY") == testKey,
					req.Header.Get("Content-Type"), req.Header.Get("User-Agent"))
			}
			tt.effect(t, b.fake)
			lines := b.logs.Lines("info", "task done")
			if len(lines) != 1 {
				t.Fatalf("%d INFO 'task done' lines, want 1", len(lines))
			}
			for _, k := range []string{"task_id", "task_type", "queue", "account", "outcome", "http_status", "attempt", "digicert_calls", "duration"} {
				if _, ok := lines[0][k]; !ok {
					t.Errorf("'task done' line has no %s: %v", k, lines[0])
				}
			}
			for _, e := range b.logs.FilterMessage("task done").All() {
				if e.Caller.Defined { // always the same line of the middleware: not worth its cost per task
					t.Errorf("'task done' line names its caller %s", e.Caller)
				}
			}
		})
	}
}

// Another service knows only the type name and the JSON payload.
func TestRawAsynqProducer(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(7)
	id := b.enqueue(t, "set-emails", `{"order_id": 7, "additional_emails": [" Jill@Example.COM ", "jill@example.com"]}`)
	r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
	if r.Outcome != taskresult.Delivered {
		t.Errorf("outcome = %q", r.Outcome)
	}
	reqs := b.fake.Requests()
	if len(reqs) != 1 || string(reqs[0].Body) != `{"additional_emails":["Jill@example.com"]}` {
		t.Fatalf("requests = %+v", reqs)
	}
}

func TestPermanentErrorIsDeadLetteredOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{}) // order 404 does not exist at the fake
	id := b.enqueue(t, "resend-dcv", `{"order_id": 404}`)
	info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	if !strings.Contains(info.LastErr, "not_found") {
		t.Errorf("last error = %q", info.LastErr)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want exactly 1", n)
	}
	entries := b.deadLetters(t, 1)
	e := entries[0]
	want := map[string]string{"task_id": id, "type": "resend-dcv", "queue": "default", "payload": `{"order_id": 404}`,
		"error_code": "not_found|order", "http_status": "404", "attempts": "1"}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("stream field %s = %q, want %q", k, e[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, e["failed_at"]); err != nil {
		t.Errorf("failed_at %q: %v", e["failed_at"], err)
	}
	if e["error_message"] != "Order not found." {
		t.Errorf("error_message = %q, want DigiCert's message", e["error_message"])
	}
	lines := b.logs.Lines("error", "task dead-lettered")
	if len(lines) != 1 || lines[0]["task_id"] != id {
		t.Fatalf("ERROR lines = %v, want one with task_id %s", lines, id)
	}
	// The operator reading it sees what the task was about without decoding the payload.
	for k, v := range map[string]any{"account": "default", "order_id": int64(404), "queue": "default", "task_type": "resend-dcv"} {
		if lines[0][k] != v {
			t.Errorf("ERROR line field %s = %v, want %v", k, lines[0][k], v)
		}
	}
	// The Go error chain behind the reason is logged beside it, once.
	if d, _ := lines[0]["error_detail"].(string); d == "" || d == lines[0]["error"] || !strings.Contains(d, "Order not found.") {
		t.Errorf("ERROR line error_detail = %q, want the error chain behind %q", d, lines[0]["error"])
	}
	// The entry was appended, and the task had no parked entry to clear: nothing to warn about.
	for _, msg := range []string{"could not clear the task's parked entry", "could not append to the dead-letter stream"} {
		if n := len(b.logs.Lines("warn", msg)); n != 0 {
			t.Errorf("%d WARN lines %q", n, msg)
		}
	}
	// asynq's own "Retry exhausted" does not repeat it at WARN.
	for _, e := range b.logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if strings.Contains(e.Message, "Retry exhausted") {
			t.Errorf("asynq's WARN line repeats the dead letter: %s %v", e.Message, e.ContextMap())
		}
	}
}

func TestTransientHTMLErrorsThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddCertificate(3)
	b.fake.FailNext(2, 503, "<html><body>Service Unavailable</body></html>", "text/html")
	id := b.enqueue(t, "send-cert", `{"certificate_id": 3, "emails": ["a@example.com"], "certificate_collect_format": "plaintext"}`)
	r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
	if r.Outcome != taskresult.Delivered {
		t.Errorf("outcome = %q", r.Outcome)
	}
	if n := b.fake.RequestCount(); n != 3 {
		t.Errorf("fake saw %d requests, want 3 (two 503s, one 204)", n)
	}
	if n := len(b.fake.CertSends(3)); n != 1 {
		t.Errorf("certificate emailed %d times, want 1", n)
	}
}

func TestRateLimitedDoesNotConsumeRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(9)
	b.fake.FailNext(1, 429, `{"errors":[{"code":"request_limit_exceeded","message":"Service unavailable, please limit request volume"}]}`, "application/json")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 9}`)
	info := b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)
	if info.Retried != 0 {
		t.Errorf("retried = %d after a 429, want 0", info.Retried)
	}
	if n, ok := b.fake.StatusCount(429), b.fake.StatusCount(204); n != 1 || ok != 1 {
		t.Errorf("fake answered %d×429 and %d×204, want 1 and 1", n, ok)
	}
	if n := len(b.logs.Lines("error", "")); n != 0 {
		t.Errorf("%d ERROR lines for a 429, want none", n)
	}
}

func TestInvalidPayloadsAreDeadLetteredWithoutCalls(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	payloads := map[string]string{
		"not json":         `order 5 please`,
		"fails validation": `{"order_id": 0, "additional_emails": ["not an email"]}`,
		"unknown field":    `{"order_id": 5, "additional_emails": [], "colour": "blue"}`,
	}
	var ids []string
	for _, p := range payloads {
		ids = append(ids, b.enqueue(t, "set-emails", p))
	}
	ids = append(ids, b.enqueue(t, "set-emails-v2", `{"order_id": 5}`))
	for _, id := range ids {
		b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	}
	if n := b.fake.RequestCount(); n != 0 {
		t.Errorf("fake saw %d requests, want 0", n)
	}
	entries := b.deadLetters(t, len(ids))
	codes := map[string]int{}
	for _, e := range entries {
		codes[e["error_code"]]++
	}
	if codes["invalid_payload"] != 3 || codes["unknown_type"] != 1 {
		t.Errorf("dead-letter codes = %v", codes)
	}
}

// Every task type reaches its handler, which reads the payload: an empty
// one is dead-lettered at once as invalid, neither retried (asynq's
// "handler not found") nor refused as an unknown type.
func TestEveryTypeHasAHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	for _, typ := range tasks.Types() {
		id := b.enqueue(t, typ, `{}`)
		info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
		if info.Retried != 0 {
			t.Errorf("%s: retried %d times, last error %q", typ, info.Retried, info.LastErr)
		}
	}
	for _, e := range b.deadLetters(t, len(tasks.Types())) {
		if e["error_code"] != "invalid_payload" {
			t.Errorf("%s: dead-lettered as %s (%s), want invalid_payload", e["type"], e["error_code"], e["error_message"])
		}
	}
}

func TestRejectedKeyPausesThenResumes(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{APIKeys: []string{"another-key"}, AnyIDExists: true}})
	var ids []string
	for i := range 5 {
		ids = append(ids, b.enqueue(t, "resend-dcv", `{"order_id": `+strconv.Itoa(i+1)+`}`))
	}
	// Wait until the pause is in force and several probes were refused. A
	// waiting task comes back through asynq's scheduled set, which asynq
	// forwards every few seconds: give the three probes time.
	waitFor(t, 30*time.Second, func() bool { return b.fake.StatusCount(403) >= 3 }, func() string { return "fewer than 3 probes" })
	for _, id := range ids {
		info, err := b.inspector.GetTaskInfo("default", id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == asynq.TaskStateArchived || info.Retried != 0 {
			t.Errorf("task %s is %v with %d retries while the account is paused", id, info.State, info.Retried)
		}
	}
	// Probes only: far fewer requests than deliveries would have made.
	if n := b.fake.RequestCount(); n > 3+5 {
		t.Errorf("fake saw %d requests while paused", n)
	}
	b.fake.SetAPIKeys("another-key", testKey) // the key is fixed
	for _, id := range ids {
		b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)
	}
	if n := len(b.logs.Lines("error", "")); n != 1 {
		t.Errorf("%d ERROR lines, want exactly 1 for the pause", n)
	}
	if n := len(b.logs.Lines("info", "DigiCert accepts the API key again; account resumed")); n != 1 {
		t.Errorf("%d resume lines, want 1", n)
	}
	if n := intVal(t, b.redis.Client().XLen(context.Background(), deadletter.Stream)); n != 0 {
		t.Errorf("dead-letter stream has %d entries, want 0", n)
	}
}

// deadLetters returns the stream's entries, failing unless there are want
// of them (any number when want is negative).
func (b *bundle) deadLetters(t *testing.T, want int) []map[string]string {
	t.Helper()
	msgs, err := b.redis.Client().XRange(context.Background(), deadletter.Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if want >= 0 && len(msgs) != want {
		t.Fatalf("dead-letter stream has %d entries, want %d", len(msgs), want)
	}
	out := make([]map[string]string, len(msgs))
	for i, m := range msgs {
		out[i] = map[string]string{}
		for k, v := range m.Values {
			out[i][k], _ = v.(string)
		}
	}
	return out
}

// The API key must appear in no log line and no Redis value, whatever happens.
func TestAPIKeyNeverLeaks(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(1)
	b.fake.FailNext(1, 500, `{"errors":[{"code":"server_error","message":"echo `+testKey+`"}]}`, "application/json")
	ok := b.enqueue(t, "set-emails", `{"order_id": 1, "additional_emails": ["a@example.com"]}`)
	bad := b.enqueue(t, "resend-dcv", `{"order_id": 2}`)
	b.waitState(t, ok, asynq.TaskStateCompleted, 10*time.Second)
	b.waitState(t, bad, asynq.TaskStateArchived, 10*time.Second)
	if strings.Contains(b.logs.Text(), testKey) {
		t.Error("the API key appears in the worker's log")
	}
	values := redisValues(t, b.redis.Client())
	if len(values) == 0 {
		t.Fatal("no keys in Redis: the scan would prove nothing")
	}
	for k, vs := range values {
		for _, v := range append(vs, k) {
			if strings.Contains(v, testKey) {
				t.Errorf("the API key appears in Redis key %s", k)
			}
		}
	}
}

// A worker whose Redis may evict keys (maxmemory-policy other than
// noeviction) says so once at start, at ERROR, naming the policy, and
// processes tasks all the same; on Redis's default policy it says nothing.
func TestWorkerReportsAnEvictingRedis(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"volatile-lru", "noeviction"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{redis: redistest.Options{Args: []string{"--maxmemory", "64mb", "--maxmemory-policy", policy}},
				fake: digicerttest.Config{AnyIDExists: true}})
			b.waitState(t, b.enqueue(t, "resend-dcv", `{"order_id": 1}`), asynq.TaskStateCompleted, 10*time.Second)
			var lines []map[string]any
			for _, l := range b.logs.Lines("error", "") {
				if _, ok := l["maxmemory_policy"]; ok {
					lines = append(lines, l)
				}
			}
			want := 0
			if policy != "noeviction" {
				want = 1
			}
			if len(lines) != want {
				t.Fatalf("%d ERROR lines about the eviction policy, want %d: %v", len(lines), want, lines)
			}
			if want == 1 && (lines[0]["maxmemory_policy"] != policy || !strings.Contains(lines[0]["risk"].(string), "duplicate guard")) {
				t.Errorf("ERROR line %v: want maxmemory_policy %s and the risk to the duplicate guards", lines[0], policy)
			}
		})
	}
}
