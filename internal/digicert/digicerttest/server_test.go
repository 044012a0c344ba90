package digicerttest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

const (
	testKey  = "TESTKEY0123456789ABCDEF"
	otherKey = "OTHERKEY9876543210FEDCBA"
	orderID  = 1001
	certID   = 2002
	// missingID does not exist even in demo mode (Config.Missing).
	missingID = 404404
)

// fakeClock is a Clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// bundle is what setup returns.
type bundle struct {
	fake *digicerttest.Server
	base string
}

// setup starts a fake that accepts testKey and knows orderID and certID.
func setup(t *testing.T, cfg digicerttest.Config) bundle {
	t.Helper()
	if cfg.APIKeys == nil {
		cfg.APIKeys = []string{testKey}
	}
	fake, base := digicerttest.NewTestServer(t, cfg)
	fake.AddOrder(orderID)
	fake.AddCertificate(certID)
	return bundle{fake: fake, base: base}
}

// response is an answer as a test sees it.
type response struct {
	status      int
	contentType string
	allow       string
	body        []byte
}

// codes returns the error codes of a CertCentral JSON error body.
func (r response) codes(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	var codes []string
	for _, e := range doc.Errors {
		if e.Message == "" {
			t.Errorf("error %q has no message", e.Code)
		}
		codes = append(codes, e.Code)
	}
	return codes
}

// send makes one request with a fresh transport (so no test depends on another's connections).
func send(t *testing.T, method, url, key, body string) response {
	t.Helper()
	resp, err := sendErr(context.Background(), method, url, key, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

func sendErr(ctx context.Context, method, url, key, body string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if key != "" {
		req.Header.Set("X-DC-DEVKEY", key)
	}
	req.Header.Set("Content-Type", "application/json")
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), allow: resp.Header.Get("Allow"), body: data}, nil
}

func additionalURL(base string, id any) string {
	return fmt.Sprintf("%s/order/certificate/%v/additional-emails", base, id)
}
func resendURL(base string, id any) string {
	return fmt.Sprintf("%s/order/certificate/%v/resend-emails", base, id)
}
func sendemailURL(base string, id any) string {
	return fmt.Sprintf("%s/certificate/%v/sendemail", base, id)
}

func TestServer_Effects(t *testing.T) {
	t.Parallel()
	at := newFakeClock()
	tests := []struct {
		name  string
		url   func(base string) string
		body  string
		check func(t *testing.T, fake *digicerttest.Server)
	}{
		{
			name: "additional emails are stored",
			url:  func(b string) string { return additionalURL(b, orderID) },
			body: `{"additional_emails":["jill@example.com","leon@example.com"]}`,
			check: func(t *testing.T, fake *digicerttest.Server) {
				got, ok := fake.AdditionalEmails(orderID)
				if !ok || !slices.Equal(got, []string{"jill@example.com", "leon@example.com"}) {
					t.Errorf("AdditionalEmails = %q, %t", got, ok)
				}
			},
		},
		{
			name: "an empty list clears them",
			url:  func(b string) string { return additionalURL(b, orderID) },
			body: `{"additional_emails":[]}`,
			check: func(t *testing.T, fake *digicerttest.Server) {
				got, ok := fake.AdditionalEmails(orderID)
				if !ok || got == nil || len(got) != 0 {
					t.Errorf("AdditionalEmails = %#v, %t; want an empty list that was set", got, ok)
				}
			},
		},
		{
			name: "DCV emails are resent",
			url:  func(b string) string { return resendURL(b, orderID) },
			body: `{"domain_approval_emails":[{"domain":"example.com","email":"admin@example.com"},` +
				`{"domain":"sub.example2.com","email":"hostmaster@example2.com","email_domain":"example2.com"}],"locale":"en_US"}`,
			check: func(t *testing.T, fake *digicerttest.Server) {
				want := []digicerttest.DCVSend{{
					OrderID: orderID,
					DomainApprovalEmails: []digicerttest.ApprovalEmail{
						{Domain: "example.com", Email: "admin@example.com"},
						{Domain: "sub.example2.com", Email: "hostmaster@example2.com", EmailDomain: "example2.com"},
					},
					Locale: "en_US",
					At:     at.Now(),
				}}
				if got := fake.DCVSends(orderID); !equalDCV(got, want) {
					t.Errorf("DCVSends = %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "resend without a body's optional fields",
			url:  func(b string) string { return resendURL(b, orderID) },
			body: `{}`,
			check: func(t *testing.T, fake *digicerttest.Server) {
				got := fake.DCVSends(orderID)
				if len(got) != 1 || got[0].OrderID != orderID || len(got[0].DomainApprovalEmails) != 0 || got[0].Locale != "" {
					t.Errorf("DCVSends = %+v, want one send without entries", got)
				}
			},
		},
		{
			name: "a certificate is emailed",
			url:  func(b string) string { return sendemailURL(b, certID) },
			body: `{"emails":["jill@example.com"],"certificate_collect_format":"downloadlink","custom_message":"Install it\nplease"}`,
			check: func(t *testing.T, fake *digicerttest.Server) {
				got := fake.CertSends(certID)
				want := digicerttest.CertSend{CertificateID: certID, Emails: []string{"jill@example.com"},
					Format: "downloadlink", CustomMessage: "Install it\nplease", At: at.Now()}
				if len(got) != 1 || !equalCertSend(got[0], want) {
					t.Errorf("CertSends = %+v, want [%+v]", got, want)
				}
			},
		},
		{
			name: "unknown fields are ignored and recorded",
			url:  func(b string) string { return sendemailURL(b, certID) },
			body: `{"emails":["a@example.com"],"certificate_collect_format":"plaintext","order_id":5,"extra":{"x":[1]}}`,
			check: func(t *testing.T, fake *digicerttest.Server) {
				if got := fake.CertSends(certID); len(got) != 1 || got[0].Format != "plaintext" {
					t.Errorf("CertSends = %+v", got)
				}
				reqs := fake.Requests()
				if len(reqs) != 1 || !bytes.Contains(reqs[0].Body, []byte(`"extra":{"x":[1]}`)) {
					t.Errorf("recorded %v, want the body with its unknown fields", reqs)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, digicerttest.Config{Clock: at.Now})
			resp := send(t, http.MethodPut, tt.url(b.base), testKey, tt.body)
			if resp.status != http.StatusNoContent || len(resp.body) != 0 {
				t.Fatalf("answer %d %q, want 204 with no body", resp.status, resp.body)
			}
			tt.check(t, b.fake)
			reqs := b.fake.Requests()
			if len(reqs) != 1 {
				t.Fatalf("recorded %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPut || r.Path != tt.url("/services/v2") ||
				string(r.Body) != tt.body || r.Status != http.StatusNoContent || !r.KeyValid ||
				r.Header.Get("X-DC-DEVKEY") != testKey || !r.At.Equal(at.Now()) {
				t.Errorf("recorded %+v (body %q), want the PUT as sent, answered 204", r, r.Body)
			}
		})
	}
}

func equalDCV(a, b []digicerttest.DCVSend) bool {
	return slices.EqualFunc(a, b, func(x, y digicerttest.DCVSend) bool {
		return x.OrderID == y.OrderID && x.Locale == y.Locale && x.At.Equal(y.At) &&
			slices.Equal(x.DomainApprovalEmails, y.DomainApprovalEmails)
	})
}

func equalCertSend(x, y digicerttest.CertSend) bool {
	return x.CertificateID == y.CertificateID && slices.Equal(x.Emails, y.Emails) && x.Format == y.Format &&
		x.CustomMessage == y.CustomMessage && x.At.Equal(y.At)
}

func TestServer_Errors(t *testing.T) {
	t.Parallel()
	const goodEmails = `{"additional_emails":["a@example.com"]}`
	const goodSend = `{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`
	tests := []struct {
		name      string
		method    string
		path      string // after the base URL
		key       string // default testKey
		noKey     bool
		body      string
		anyID     bool
		status    int
		codes     []string
		wantAllow string
	}{
		{name: "wrong key", path: "/order/certificate/1001/additional-emails", key: otherKey, body: goodEmails,
			status: 403, codes: []string{"access_denied|access_denied_invalid_key"}},
		{name: "no key", noKey: true, path: "/order/certificate/1001/additional-emails", body: goodEmails,
			status: 403, codes: []string{"access_denied|access_denied_invalid_key"}},
		{name: "wrong key beats unknown route", path: "/nowhere", key: otherKey, body: goodEmails,
			status: 403, codes: []string{"access_denied|access_denied_invalid_key"}},
		{name: "unknown route", path: "/order/certificate/1001/emails", body: goodEmails,
			status: 404, codes: []string{"not_found|route"}},
		{name: "trailing slash is another route", path: "/certificate/2002/sendemail/", body: goodSend,
			status: 404, codes: []string{"not_found|route"}},
		{name: "outside the API root", path: "/../v1/certificate/2002/sendemail", body: goodSend,
			status: 404, codes: []string{"not_found|route"}},
		{name: "wrong method", method: http.MethodPost, path: "/order/certificate/1001/additional-emails", body: goodEmails,
			status: 405, codes: []string{"method_not_allowed"}, wantAllow: "PUT"},
		{name: "GET a known route", method: http.MethodGet, path: "/certificate/2002/sendemail",
			status: 405, codes: []string{"method_not_allowed"}, wantAllow: "PUT"},
		{name: "id not an integer", path: "/order/certificate/abc/additional-emails", body: goodEmails,
			status: 404, codes: []string{"not_found|route"}},
		{name: "negative id", path: "/certificate/-5/sendemail", body: goodSend,
			status: 404, codes: []string{"not_found|route"}},
		{name: "id overflows int64", path: "/order/certificate/99999999999999999999/resend-emails", body: `{}`,
			status: 404, codes: []string{"not_found|route"}},
		{name: "malformed JSON", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":[`,
			status: 400, codes: []string{"bad_request_format"}},
		{name: "empty body", path: "/order/certificate/1001/resend-emails", body: ``,
			status: 400, codes: []string{"bad_request_format"}},
		{name: "body is an array", path: "/certificate/2002/sendemail", body: `[]`,
			status: 400, codes: []string{"bad_request_format"}},
		{name: "body is null", path: "/order/certificate/1001/resend-emails", body: `null`,
			status: 400, codes: []string{"bad_request_format"}},
		{name: "emails not an array", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":"a@example.com"}`,
			status: 400, codes: []string{"invalid_value:additional_emails"}},
		{name: "emails not strings", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":[1]}`,
			status: 400, codes: []string{"invalid_value:additional_emails"}},
		{name: "null inside emails", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":[null]}`,
			status: 400, codes: []string{"invalid_value:additional_emails"}},
		{name: "not an address", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":["Jill <j@example.com>"]}`,
			status: 400, codes: []string{"invalid_value:additional_emails"}},
		{name: "emails missing", path: "/order/certificate/1001/additional-emails", body: `{"emails":["a@example.com"]}`,
			status: 400, codes: []string{"required_param:additional_emails"}},
		{name: "emails null", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":null}`,
			status: 400, codes: []string{"required_param:additional_emails"}},
		{name: "sendemail missing everything", path: "/certificate/2002/sendemail", body: `{}`,
			status: 400, codes: []string{"required_param:emails", "required_param:certificate_collect_format"}},
		{name: "sendemail empty emails", path: "/certificate/2002/sendemail", body: `{"emails":[],"certificate_collect_format":"attachment"}`,
			status: 400, codes: []string{"invalid_value:emails"}},
		{name: "sendemail unknown format", path: "/certificate/2002/sendemail", body: `{"emails":["a@example.com"],"certificate_collect_format":"pdf"}`,
			status: 400, codes: []string{"invalid_value:certificate_collect_format"}},
		{name: "sendemail format not a string", path: "/certificate/2002/sendemail", body: `{"emails":["a@example.com"],"certificate_collect_format":1}`,
			status: 400, codes: []string{"invalid_value:certificate_collect_format"}},
		{name: "sendemail message not a string", path: "/certificate/2002/sendemail", body: `{"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":["x"]}`,
			status: 400, codes: []string{"invalid_value:custom_message"}},
		{name: "resend entries not an array", path: "/order/certificate/1001/resend-emails", body: `{"domain_approval_emails":{"domain":"example.com"}}`,
			status: 400, codes: []string{"invalid_value:domain_approval_emails"}},
		{name: "resend entry without domain and with a bad locale", path: "/order/certificate/1001/resend-emails",
			body:   `{"domain_approval_emails":[{"email":"admin@example.com"},{"email":"admin@example.org"}],"locale":"english"}`,
			status: 400, codes: []string{"required_param:domain_approval_emails.domain", "invalid_value:locale"}},
		{name: "resend entry with a number for email", path: "/order/certificate/1001/resend-emails",
			body:   `{"domain_approval_emails":[{"domain":"example.com","email":7}]}`,
			status: 400, codes: []string{"invalid_value:domain_approval_emails.email"}},
		{name: "locale not a string", path: "/order/certificate/1001/resend-emails", body: `{"locale":1}`,
			status: 400, codes: []string{"invalid_value:locale"}},
		{name: "bad body beats unknown order", path: "/order/certificate/42/additional-emails", body: `{`,
			status: 400, codes: []string{"bad_request_format"}},
		{name: "unknown order", path: "/order/certificate/42/additional-emails", body: goodEmails,
			status: 404, codes: []string{"not_found|order"}},
		{name: "unknown order for resend", path: "/order/certificate/42/resend-emails", body: `{}`,
			status: 404, codes: []string{"not_found|order"}},
		{name: "order zero", path: "/order/certificate/0/resend-emails", body: `{}`, anyID: true,
			status: 404, codes: []string{"not_found|order"}},
		{name: "certificate id is not an order id", path: "/order/certificate/2002/resend-emails", body: `{}`,
			status: 404, codes: []string{"not_found|order"}},
		{name: "unknown certificate", path: "/certificate/1001/sendemail", body: goodSend,
			status: 404, codes: []string{"not_found|certificate"}},
		{name: "any id exists in demo mode", path: "/certificate/987654321/sendemail", body: goodSend, anyID: true,
			status: 204},
		{name: "any order exists in demo mode", path: "/order/certificate/123456/additional-emails", body: goodEmails, anyID: true,
			status: 204},
		{name: "missing order in demo mode", path: "/order/certificate/404404/resend-emails", body: `{}`, anyID: true,
			status: 404, codes: []string{"not_found|order"}},
		{name: "missing certificate in demo mode", path: "/certificate/404404/sendemail", body: goodSend, anyID: true,
			status: 404, codes: []string{"not_found|certificate"}},
		{name: "certificate zero", path: "/certificate/0/sendemail", body: goodSend, anyID: true,
			status: 404, codes: []string{"not_found|certificate"}},
		{name: "domain zero", path: "/domain/0/dcv/emails", body: `{}`, anyID: true,
			status: 404, codes: []string{"not_found|domain"}},
		// CertCentral's loose address check: local@domain, both parts set,
		// at most 254 characters.
		{name: "address without a local part", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":["@example.com"]}`,
			status: 400, codes: []string{"invalid_value:additional_emails"}},
		{name: "address without a domain", path: "/order/certificate/1001/additional-emails", body: `{"additional_emails":["jill@"]}`,
			status: 400, codes: []string{"invalid_value:additional_emails"}},
		{name: "address of 255 characters", path: "/order/certificate/1001/additional-emails",
			body:   `{"additional_emails":["` + strings.Repeat("j", 243) + `@example.com"]}`,
			status: 400, codes: []string{"invalid_value:additional_emails"}},
		{name: "address of 254 characters", path: "/order/certificate/1001/additional-emails",
			body:   `{"additional_emails":["` + strings.Repeat("j", 242) + `@example.com"]}`,
			status: 204},
		{name: "locale with the first and last letters", path: "/order/certificate/1001/resend-emails", body: `{"locale":"az_AZ"}`,
			status: 204},
		{name: "locale with the last and first letters", path: "/order/certificate/1001/resend-emails", body: `{"locale":"za_ZA"}`,
			status: 204},
		{name: "body too large", path: "/order/certificate/1001/additional-emails",
			body:   `{"additional_emails":["` + strings.Repeat("a", 1<<20) + `@example.com"]}`,
			status: 413, codes: []string{"request_too_large"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, digicerttest.Config{AnyIDExists: tt.anyID, Missing: []int64{missingID}})
			key := tt.key
			switch {
			case tt.noKey:
				key = ""
			case key == "":
				key = testKey
			}
			method := tt.method
			if method == "" {
				method = http.MethodPut
			}
			resp := send(t, method, b.base+tt.path, key, tt.body)
			if resp.status != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.status, resp.body, tt.status)
			}
			if tt.status == http.StatusNoContent {
				return
			}
			if resp.contentType != "application/json" {
				t.Errorf("Content-Type %q, want application/json", resp.contentType)
			}
			if got := resp.codes(t); !slices.Equal(got, tt.codes) {
				t.Errorf("codes %q, want %q", got, tt.codes)
			}
			if resp.allow != tt.wantAllow {
				t.Errorf("Allow %q, want %q", resp.allow, tt.wantAllow)
			}
			if bytes.Contains(resp.body, []byte(testKey)) || bytes.Contains(resp.body, []byte(otherKey)) {
				t.Errorf("error body %s echoes a key", resp.body)
			}
			if _, ok := b.fake.AdditionalEmails(orderID); ok || len(b.fake.DCVSends(orderID)) > 0 || len(b.fake.CertSends(certID)) > 0 {
				t.Error("a refused request had an effect")
			}
			if got := b.fake.StatusCount(tt.status); got != 1 {
				t.Errorf("StatusCount(%d) = %d, want 1", tt.status, got)
			}
			reqs := b.fake.Requests()
			if len(reqs) != 1 || reqs[0].Status != tt.status || reqs[0].KeyValid != (key == testKey) {
				t.Errorf("recorded %v, want one request answered %d", reqs, tt.status)
			}
		})
	}
}

func TestServer_RateLimits(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	b := setup(t, digicerttest.Config{
		APIKeys:    []string{testKey, otherKey},
		RateLimits: []digicerttest.Window{{Limit: 3, Period: time.Second}, {Limit: 5, Period: time.Minute}},
		BlockFor:   10 * time.Second,
		Clock:      clock.Now,
	})
	url := resendURL(b.base, orderID)
	steps := []struct {
		name    string
		advance time.Duration
		key     string
		want    int
	}{
		{name: "1st", key: testKey, want: 204},
		{name: "2nd", key: testKey, want: 204},
		{name: "invalid keys are not counted", key: "nope", want: 403},
		{name: "nor refused before the count", key: "", want: 403},
		{name: "3rd fills the 1s window", key: testKey, want: 204},
		{name: "4th within the second is over", key: testKey, want: 429},
		{name: "another key is not blocked", key: otherKey, want: 204},
		{name: "blocked although the window passed", advance: 2 * time.Second, key: testKey, want: 429},
		{name: "still blocked just before the end", advance: 8*time.Second - time.Millisecond, key: testKey, want: 429},
		{name: "unblocked after BlockFor", advance: time.Millisecond, key: testKey, want: 204},
		{name: "5th in the minute", advance: 2 * time.Second, key: testKey, want: 204},
		{name: "6th in the minute is over the long window", advance: 2 * time.Second, key: testKey, want: 429},
		{name: "the long window keeps it blocked", advance: 11 * time.Second, key: testKey, want: 429},
		{name: "free once the minute rolled past", advance: time.Minute, key: testKey, want: 204},
	}
	for _, step := range steps {
		clock.Advance(step.advance)
		resp := send(t, http.MethodPut, url, step.key, `{}`)
		if resp.status != step.want {
			t.Fatalf("%s: status %d (%s), want %d", step.name, resp.status, resp.body, step.want)
		}
		if step.want == 429 {
			codes := resp.codes(t)
			if !slices.Equal(codes, []string{"request_limit_exceeded"}) || !bytes.Contains(resp.body, []byte("please limit request volume")) {
				t.Errorf("%s: body %s, want request_limit_exceeded", step.name, resp.body)
			}
		}
	}
	if got, want := b.fake.StatusCount(429), 5; got != want {
		t.Errorf("StatusCount(429) = %d, want %d", got, want)
	}
	if got, want := len(b.fake.DCVSends(orderID)), 7; got != want {
		t.Errorf("%d resends applied, want %d", got, want)
	}

	// Without windows, every request goes through once the block ended.
	b.fake.SetRateLimits()
	clock.Advance(10 * time.Second)
	for i := range 10 {
		if resp := send(t, http.MethodPut, url, testKey, `{}`); resp.status != 204 {
			t.Fatalf("request %d without limits: status %d", i, resp.status)
		}
	}
}

func TestServer_FailNext(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	const html = "<html><body>502 Bad Gateway</body></html>"
	const limited = `{"errors":[{"code":"request_limit_exceeded","message":"slow down"}]}`
	b.fake.FailNext(2, 503, html, "text/html")
	b.fake.FailNext(1, 429, limited, "application/json")
	b.fake.FailNext(0, 500, "ignored", "text/plain")
	b.fake.FailNext(1, 0, "ignored: not a status", "text/plain")
	b.fake.FailNext(1, 101, "ignored: not a final status", "text/plain")
	b.fake.FailNext(1, 502, "", "")

	url := additionalURL(b.base, orderID)
	want := []response{
		{status: 503, contentType: "text/html", body: []byte(html)},
		{status: 503, contentType: "text/html", body: []byte(html)},
		{status: 429, contentType: "application/json", body: []byte(limited)},
		{status: 502, contentType: "", body: []byte{}},
		{status: 204, contentType: "", body: []byte{}},
	}
	for i, w := range want {
		key := testKey
		if i == 0 {
			key = "wrong" // scripted answers come before the key check
		}
		got := send(t, http.MethodPut, url, key, `{"additional_emails":["a@example.com"]}`)
		if got.status != w.status || got.contentType != w.contentType || !bytes.Equal(got.body, w.body) {
			t.Errorf("answer %d = %d %q %q, want %d %q %q", i, got.status, got.contentType, got.body, w.status, w.contentType, w.body)
		}
	}
	var statuses []int
	for _, r := range b.fake.Requests() {
		statuses = append(statuses, r.Status)
	}
	if !slices.Equal(statuses, []int{503, 503, 429, 502, 204}) {
		t.Errorf("recorded statuses %v", statuses)
	}
	if b.fake.RequestCount() != 5 || b.fake.StatusCount(503) != 2 || b.fake.StatusCount(0) != 0 {
		t.Errorf("RequestCount %d, StatusCount(503) %d, StatusCount(0) %d; want 5, 2 and 0 (every request answered)",
			b.fake.RequestCount(), b.fake.StatusCount(503), b.fake.StatusCount(0))
	}

	// The edges of the statuses a scripted answer may have: 200 and 999.
	b.fake.FailNext(1, 200, `{"scripted":true}`, "application/json")
	b.fake.FailNext(1, 999, "", "")
	for _, w := range []int{200, 999, 204} {
		if got := send(t, http.MethodPut, url, testKey, `{"additional_emails":["a@example.com"]}`); got.status != w {
			t.Errorf("status %d %s, want %d", got.status, got.body, w)
		}
	}
}

func TestServer_FailPath(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	b.fake.AddOrder(orderID + 1)
	target := resendURL(b.base, orderID)
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	b.fake.FailPath(u.Path, 2, 503, "", "")
	b.fake.FailNext(1, 502, "", "")

	// Requests elsewhere pass the path's answers by and take the later
	// unscoped one; the path's own requests take theirs first.
	steps := []struct {
		url  string
		want int
	}{
		{additionalURL(b.base, orderID), 502},
		{additionalURL(b.base, orderID), 204},
		{resendURL(b.base, orderID+1), 204},
		{target, 503},
		{target, 503},
		{target, 204},
	}
	for i, step := range steps {
		body := `{"additional_emails":["a@example.com"]}`
		if step.url != steps[0].url {
			body = `{}`
		}
		if got := send(t, http.MethodPut, step.url, testKey, body); got.status != step.want {
			t.Errorf("request %d to %s: %d %s, want %d", i, step.url, got.status, got.body, step.want)
		}
	}
}

func TestServer_Faults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		faults  digicerttest.Faults
		timeout time.Duration
		check   func(t *testing.T, resp response, err error, took time.Duration)
		status  int // recorded; -1: either 502 or 503
	}{
		{
			name:   "CDN errors",
			faults: digicerttest.Faults{ErrorRate: 1},
			check: func(t *testing.T, resp response, err error, _ time.Duration) {
				if err != nil || (resp.status != 502 && resp.status != 503) || resp.contentType != "text/html" ||
					!bytes.HasPrefix(resp.body, []byte("<html>")) {
					t.Errorf("got %d %q %q, %v; want a 502 or 503 HTML page", resp.status, resp.contentType, resp.body, err)
				}
			},
			status: -1,
		},
		{
			name:   "reset",
			faults: digicerttest.Faults{ResetRate: 1},
			check: func(t *testing.T, resp response, err error, _ time.Duration) {
				if err == nil {
					t.Errorf("got %d, want no answer", resp.status)
				}
			},
		},
		{
			name:    "hang until the client gives up",
			faults:  digicerttest.Faults{HangRate: 1},
			timeout: 500 * time.Millisecond,
			check: func(t *testing.T, resp response, err error, took time.Duration) {
				if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || took < 500*time.Millisecond {
					t.Errorf("got %d, %v after %s; want the client's deadline", resp.status, err, took)
				}
			},
		},
		{
			name:   "latency",
			faults: digicerttest.Faults{Latency: 50 * time.Millisecond},
			check: func(t *testing.T, resp response, err error, took time.Duration) {
				if err != nil || resp.status != 204 || took < 50*time.Millisecond {
					t.Errorf("got %d, %v after %s; want 204 after at least 50ms", resp.status, err, took)
				}
			},
			status: 204,
		},
		{
			name:    "latency longer than the client waits",
			faults:  digicerttest.Faults{Latency: time.Hour},
			timeout: 500 * time.Millisecond,
			check: func(t *testing.T, resp response, err error, took time.Duration) {
				if err == nil || took > time.Minute {
					t.Errorf("got %d, %v after %s; want the client's deadline", resp.status, err, took)
				}
			},
		},
		{
			name:   "no fault at rate zero",
			faults: digicerttest.Faults{ErrorRate: 0, ResetRate: 0, HangRate: 0},
			check: func(t *testing.T, resp response, err error, _ time.Duration) {
				if err != nil || resp.status != 204 {
					t.Errorf("got %d, %v; want 204", resp.status, err)
				}
			},
			status: 204,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, digicerttest.Config{})
			b.fake.SetFaults(tt.faults)
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			resp, err := sendErr(ctx, http.MethodPut, resendURL(b.base, orderID), testKey, `{}`)
			tt.check(t, resp, err, time.Since(start))
			// A request the client gave up on may reach the handler later.
			certmailtest.WaitFor(t, 10*time.Second, func() bool { return b.fake.RequestCount() >= 1 }, func() string {
				return fmt.Sprintf("waiting for the request at the fake; the fake counted %d", b.fake.RequestCount())
			})
			if b.fake.RequestCount() != 1 {
				t.Fatalf("RequestCount = %d, want 1", b.fake.RequestCount())
			}
			got := b.fake.Requests()[0].Status
			if tt.status >= 0 && got != tt.status || tt.status < 0 && got != 502 && got != 503 {
				t.Errorf("recorded status %d, want %d", got, tt.status)
			}
			if b.fake.StatusCount(got) != 1 {
				t.Errorf("StatusCount(%d) = %d, want 1", got, b.fake.StatusCount(got))
			}
		})
	}
}

func TestServer_CloseReleasesHangs(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	b.fake.SetFaults(digicerttest.Faults{HangRate: 1})
	errc := make(chan error, 1)
	go func() {
		_, err := sendErr(context.Background(), http.MethodPut, resendURL(b.base, orderID), testKey, `{}`)
		errc <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for b.fake.RequestCount() == 0 { // wait until the request hangs
		if time.Now().After(deadline) {
			t.Fatal("the request never arrived")
		}
		select {
		case err := <-errc:
			t.Fatalf("the request ended before Close: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	b.fake.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("a released request got an answer, want a reset connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not release the hanging request")
	}
}

// TestServer_InFlight: a request counts as in flight while it is handled,
// and no longer once its client gave up, though it stays unanswered.
func TestServer_InFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	b.fake.SetFaults(digicerttest.Faults{Latency: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := sendErr(ctx, http.MethodPut, resendURL(b.base, orderID), testKey, `{}`)
		errc <- err
	}()
	certmailtest.WaitFor(t, 10*time.Second, func() bool { return b.fake.InFlight() == 1 },
		func() string { return fmt.Sprintf("InFlight = %d while the request waits, want 1", b.fake.InFlight()) })
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled request got an answer")
	}
	certmailtest.WaitFor(t, 10*time.Second, func() bool { return b.fake.InFlight() == 0 },
		func() string { return fmt.Sprintf("InFlight = %d after the client gave up, want 0", b.fake.InFlight()) })
	if got := b.fake.StatusCount(0); got != 1 {
		t.Errorf("StatusCount(0) = %d, want 1: the abandoned request stays unanswered", got)
	}
}

func TestServer_StateAndReset(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	if got, ok := b.fake.AdditionalEmails(orderID); ok || got != nil {
		t.Errorf("AdditionalEmails before any set = %q, %t", got, ok)
	}
	for _, body := range []string{`{"additional_emails":["a@example.com","b@example.com"]}`, `{"additional_emails":["c@example.com"]}`} {
		if resp := send(t, http.MethodPut, additionalURL(b.base, orderID), testKey, body); resp.status != 204 {
			t.Fatalf("status %d", resp.status)
		}
	}
	got, ok := b.fake.AdditionalEmails(orderID)
	if !ok || !slices.Equal(got, []string{"c@example.com"}) {
		t.Errorf("AdditionalEmails = %q, %t; want the last list only", got, ok)
	}
	got[0] = "changed@example.com"
	if again, _ := b.fake.AdditionalEmails(orderID); again[0] != "c@example.com" {
		t.Error("AdditionalEmails returned the fake's own slice")
	}
	for range 2 {
		send(t, http.MethodPut, resendURL(b.base, orderID), testKey, `{"domain_approval_emails":[{"domain":"example.com","email":"admin@example.com"}]}`)
		send(t, http.MethodPut, sendemailURL(b.base, certID), testKey, `{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`)
	}
	if n, m := len(b.fake.DCVSends(orderID)), len(b.fake.CertSends(certID)); n != 2 || m != 2 {
		t.Errorf("%d DCV sends and %d certificate sends, want 2 and 2", n, m)
	}
	reqs := b.fake.Requests()
	reqs[0].Body[0] = 'X'
	reqs[0].Header.Set("X-DC-DEVKEY", "changed")
	if again := b.fake.Requests()[0]; again.Body[0] != '{' || again.Header.Get("X-DC-DEVKEY") != testKey {
		t.Error("Requests returned the fake's own body or header")
	}

	b.fake.FailNext(1, 500, "", "")
	b.fake.Reset()
	if b.fake.RequestCount() != 0 || len(b.fake.Requests()) != 0 || b.fake.StatusCount(204) != 0 {
		t.Error("Reset kept requests")
	}
	if _, ok := b.fake.AdditionalEmails(orderID); ok || len(b.fake.DCVSends(orderID)) != 0 || len(b.fake.CertSends(certID)) != 0 {
		t.Error("Reset kept effects")
	}
	// Keys, orders and certificates survive; the pending FailNext does not.
	if resp := send(t, http.MethodPut, sendemailURL(b.base, certID), testKey, `{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`); resp.status != 204 {
		t.Errorf("after Reset: status %d, want 204", resp.status)
	}
}

func TestServer_SetAPIKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	url := resendURL(b.base, orderID)
	if resp := send(t, http.MethodPut, url, otherKey, `{}`); resp.status != 403 {
		t.Fatalf("before: status %d, want 403", resp.status)
	}
	b.fake.SetAPIKeys(otherKey)
	if resp := send(t, http.MethodPut, url, otherKey, `{}`); resp.status != 204 {
		t.Errorf("new key: status %d, want 204", resp.status)
	}
	if resp := send(t, http.MethodPut, url, testKey, `{}`); resp.status != 403 {
		t.Errorf("revoked key: status %d, want 403", resp.status)
	}
	if got := b.fake.Requests(); got[0].KeyValid || !got[1].KeyValid || got[2].KeyValid {
		t.Errorf("KeyValid recorded as %v", got)
	}
}

func TestServer_RecordLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{RecordLimit: 2})
	for i := range 6 {
		send(t, http.MethodPut, resendURL(b.base, orderID), testKey, fmt.Sprintf(`{"locale":"e%c"}`, 'a'+i))
		reqs := b.fake.Requests()
		want := []string{fmt.Sprintf(`{"locale":"e%c"}`, 'a'+i)}
		if i > 0 {
			want = append([]string{fmt.Sprintf(`{"locale":"e%c"}`, 'a'+i-1)}, want...)
		}
		var got []string
		for _, r := range reqs {
			got = append(got, string(r.Body))
		}
		if !slices.Equal(got, want) {
			t.Errorf("after %d requests kept %q, want %q", i+1, got, want)
		}
	}
	if b.fake.RequestCount() != 6 || b.fake.StatusCount(204) != 6 {
		t.Errorf("RequestCount %d, StatusCount(204) %d; want 6 and 6", b.fake.RequestCount(), b.fake.StatusCount(204))
	}
}

func TestServer_Concurrency(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{RateLimits: []digicerttest.Window{{Limit: 150, Period: time.Hour}}, BlockFor: time.Hour})
	b.fake.FailNext(10, 503, "<html></html>", "text/html")
	const workers, each = 20, 10
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				var url, body string
				switch (w + i) % 3 {
				case 0:
					url, body = additionalURL(b.base, orderID), fmt.Sprintf(`{"additional_emails":["w%d-%d@example.com"]}`, w, i)
				case 1:
					url, body = resendURL(b.base, orderID), `{}`
				default:
					url, body = sendemailURL(b.base, certID), `{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`
				}
				req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("X-DC-DEVKEY", testKey)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				_ = b.fake.Requests() // read while others write
			}
		})
	}
	wg.Wait()
	total := workers * each
	if got := b.fake.RequestCount(); got != total {
		t.Fatalf("RequestCount = %d, want %d", got, total)
	}
	// 10 scripted 503s, then 150 admitted by the window, the rest 429.
	if a, b5, r := b.fake.StatusCount(204), b.fake.StatusCount(503), b.fake.StatusCount(429); a != 150 || b5 != 10 || r != total-160 {
		t.Errorf("204: %d, 503: %d, 429: %d; want 150, 10, %d", a, b5, r, total-160)
	}
	// Every 204 left its effect, and nothing else did.
	answered := map[string]int{}
	for _, r := range b.fake.Requests() {
		if r.Status == 204 {
			answered[r.Path[strings.LastIndexByte(r.Path, '/')+1:]]++
		}
	}
	if got := len(b.fake.DCVSends(orderID)); got != answered["resend-emails"] {
		t.Errorf("%d DCV sends, want %d", got, answered["resend-emails"])
	}
	if got := len(b.fake.CertSends(certID)); got != answered["sendemail"] {
		t.Errorf("%d certificate sends, want %d", got, answered["sendemail"])
	}
	if _, ok := b.fake.AdditionalEmails(orderID); ok != (answered["additional-emails"] > 0) {
		t.Errorf("additional emails set: %t, want %t", ok, answered["additional-emails"] > 0)
	}
}

func TestServer_FormatHidesKeys(t *testing.T) {
	t.Parallel()
	cfg := digicerttest.Config{APIKeys: []string{testKey}}
	b := setup(t, cfg)
	send(t, http.MethodPut, resendURL(b.base, orderID), testKey, `{}`)
	reqs := b.fake.Requests()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for name, v := range map[string]any{"config": cfg, "server": b.fake, "request": reqs[0], "requests": reqs} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, testKey) {
				t.Errorf("%s formatted with %s prints the key: %s", name, verb, out)
			}
		}
	}
	if !strings.Contains(reqs[0].String(), "PUT /services/v2/order/certificate/1001/resend-emails: 204") {
		t.Errorf("String() = %q", reqs[0].String())
	}
}

// TestServer_RateLimitEdges: a window holds a request for exactly its
// period (though a longer window still counts it), a key that went over is
// blocked for BlockFor (10s by default), and a window whose limit is not
// positive is ignored.
func TestServer_RateLimitEdges(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		blockFor time.Duration
		blocked  time.Duration
	}{
		{"default BlockFor", 0, 10 * time.Second},
		{"BlockFor 3s", 3 * time.Second, 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock()
			b := setup(t, digicerttest.Config{
				RateLimits: []digicerttest.Window{{Limit: 1, Period: time.Second}, {Limit: 0, Period: time.Second}, {Limit: 100, Period: time.Minute}},
				BlockFor:   tt.blockFor,
				Clock:      clock.Now,
			})
			url := resendURL(b.base, orderID)
			steps := []struct {
				name    string
				advance time.Duration
				want    int
			}{
				{name: "the first request", want: 204},
				{name: "one period later the window is free", advance: time.Second, want: 204},
				{name: "a second request within the period", advance: time.Second - time.Nanosecond, want: 429},
				{name: "blocked just before BlockFor ends", advance: tt.blocked - time.Nanosecond, want: 429},
				{name: "free once BlockFor ended", advance: time.Nanosecond, want: 204},
			}
			for _, step := range steps {
				clock.Advance(step.advance)
				if resp := send(t, http.MethodPut, url, testKey, `{}`); resp.status != step.want {
					t.Fatalf("%s: status %d (%s), want %d", step.name, resp.status, resp.body, step.want)
				}
			}
		})
	}
}
