package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/api"
)

// archived enqueues a task through the API and archives it, as a dead
// letter would be.
func (b *bundle) archived(t *testing.T) string {
	t.Helper()
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id": 4040}`, nil), http.StatusAccepted, &ref)
	if err := b.inspector.ArchiveTask("default", ref.ID); err != nil {
		t.Fatal(err)
	}
	return ref.ID
}

// state is the task's state in queue default, "gone" when it is not there.
func (b *bundle) state(t *testing.T, id string) string {
	t.Helper()
	info, err := b.inspector.GetTaskInfo("default", id)
	if err != nil {
		return "gone"
	}
	return info.State.String()
}

// TestCrossOrigin: a request from another origin that would change
// something (a form post, a text/plain body, a DELETE) is refused 403 and
// changes nothing, even with the operator's basic-auth credentials the
// browser would resend; the same request from the dashboard's own origin,
// or from a client that is not a browser, goes through.
func TestCrossOrigin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.archived(t)
	run := "/monitoring/api/queues/default/archived_tasks/" + id + ":run"
	del := "/monitoring/api/queues/default/archived_tasks/" + id
	auth := basicAuth(testToken).Get("Authorization")
	header := func(kv ...string) http.Header {
		h := http.Header{"Authorization": {auth}}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	refused := []struct {
		name, method, path, body string
		header                   http.Header
	}{
		{"form post from another site", http.MethodPost, run, "x=1",
			header("Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")},
		{"text/plain from another site", http.MethodPost, run, `{"x": 1}`,
			header("Content-Type", "text/plain", "Sec-Fetch-Site", "cross-site")},
		{"form post from a sibling subdomain", http.MethodPost, run, "x=1",
			header("Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "same-site")},
		{"form post from an old browser (Origin only)", http.MethodPost, run, "x=1",
			header("Content-Type", "application/x-www-form-urlencoded", "Origin", "http://evil.example")},
		{"DELETE from another site", http.MethodDelete, del, "", header("Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")},
		{"dead-letter requeue from another site", http.MethodPost, "/v1/dead-letters/" + id + "/requeue", "",
			http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {"text/plain"}, "Sec-Fetch-Site": {"cross-site"}}},
	}
	for _, rq := range refused {
		res := b.do(t, rq.method, rq.path, rq.body, rq.header)
		if res.status != http.StatusForbidden {
			t.Errorf("%s: %d %.200s, want 403", rq.name, res.status, res.body)
			continue
		}
		if p := mustProblem(t, res, http.StatusForbidden); !strings.Contains(p.Detail, "cross-origin") {
			t.Errorf("%s: detail %q", rq.name, p.Detail)
		}
		if st := b.state(t, id); st != "archived" {
			t.Fatalf("%s changed the task: it is %s, want archived", rq.name, st)
		}
	}
	// Reading from another site is harmless and allowed (the browser's
	// same-origin policy keeps the answer from the other site's page).
	if res := b.do(t, http.MethodGet, "/monitoring/api/queues", "", header("Sec-Fetch-Site", "cross-site")); res.status != 200 {
		t.Errorf("cross-site GET: %d", res.status)
	}
	// The dashboard's own page, and a client that is not a browser, may.
	if res := b.do(t, http.MethodPost, run, "", header("Sec-Fetch-Site", "same-origin", "Origin", b.url)); res.status != http.StatusNoContent {
		t.Fatalf("same-origin run: %d %.200s", res.status, res.body)
	}
	if st := b.state(t, id); st != "pending" {
		t.Errorf("after the same-origin run the task is %s, want pending", st)
	}
	if err := b.inspector.ArchiveTask("default", id); err != nil {
		t.Fatal(err)
	}
	if res := b.do(t, http.MethodDelete, del, "", header()); res.status != http.StatusNoContent {
		t.Errorf("DELETE without browser headers: %d", res.status)
	}
	if st := b.state(t, id); st != "gone" {
		t.Errorf("after the DELETE the task is %s", st)
	}
}

// TestNoFraming: every answer, the dashboard's pages first, forbids framing
// and content sniffing, and tells the browser to send no Referer (the
// dashboard's page loads stylesheets from Google Fonts).
func TestNoFraming(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, rq := range []struct {
		path   string
		header http.Header
	}{
		{"/monitoring/", basicAuth(testToken)},
		{"/monitoring/queues/default", basicAuth(testToken)},
		{"/monitoring/api/queues", basicAuth(testToken)},
		{"/monitoring/", http.Header{}}, // the 401
		{"/v1/dead-letters", http.Header{"Authorization": {"Bearer " + testToken}}},
		{"/v1/openapi.json", http.Header{}},
		{"/healthz", http.Header{}},
		{"/monitoring/api/metrics", basicAuth(testToken)}, // a 404
	} {
		res := b.do(t, http.MethodGet, rq.path, "", rq.header)
		for k, want := range map[string]string{
			"X-Frame-Options":         "DENY",
			"Content-Security-Policy": "frame-ancestors 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := res.header.Get(k); got != want {
				t.Errorf("GET %s (%d): %s %q, want %q", rq.path, res.status, k, got, want)
			}
		}
	}
}
