package digicerttest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// serve hands one request to the fake without a network, for tests that
// make thousands.
func serve(t *testing.T, fake *digicerttest.Server, method, path, key, body string) int {
	t.Helper()
	req := httptest.NewRequest(method, "/services/v2"+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("X-DC-DEVKEY", key)
	}
	rec := httptest.NewRecorder()
	fake.ServeHTTP(rec, req)
	return rec.Code
}

// TestServer_Bounded: a long-running fake keeps a bounded record of what it
// received. Recorded bodies are cut at MaxRecordedBody, whatever the key;
// each effect log keeps the last MaxSendsPerID entries of an id and the
// MaxIDs ids most recently written, forgetting the oldest.
func TestServer_Bounded(t *testing.T) {
	t.Parallel()
	fake := digicerttest.New(digicerttest.Config{APIKeys: []string{testKey}, AnyIDExists: true, RecordLimit: 5})

	big := `{"additional_emails":["a@example.com"],"pad":"` + strings.Repeat("x", 3*digicerttest.MaxRecordedBody) + `"}`
	for _, key := range []string{"", otherKey, testKey} {
		serve(t, fake, http.MethodPut, "/order/certificate/1/additional-emails", key, big)
		reqs := fake.Requests()
		r := reqs[len(reqs)-1]
		if len(r.Body) != digicerttest.MaxRecordedBody || r.BodySize != len(big) || string(r.Body) != big[:digicerttest.MaxRecordedBody] {
			t.Errorf("key %q: recorded %d bytes of a %d-byte body (BodySize %d), want the first %d",
				key, len(r.Body), len(big), r.BodySize, digicerttest.MaxRecordedBody)
		}
	}

	// One id past its bound: the newest entries are kept, oldest first.
	const over = digicerttest.MaxSendsPerID + 7
	for i := range over {
		email := fmt.Sprintf("a%d@example.com", i)
		for path, body := range map[string]string{
			"/order/certificate/1/resend-emails":     `{"domain_approval_emails":[{"domain":"example.com","email":"` + email + `"}]}`,
			"/certificate/1/sendemail":               `{"emails":["` + email + `"],"certificate_collect_format":"attachment"}`,
			"/domain/1/dcv/emails":                   `{"email_array":["` + email + `"]}`,
			"/order/certificate/1/additional-emails": `{"additional_emails":["` + email + `"]}`,
		} {
			if code := serve(t, fake, http.MethodPut, path, testKey, body); code != http.StatusNoContent {
				t.Fatalf("PUT %s: %d", path, code)
			}
		}
	}
	first, last := fmt.Sprintf("a%d@example.com", over-digicerttest.MaxSendsPerID), fmt.Sprintf("a%d@example.com", over-1)
	if got := fake.DCVSends(1); len(got) != digicerttest.MaxSendsPerID ||
		got[0].DomainApprovalEmails[0].Email != first || got[len(got)-1].DomainApprovalEmails[0].Email != last {
		t.Errorf("DCVSends kept %d entries, want the last %d (%s to %s)", len(got), digicerttest.MaxSendsPerID, first, last)
	}
	if got := fake.CertSends(1); len(got) != digicerttest.MaxSendsPerID || got[0].Emails[0] != first || got[len(got)-1].Emails[0] != last {
		t.Errorf("CertSends kept %d entries, want the last %d (%s to %s)", len(got), digicerttest.MaxSendsPerID, first, last)
	}
	if got := fake.DomainDCVSends(1); len(got) != digicerttest.MaxSendsPerID || got[0].EmailArray[0] != first || got[len(got)-1].EmailArray[0] != last {
		t.Errorf("DomainDCVSends kept %d entries, want the last %d (%s to %s)", len(got), digicerttest.MaxSendsPerID, first, last)
	}

	// MaxIDs other ids written after id 1: id 1 is the one forgotten.
	for id := 2; id <= digicerttest.MaxIDs+1; id++ {
		for _, path := range []string{"/order/certificate/%d/resend-emails", "/certificate/%d/sendemail", "/domain/%d/dcv/emails", "/order/certificate/%d/additional-emails"} {
			body := `{}`
			switch {
			case strings.HasSuffix(path, "sendemail"):
				body = `{"emails":["a@example.com"],"certificate_collect_format":"attachment"}`
			case strings.HasSuffix(path, "additional-emails"):
				body = `{"additional_emails":[]}`
			}
			if code := serve(t, fake, http.MethodPut, fmt.Sprintf(path, id), testKey, body); code != http.StatusNoContent {
				t.Fatalf("PUT %s: %d", fmt.Sprintf(path, id), code)
			}
		}
	}
	_, set := fake.AdditionalEmails(1)
	if n, m, d := len(fake.DCVSends(1)), len(fake.CertSends(1)), len(fake.DomainDCVSends(1)); n+m+d != 0 || set {
		t.Errorf("id 1 after %d newer ids: %d DCV, %d certificate, %d domain sends, additional emails set %t; want it forgotten",
			digicerttest.MaxIDs, n, m, d, set)
	}
	_, set = fake.AdditionalEmails(2)
	if n, m, d := len(fake.DCVSends(2)), len(fake.CertSends(2)), len(fake.DomainDCVSends(2)); n != 1 || m != 1 || d != 1 || !set {
		t.Errorf("id 2: %d DCV, %d certificate, %d domain sends, additional emails set %t; want each kept", n, m, d, set)
	}
	if got := len(fake.Requests()); got != 5 {
		t.Errorf("Requests kept %d, want RecordLimit 5", got)
	}
}
