package worker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// calls lists the fake's requests as "METHOD path-after-base".
func calls(f *digicerttest.Server) []string {
	var out []string
	for _, r := range f.Requests() {
		out = append(out, r.Method+" "+strings.TrimPrefix(r.Path, "/services/v2"))
	}
	return out
}

// enqueueTask returns a function that enqueues what a tasks constructor
// built, its result kept, and returns the task id:
// b.enqueueTask(t)(tasks.NewResendDCVTask(p)).
func (b *bundle) enqueueTask(t *testing.T) func(*asynq.Task, error) string {
	return func(task *asynq.Task, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		info, err := b.client.Enqueue(task, asynq.Retention(time.Hour), asynq.MaxRetry(3))
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
}

func TestResendDomainDCV(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddDomain(1234)
	id := b.enqueueTask(t)(tasks.NewResendDomainDCVTask(tasks.ResendDomainDCV{DomainID: 1234, NameScope: "Sub.Example.com",
		Locale: "en", EmailArray: []string{"admin@example.com", "ADMIN@example.com"}}))
	r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
	if r.Outcome != taskresult.Delivered || r.HTTPStatus != 204 || r.Sent != nil || r.OrderStatus != "" {
		t.Errorf("result %+v", r)
	}
	reqs := b.fake.Requests()
	if len(reqs) != 1 || reqs[0].Method != "PUT" || reqs[0].Path != "/services/v2/domain/1234/dcv/emails" ||
		string(reqs[0].Body) != `{"name_scope":"sub.example.com","locale":"en","email_array":["admin@example.com"]}` {
		t.Fatalf("requests %v (body %s)", reqs, reqs[0].Body)
	}
	if sends := b.fake.DomainDCVSends(1234); len(sends) != 1 || sends[0].NameScope != "sub.example.com" {
		t.Errorf("domain sends %+v", sends)
	}
	lines := b.logs.Lines("info", "task done")
	if len(lines) != 1 || lines[0]["domain_id"] != int64(1234) || lines[0]["task_type"] != "resend-domain-dcv" {
		t.Errorf("task done lines %v, want one with domain_id 1234", lines)
	}
	if strings.Contains(b.logs.Text(), "admin@example.com") {
		t.Error("an email address reached the log")
	}

	// An unknown domain is dead-lettered at once, its line naming the domain.
	bad := b.enqueue(t, "resend-domain-dcv", `{"domain_id": 999}`)
	b.waitState(t, bad, asynq.TaskStateArchived, 10*time.Second)
	if e := b.deadLetters(t, 1)[0]; e["error_code"] != "not_found|domain" || e["http_status"] != "404" {
		t.Errorf("dead letter %v", e)
	}
	if lines := b.logs.Lines("error", "task dead-lettered"); len(lines) != 1 || lines[0]["domain_id"] != int64(999) {
		t.Errorf("dead-letter lines %v, want one with domain_id 999", lines)
	}
}

// A worker stopped right after DigiCert accepted a resend-domain-dcv hands
// the task back; the next delivery finds the guard: one email batch in all.
func TestResendDomainDCVRedeliveryIsDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	hit := make(chan struct{}, 1)
	stopA := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = 200 * time.Millisecond
		c.AfterDelivery = func(ctx context.Context, _ string) {
			hit <- struct{}{}
			<-ctx.Done()
		}
	}})
	id := b.enqueue(t, "resend-domain-dcv", `{"domain_id": 77}`)
	<-hit
	stopA()
	b.startWorker(t, setupOpts{})
	if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)); r.Outcome != taskresult.Duplicate {
		t.Errorf("outcome %q, want duplicate", r.Outcome)
	}
	if n := len(b.fake.DomainDCVSends(77)); n != 1 {
		t.Errorf("domain 77 emailed %d times, want once", n)
	}
}

// Orders the only_if_pending tests use.
var (
	ovPending = digicerttest.Order{ID: 3001, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{
		{ID: 41, NameScope: "example.com", DNSNames: []string{"example.com", "www.example.com"}},
		{ID: 42, NameScope: "example.org"},
		{ID: 43, NameScope: "example.net", Status: digicerttest.StatusApproved},
		{ID: 44, NameScope: "example.info", Method: "dns-txt-token"},
	}}
	evPartly = digicerttest.Order{ID: 3002, Type: digicerttest.OrderEV, Domains: []digicerttest.Domain{
		{ID: 51, NameScope: "a.example.com", Status: digicerttest.StatusApproved},
		{ID: 52, NameScope: "b.example.com"},
	}}
	dvApproved = digicerttest.Order{ID: 3003, Domains: []digicerttest.Domain{{ID: 61, NameScope: "example.com", Status: digicerttest.StatusApproved}}}
	dvDNS      = digicerttest.Order{ID: 3004, Domains: []digicerttest.Domain{{ID: 71, NameScope: "example.com", Method: "dns-txt-token"}}}
	ovIssued   = digicerttest.Order{ID: 3005, Type: digicerttest.OrderOV, Status: digicerttest.StatusIssued,
		Domains: []digicerttest.Domain{{ID: 81, NameScope: "example.com", Status: digicerttest.StatusApproved}}}
	evCanceled = digicerttest.Order{ID: 3006, Type: digicerttest.OrderEV, Status: "canceled",
		Domains: []digicerttest.Domain{{ID: 91, NameScope: "example.com"}}}
)

func TestResendDCVOnlyIfPending(t *testing.T) {
	t.Parallel()
	approvals := []tasks.DomainApprovalEmail{
		{Domain: "www.example.com", Email: "admin@example.com", EmailDomain: "example.com"},
		{Domain: "example.org", Email: "hostmaster@example.org"},
		{Domain: "b.example.com", Email: "webmaster@example.com", EmailDomain: "example.com"},
		{Domain: "unrelated.example", Email: "admin@unrelated.example"},
	}
	tests := []struct {
		name        string
		order       *digicerttest.Order // nil: the fake's plain pending DV order 1001 (domain 1001)
		orderID     int64
		outcome     string
		orderStatus string
		calls       []string
		bodies      map[string]string // request path → body
		sent        []taskresult.Sent
	}{
		{
			name: "DV pending: resent through the order", orderID: 1001, outcome: taskresult.Delivered, orderStatus: "pending",
			calls: []string{"GET /order/certificate/1001/validation", "PUT /order/certificate/1001/resend-emails"},
			bodies: map[string]string{"/order/certificate/1001/resend-emails": `{"domain_approval_emails":[` +
				`{"domain":"www.example.com","email":"admin@example.com","email_domain":"example.com"},` +
				`{"domain":"example.org","email":"hostmaster@example.org"},` +
				`{"domain":"b.example.com","email":"webmaster@example.com","email_domain":"example.com"},` +
				`{"domain":"unrelated.example","email":"admin@unrelated.example"}],"locale":"en"}`},
			sent: []taskresult.Sent{{Via: "order", OrderID: 1001, Outcome: "delivered", HTTPStatus: 204}},
		},
		{
			name: "DV with its domain approved", order: &dvApproved, outcome: taskresult.NotPending, orderStatus: "pending",
			calls: []string{"GET /order/certificate/3003/validation"},
		},
		{
			name: "DV validated by DNS", order: &dvDNS, outcome: taskresult.NotPending, orderStatus: "pending",
			calls: []string{"GET /order/certificate/3004/validation"},
		},
		{
			name: "OV pending: resent per pending email domain", order: &ovPending, outcome: taskresult.Delivered, orderStatus: "pending",
			calls: []string{"GET /order/certificate/3001/validation", "PUT /domain/41/dcv/emails", "PUT /domain/42/dcv/emails"},
			bodies: map[string]string{
				"/domain/41/dcv/emails": `{"name_scope":"example.com","locale":"en","email_array":["admin@example.com"]}`,
				"/domain/42/dcv/emails": `{"name_scope":"example.org","locale":"en","email_array":["hostmaster@example.org"]}`,
			},
			sent: []taskresult.Sent{
				{Via: "domain", DomainID: 41, NameScope: "example.com", Outcome: "delivered", HTTPStatus: 204},
				{Via: "domain", DomainID: 42, NameScope: "example.org", Outcome: "delivered", HTTPStatus: 204},
			},
		},
		{
			name: "EV partly approved", order: &evPartly, outcome: taskresult.Delivered, orderStatus: "pending",
			calls:  []string{"GET /order/certificate/3002/validation", "PUT /domain/52/dcv/emails"},
			bodies: map[string]string{"/domain/52/dcv/emails": `{"name_scope":"b.example.com","locale":"en","email_array":["webmaster@example.com"]}`},
			sent:   []taskresult.Sent{{Via: "domain", DomainID: 52, NameScope: "b.example.com", Outcome: "delivered", HTTPStatus: 204}},
		},
		{
			name: "OV issued", order: &ovIssued, outcome: taskresult.NotPending, orderStatus: "issued",
			calls: []string{"GET /order/certificate/3005/validation"},
		},
		{
			name: "EV canceled", order: &evCanceled, outcome: taskresult.NotPending, orderStatus: "canceled",
			calls: []string{"GET /order/certificate/3006/validation"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{})
			b.fake.AddOrder(1001)
			orderID := tt.orderID
			if tt.order != nil {
				b.fake.SetOrder(*tt.order)
				orderID = tt.order.ID
			}
			id := b.enqueueTask(t)(tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: orderID, Locale: "en", OnlyIfPending: true,
				DomainApprovalEmails: approvals}))
			r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
			if r.Outcome != tt.outcome || r.OrderStatus != tt.orderStatus || !slices.Equal(r.Sent, tt.sent) || r.SentOmitted != 0 {
				t.Errorf("result %+v\nwant outcome %s, order status %s, sent %+v", r, tt.outcome, tt.orderStatus, tt.sent)
			}
			if want := 200; tt.outcome == taskresult.NotPending && r.HTTPStatus != want {
				t.Errorf("http_status %d, want the read's %d", r.HTTPStatus, want)
			}
			if got := calls(b.fake); !slices.Equal(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
			for _, req := range b.fake.Requests() {
				if want, ok := tt.bodies[strings.TrimPrefix(req.Path, "/services/v2")]; ok && string(req.Body) != want {
					t.Errorf("%s body\n%s\nwant\n%s", req.Path, req.Body, want)
				}
			}
			lines := b.logs.Lines("info", "task done")
			if len(lines) != 1 || lines[0]["outcome"] != tt.outcome || lines[0]["order_status"] != tt.orderStatus ||
				lines[0]["order_id"] != orderID {
				t.Errorf("task done lines %v", lines)
			}
		})
	}
}

// A DV order pending validation gets exactly the request a resend-dcv
// without only_if_pending sends, byte for byte.
func TestOnlyIfPendingSendsTheSameDVRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(1001, 1002)
	p := tasks.ResendDCV{Locale: "de_DE", DomainApprovalEmails: []tasks.DomainApprovalEmail{
		{Domain: "sub.example2.com", Email: "admin@example2.com", EmailDomain: "example2.com"}}}
	plain, pending := p, p
	plain.OrderID, pending.OrderID, pending.OnlyIfPending = 1001, 1002, true
	for _, q := range []tasks.ResendDCV{plain, pending} {
		b.waitState(t, b.enqueueTask(t)(tasks.NewResendDCVTask(q)), asynq.TaskStateCompleted, 10*time.Second)
	}
	bodies := map[string][]byte{}
	for _, r := range b.fake.Requests() {
		if r.Method == "PUT" {
			bodies[r.Path] = r.Body
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s content type %q", r.Path, r.Header.Get("Content-Type"))
			}
		}
	}
	a, c := bodies["/services/v2/order/certificate/1001/resend-emails"], bodies["/services/v2/order/certificate/1002/resend-emails"]
	if a == nil || string(a) != string(c) {
		t.Errorf("bodies differ:\nplain        %s\nonly pending %s", a, c)
	}
}

// An unknown order is dead-lettered after the read; nothing is sent.
func TestOnlyIfPendingUnknownOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	id := b.enqueue(t, "resend-dcv", `{"order_id": 404, "only_if_pending": true}`)
	b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	if e := b.deadLetters(t, 1)[0]; e["error_code"] != "not_found|order" || e["http_status"] != "404" {
		t.Errorf("dead letter %v", e)
	}
	if got := calls(b.fake); !slices.Equal(got, []string{"GET /order/certificate/404/validation"}) {
		t.Errorf("calls %q", got)
	}
}

// Without only_if_pending, an OV order's resend through the order meets
// CertCentral's refusal (the fake's stand-in code) and is dead-lettered at
// once, pointing at only_if_pending or resend-domain-dcv.
func TestPlainResendOfAnOVOrderIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.SetOrder(ovPending)
	id := b.enqueue(t, "resend-dcv", `{"order_id": 3001}`)
	b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	if e := b.deadLetters(t, 1)[0]; e["error_code"] != "invalid_order_type|dv_only" || e["attempts"] != "1" {
		t.Errorf("dead letter %v", e)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// A 200 answer to the validation read that does not say the order's status
// as a string, or a pending order's answer without its list of domains, is
// a bad answer: retried as transient, never not_pending (which would end an
// until_validated schedule as validated), and nothing is sent. Once DigiCert
// answers for real, the retry resends.
func TestOnlyIfPendingUnusableValidationAnswer(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{}`,
		`{"errors":[{"code":"service_unavailable","message":"maintenance"}]}`,
		`{"order_status":null,"dns_name_validations":[]}`,
		`{"order_status":7,"dns_name_validations":[]}`,
		`{"order_status":"pending"}`,
		`{"order_status":"pending","dns_name_validations":null}`,
	} {
		t.Run(body, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{})
			b.fake.AddOrder(1001)
			b.fake.FailPath("/services/v2/order/certificate/1001/validation", 4, 200, body, "application/json") // every in-call attempt
			id := b.enqueue(t, "resend-dcv", `{"order_id": 1001, "only_if_pending": true}`)
			info := b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
			if info.Retried != 1 || !strings.Contains(info.LastErr, digicert.ErrBadAnswer.Error()) {
				t.Errorf("retried %d, last error %q; want one retry for a bad answer", info.Retried, info.LastErr)
			}
			warns := b.logs.Lines("warn", "delivery failed; will retry")
			if len(warns) != 1 || warns[0]["error_code"] != "bad_answer" || warns[0]["error_class"] != "transient" {
				t.Errorf("WARN lines %v, want one bad_answer, transient", warns)
			}
			if n := len(b.fake.DCVSends(1001)); n != 0 {
				t.Fatalf("%d resends after a bad answer, want none", n)
			}
			if err := b.inspector.RunTask("default", id); err != nil { // the retry comes now
				t.Fatal(err)
			}
			r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
			if r.Outcome != taskresult.Delivered || r.OrderStatus != "pending" || len(b.fake.DCVSends(1001)) != 1 {
				t.Errorf("after the retry: outcome %q, order status %q, %d resends; want delivered, pending, 1",
					r.Outcome, r.OrderStatus, len(b.fake.DCVSends(1001)))
			}
		})
	}
}

// A domain waiting for email validation whose domain_id does not read as a
// positive integer makes the answer a bad one: retried as transient before
// any domain is sent (not refused for good, as a domain call with that id
// would be). Once DigiCert answers for real, the retry resends.
func TestOnlyIfPendingUnusableDomainID(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, id string }{
		{"zero", `"domain_id":0,`}, {"negative", `"domain_id":-1,`}, {"not a number", `"domain_id":"abc",`}, {"absent", ``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{})
			b.fake.SetOrder(ovPending)
			b.fake.FailPath("/services/v2/order/certificate/3001/validation", 1, 200, `{"order_status":"pending",`+
				`"organization_validations":[{"status":"pending"}],"dns_name_validations":[`+
				`{"domain_id":"41","name_scope":"example.com","status":"pending","method":"email"},`+
				`{`+tt.id+`"name_scope":"example.org","status":"pending","method":"email"}]}`, "application/json")
			task := b.enqueue(t, "resend-dcv", `{"order_id": 3001, "only_if_pending": true}`)
			info := b.waitState(t, task, asynq.TaskStateRetry, 10*time.Second)
			if info.Retried != 1 || !strings.HasPrefix(info.LastErr, "bad_answer: ") || !strings.Contains(info.LastErr, "no usable domain_id") {
				t.Errorf("retried %d, last error %q; want one retry for a bad answer", info.Retried, info.LastErr)
			}
			warns := b.logs.Lines("warn", "delivery failed; will retry")
			if len(warns) != 1 || warns[0]["error_code"] != "bad_answer" || warns[0]["error_class"] != "transient" {
				t.Errorf("WARN lines %v, want one bad_answer, transient", warns)
			}
			if got := calls(b.fake); !slices.Equal(got, []string{"GET /order/certificate/3001/validation"}) {
				t.Fatalf("calls %q, want the read only", got)
			}
			if err := b.inspector.RunTask("default", task); err != nil { // the retry comes now
				t.Fatal(err)
			}
			r := result(t, b.waitState(t, task, asynq.TaskStateCompleted, 10*time.Second))
			if n, m := len(b.fake.DomainDCVSends(41)), len(b.fake.DomainDCVSends(42)); r.Outcome != taskresult.Delivered || n != 1 || m != 1 {
				t.Errorf("after the retry: outcome %q, %d and %d sends; want delivered, one each", r.Outcome, n, m)
			}
		})
	}
}

// A delivery that sent one domain's emails and failed on the next is
// retried, its reason naming the domain that failed; the retry sends the
// second only, the first being guarded.
func TestOnlyIfPendingRedeliveryAfterOneOfSeveralDomains(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.SetOrder(ovPending)
	b.fake.FailPath("/services/v2/domain/42/dcv/emails", 4, 503, "<html>Service Unavailable</html>", "text/html") // every in-call attempt
	id := b.enqueue(t, "resend-dcv", `{"order_id": 3001, "only_if_pending": true}`)
	info := b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
	const reason = "http_503: domain 42: DigiCert answered 503 Service Unavailable"
	if info.LastErr != reason {
		t.Errorf("last error %q, want %q", info.LastErr, reason)
	}
	if warns := b.logs.Lines("warn", "delivery failed; will retry"); len(warns) != 1 || warns[0]["error"] != reason ||
		!strings.HasPrefix(fmt.Sprint(warns[0]["error_detail"]), "domain 42: digicert domain-dcv-emails: 503") {
		t.Errorf("WARN lines %v, want one naming domain 42", warns)
	}
	if n, m := len(b.fake.DomainDCVSends(41)), len(b.fake.DomainDCVSends(42)); n != 1 || m != 0 {
		t.Fatalf("after the first delivery: %d and %d sends, want 1 and 0", n, m)
	}
	if err := b.inspector.RunTask("default", id); err != nil { // the retry comes now
		t.Fatal(err)
	}
	r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
	want := []taskresult.Sent{
		{Via: "domain", DomainID: 41, NameScope: "example.com", Outcome: "duplicate"},
		{Via: "domain", DomainID: 42, NameScope: "example.org", Outcome: "delivered", HTTPStatus: 204},
	}
	if r.Outcome != taskresult.Delivered || !slices.Equal(r.Sent, want) {
		t.Errorf("result %+v, want delivered with %+v", r, want)
	}
	if n, m := len(b.fake.DomainDCVSends(41)), len(b.fake.DomainDCVSends(42)); n != 1 || m != 1 {
		t.Errorf("%d and %d sends, want one each", n, m)
	}
	// Every domain done: the task's own guard is set, so a redelivery reads nothing.
	if n, err := b.redis.Client().Exists(context.Background(), "certmail:delivered:"+id).Result(); err != nil || n != 1 {
		t.Errorf("task guard: %d, %v", n, err)
	}
}

// A delivery that finds every pending domain already sent (by an earlier
// delivery; the others were approved since) while the task's own guard is
// not set sends nothing and completes as duplicate, like a redelivery that
// finds that guard.
func TestOnlyIfPendingEveryPendingDomainAlreadySent(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.SetOrder(ovPending)
	b.fake.FailPath("/services/v2/domain/42/dcv/emails", 4, 503, "<html>Service Unavailable</html>", "text/html") // every in-call attempt
	id := b.enqueue(t, "resend-dcv", `{"order_id": 3001, "only_if_pending": true}`)
	b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
	if !b.fake.ApproveDomain(42) {
		t.Fatal("ApproveDomain(42) = false")
	}
	before := b.fake.RequestCount()
	if err := b.inspector.RunTask("default", id); err != nil { // the retry comes now
		t.Fatal(err)
	}
	r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
	want := []taskresult.Sent{{Via: "domain", DomainID: 41, NameScope: "example.com", Outcome: "duplicate"}}
	if r.Outcome != taskresult.Duplicate || r.HTTPStatus != 0 || !slices.Equal(r.Sent, want) {
		t.Errorf("result %+v, want duplicate with no http_status and %+v", r, want)
	}
	if got := calls(b.fake)[before:]; !slices.Equal(got, []string{"GET /order/certificate/3001/validation"}) {
		t.Errorf("the retry's calls %q, want the read only", got)
	}
	if n := len(b.fake.DomainDCVSends(41)); n != 1 {
		t.Errorf("domain 41 sent %d times, want once", n)
	}
	lines := b.logs.Lines("info", "task done")
	if len(lines) != 1 || lines[0]["outcome"] != taskresult.Duplicate {
		t.Errorf("task done lines %v, want one duplicate", lines)
	}
}

// A redelivery of a task whose sends all succeeded (here the same task id
// enqueued again, within the guard's lifetime) finds the task's own guard
// and reads nothing: no validation read, no send.
func TestOnlyIfPendingRedeliveryAfterEverySendReadsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.SetOrder(ovPending)
	b.fake.AddOrder(1001)
	for _, order := range []int64{3001, 1001} { // OV per domain, DV through the order
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			payload := fmt.Sprintf(`{"order_id": %d, "only_if_pending": true}`, order)
			var outcomes []string
			var reqs []int
			for range 2 {
				id := b.enqueue(t, "resend-dcv", payload, asynq.TaskID(fmt.Sprint("reused-", order)))
				r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second))
				if len(outcomes) == 1 && len(r.Sent) != 0 {
					t.Errorf("the redelivery's result lists sends: %+v", r.Sent)
				}
				outcomes, reqs = append(outcomes, r.Outcome), append(reqs, b.fake.RequestCount())
				if err := b.inspector.DeleteTask("default", id); err != nil {
					t.Fatal(err)
				}
			}
			if outcomes[0] != taskresult.Delivered || outcomes[1] != taskresult.Duplicate || reqs[1] != reqs[0] {
				t.Errorf("outcomes %v, requests after each %v; want delivered then duplicate, no request", outcomes, reqs)
			}
		})
	}
}

// A domain DigiCert refuses for good does not keep the others from being
// reminded; the task is then dead-lettered, naming the domain.
func TestOnlyIfPendingPermanentFailureOfOneDomain(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.SetOrder(ovPending)
	b.fake.FailPath("/services/v2/domain/41/dcv/emails", 1, 404, `{"errors":[{"code":"not_found|domain","message":"Domain not found."}]}`, "application/json")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 3001, "only_if_pending": true}`)
	info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	if !strings.Contains(info.LastErr, "domain 41") {
		t.Errorf("last error %q does not name the domain", info.LastErr)
	}
	if e := b.deadLetters(t, 1)[0]; e["error_code"] != "not_found|domain" {
		t.Errorf("dead letter %v", e)
	}
	if n := len(b.fake.DomainDCVSends(42)); n != 1 {
		t.Errorf("domain 42 sent %d times, want 1", n)
	}
}

// refusedOrder is an OV order of five domains, 101 to 105, waiting for
// email validation; DigiCert refuses domain 102's resend for good, every
// time. sends returns how many times each was emailed, in order.
func refusedOrder(t *testing.T, b *bundle) (sends func() []int) {
	t.Helper()
	order := digicerttest.Order{ID: 5002, Type: digicerttest.OrderOV}
	for i := range 5 {
		order.Domains = append(order.Domains, digicerttest.Domain{ID: int64(101 + i), NameScope: fmt.Sprintf("d%d.example.com", i+1)})
	}
	b.fake.SetOrder(order)
	b.fake.FailPath("/services/v2/domain/102/dcv/emails", 100, 400,
		`{"errors":[{"code":"invalid_value:email_array","message":"Invalid email address."}]}`, "application/json")
	return func() []int {
		var n []int
		for _, dom := range order.Domains {
			n = append(n, len(b.fake.DomainDCVSends(dom.ID)))
		}
		return n
	}
}

// refusalNote is how a failure's reason names domain 102's refusal.
const refusalNote = "; domain 102 refused for good earlier: invalid_value:email_array: Invalid email address."

// A transient failure after a domain DigiCert refused for good ends the
// delivery there and is retried, not dead-lettered, its reason naming the
// refusal too. The retry skips the domains sent, sends the refused one
// again (refused again, nothing emailed) and the rest, and the task is
// dead-lettered with the refusal: each domain DigiCert accepts emailed
// once.
func TestOnlyIfPendingTransientFailureAfterARefusal(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	sends := refusedOrder(t, b)
	b.fake.FailPath("/services/v2/domain/104/dcv/emails", 4, 503, "<html>Service Unavailable</html>", "text/html") // every in-call attempt, once
	id := b.enqueue(t, "resend-dcv", `{"order_id": 5002, "only_if_pending": true}`)
	var info *asynq.TaskInfo
	waitFor(t, 10*time.Second, func() bool {
		info, _ = b.inspector.GetTaskInfo("default", id)
		return info != nil && (info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateRetry)
	}, func() string { return "the task neither archived nor to be retried" })
	const reason = "http_503: domain 104: DigiCert answered 503 Service Unavailable" + refusalNote
	if info.State != asynq.TaskStateRetry || info.Retried != 1 || info.LastErr != reason {
		t.Fatalf("task %s after %d retries, last error %q; want to be retried, last error %q", info.State, info.Retried, info.LastErr, reason)
	}
	warns := b.logs.Lines("warn", "delivery failed; will retry")
	if len(warns) != 1 || warns[0]["error_code"] != "http_503" || warns[0]["error_class"] != "transient" || warns[0]["error"] != reason ||
		!strings.Contains(fmt.Sprint(warns[0]["error_detail"]), "domain 104: digicert domain-dcv-emails: 503") ||
		!strings.Contains(fmt.Sprint(warns[0]["error_detail"]), "; domain 102 refused for good earlier: invalid_value:email_array: digicert") {
		t.Errorf("WARN lines %v, want one naming domain 104 and the refusal of 102", warns)
	}
	if got := sends(); !slices.Equal(got, []int{1, 0, 1, 0, 0}) {
		t.Errorf("sends after the first delivery %v, want domains 101 and 103", got)
	}
	if got, want := calls(b.fake), []string{"GET /order/certificate/5002/validation", "PUT /domain/101/dcv/emails",
		"PUT /domain/102/dcv/emails", "PUT /domain/103/dcv/emails", "PUT /domain/104/dcv/emails", "PUT /domain/104/dcv/emails",
		"PUT /domain/104/dcv/emails", "PUT /domain/104/dcv/emails"}; !slices.Equal(got, want) {
		t.Errorf("calls %q\nwant  %q (nothing past domain 104)", got, want)
	}

	before := b.fake.RequestCount()
	if err := b.inspector.RunTask("default", id); err != nil { // the retry comes now
		t.Fatal(err)
	}
	info = b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	if got, want := calls(b.fake)[before:], []string{"GET /order/certificate/5002/validation", "PUT /domain/102/dcv/emails",
		"PUT /domain/104/dcv/emails", "PUT /domain/105/dcv/emails"}; !slices.Equal(got, want) {
		t.Errorf("the retry's calls %q, want %q", got, want)
	}
	if got := sends(); !slices.Equal(got, []int{1, 0, 1, 1, 1}) {
		t.Errorf("sends %v, want each domain but 102 once", got)
	}
	e := b.deadLetters(t, 1)[0]
	if e["error_code"] != "invalid_value:email_array" || e["http_status"] != "400" || e["attempts"] != "2" ||
		e["error_message"] != "domain 102: Invalid email address." {
		t.Errorf("dead letter %v, want the refusal of domain 102 after 2 attempts", e)
	}
	if info.LastErr != "invalid_value:email_array: domain 102: Invalid email address." {
		t.Errorf("last error %q", info.LastErr)
	}
	if errs := b.logs.Lines("error", "task dead-lettered"); len(errs) != 1 || errs[0]["error_class"] != "permanent" {
		t.Errorf("ERROR lines %v, want one, permanent", errs)
	}
}

// A domain failing transiently at every delivery after a refusal: once the
// retries run out, the dead letter has the transient failure's code and
// status, and its reason still names the refusal.
func TestOnlyIfPendingRetriesRunOutAfterARefusal(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	sends := refusedOrder(t, b)
	b.fake.FailPath("/services/v2/domain/104/dcv/emails", 100, 503, "<html>Service Unavailable</html>", "text/html")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 5002, "only_if_pending": true}`, asynq.MaxRetry(2))
	for range 2 {
		b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
		if err := b.inspector.RunTask("default", id); err != nil { // the retry comes now
			t.Fatal(err)
		}
	}
	info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	const msg = "domain 104: DigiCert answered 503 Service Unavailable" + refusalNote
	e := b.deadLetters(t, 1)[0]
	if e["error_code"] != "http_503" || e["http_status"] != "503" || e["attempts"] != "3" || e["error_message"] != msg {
		t.Errorf("dead letter %v, want http_503 after 3 attempts, its message %q", e, msg)
	}
	if info.LastErr != "http_503: "+msg {
		t.Errorf("last error %q, want the dead letter's reason", info.LastErr)
	}
	if warns := b.logs.Lines("warn", "delivery failed; will retry"); len(warns) != 2 || warns[1]["error"] != "http_503: "+msg {
		t.Errorf("WARN lines %v, want two naming the refusal", warns)
	}
	if got := sends(); !slices.Equal(got, []int{1, 0, 1, 0, 0}) {
		t.Errorf("sends %v, want domains 101 and 103 once", got)
	}
}

// A worker stopping after a domain was refused for good hands the task
// back (a wait, no retry used), its reason naming the refusal; it is not
// dead-lettered for it. Another worker sends the rest, then dead-letters
// the task with the refusal.
func TestStoppingWorkerAfterARefusalHandsTheTaskBack(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1})
	sends := refusedOrder(t, b)
	sent, release := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	stop := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = 10 * time.Second
		c.AfterDelivery = func(ctx context.Context, _ string) {
			if n.Add(1) != 2 { // 101 sent, 102 refused, 103 sent: the worker stops before 104
				return
			}
			close(sent)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}})
	id := b.enqueue(t, "resend-dcv", `{"order_id": 5002, "only_if_pending": true}`)
	<-sent
	stopped := b.stopping(t, stop)
	close(release)
	<-stopped
	const reason = "worker_stopping: domain 104: not sent to DigiCert: the worker is stopping; another worker takes the task" + refusalNote
	lines := b.logs.Lines("info", "delivery deferred")
	if len(lines) != 1 || lines[0]["error_code"] != "worker_stopping" || lines[0]["error_class"] != "wait" || lines[0]["error"] != reason {
		t.Errorf("INFO lines %v, want one hand-back %q", lines, reason)
	}
	if n := len(b.logs.Lines("error", "task dead-lettered")); n != 0 {
		t.Fatalf("%d tasks dead-lettered by the stopping worker, want none", n)
	}
	if got := sends(); !slices.Equal(got, []int{1, 0, 1, 0, 0}) {
		t.Errorf("sends by the stopping worker %v, want domains 101 and 103", got)
	}

	b.startWorker(t, setupOpts{})
	info := b.waitState(t, id, asynq.TaskStateArchived, 15*time.Second)
	if info.Retried != 0 {
		t.Errorf("the handed-back task used %d retries, want 0", info.Retried)
	}
	if e := b.deadLetters(t, 1)[0]; e["error_code"] != "invalid_value:email_array" || e["http_status"] != "400" ||
		e["error_message"] != "domain 102: Invalid email address." {
		t.Errorf("dead letter %v, want the refusal of domain 102", e)
	}
	if got := sends(); !slices.Equal(got, []int{1, 0, 1, 1, 1}) {
		t.Errorf("sends %v, want each domain but 102 once", got)
	}
}

// The validation reads wait on the shared limiter like every call: three
// workers, tasks that each read and resend, windows scaled down, and the
// fake enforcing the same windows answers not one 429.
func TestLimiterCountsValidationReads(t *testing.T) {
	t.Parallel()
	limits := []ratelimit.Window{{Limit: 10, Period: 500 * time.Millisecond}}
	regs := make([]*prometheus.Registry, 3)
	i := 0
	b := setup(t, setupOpts{
		fake:         digicerttest.Config{AnyIDExists: true, RateLimits: []digicerttest.Window{{Limit: 10, Period: 500 * time.Millisecond}}, BlockFor: 10 * time.Second},
		startWorkers: 3,
		configure: func(c *worker.Config) {
			c.Concurrency = 10
			a := c.Accounts["default"]
			a.RateLimits = limits
			c.Accounts["default"] = a
			c.Registry = admin.NewRegistry()
			regs[i] = c.Registry
			i++
		},
	})
	const n = 30
	for k := range n {
		b.enqueueTask(t)(tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: int64(k + 1), OnlyIfPending: true}))
	}
	waitFor(t, 60*time.Second, func() bool { return b.fake.StatusCount(204) == n }, func() string {
		return fmt.Sprintf("%d of %d resent, %d×429", b.fake.StatusCount(204), n, b.fake.StatusCount(429))
	})
	if got := b.fake.StatusCount(429); got != 0 {
		t.Errorf("fake answered %d×429, want 0", got)
	}
	if got, want := b.fake.StatusCount(200), n; got != want {
		t.Errorf("%d validation reads answered, want %d", got, want)
	}
	reads := 0.0
	for _, reg := range regs {
		reads += counterValue(t, reg, "certmail_digicert_requests_total", map[string]string{"endpoint": "order-validation", "status": "200"})
	}
	if reads != n {
		t.Errorf("certmail_digicert_requests_total{endpoint=order-validation} = %v, want %d", reads, n)
	}
}

// counterValue sums the counter name over the series whose labels include want.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// An OV order's answer listing more domains waiting for email validation
// than an order holds (digicert.MaxOrderNames) is not a real order's: the
// task is dead-lettered as a bad answer at once, with not one PUT. At the
// cap, every domain is reminded.
func TestOnlyIfPendingCapsTheDomainsReminded(t *testing.T) {
	t.Parallel()
	ovOrder := func(n int) digicerttest.Order {
		o := digicerttest.Order{ID: 3100, Type: digicerttest.OrderOV}
		for i := range n {
			o.Domains = append(o.Domains, digicerttest.Domain{ID: int64(10000 + i), NameScope: fmt.Sprintf("d%d.example.com", i)})
		}
		return o
	}
	t.Run("over the cap", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{})
		b.fake.SetOrder(ovOrder(digicert.MaxOrderNames + 1))
		id := b.enqueue(t, "resend-dcv", `{"order_id": 3100, "only_if_pending": true}`)
		info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
		if want := "bad_answer: "; !strings.HasPrefix(info.LastErr, want) ||
			!strings.Contains(info.LastErr, "251") || !strings.Contains(info.LastErr, "250") {
			t.Errorf("last error %q, want a bad answer giving the count and the cap", info.LastErr)
		}
		if e := b.deadLetters(t, 1)[0]; e["error_code"] != "bad_answer" || e["attempts"] != "1" || e["http_status"] != "200" {
			t.Errorf("dead letter %v, want bad_answer after one attempt", e)
		}
		if got := calls(b.fake); !slices.Equal(got, []string{"GET /order/certificate/3100/validation"}) {
			t.Errorf("calls %q, want the read only", got)
		}
	})
	t.Run("at the cap", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{})
		b.fake.SetOrder(ovOrder(digicert.MaxOrderNames))
		id := b.enqueue(t, "resend-dcv", `{"order_id": 3100, "only_if_pending": true}`)
		r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 60*time.Second))
		if r.Outcome != taskresult.Delivered || len(r.Sent)+r.SentOmitted != digicert.MaxOrderNames {
			t.Errorf("result %+v, want delivered with %d sends", r, digicert.MaxOrderNames)
		}
		if n := b.fake.StatusCount(204); n != digicert.MaxOrderNames {
			t.Errorf("%d PUTs answered, want %d", n, digicert.MaxOrderNames)
		}
	})
}

// DigiCert's order_status goes to the task result, the "task done" line
// and a schedule's state: an echo of the key in it, in any ASCII case or
// split by control characters a result drops, is redacted first.
func TestOnlyIfPendingOrderStatusNeverHoldsTheKey(t *testing.T) {
	t.Parallel()
	mixed := []byte(testKey)
	for i := 0; i < len(mixed); i += 2 {
		mixed[i] = strings.ToUpper(string(mixed[i]))[0]
	}
	for _, tt := range []struct{ name, status, want string }{
		{"as it is", `issued ` + testKey, "issued [redacted]"},
		{"upper case", `pen\u0000ding` + strings.ToUpper(testKey), "pending[redacted]"},
		{"mixed case", `issued ` + string(mixed) + ` again`, "issued [redacted] again"},
		{"split by a control character", `issued ` + testKey[:5] + `\u0007` + testKey[5:], "issued [redacted]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{})
			b.fake.AddOrder(1001)
			b.fake.FailPath("/services/v2/order/certificate/1001/validation", 1, 200,
				`{"order_status":"`+tt.status+`","dns_name_validations":[]}`, "application/json")
			id := b.enqueue(t, "resend-dcv", `{"order_id": 1001, "only_if_pending": true}`)
			info := b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)
			if r := result(t, info); r.Outcome != taskresult.NotPending || r.OrderStatus != tt.want {
				t.Errorf("result %+v, want not_pending with order status %q", r, tt.want)
			}
			lines := b.logs.Lines("info", "task done")
			if len(lines) != 1 || lines[0]["order_status"] != tt.want {
				t.Errorf("task done lines %v, want order_status %q", lines, tt.want)
			}
			key := strings.ToLower(testKey)
			if strings.Contains(strings.ToLower(b.logs.Text()), key) {
				t.Error("the API key appears in the worker's log")
			}
			if strings.Contains(strings.ToLower(string(info.Result)), key) {
				t.Errorf("the API key appears in the task result %s", info.Result)
			}
		})
	}
}
