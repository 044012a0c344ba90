package digicerttest_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

const viewKey = "VIEWKEY0123456789ABCDEF"

// A View Only key reads as a full key does, and every PUT it sends to a
// known route is refused 403 access_denied|missing_permission, before the
// body and the id's existence are looked at, with no effect; an unknown
// route or the wrong method is answered as any key's.
func TestServer_ViewOnlyKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{ViewOnlyKeys: []string{viewKey}})
	b.fake.SetOrder(ovOrder)
	if doc := readValidationWith(t, b.base, orderID, viewKey); doc.OrderStatus != "pending" {
		t.Errorf("View Only validation read: %+v", doc)
	}
	denied := []struct{ name, url, body string }{
		{"additional-emails", additionalURL(b.base, orderID), `{"additional_emails":["a@example.com"]}`},
		{"resend-emails", resendURL(b.base, orderID), `{}`},
		{"sendemail", sendemailURL(b.base, certID), `{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`},
		{"domain dcv emails", domainURL(b.base, 41), `{}`},
		{"malformed body", additionalURL(b.base, orderID), `{`},
		{"invalid body", sendemailURL(b.base, certID), `{"emails":[]}`},
		{"unknown order", resendURL(b.base, 42), `{}`},
		{"unknown domain", domainURL(b.base, 999), `{}`},
	}
	for _, tt := range denied {
		resp := send(t, http.MethodPut, tt.url, viewKey, tt.body)
		if resp.status != http.StatusForbidden || resp.contentType != "application/json" ||
			!slices.Equal(resp.codes(t), []string{"access_denied|missing_permission"}) {
			t.Errorf("%s: %d %s %s, want 403 access_denied|missing_permission", tt.name, resp.status, resp.contentType, resp.body)
		}
	}
	for _, tt := range []struct {
		name, method, url string
		status            int
		code              string
	}{
		{"unknown route", http.MethodPut, b.base + "/order/certificate/1001/renew", 404, "not_found|route"},
		{"id not a number", http.MethodPut, resendURL(b.base, "x1"), 404, "not_found|route"},
		{"PUT on the GET route", http.MethodPut, validationURL(b.base, orderID), 405, "method_not_allowed"},
		{"GET on a PUT route", http.MethodGet, resendURL(b.base, orderID), 405, "method_not_allowed"},
		{"unknown order read", http.MethodGet, validationURL(b.base, 42), 404, "not_found|order"},
	} {
		if resp := send(t, tt.method, tt.url, viewKey, `{}`); resp.status != tt.status || !slices.Equal(resp.codes(t), []string{tt.code}) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, resp.status, resp.body, tt.status, tt.code)
		}
	}
	if _, set := b.fake.AdditionalEmails(orderID); set || len(b.fake.DCVSends(orderID)) != 0 ||
		len(b.fake.CertSends(certID)) != 0 || len(b.fake.DomainDCVSends(41)) != 0 {
		t.Error("a View Only key's PUT had an effect")
	}
	reqs := b.fake.Requests()
	for _, r := range reqs {
		if !r.KeyValid || !r.ViewOnly {
			t.Errorf("%v recorded KeyValid %t ViewOnly %t, want both", r, r.KeyValid, r.ViewOnly)
		}
	}
	if s := reqs[1].String(); !strings.Contains(s, ": 403 (key valid, view only, ") || strings.Contains(s, viewKey) {
		t.Errorf("String() = %q", s)
	}

	// A full key is recorded as no View Only one; an unknown key as neither.
	send(t, http.MethodPut, resendURL(b.base, orderID), testKey, `{}`)
	if resp := send(t, http.MethodPut, resendURL(b.base, orderID), otherKey, `{}`); !slices.Equal(resp.codes(t), []string{"access_denied|access_denied_invalid_key"}) {
		t.Errorf("unknown key: %d %s", resp.status, resp.body)
	}
	reqs = b.fake.Requests()
	if full, unknown := reqs[len(reqs)-2], reqs[len(reqs)-1]; !full.KeyValid || full.ViewOnly || full.Status != 204 || unknown.KeyValid || unknown.ViewOnly {
		t.Errorf("full key recorded %+v, unknown key %+v", full, unknown)
	}
}

// A key in both lists is View Only until SetViewOnlyKeys lifts the
// restriction; SetViewOnlyKeys can restrict a key later too.
func TestServer_SetViewOnlyKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{APIKeys: []string{testKey, viewKey}, ViewOnlyKeys: []string{viewKey}})
	url := resendURL(b.base, orderID)
	if resp := send(t, http.MethodPut, url, viewKey, `{}`); resp.status != 403 {
		t.Fatalf("key in both lists: %d %s, want 403", resp.status, resp.body)
	}
	b.fake.SetViewOnlyKeys()
	if resp := send(t, http.MethodPut, url, viewKey, `{}`); resp.status != 204 {
		t.Errorf("restriction lifted: %d %s, want 204", resp.status, resp.body)
	}
	b.fake.SetViewOnlyKeys(testKey)
	if resp := send(t, http.MethodPut, url, testKey, `{}`); !slices.Equal(resp.codes(t), []string{"access_denied|missing_permission"}) {
		t.Errorf("key restricted later: %d %s", resp.status, resp.body)
	}
	cfg := digicerttest.Config{APIKeys: []string{testKey}, ViewOnlyKeys: []string{viewKey}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, cfg); strings.Contains(out, viewKey) || !strings.Contains(out, "ViewOnlyKeys:1 keys") {
			t.Errorf("config formatted with %s: %s", verb, out)
		}
	}
}

// A View Only key counts against the rate limits like any valid key, and
// its block comes first: a blocked key's PUT is a 429, not a 403.
func TestServer_ViewOnlyKeyRateLimited(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	b := setup(t, digicerttest.Config{ViewOnlyKeys: []string{viewKey}, Clock: clock.Now,
		RateLimits: []digicerttest.Window{{Limit: 2, Period: time.Minute}}})
	for i, want := range []int{200, 403, 429, 429} {
		method, url := http.MethodPut, resendURL(b.base, orderID)
		if i%2 == 0 {
			method, url = http.MethodGet, validationURL(b.base, orderID)
		}
		if resp := send(t, method, url, viewKey, `{}`); resp.status != want {
			t.Errorf("request %d (%s): %d %s, want %d", i, method, resp.status, resp.body, want)
		}
	}
}
