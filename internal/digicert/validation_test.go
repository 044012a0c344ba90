package digicert_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// TestClient_OrderValidation: the read is a GET without a body, counted by
// the limiter and the observer like every call, and decoded from the fake's
// answer (ids as strings).
func TestClient_OrderValidation(t *testing.T) {
	t.Parallel()
	limiter := &countingLimiter{}
	b := setup(t, func(c *digicert.Config) { c.Limiter = limiter })
	b.fake.SetOrder(digicerttest.Order{ID: 3001, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{
		{ID: 41, NameScope: "example.com", DNSNames: []string{"example.com", "www.example.com"}},
		{ID: 42, NameScope: "example.org", Status: digicerttest.StatusApproved},
		{ID: 43, NameScope: "example.net", Method: "dns-txt-token"},
	}})
	v, res, err := b.client.OrderValidation(t.Context(), 3001)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Attempts != 1 {
		t.Errorf("Result %+v", res)
	}
	if v.OrderID != 3001 || !v.Pending() || v.DV() || v.OrganizationValidations != 1 || v.DCVMethod != "email" || len(v.DNSNameValidations) != 3 {
		t.Errorf("OrderValidation = %+v", v)
	}
	want := digicert.DNSNameValidation{DomainID: 41, NameScope: "example.com", Status: "pending", Method: "email",
		DNSNames: []string{"example.com", "www.example.com"}}
	if got := v.PendingEmailDomains(); len(got) != 1 || got[0].DomainID != want.DomainID || got[0].NameScope != want.NameScope ||
		!slices.Equal(got[0].DNSNames, want.DNSNames) {
		t.Errorf("PendingEmailDomains = %+v, want [%+v]", got, want)
	}
	r := b.fake.Requests()[0]
	if r.Method != http.MethodGet || r.Path != "/services/v2/order/certificate/3001/validation" || len(r.Body) != 0 ||
		r.Header.Get("X-DC-DEVKEY") != testKey || r.Header.Get("Accept") != "application/json" || r.Header.Get("Content-Type") != "" {
		t.Errorf("request %v headers %v", r, r.Header)
	}
	if limiter.count() != 1 || limiter.released() != 1 {
		t.Errorf("limiter: %d acquired, %d released; want 1, 1", limiter.count(), limiter.released())
	}
	if endpoints, statuses := b.obs.seen(); !slices.Equal(endpoints, []string{digicert.EndpointOrderValidation}) || !slices.Equal(statuses, []int{200}) {
		t.Errorf("observed %q %v", endpoints, statuses)
	}

	// A DV order the fake knows without a model, and an unknown one.
	v, _, err = b.client.OrderValidation(t.Context(), orderID)
	if err != nil || !v.DV() || !v.Pending() || len(v.PendingEmailDomains()) != 1 {
		t.Errorf("plain order: %+v, %v", v, err)
	}
	_, _, err = b.client.OrderValidation(t.Context(), 42)
	var apiErr *digicert.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 404 || !apiErr.HasFullCode("not_found|order") || digicert.Classify(err) != digicert.ClassPermanent {
		t.Errorf("unknown order: %v", err)
	}
	if _, _, err := b.client.OrderValidation(t.Context(), 0); !errors.Is(err, digicert.ErrInvalidRequest) {
		t.Errorf("order 0: %v, want ErrInvalidRequest", err)
	}
}

// answering serves body with status for every request and counts them.
func answering(t *testing.T, status int, body string) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// TestClient_OrderValidationTolerance: ids as numbers or strings, unknown
// members, and every shape organization_validations may take.
func TestClient_OrderValidationTolerance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		dv      bool
		status  string
		domains []int64 // ids of PendingEmailDomains
	}{
		{"numbers and unknown members",
			`{"order_id": 7, "order_status": "pending", "extra": {"x": [1]}, "dns_name_validations": [{"domain_id": 1234, "name_scope": "example.com", "status": "pending", "method": "email", "validated_at": null, "dns_names": ["example.com"]}]}`,
			true, "pending", []int64{1234}},
		{"strings with spaces",
			`{"order_id": "7", "order_status": "pending", "dns_name_validations": [{"domain_id": " 1234 ", "status": "pending", "method": "email"}]}`,
			true, "pending", []int64{1234}},
		{"case of status and method",
			`{"order_status": "PENDING", "dns_name_validations": [{"domain_id": "5", "status": "Pending", "method": "EMAIL"}]}`,
			true, "PENDING", []int64{5}},
		{"duplicates and other methods",
			`{"order_status": "pending", "dns_name_validations": [{"domain_id": 5, "status": "pending", "method": "email"}, {"domain_id": "5", "status": "pending", "method": "email"}, {"domain_id": 6, "status": "pending", "method": "dns-txt-token"}, {"domain_id": 7, "status": "approved", "method": "email"}]}`,
			true, "pending", []int64{5}},
		{"ids that are not ids read as 0",
			`{"order_status": "pending", "dns_name_validations": [{"domain_id": "abc", "status": "pending", "method": "email"}, {"domain_id": -3, "status": "pending", "method": "email"}, {"domain_id": 1.5, "status": "pending", "method": "email"}]}`,
			true, "pending", []int64{0}},
		{"empty organization validations", `{"order_status": "issued", "organization_validations": []}`, true, "issued", nil},
		{"null organization validations", `{"order_status": "issued", "organization_validations": null}`, true, "issued", nil},
		{"organization validations", `{"order_status": "pending", "organization_validations": [{"type": "ev", "status": "pending"}], "dns_name_validations": []}`, false, "pending", nil},
		{"organization validations in another shape", `{"order_status": "pending", "organization_validations": {"type": "ov"}, "dns_name_validations": []}`, false, "pending", nil},
		{"an order not pending needs no validations", `{"order_status": "canceled", "dns_name_validations": null}`, true, "canceled", nil},
		{"exactly 1 MiB", `{"order_status": "pending", "dns_name_validations": []` + strings.Repeat(" ", 1<<20-len(`{"order_status": "pending", "dns_name_validations": []}`)) + `}`, true, "pending", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base, _ := answering(t, 200, tt.body)
			c := newClient(t, digicert.Config{BaseURL: base, APIKey: testKey})
			v, _, err := c.OrderValidation(t.Context(), 7)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int64
			for _, d := range v.PendingEmailDomains() {
				ids = append(ids, d.DomainID)
			}
			if v.DV() != tt.dv || v.OrderStatus != tt.status || !slices.Equal(ids, tt.domains) {
				t.Errorf("DV %t, status %q, pending email domains %v; want %t, %q, %v", v.DV(), v.OrderStatus, ids, tt.dv, tt.status, tt.domains)
			}
		})
	}
}

// TestClient_OrderValidationRedactsTheKey: an answer echoing the key, in
// any ASCII case, keeps none of it in any text the client returns; the
// order status goes on to results, log lines and schedules.
func TestClient_OrderValidationRedactsTheKey(t *testing.T) {
	t.Parallel()
	upper, lower := strings.ToUpper(testKey), strings.ToLower(testKey)
	body := `{"order_status": "pending ` + upper + `", "order_dcv_method": "` + lower + `", "dns_name_validations": [` +
		`{"domain_id": 5, "name_scope": "` + lower + `.example.com", "approval_scope": "` + testKey + `", "status": "pending", ` +
		`"method": "email", "dns_names": ["www.` + upper + `.example.com"]}]}`
	base, _ := answering(t, 200, body)
	c := newClient(t, digicert.Config{BaseURL: base, APIKey: testKey})
	v, _, err := c.OrderValidation(t.Context(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%#v", v); strings.Contains(strings.ToLower(got), lower) {
		t.Errorf("the answer holds the key: %s", got)
	}
	if v.OrderStatus != "pending [redacted]" || v.Pending() {
		t.Errorf("order status %q, want %q, not pending", v.OrderStatus, "pending [redacted]")
	}
	if d := v.DNSNameValidations; len(d) != 1 || d[0].NameScope != "[redacted].example.com" || !d[0].PendingEmail() {
		t.Errorf("domains %+v", d)
	}
}

// TestClient_OrderValidationBadAnswers: a 2xx that is not the answer
// expected is ErrBadAnswer, transient, and retried within the call. That
// includes a JSON object that does not say the order's status as a string,
// and a pending order's answer without its list of domains: read as "not
// pending", either would end an until_validated schedule as validated.
func TestClient_OrderValidationBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
	}{
		{"a CDN page", "<html><body>Maintenance</body></html>"},
		{"an array", `[]`},
		{"empty", ``},
		{"validations in another shape", `{"order_status": "pending", "dns_name_validations": {"domain_id": 1}}`},
		{"over 1 MiB", `{"order_status": "pending", "pad": "` + strings.Repeat("x", 1<<20) + `"}`},
		{"an empty object", `{}`},
		{"DigiCert errors", `{"errors": [{"code": "service_unavailable", "message": "maintenance"}]}`},
		{"status null", `{"order_status": null, "dns_name_validations": []}`},
		{"status empty", `{"order_status": "", "dns_name_validations": []}`},
		{"status a number", `{"order_status": 3, "dns_name_validations": []}`},
		{"status of another type", `{"order_status": true, "dns_name_validations": []}`},
		{"pending without validations", `{"order_status": "pending"}`},
		{"pending with validations null", `{"order_status": "PENDING", "dns_name_validations": null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base, n := answering(t, 200, tt.body)
			c := newClient(t, digicert.Config{BaseURL: base, APIKey: testKey, MaxAttempts: 3, InitialBackoff: time.Millisecond})
			_, _, err := c.OrderValidation(t.Context(), 7)
			if !errors.Is(err, digicert.ErrBadAnswer) || digicert.Classify(err) != digicert.ClassTransient || digicert.ErrorCode(err) != "bad_answer" {
				t.Errorf("error %v (class %s, code %q), want a transient ErrBadAnswer", err, digicert.Classify(err), digicert.ErrorCode(err))
			}
			if got := n.Load(); got != 3 {
				t.Errorf("%d attempts, want 3", got)
			}
		})
	}
}

// slowSecondLimiter lets the first attempt through at once and holds the
// second for d.
type slowSecondLimiter struct {
	d     time.Duration
	calls atomic.Int32
}

func (l *slowSecondLimiter) Acquire(ctx context.Context) (func(), error) {
	if l.calls.Add(1) == 2 {
		timer := time.NewTimer(l.d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func() {}, nil
}

// TestClient_ReadRetriesNeedNoHeadroom: with less than a tenth of its
// budget left, a PUT does not retry (an attempt cut short may still send
// the emails); a read, which has no effect, does.
func TestClient_ReadRetriesNeedNoHeadroom(t *testing.T) {
	t.Parallel()
	const budget = 4 * time.Second // headroom 400ms; the limiter leaves about 300ms
	for _, read := range []bool{false, true} {
		t.Run(map[bool]string{false: "PUT", true: "GET"}[read], func(t *testing.T) {
			t.Parallel()
			limiter := &slowSecondLimiter{d: budget - 300*time.Millisecond}
			b := setup(t, func(c *digicert.Config) {
				c.Limiter, c.MaxElapsed, c.MaxAttempts, c.InitialBackoff = limiter, budget, 2, time.Millisecond
			})
			b.fake.FailNext(10, 503, "", "")
			var err error
			if read {
				_, _, err = b.client.OrderValidation(t.Context(), orderID)
			} else {
				_, err = b.client.ResendDCVEmails(t.Context(), orderID, []byte(`{}`))
			}
			if digicert.ErrorCode(err) != "http_503" {
				t.Errorf("error %v, want the 503", err)
			}
			want := 1
			if read {
				want = 2
			}
			if got := b.fake.RequestCount(); got != want {
				t.Errorf("%d attempts, want %d", got, want)
			}
		})
	}
}

// The order's resend endpoint answers an OV or EV order with an error whose
// code CertCentral does not document; the fake's stand-in
// (invalid_order_type|dv_only, a 400) [assumption] is permanent, as every
// 4xx with DigiCert's errors: the task is dead-lettered, not retried.
func TestClient_ResendOfANonDVOrderIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.fake.SetOrder(digicerttest.Order{ID: 3001, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{{ID: 41, NameScope: "example.com"}}})
	_, err := b.client.ResendDCVEmails(t.Context(), 3001, []byte(`{}`))
	if digicert.Classify(err) != digicert.ClassPermanent || digicert.ErrorCode(err) != "invalid_order_type|dv_only" {
		t.Errorf("error %v (class %s, code %q)", err, digicert.Classify(err), digicert.ErrorCode(err))
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}
