package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/browsertest"
)

// TestDashboardGuardInBrowser: in the dashboard's page, a single-task
// action whose address the browser would resolve to another action (a task
// id "../pending_tasks:delete_all", which empties the queue's pending
// tasks; "victim?", which deletes "victim") is not sent, through
// XMLHttpRequest (asynqmon's) or fetch, and the operator sees a message
// naming the bulk action and certmail dlq; nothing changes. An action on an
// ordinary id still goes through. A task id of 256 bytes without "-" wraps:
// the archived tasks' table stays within the window.
func TestDashboardGuardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Start(t, false)
	b := setup(t)
	trap := "../pending_tasks:delete_all"
	long := strings.Repeat("k", 256)
	for _, id := range []string{trap, "victim", "victim?", "victim ", "vic\ttim", "victim\x01", "plain-1", long} {
		b.rawArchived(t, id)
	}
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)

	browsertest.BasicAuth(ctx, t, "operator", testToken)
	browsertest.Open(ctx, t, b.url+"/monitoring/queues/default?status=archived", "victim", "kkkkkkkk")

	// What the page sends for Delete and Run: the id appended as it is.
	const base = "/monitoring/api/queues/default/archived_tasks/"
	for _, rq := range []struct{ api, method, url string }{
		{"xhr", "DELETE", base + trap},
		{"xhr", "POST", base + trap + ":run"},
		{"xhr", "DELETE", base + "victim?"},
		{"fetch", "DELETE", base + "victim?"},
		{"fetch", "POST", base + "victim%3F:run"},
		{"xhr", "DELETE", base + "victim "}, // the browser drops the space: "victim" would go
		{"fetch", "DELETE", base + "victim "},
		{"xhr", "DELETE", base + "vic\ttim"}, // the browser drops the tab: "victim"
		{"fetch", "DELETE", base + "victim\x01"},
		{"xhr", "POST", "/monitoring/api/queues/default/./pending_tasks:archive_all"},
	} {
		var js string
		if rq.api == "xhr" {
			js = `(() => { try { const x = new XMLHttpRequest(); x.open(` + jsString(rq.method) + `, ` + jsString(rq.url) +
				`); x.send(); return "sent"; } catch (e) { return "refused: " + e.message; } })()`
		} else {
			js = `fetch(` + jsString(rq.url) + `, {method: ` + jsString(rq.method) + `}).then(r => "sent " + r.status, e => "refused: " + e.message)`
		}
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil || !strings.HasPrefix(got, "refused: ") || !strings.Contains(got, "certmail dlq") {
			t.Errorf("%s %s %s: %q, %v; want it refused", rq.api, rq.method, rq.url, got, err)
		}
	}
	shown := browsertest.Wait(ctx, t, "certmail refused this action")
	if !strings.Contains(shown, "bulk action") {
		t.Errorf("the message does not name the bulk action: %.500s", shown)
	}
	for id, want := range map[string]string{trap: "archived", "victim": "archived", "victim?": "archived", "victim ": "archived", "vic\ttim": "archived", "victim\x01": "archived", ref.ID: "pending"} {
		if st := b.state(t, id); st != want {
			t.Errorf("task %q is %s, want %s", id, st, want)
		}
	}

	// An id that only begins with dots is no dot segment: it goes through
	// (to a 404, no such task).
	sent, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(`+jsString(base+"..:x:run")+`, {method: "POST"}).then(r => "sent " + r.status, e => "refused: " + e.message)`, chromedp.EvalAwaitPromise))
	if err != nil || sent != "sent 404" {
		t.Errorf("POST of ..:x:run: %q, %v; want it sent, answered 404", sent, err)
	}

	// An ordinary id, through asynqmon's XMLHttpRequest.
	got, err := chromedp.Run(ctx, chromedp.Evaluate[int](`new Promise((ok, fail) => { const x = new XMLHttpRequest();
		x.open("DELETE", "`+base+`plain-1"); x.onload = () => ok(x.status); x.onerror = fail; x.send(); })`, chromedp.EvalAwaitPromise))
	if err != nil || got != http.StatusNoContent {
		t.Errorf("DELETE of plain-1: %d, %v; want 204", got, err)
	}
	if st := b.state(t, "plain-1"); st != "gone" {
		t.Errorf("plain-1 is %s after its DELETE", st)
	}

	// The long id wraps.
	width, err := chromedp.Run(ctx, chromedp.Evaluate[float64](
		`Math.max(...Array.from(document.querySelectorAll("table")).map(t => t.getBoundingClientRect().width))`))
	if err != nil || width <= 0 || width > 1400 {
		t.Errorf("the archived tasks' table is %.0f px wide (%v), want at most the window's 1400", width, err)
	}
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + "'"
}
