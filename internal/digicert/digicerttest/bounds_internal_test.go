package digicerttest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestServer_BoundedState floods a demo fake (every id exists, approval
// counted) with requests to ever new ids and checks that nothing it keeps
// grows past its bound: records, their bodies, effect logs, resend counts
// and the orders it learned from requests.
func TestServer_BoundedState(t *testing.T) {
	t.Parallel()
	const key = "TESTKEY0123456789ABCDEF"
	s := New(Config{APIKeys: []string{key}, AnyIDExists: true, ApproveAfter: 1 << 20, RecordLimit: 10})
	s.SetOrder(Order{ID: 1, Type: OrderOV, Domains: []Domain{{ID: 11, NameScope: "example.com"}}})
	pad := strings.Repeat("x", 2*MaxRecordedBody)
	const ids = MaxIDs + 50
	for id := 100_000; id < 100_000+ids; id++ { // ids no model holds
		for _, q := range []struct{ path, body string }{
			{"/order/certificate/%d/resend-emails", `{}`},
			{"/domain/%d/dcv/emails", `{}`},
			{"/order/certificate/%d/additional-emails", `{"additional_emails":[]}`},
			{"/certificate/%d/sendemail", `{"emails":["a@example.com"],"certificate_collect_format":"attachment","pad":"` + pad + `"}`},
		} {
			req := httptest.NewRequest(http.MethodPut, basePath+fmt.Sprintf(q.path, id), strings.NewReader(q.body))
			req.Header.Set(headerAPIKey, key)
			s.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.requests); n >= 2*10 {
		t.Errorf("%d records kept, want fewer than twice RecordLimit", n)
	}
	for _, rec := range s.requests {
		if len(rec.Body) > MaxRecordedBody {
			t.Errorf("a record keeps %d bytes of body, want at most %d", len(rec.Body), MaxRecordedBody)
			break
		}
	}
	for name, n := range map[string]int{
		"additional emails": s.additional.len(), "DCV sends": s.dcvSends.len(), "certificate sends": s.certSends.len(),
		"domain sends": s.domainSends.len(), "resend counts": s.resends.len(), "learned orders": s.learned.len(),
	} {
		if n != MaxIDs {
			t.Errorf("%s: %d ids kept after %d, want MaxIDs %d", name, n, ids, MaxIDs)
		}
	}
	// The orders set by hand stay; those learned from requests are bounded.
	if n := len(s.models); n != MaxIDs+1 || s.models[1] == nil {
		t.Errorf("%d order models kept (order 1 kept: %t), want the one set by hand and MaxIDs learned", n, s.models[1] != nil)
	}
	if n := len(s.domainOrder); n != MaxIDs+1 {
		t.Errorf("%d domains kept, want the one of order 1 and one per learned order", n)
	}
}
