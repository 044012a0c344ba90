package digicert_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

const (
	testKey = "K3Y0123456789ABCDEFGHIJKLMNOPQRS"
	orderID = 1001
	certID  = 2002
)

// bundle is what setup returns.
type bundle struct {
	fake   *digicerttest.Server
	base   string
	client *digicert.Client
	obs    *recordingObserver
}

// setup starts a fake that knows orderID and certID and a client for it with
// fast retries; tweak adjusts the client's configuration.
func setup(t *testing.T, tweak func(*digicert.Config)) bundle {
	t.Helper()
	fake, base := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{testKey}})
	fake.AddOrder(orderID)
	fake.AddCertificate(certID)
	obs := &recordingObserver{}
	cfg := digicert.Config{
		BaseURL:        base,
		APIKey:         testKey,
		Timeout:        5 * time.Second,
		MaxAttempts:    4,
		MaxElapsed:     20 * time.Second,
		InitialBackoff: time.Millisecond,
		Observer:       obs,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	return bundle{fake: fake, base: base, client: newClient(t, cfg), obs: obs}
}

func newClient(t *testing.T, cfg digicert.Config) *digicert.Client {
	t.Helper()
	c, err := digicert.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// recordingObserver keeps every observed attempt.
type recordingObserver struct {
	mu        sync.Mutex
	endpoints []string
	statuses  []int
	durations []time.Duration
	attempted chan struct{} // when set, sent to (without blocking) after each attempt
}

func (o *recordingObserver) ObserveRequest(endpoint string, status int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.endpoints = append(o.endpoints, endpoint)
	o.statuses = append(o.statuses, status)
	o.durations = append(o.durations, d)
	if o.attempted != nil {
		select {
		case o.attempted <- struct{}{}:
		default:
		}
	}
}

func (o *recordingObserver) seen() ([]string, []int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.endpoints), slices.Clone(o.statuses)
}

func (o *recordingObserver) notify(ch chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.attempted = ch
}

// countingLimiter counts Acquire calls and releases.
type countingLimiter struct {
	mu       sync.Mutex
	waits    int
	releases int
}

func (l *countingLimiter) Acquire(ctx context.Context) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.releases++
	}, ctx.Err()
}

func (l *countingLimiter) released() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.releases
}

func (l *countingLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waits
}

// call is one of the three operations.
type call func(c *digicert.Client, ctx context.Context, id int64, body []byte) (digicert.Result, error)

var (
	setEmails call = (*digicert.Client).SetAdditionalEmails
	resendDCV call = (*digicert.Client).ResendDCVEmails
	sendCert  call = (*digicert.Client).SendCertificateEmail
	domainDCV call = (*digicert.Client).ResendDomainDCVEmails
)

func TestClient_WireRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		call     call
		id       int64
		body     string
		path     string
		endpoint string
		effect   func(t *testing.T, fake *digicerttest.Server)
	}{
		{
			name: "set additional emails", call: setEmails, id: orderID,
			body:     `{"additional_emails": ["jill@example.com", "leon@example.com"]}`,
			path:     "/services/v2/order/certificate/1001/additional-emails",
			endpoint: digicert.EndpointAdditionalEmails,
			effect: func(t *testing.T, fake *digicerttest.Server) {
				if got, ok := fake.AdditionalEmails(orderID); !ok || !slices.Equal(got, []string{"jill@example.com", "leon@example.com"}) {
					t.Errorf("AdditionalEmails = %q, %t", got, ok)
				}
			},
		},
		{
			name: "clear additional emails", call: setEmails, id: orderID,
			body:     `{"additional_emails":[]}`,
			path:     "/services/v2/order/certificate/1001/additional-emails",
			endpoint: digicert.EndpointAdditionalEmails,
			effect: func(t *testing.T, fake *digicerttest.Server) {
				if got, ok := fake.AdditionalEmails(orderID); !ok || len(got) != 0 {
					t.Errorf("AdditionalEmails = %q, %t; want set and empty", got, ok)
				}
			},
		},
		{
			name: "resend DCV emails", call: resendDCV, id: orderID,
			body:     `{"domain_approval_emails":[{"domain":"sub.example.com","email":"admin@example.com","email_domain":"example.com"}],"locale":"en"}`,
			path:     "/services/v2/order/certificate/1001/resend-emails",
			endpoint: digicert.EndpointResendEmails,
			effect: func(t *testing.T, fake *digicerttest.Server) {
				sends := fake.DCVSends(orderID)
				want := []digicerttest.ApprovalEmail{{Domain: "sub.example.com", Email: "admin@example.com", EmailDomain: "example.com"}}
				if len(sends) != 1 || !slices.Equal(sends[0].DomainApprovalEmails, want) || sends[0].Locale != "en" {
					t.Errorf("DCVSends = %+v", sends)
				}
			},
		},
		{
			name: "resend DCV emails with an empty body", call: resendDCV, id: orderID,
			body:     `{}`,
			path:     "/services/v2/order/certificate/1001/resend-emails",
			endpoint: digicert.EndpointResendEmails,
			effect: func(t *testing.T, fake *digicerttest.Server) {
				if sends := fake.DCVSends(orderID); len(sends) != 1 {
					t.Errorf("DCVSends = %+v, want one", sends)
				}
			},
		},
		{
			name: "resend a domain's DCV emails", call: domainDCV, id: orderID, // the fake's plain order has a domain of its id
			body:     `{"name_scope":"sub.example.com","locale":"en","email_array":["admin@example.com"]}`,
			path:     "/services/v2/domain/1001/dcv/emails",
			endpoint: digicert.EndpointDomainDCVEmails,
			effect: func(t *testing.T, fake *digicerttest.Server) {
				sends := fake.DomainDCVSends(orderID)
				if len(sends) != 1 || sends[0].NameScope != "sub.example.com" || sends[0].Locale != "en" ||
					!slices.Equal(sends[0].EmailArray, []string{"admin@example.com"}) {
					t.Errorf("DomainDCVSends = %+v", sends)
				}
			},
		},
		{
			name: "send a certificate", call: sendCert, id: certID,
			body:     "{\n  \"emails\": [\"jill@example.com\"],\n  \"certificate_collect_format\": \"attachment\",\n  \"custom_message\": \"Install \\u00e9 <now> & then\"\n}",
			path:     "/services/v2/certificate/2002/sendemail",
			endpoint: digicert.EndpointSendEmail,
			effect: func(t *testing.T, fake *digicerttest.Server) {
				sends := fake.CertSends(certID)
				if len(sends) != 1 || !slices.Equal(sends[0].Emails, []string{"jill@example.com"}) ||
					sends[0].Format != "attachment" || sends[0].CustomMessage != "Install é <now> & then" {
					t.Errorf("CertSends = %+v", sends)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *digicert.Config) { c.UserAgent = "certmail/1.2.3 (test)" })
			res, err := tt.call(b.client, t.Context(), tt.id, []byte(tt.body))
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if res.Status != http.StatusNoContent || res.Attempts != 1 || res.Duration <= 0 {
				t.Errorf("Result = %+v, want 204 after 1 attempt", res)
			}
			reqs := b.fake.Requests()
			if len(reqs) != 1 {
				t.Fatalf("fake got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPut || r.Path != tt.path {
				t.Errorf("request %s %s, want PUT %s", r.Method, r.Path, tt.path)
			}
			for name, want := range map[string]string{
				"X-DC-DEVKEY":  testKey,
				"Content-Type": "application/json",
				"Accept":       "application/json",
				"User-Agent":   "certmail/1.2.3 (test)",
			} {
				if got := r.Header.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
			if !bytes.Equal(r.Body, []byte(tt.body)) {
				t.Errorf("body %q, want exactly %q", r.Body, tt.body)
			}
			tt.effect(t, b.fake)
			if endpoints, statuses := b.obs.seen(); !slices.Equal(endpoints, []string{tt.endpoint}) || !slices.Equal(statuses, []int{204}) {
				t.Errorf("observed %q %v, want [%s] [204]", endpoints, statuses, tt.endpoint)
			}
			if d := b.obs.durations; len(d) != 1 || d[0] <= 0 || d[0] > res.Duration {
				t.Errorf("observed durations %v, want one within the call's %s", d, res.Duration)
			}
		})
	}
}

func TestClient_DefaultUserAgentAndBaseURLSlash(t *testing.T) {
	t.Parallel()
	fake, base := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{testKey}, AnyIDExists: true})
	c := newClient(t, digicert.Config{BaseURL: base + "/", APIKey: testKey})
	if _, err := c.ResendDCVEmails(t.Context(), 7, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r := fake.Requests()[0]
	if r.Path != "/services/v2/order/certificate/7/resend-emails" || r.Header.Get("User-Agent") != "certmail/dev" {
		t.Errorf("request %s with User-Agent %q", r.Path, r.Header.Get("User-Agent"))
	}
}

func TestClient_Answers(t *testing.T) {
	t.Parallel()
	const html = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>cloud</body>\r\n</html>\r\n"
	tests := []struct {
		name        string
		status      int
		body        string
		contentType string
		wantErrors  []digicert.ErrorEntry
		wantBody    string
		wantMessage string
		class       digicert.Class
		code        string
	}{
		{
			name: "one JSON entry", status: 404, contentType: "application/json",
			body:        `{"errors":[{"code":"not_found|order","message":"Order not found."}]}`,
			wantErrors:  []digicert.ErrorEntry{{Code: "not_found|order", Message: "Order not found."}},
			wantBody:    `{"errors":[{"code":"not_found|order","message":"Order not found."}]}`,
			wantMessage: "digicert additional-emails: 404 not_found|order: Order not found.",
			class:       digicert.ClassPermanent, code: "not_found|order",
		},
		{
			name: "several JSON entries", status: 400, contentType: "application/json",
			body: `{"errors":[{"code":"invalid_value:locale","message":"Bad locale."},{"code":"required_param:emails","message":""},{"code":"","message":"Just text."},{}]}`,
			wantErrors: []digicert.ErrorEntry{
				{Code: "invalid_value:locale", Message: "Bad locale."},
				{Code: "required_param:emails"},
				{Message: "Just text."},
			},
			wantMessage: "digicert additional-emails: 400 invalid_value:locale: Bad locale.; required_param:emails; Just text.",
			class:       digicert.ClassPermanent, code: "invalid_value:locale",
		},
		{
			name: "JSON with odd types", status: 400, contentType: "application/json",
			body:        `{"errors":[{"code":42,"message":{"text":"x"}}]}`,
			wantErrors:  []digicert.ErrorEntry{{Code: "42", Message: `{"text":"x"}`}},
			wantMessage: `digicert additional-emails: 400 42: {"text":"x"}`,
			class:       digicert.ClassPermanent, code: "42",
		},
		{
			name: "HTML from the CDN", status: 502, contentType: "text/html", body: html,
			wantBody:    "<html>  <head><title>502 Bad Gateway</title></head>  <body>cloud</body>  </html>  ",
			wantMessage: "digicert additional-emails: 502 Bad Gateway",
			class:       digicert.ClassTransient, code: "http_502",
		},
		{
			name: "empty", status: 503, contentType: "",
			wantMessage: "digicert additional-emails: 503 Service Unavailable",
			class:       digicert.ClassTransient, code: "http_503",
		},
		{
			name: "plain text", status: 500, contentType: "text/plain", body: "upstream\x00 broke\n\xff",
			wantBody:    "upstream  broke \uFFFD",
			wantMessage: "digicert additional-emails: 500 Internal Server Error",
			class:       digicert.ClassTransient, code: "http_500",
		},
		{
			name: "JSON without errors", status: 409, contentType: "application/json", body: `{"message":"conflict"}`,
			wantBody:    `{"message":"conflict"}`,
			wantMessage: "digicert additional-emails: 409 Conflict",
			class:       digicert.ClassPermanent, code: "http_409",
		},
		{
			name: "long body is cut to 512 bytes", status: 500, contentType: "text/plain", body: strings.Repeat("é", 300),
			wantBody:    strings.Repeat("é", 256),
			wantMessage: "digicert additional-emails: 500 Internal Server Error",
			class:       digicert.ClassTransient, code: "http_500",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *digicert.Config) { c.MaxAttempts = 1 })
			b.fake.FailNext(1, tt.status, tt.body, tt.contentType)
			_, err := b.client.SetAdditionalEmails(t.Context(), orderID, []byte(`{"additional_emails":[]}`))
			var apiErr *digicert.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if apiErr.Status != tt.status || apiErr.Endpoint != digicert.EndpointAdditionalEmails || apiErr.Attempts != 1 {
				t.Errorf("APIError %+v", apiErr)
			}
			if !slices.Equal(apiErr.Errors, tt.wantErrors) {
				t.Errorf("Errors = %+v, want %+v", apiErr.Errors, tt.wantErrors)
			}
			wantBody := tt.wantBody
			if wantBody == "" && tt.wantErrors != nil {
				wantBody = tt.body
			}
			if apiErr.Body != wantBody {
				t.Errorf("Body = %q, want %q", apiErr.Body, wantBody)
			}
			if got := err.Error(); got != tt.wantMessage {
				t.Errorf("Error() = %q, want %q", got, tt.wantMessage)
			}
			if got := digicert.Classify(err); got != tt.class {
				t.Errorf("Classify = %s, want %s", got, tt.class)
			}
			if got := digicert.ErrorCode(err); got != tt.code {
				t.Errorf("ErrorCode = %q, want %q", got, tt.code)
			}
		})
	}
}

func TestClient_RetryBudget(t *testing.T) {
	t.Parallel()
	const html = "<html><body>Service Unavailable</body></html>"
	tests := []struct {
		name        string
		maxAttempts int
		id          int64                           // default certID
		fail        func(fake *digicerttest.Server) // nil: none
		wantErr     bool
		class       digicert.Class
		calls       int
	}{
		{
			name: "transient twice then success", maxAttempts: 4,
			fail:  func(f *digicerttest.Server) { f.FailNext(1, 503, html, "text/html"); f.FailNext(1, 502, "", "") },
			class: digicert.ClassNone, calls: 3,
		},
		{
			name: "always 503", maxAttempts: 4,
			fail:    func(f *digicerttest.Server) { f.FailNext(100, 503, html, "text/html") },
			wantErr: true, class: digicert.ClassTransient, calls: 4,
		},
		{
			name: "one attempt means no retry", maxAttempts: 1,
			fail:    func(f *digicerttest.Server) { f.FailNext(100, 504, "", "") },
			wantErr: true, class: digicert.ClassTransient, calls: 1,
		},
		{
			name: "408 is retried", maxAttempts: 2,
			fail:    func(f *digicerttest.Server) { f.FailNext(100, 408, "", "") },
			wantErr: true, class: digicert.ClassTransient, calls: 2,
		},
		{
			name: "406 without JSON is retried", maxAttempts: 3,
			fail:  func(f *digicerttest.Server) { f.FailNext(1, 406, "Not Acceptable", "text/plain") },
			class: digicert.ClassNone, calls: 2,
		},
		{
			name: "429 returns at once", maxAttempts: 4,
			fail: func(f *digicerttest.Server) {
				f.FailNext(100, 429, `{"errors":[{"code":"request_limit_exceeded","message":"Service unavailable, please limit request volume"}]}`, "application/json")
			},
			wantErr: true, class: digicert.ClassRateLimited, calls: 1,
		},
		{
			name: "403 returns at once", maxAttempts: 4,
			fail:    func(f *digicerttest.Server) { f.SetAPIKeys("another") },
			wantErr: true, class: digicert.ClassAuth, calls: 1,
		},
		{
			name: "403 missing permission returns at once", maxAttempts: 4,
			fail: func(f *digicerttest.Server) {
				f.FailNext(100, 403, `{"errors":[{"code":"access_denied|missing_permission","message":"View only"}]}`, "application/json")
			},
			wantErr: true, class: digicert.ClassPermanent, calls: 1,
		},
		{
			name: "404 returns at once", maxAttempts: 4, id: 999,
			wantErr: true, class: digicert.ClassPermanent, calls: 1,
		},
		{
			name: "406 with DigiCert JSON returns at once", maxAttempts: 4,
			fail: func(f *digicerttest.Server) {
				f.FailNext(100, 406, `{"errors":[{"code":"invalid_value:emails","message":"nope"}]}`, "application/json")
			},
			wantErr: true, class: digicert.ClassPermanent, calls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			limiter := &countingLimiter{}
			b := setup(t, func(c *digicert.Config) {
				c.MaxAttempts = tt.maxAttempts
				c.Limiter = limiter
			})
			if tt.fail != nil {
				tt.fail(b.fake)
			}
			id := tt.id
			if id == 0 {
				id = certID
			}
			res, err := b.client.SendCertificateEmail(t.Context(), id, []byte(`{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`))
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error: %t", err, tt.wantErr)
			}
			if got := digicert.Classify(err); got != tt.class {
				t.Errorf("Classify = %s, want %s (%v)", got, tt.class, err)
			}
			if got := b.fake.RequestCount(); got != tt.calls {
				t.Errorf("fake got %d calls, want %d", got, tt.calls)
			}
			if got := limiter.count(); got != tt.calls {
				t.Errorf("limiter waited %d times, want %d", got, tt.calls)
			}
			if got := limiter.released(); got != tt.calls {
				t.Errorf("limiter released %d times, want %d (one per attempt)", got, tt.calls)
			}
			if _, statuses := b.obs.seen(); len(statuses) != tt.calls {
				t.Errorf("observer saw %v, want %d attempts", statuses, tt.calls)
			}
			attempts := res.Attempts
			var apiErr *digicert.APIError
			if errors.As(err, &apiErr) {
				attempts = apiErr.Attempts
			}
			if attempts != tt.calls {
				t.Errorf("attempts reported %d, want %d", attempts, tt.calls)
			}
			if tt.calls > 1 && err != nil && !strings.Contains(err.Error(), fmt.Sprintf("after %d attempts", tt.calls)) {
				t.Errorf("error %q does not say how many attempts", err)
			}
		})
	}
}

func TestClient_MaxElapsed(t *testing.T) {
	t.Parallel()
	const budget = 300 * time.Millisecond
	b := setup(t, func(c *digicert.Config) {
		c.MaxAttempts = 1000
		c.InitialBackoff = 20 * time.Millisecond
		c.MaxElapsed = budget
	})
	b.fake.FailNext(1000, 503, "", "")
	start := time.Now()
	_, err := b.client.ResendDCVEmails(t.Context(), orderID, []byte(`{}`))
	took := time.Since(start)
	// The last error is the last 503, or, when a slow attempt met the end of
	// the budget, its timeout.
	if code := digicert.ErrorCode(err); digicert.Classify(err) != digicert.ClassTransient || code != "http_503" && code != "timeout" {
		t.Errorf("error %v, want the last 503", err)
	}
	// 20, 40, 80, 160ms ± 50% fit about 4 to 6 attempts in 300ms; without a
	// budget the call would make 1000.
	if n := b.fake.RequestCount(); n < 2 || n > 10 {
		t.Errorf("fake got %d calls in %s", n, took)
	}
	if took > budget+time.Second {
		t.Errorf("call took %s, budget %s", took, budget)
	}
}

func TestClient_MaxElapsedBoundsASlowAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *digicert.Config) {
		c.MaxAttempts = 5
		c.Timeout = time.Hour
		c.MaxElapsed = 200 * time.Millisecond
	})
	b.fake.SetFaults(digicerttest.Faults{HangRate: 1})
	start := time.Now()
	_, err := b.client.ResendDCVEmails(t.Context(), orderID, []byte(`{}`))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("call took %s, budget 200ms", took)
	}
	if digicert.Classify(err) != digicert.ClassTransient || digicert.ErrorCode(err) != "timeout" {
		t.Errorf("error %v (code %q), want a transient timeout", err, digicert.ErrorCode(err))
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake got %d calls, want 1", n)
	}
}

func TestClient_DeadlineStopsBeforeAWaitThatCannotFit(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *digicert.Config) {
		c.InitialBackoff = time.Minute
		c.MaxElapsed = time.Hour
	})
	b.fake.FailNext(100, 503, "", "")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := b.client.ResendDCVEmails(ctx, orderID, []byte(`{}`))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("call took %s; the 30s+ wait cannot fit in 20s", took)
	}
	var apiErr *digicert.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 503 || ctx.Err() != nil {
		t.Errorf("error %v, want the 503 before the deadline", err)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake got %d calls, want 1", n)
	}
}

func TestClient_CancelDuringBackoff(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	b := setup(t, func(c *digicert.Config) {
		c.InitialBackoff = time.Minute // 30 to 90s before the second attempt
		c.MaxElapsed = time.Hour
	})
	attempted := make(chan struct{}, 1)
	b.obs.notify(attempted)
	b.fake.FailNext(100, 503, "", "")
	errc := make(chan error, 1)
	go func() {
		_, err := b.client.SetAdditionalEmails(ctx, orderID, []byte(`{"additional_emails":[]}`))
		errc <- err
	}()
	select {
	case <-attempted: // the first attempt is over: the client is on its way into the wait
	case <-time.After(10 * time.Second):
		t.Fatal("no attempt was made")
	}
	cancel()
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not return after cancel")
	}
	var reqErr *digicert.RequestError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &reqErr) || reqErr.Attempts != 1 {
		t.Errorf("error %v, want context.Canceled after 1 attempt", err)
	}
	if digicert.Classify(err) != digicert.ClassTransient || digicert.ErrorCode(err) != "canceled" {
		t.Errorf("Classify %s, ErrorCode %q; want transient, canceled", digicert.Classify(err), digicert.ErrorCode(err))
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake got %d calls, want 1", n)
	}
}

func TestClient_CancelBeforeAndDuringAttempt(t *testing.T) {
	t.Parallel()
	t.Run("already canceled", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := b.client.SendCertificateEmail(ctx, certID, []byte(`{}`))
		if !errors.Is(err, context.Canceled) || b.fake.RequestCount() != 0 {
			t.Errorf("error %v with %d calls, want context.Canceled and none", err, b.fake.RequestCount())
		}
	})
	t.Run("during a hanging attempt", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.fake.SetFaults(digicerttest.Faults{HangRate: 1})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := b.client.SendCertificateEmail(ctx, certID, []byte(`{}`))
			errc <- err
		}()
		certmailtest.WaitFor(t, 10*time.Second, func() bool { return b.fake.RequestCount() == 1 }, func() string {
			return fmt.Sprintf("waiting for the request to hang at the fake; the fake counted %d", b.fake.RequestCount())
		})
		cancel()
		select {
		case err := <-errc:
			var reqErr *digicert.RequestError
			if !errors.Is(err, context.Canceled) || !errors.As(err, &reqErr) || reqErr.Attempts != 1 {
				t.Errorf("error %v, want context.Canceled after 1 attempt", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the call did not return after cancel")
		}
		if n := b.fake.RequestCount(); n != 1 {
			t.Errorf("fake got %d calls, want 1", n)
		}
	})
	t.Run("caller deadline during an attempt", func(t *testing.T) {
		t.Parallel()
		// The client's own limits are far off: only the caller's deadline
		// can end the attempt. The budget's tenth (the headroom a first
		// attempt needs) is under the caller's deadline, so the attempt goes.
		b := setup(t, func(c *digicert.Config) {
			c.Timeout = time.Hour
			c.MaxElapsed = 5 * time.Second
		})
		b.fake.SetFaults(digicerttest.Faults{HangRate: 1})
		// Long enough for the request to reach the fake before the deadline
		// on a loaded machine.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := b.client.SendCertificateEmail(ctx, certID, []byte(`{}`))
			errc <- err
		}()
		select {
		case err := <-errc:
			var reqErr *digicert.RequestError
			if !errors.As(err, &reqErr) || !errors.Is(err, context.DeadlineExceeded) || digicert.ErrorCode(err) != "timeout" {
				t.Errorf("error %v, want the caller's deadline", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the call did not return at the caller's deadline")
		}
		// The fake may record the request after the client gave up on it.
		certmailtest.WaitFor(t, 10*time.Second, func() bool { return b.fake.RequestCount() >= 1 }, func() string {
			return fmt.Sprintf("waiting for the request at the fake; the fake counted %d", b.fake.RequestCount())
		})
		if n := b.fake.RequestCount(); n != 1 {
			t.Errorf("fake got %d calls, want 1", n)
		}
	})
}

func TestClient_NetworkFaults(t *testing.T) {
	t.Parallel()
	// Each attempt gets time enough for the request to reach the fake on a
	// loaded machine: a reset seen after the attempt timeout would read as a
	// timeout, and a hang the fake never saw would not be counted.
	tests := []struct {
		name    string
		faults  digicerttest.Faults
		timeout time.Duration // of one attempt
		code    string
	}{
		{name: "connection reset", faults: digicerttest.Faults{ResetRate: 1}, timeout: 5 * time.Second, code: "network"},
		{name: "hang past the attempt timeout", faults: digicerttest.Faults{HangRate: 1}, timeout: 500 * time.Millisecond, code: "timeout"},
		{name: "latency past the attempt timeout", faults: digicerttest.Faults{Latency: time.Hour}, timeout: 500 * time.Millisecond, code: "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *digicert.Config) {
				c.MaxAttempts = 2
				c.Timeout = tt.timeout
			})
			b.fake.SetFaults(tt.faults)
			start := time.Now()
			_, err := b.client.SetAdditionalEmails(t.Context(), orderID, []byte(`{"additional_emails":[]}`))
			took := time.Since(start)
			var reqErr *digicert.RequestError
			if !errors.As(err, &reqErr) || reqErr.Attempts != 2 || reqErr.Endpoint != digicert.EndpointAdditionalEmails {
				t.Fatalf("error %v (%T), want *RequestError after 2 attempts", err, err)
			}
			if digicert.Classify(err) != digicert.ClassTransient || digicert.ErrorCode(err) != tt.code {
				t.Errorf("Classify %s, ErrorCode %q; want transient, %s", digicert.Classify(err), digicert.ErrorCode(err), tt.code)
			}
			if reqErr.Timeout() != (tt.code == "timeout") {
				t.Errorf("Timeout() = %t", reqErr.Timeout())
			}
			// The fake may record an attempt after the client gave up on it.
			certmailtest.WaitFor(t, 10*time.Second, func() bool { return b.fake.RequestCount() >= 2 }, func() string {
				return fmt.Sprintf("waiting for both attempts at the fake; the fake counted %d", b.fake.RequestCount())
			})
			if n := b.fake.RequestCount(); n != 2 {
				t.Errorf("fake got %d calls, want 2", n)
			}
			if _, statuses := b.obs.seen(); !slices.Equal(statuses, []int{0, 0}) {
				t.Errorf("observed statuses %v, want [0 0]", statuses)
			}
			minTook := time.Duration(0) // a reset ends an attempt at once
			if tt.code == "timeout" {
				minTook = 2 * tt.timeout
			}
			if took < minTook || took > 10*time.Second {
				t.Errorf("call took %s, want at least %s", took, minTook)
			}
		})
	}
}

func TestClient_InvalidRequestsAreNotSent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   int64
		body string
	}{
		{name: "zero id", id: 0, body: `{}`},
		{name: "negative id", id: -4, body: `{}`},
		{name: "body not JSON", id: orderID, body: `{"additional_emails":`},
		{name: "nil body", id: orderID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			_, err := b.client.SetAdditionalEmails(t.Context(), tt.id, []byte(tt.body))
			if !errors.Is(err, digicert.ErrInvalidRequest) || digicert.Classify(err) != digicert.ClassPermanent ||
				digicert.ErrorCode(err) != "invalid_request" {
				t.Errorf("error %v, want a permanent ErrInvalidRequest", err)
			}
			if n := b.fake.RequestCount(); n != 0 {
				t.Errorf("fake got %d calls, want none", n)
			}
		})
	}
}

// limiterFunc adapts a function to digicert.Limiter.
type limiterFunc func(ctx context.Context) error

func (f limiterFunc) Acquire(ctx context.Context) (func(), error) { return func() {}, f(ctx) }

// sleepLimiter lets a request through after d, or fails when ctx ends first.
func sleepLimiter(d time.Duration) limiterFunc {
	return func(ctx context.Context) error {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func TestClient_Limiter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		limiter    digicert.Limiter
		maxElapsed time.Duration
		ctxTimeout time.Duration
		wantInErr  string
		code       string
		class      digicert.Class
	}{
		{
			name:      "the limiter fails",
			limiter:   limiterFunc(func(context.Context) error { return errors.New("redis: connection refused") }),
			wantInErr: "rate limiter: redis: connection refused", code: "rate_limiter", class: digicert.ClassTransient,
		},
		// A wait that used up the call's budget is a wait too: it must not
		// cost the task one of its retries.
		{
			name: "the limiter holds the call past its budget", limiter: sleepLimiter(time.Hour),
			maxElapsed: 100 * time.Millisecond, wantInErr: "call budget spent", code: "rate_limiter", class: digicert.ClassRateLimited,
		},
		{
			name: "the limiter leaves too little of the budget", limiter: sleepLimiter(95 * time.Millisecond),
			maxElapsed: 100 * time.Millisecond, wantInErr: "call budget spent", code: "rate_limiter", class: digicert.ClassRateLimited,
		},
		{
			name: "the limiter holds the call past the caller's deadline", limiter: sleepLimiter(time.Hour),
			// The caller's deadline is past the headroom (100ms): the call waits for the limiter.
			maxElapsed: time.Second, ctxTimeout: 300 * time.Millisecond,
			wantInErr: "context deadline exceeded", code: "timeout", class: digicert.ClassTransient,
		},
	}
	// A read, whose retries need no headroom, treats a first attempt the
	// same way: nothing is sent.
	for _, tt := range tests {
		for _, read := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: "", true: " (read)"}[read], func(t *testing.T) {
				t.Parallel()
				b := setup(t, func(c *digicert.Config) {
					c.Limiter = tt.limiter
					if tt.maxElapsed > 0 {
						c.MaxElapsed = tt.maxElapsed
					}
				})
				ctx := t.Context()
				if tt.ctxTimeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
					defer cancel()
				}
				start := time.Now()
				var err error
				if read {
					_, _, err = b.client.OrderValidation(ctx, orderID)
				} else {
					_, err = b.client.SetAdditionalEmails(ctx, orderID, []byte(`{"additional_emails":[]}`))
				}
				if took := time.Since(start); took > 10*time.Second {
					t.Errorf("call took %s", took)
				}
				var reqErr *digicert.RequestError
				if !errors.As(err, &reqErr) || reqErr.Attempts != 0 || !strings.Contains(err.Error(), tt.wantInErr) {
					t.Fatalf("error %v, want a *RequestError saying %q after no attempt", err, tt.wantInErr)
				}
				if digicert.Classify(err) != tt.class || digicert.ErrorCode(err) != tt.code {
					t.Errorf("Classify %s, ErrorCode %q; want %s, %s", digicert.Classify(err), digicert.ErrorCode(err), tt.class, tt.code)
				}
				if wait, ok := digicert.RetryAfter(err); ok != (tt.class == digicert.ClassRateLimited) || (ok && wait <= 0) {
					t.Errorf("RetryAfter = %v, %v", wait, ok)
				}
				if n := b.fake.RequestCount(); n != 0 {
					t.Errorf("fake got %d calls, want none", n)
				}
			})
		}
	}
}

func TestClient_RedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	fake, base := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{testKey}, AnyIDExists: true})
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, base+strings.TrimPrefix(r.URL.Path, "/services/v2"), http.StatusPermanentRedirect)
	}))
	t.Cleanup(redirector.Close)
	c := newClient(t, digicert.Config{BaseURL: redirector.URL + "/services/v2", APIKey: testKey, HTTPClient: &http.Client{}})
	_, err := c.ResendDCVEmails(t.Context(), 5, []byte(`{}`))
	var apiErr *digicert.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusPermanentRedirect || digicert.Classify(err) != digicert.ClassPermanent {
		t.Errorf("error %v, want a permanent 308", err)
	}
	if n := fake.RequestCount(); n != 0 {
		t.Errorf("the redirect target got %d requests carrying the key", n)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     digicert.Config
		wantErr string
	}{
		{name: "defaults", cfg: digicert.Config{APIKey: testKey}},
		{name: "EU instance with slash", cfg: digicert.Config{APIKey: testKey, BaseURL: "https://certcentral.digicert.eu/services/v2/"}},
		{name: "no key", cfg: digicert.Config{}, wantErr: "api key is required"},
		{name: "key with a newline", cfg: digicert.Config{APIKey: testKey + "\n"}, wantErr: "printable"},
		{name: "relative base URL", cfg: digicert.Config{APIKey: testKey, BaseURL: "/services/v2"}, wantErr: "absolute"},
		{name: "ftp base URL", cfg: digicert.Config{APIKey: testKey, BaseURL: "ftp://example.com/"}, wantErr: "absolute"},
		{name: "no host", cfg: digicert.Config{APIKey: testKey, BaseURL: "https:///services/v2"}, wantErr: "no host"},
		{name: "credentials in base URL", cfg: digicert.Config{APIKey: testKey, BaseURL: "https://user:" + testKey + "@example.com/"}, wantErr: "credentials"},
		{name: "query in base URL", cfg: digicert.Config{APIKey: testKey, BaseURL: "https://example.com/?key=" + testKey}, wantErr: "query"},
		{name: "unparsable base URL", cfg: digicert.Config{APIKey: testKey, BaseURL: "https://exa mple.com/%zz"}, wantErr: "parse"},
		{name: "negative timeout", cfg: digicert.Config{APIKey: testKey, Timeout: -time.Second}, wantErr: "timeout"},
		{name: "negative attempts", cfg: digicert.Config{APIKey: testKey, MaxAttempts: -1}, wantErr: "attempts"},
		{name: "negative budget", cfg: digicert.Config{APIKey: testKey, MaxElapsed: -1}, wantErr: "elapsed"},
		{name: "negative backoff", cfg: digicert.Config{APIKey: testKey, InitialBackoff: -1}, wantErr: "backoff"},
		{name: "user agent with a newline", cfg: digicert.Config{APIKey: testKey, UserAgent: "x\ny"}, wantErr: "user agent"},
		// The edges of the characters and lengths allowed.
		{name: "key with a tilde", cfg: digicert.Config{APIKey: "~" + testKey + "~"}},
		{name: "key with a space", cfg: digicert.Config{APIKey: testKey + " x"}, wantErr: "printable ASCII without spaces"},
		{name: "key with DEL", cfg: digicert.Config{APIKey: testKey + "\x7f"}, wantErr: "printable ASCII without spaces"},
		{name: "user agent with a tilde and a space", cfg: digicert.Config{APIKey: testKey, UserAgent: "certmail/1.0 (~ops)"}},
		{name: "user agent with DEL", cfg: digicert.Config{APIKey: testKey, UserAgent: "certmail\x7f"}, wantErr: "user agent"},
		{name: "user agent of 256 characters", cfg: digicert.Config{APIKey: testKey, UserAgent: strings.Repeat("u", 256)}},
		{name: "user agent of 257 characters", cfg: digicert.Config{APIKey: testKey, UserAgent: strings.Repeat("u", 257)}, wantErr: "at most 256 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := digicert.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error %v, want one saying %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error %q holds the key", err)
			}
		})
	}
}

// TestConfigString: a printed configuration says whether a key, a limiter
// and an observer are set, and never shows the key.
func TestConfigString(t *testing.T) {
	t.Parallel()
	set := digicert.Config{BaseURL: "https://example.com", APIKey: testKey, Limiter: &countingLimiter{}, Observer: &recordingObserver{}}
	unset := digicert.Config{BaseURL: "https://example.com"}
	for _, tt := range []struct {
		cfg  digicert.Config
		want string
	}{
		{set, `digicert.Config{BaseURL:"https://example.com" APIKey:[redacted] UserAgent:"" Timeout:0s MaxAttempts:0 MaxElapsed:0s InitialBackoff:0s Limiter:true Observer:true}`},
		{unset, `digicert.Config{BaseURL:"https://example.com" APIKey: UserAgent:"" Timeout:0s MaxAttempts:0 MaxElapsed:0s InitialBackoff:0s Limiter:false Observer:false}`},
	} {
		if got := fmt.Sprintf("%v", tt.cfg); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

// TestClient_EveryTwoHundredIsSuccess: every 2xx status is a success, the
// edges of the range included, and nothing above it is (a 1xx is never
// final).
func TestClient_EveryTwoHundredIsSuccess(t *testing.T) {
	t.Parallel()
	for _, status := range []int{200, 204, 299, 300} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
			t.Cleanup(srv.Close)
			c := newClient(t, digicert.Config{BaseURL: srv.URL, APIKey: testKey, MaxAttempts: 1})
			res, err := c.SetAdditionalEmails(t.Context(), orderID, []byte(`{"additional_emails":[]}`))
			ok := status >= 200 && status <= 299
			if ok && (err != nil || res.Status != status) {
				t.Errorf("%d: result %+v, error %v; want a success", status, res, err)
			}
			var apiErr *digicert.APIError
			if !ok && (!errors.As(err, &apiErr) || apiErr.Status != status) {
				t.Errorf("%d: error %v, want an *APIError", status, err)
			}
		})
	}
}

// TestClient_DefaultBackoff: without InitialBackoff, a retry waits the
// documented 500ms, jittered by ±50%, so at least 250ms.
func TestClient_DefaultBackoff(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *digicert.Config) { c.InitialBackoff, c.MaxAttempts = 0, 2 })
	b.fake.FailNext(1, 503, "", "")
	if _, err := b.client.SendCertificateEmail(t.Context(), certID, []byte(`{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`)); err != nil {
		t.Fatal(err)
	}
	reqs := b.fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d attempts, want 2", len(reqs))
	}
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 250*time.Millisecond {
		t.Errorf("the retry came %v after the first attempt, want at least 250ms", gap)
	}
}

// TestConfigDefaultCallBudget: a call left at its defaults, as the worker
// leaves it, makes at most 4 attempts within 20 s (README, "Retries").
func TestConfigDefaultCallBudget(t *testing.T) {
	t.Parallel()
	if c := (digicert.Config{}).WithDefaults(); c.MaxAttempts != 4 || c.MaxElapsed != 20*time.Second {
		t.Errorf("defaults: %d attempts within %v, want 4 within 20s", c.MaxAttempts, c.MaxElapsed)
	}
	c := newClient(t, digicert.Config{APIKey: testKey})
	if got := c.String(); !strings.Contains(got, " MaxAttempts:4 MaxElapsed:20s ") {
		t.Errorf("client with the defaults %s, want MaxAttempts:4 MaxElapsed:20s", got)
	}
}

// TestConfigValidateAcceptsZeroes: a timeout, attempts, elapsed time or
// backoff left at zero means its default, so Validate accepts it before
// WithDefaults as after; only a negative one is refused.
func TestConfigValidateAcceptsZeroes(t *testing.T) {
	t.Parallel()
	cfg := digicert.Config{APIKey: "key", UserAgent: "certmail/test", BaseURL: "https://www.digicert.com/services/v2"}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with zero settings: %v", err)
	}
	for _, bad := range []digicert.Config{
		{APIKey: "key", UserAgent: "certmail/test", Timeout: -1},
		{APIKey: "key", UserAgent: "certmail/test", MaxAttempts: -1},
		{APIKey: "key", UserAgent: "certmail/test", MaxElapsed: -1},
		{APIKey: "key", UserAgent: "certmail/test", InitialBackoff: -1},
	} {
		if bad.Validate() == nil {
			t.Errorf("Validate(%v) = nil, want a negative setting refused", bad)
		}
	}
}

// headerMarker is a transport that marks every request's headers before
// sending it, as a RoundTripper must not, and records whether a request
// arrived marked already.
type headerMarker struct {
	next         http.RoundTripper
	marked, sent atomic.Int32
}

func (m *headerMarker) RoundTrip(req *http.Request) (*http.Response, error) {
	m.sent.Add(1)
	if req.Header.Get("X-Marked") != "" {
		m.marked.Add(1)
	}
	req.Header.Set("X-Marked", "1")
	return m.next.RoundTrip(req)
}

// A request of a caller's HTTP client carries its own copy of the client's
// headers: a transport that changes them changes no other request. (This
// package's own transport only reads them, so its requests share one set.)
func TestClient_CallersTransportGetsItsOwnHeaders(t *testing.T) {
	t.Parallel()
	marker := &headerMarker{next: http.DefaultTransport}
	b := setup(t, func(c *digicert.Config) { c.HTTPClient = &http.Client{Transport: marker} })
	for range 3 {
		if _, err := b.client.ResendDCVEmails(t.Context(), orderID, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.client.OrderValidation(t.Context(), orderID); err != nil {
			t.Fatal(err)
		}
	}
	if marker.sent.Load() != 6 || marker.marked.Load() != 0 {
		t.Errorf("%d of %d requests arrived with another request's header", marker.marked.Load(), marker.sent.Load())
	}
}

// SetAPIKey swaps the key while calls run: every attempt carries one whole
// key, the old or the new, with its Content-Type and User-Agent; a key that
// cannot be sent is refused without being quoted and the key in use kept;
// an echo of the new key, or of the one it replaced, is redacted.
func TestClient_SetAPIKey(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "old-key-0123456789", "new/key<0123456789>"
	var mu sync.Mutex
	seen := map[string]int{}
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-DC-DEVKEY")
		mu.Lock()
		seen[key+" "+r.Header.Get("Content-Type")+" "+r.Header.Get("User-Agent")]++
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/sendemail") { // echoes the keys
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"errors":[{"code":"access_denied","message":"not %s, nor %s, nor %s"}]}`,
				oldKey, strings.ReplaceAll(newKey, "/", `\/`), key)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(echo.Close)
	c := newClient(t, digicert.Config{BaseURL: echo.URL, APIKey: oldKey, UserAgent: "ua/1", MaxAttempts: 1})
	send := func() {
		if _, err := c.ResendDCVEmails(t.Context(), orderID, []byte(`{}`)); err != nil {
			t.Error(err)
		}
	}
	keys := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := maps.Clone(seen)
		clear(seen)
		return out
	}

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				send()
			}
		})
	}
	if err := c.SetAPIKey(newKey); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	got := keys()
	for k, n := range got {
		if k != oldKey+" application/json ua/1" && k != newKey+" application/json ua/1" {
			t.Errorf("%d requests with headers %q", n, k)
		}
	}
	send()
	if got := keys(); got[newKey+" application/json ua/1"] != 1 {
		t.Errorf("after SetAPIKey: %v, want the new key", got)
	}

	for _, bad := range []string{"", "new key with spaces", "new-key-\u00e9", "new-key\n"} {
		err := c.SetAPIKey(bad)
		if err == nil {
			t.Errorf("SetAPIKey(%q) accepted", bad)
			continue
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("SetAPIKey's error quotes the key: %v", err)
		}
	}
	send()
	if got := keys(); got[newKey+" application/json ua/1"] != 1 {
		t.Errorf("after refused keys: %v, want the last good key", got)
	}

	_, err := c.SendCertificateEmail(t.Context(), certID, []byte(`{}`))
	var apiErr *digicert.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("echo: %v, want a 403 *APIError", err)
	}
	for what, out := range map[string]string{"Error()": err.Error(), "Body": apiErr.Body, "Errors": fmt.Sprintf("%#v", apiErr.Errors)} {
		for _, leak := range []string{oldKey, newKey, strings.ReplaceAll(newKey, "/", `\/`), `new/key\u003c`} {
			if strings.Contains(out, leak) {
				t.Errorf("%s holds %q: %s", what, leak, out)
			}
		}
	}
}

// Endpoints names every endpoint the client calls, as the worker creates
// each one's 429 series from it before the first request: every method that
// calls DigiCert is called here (a new one fails the test until it is), and
// the endpoints they report are exactly Endpoints().
func TestEndpointsNamesEveryCall(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	calls := map[string]func(ctx context.Context) error{
		"SetAdditionalEmails": func(ctx context.Context) error {
			_, err := b.client.SetAdditionalEmails(ctx, orderID, []byte(`{"additional_emails":[]}`))
			return err
		},
		"ResendDCVEmails": func(ctx context.Context) error {
			_, err := b.client.ResendDCVEmails(ctx, orderID, []byte(`{}`))
			return err
		},
		"SendCertificateEmail": func(ctx context.Context) error {
			_, err := b.client.SendCertificateEmail(ctx, certID, []byte(`{"emails":["jill@example.com"],"certificate_collect_format":"attachment"}`))
			return err
		},
		"ResendDomainDCVEmails": func(ctx context.Context) error {
			_, err := b.client.ResendDomainDCVEmails(ctx, orderID, []byte(`{"name_scope":"sub.example.com","email_array":["admin@example.com"]}`))
			return err
		},
		"OrderValidation": func(ctx context.Context) error {
			_, _, err := b.client.OrderValidation(ctx, orderID)
			return err
		},
	}
	ctxType := reflect.TypeFor[context.Context]()
	ct := reflect.TypeFor[*digicert.Client]()
	for i := range ct.NumMethod() {
		m := ct.Method(i)
		if m.Type.NumIn() > 1 && m.Type.In(1) == ctxType && calls[m.Name] == nil {
			t.Errorf("(*Client).%s takes a context, so it may call DigiCert: call it here", m.Name)
		}
	}
	for name, call := range calls {
		if err := call(t.Context()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	endpoints, _ := b.obs.seen()
	slices.Sort(endpoints)
	want := slices.Sorted(slices.Values(digicert.Endpoints()))
	if endpoints = slices.Compact(endpoints); !slices.Equal(endpoints, want) {
		t.Errorf("the calls report endpoints %q, Endpoints() = %q", endpoints, want)
	}
}

// TestClient_FirstAttemptNeedsAFullHeadroom: a call whose deadline leaves
// less than a tenth of the budget (at most Timeout) sends nothing and says
// to come back (a wait, not a failure), with a limiter or without: the
// headroom is a tenth of the whole budget, not of the time left, so a PUT
// with 300 ms of its caller's deadline left is not sent to be cut short.
func TestClient_FirstAttemptNeedsAFullHeadroom(t *testing.T) {
	t.Parallel()
	for _, limited := range []bool{false, true} {
		for _, read := range []bool{false, true} {
			name := map[bool]string{false: "PUT", true: "GET"}[read] + map[bool]string{false: "", true: " with a limiter"}[limited]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := setup(t, func(c *digicert.Config) { // the defaults: headroom 2s
					c.Timeout, c.MaxElapsed = 0, 0
					if limited {
						c.Limiter = &countingLimiter{}
					}
				})
				b.fake.SetFaults(digicerttest.Faults{Latency: time.Second})
				ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				defer cancel()
				var err error
				if read {
					_, _, err = b.client.OrderValidation(ctx, orderID)
				} else {
					_, err = b.client.ResendDCVEmails(ctx, orderID, []byte(`{}`))
				}
				if n := b.fake.RequestCount(); n != 0 {
					t.Errorf("DigiCert got %d requests with 300ms left, want none", n)
				}
				var reqErr *digicert.RequestError
				if !errors.As(err, &reqErr) || reqErr.Attempts != 0 {
					t.Fatalf("error %v, want a *RequestError after no attempt", err)
				}
				if digicert.Classify(err) != digicert.ClassRateLimited || digicert.ErrorCode(err) != "deadline_near" {
					t.Errorf("Classify %s, ErrorCode %q; want rate_limited, deadline_near", digicert.Classify(err), digicert.ErrorCode(err))
				}
				if wait, ok := digicert.RetryAfter(err); !ok || wait <= 0 {
					t.Errorf("RetryAfter = %v, %v; want a wait", wait, ok)
				}
				if !strings.Contains(err.Error(), "not sent") {
					t.Errorf("error %q does not say nothing was sent", err)
				}
			})
		}
	}
	// With a tenth of the budget left, the call goes.
	t.Run("enough left", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *digicert.Config) { c.Timeout, c.MaxElapsed = 0, 0 })
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		if _, err := b.client.ResendDCVEmails(ctx, orderID, []byte(`{}`)); err != nil {
			t.Errorf("error %v with 3s left, want the call made", err)
		}
	})
}

// TestClient_Headroom: Headroom is the need the client applies, a tenth of
// MaxElapsed at most Timeout: a call with a little less than it left sends
// nothing, one with a little more is sent.
func TestClient_Headroom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                string
		timeout, maxElapsed time.Duration
		want                time.Duration
	}{
		{"defaults", 0, 0, 2 * time.Second},
		{"a short Timeout", 300 * time.Millisecond, 0, 300 * time.Millisecond},
		{"a short MaxElapsed", 0, 4 * time.Second, 400 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(c *digicert.Config) { c.Timeout, c.MaxElapsed = tt.timeout, tt.maxElapsed })
			if got := b.client.Headroom(); got != tt.want {
				t.Fatalf("Headroom() = %s, want %s", got, tt.want)
			}
			short, cancel := context.WithTimeout(t.Context(), tt.want-50*time.Millisecond)
			defer cancel()
			if _, err := b.client.ResendDCVEmails(short, orderID, []byte(`{}`)); digicert.ErrorCode(err) != "deadline_near" {
				t.Errorf("with 50ms less than Headroom left: error %v, want deadline_near", err)
			}
			long, cancel := context.WithTimeout(t.Context(), tt.want+time.Second)
			defer cancel()
			if _, err := b.client.ResendDCVEmails(long, orderID, []byte(`{}`)); err != nil {
				t.Errorf("with 1s more than Headroom left: error %v, want the call made", err)
			}
			if n := b.fake.RequestCount(); n != 1 {
				t.Errorf("DigiCert got %d requests, want 1", n)
			}
		})
	}
}
