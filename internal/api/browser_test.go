package api_test

import (
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/browsertest"
)

// TestDashboardInBrowser opens the dashboard in Chromium with the token as
// basic-auth password, finds the queue and a dead-lettered task with its
// payload and last error, and saves a screenshot; a task that does not exist
// shows the API's sentence for it.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Start(t, false)
	b := setup(t, setupOpts{worker: true})

	// A task the fake does not know: 404, dead-lettered at once.
	res := b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id": 4040, "locale": "en"}`, nil)
	var ref api.TaskRef
	mustJSON(t, res, http.StatusAccepted, &ref)
	b.waitState(t, ref.ID, "archived")

	browsertest.BasicAuth(ctx, t, "operator", testToken)
	// text opens url and waits until the page's text holds every want.
	text := func(url string, want ...string) string {
		t.Helper()
		return browsertest.Open(ctx, t, url, want...)
	}
	text(b.url+"/monitoring/", "Queues", "default")
	page := text(b.url+"/monitoring/queues/default?status=archived", ref.ID[:8], "4040", "Order not found")
	if !strings.Contains(page, "Archived") {
		t.Errorf("archived view without its tab: %.500s", page)
	}

	browsertest.Screenshot(ctx, t, filepath.Join(browsertest.ArtifactsDir(t), "dashboard-archived.png"))

	// A task that is gone (a stale link): the page says so, as it does with
	// asynqmon alone, rather than going blank on a JSON problem it cannot
	// show.
	text(b.url+"/monitoring/queues/default/tasks/no-such-task", "Error", "the dashboard knows no task of this id")
}

// TestDashboardCrossSiteInBrowser: a page of another site that the operator
// opens while logged in to the dashboard (Chromium sends the operator's
// basic-auth credentials with every request, as it does once they are
// cached) posts forms to the dashboard's "run" action for an archived task:
// text/plain and url-encoded. Both are refused and the task stays archived.
// The dashboard's own page, in the same browser, can still act: its DELETE
// of the task goes through.
func TestDashboardCrossSiteInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Start(t, false)
	b := setup(t)
	id := b.archived(t)
	run := b.url + "/monitoring/api/queues/default/archived_tasks/" + id + ":run"

	// The other site: served on "localhost", another site than the
	// dashboard's "127.0.0.1".
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enctype := "application/x-www-form-urlencoded"
		if r.URL.Path == "/text" {
			enctype = "text/plain"
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>prize</title><form id="f" method="POST" enctype="%s" action="%s">`+
			`<input type="hidden" name="x" value="1"></form><script>document.getElementById("f").submit()</script>`,
			enctype, html.EscapeString(run))
	}))
	t.Cleanup(evil.Close)
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)

	browsertest.BasicAuth(ctx, t, "operator", testToken)
	for _, page := range []string{"/text", "/form"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(evilURL+page)); err != nil {
			t.Fatalf("%s: %v", page, err)
		}
		// The refusal replaces the page once the post is answered; a post
		// that went through would change the task instead (its 204 leaves
		// the page as it was).
		deadline := time.Now().Add(30 * time.Second)
		for {
			if st := b.state(t, id); st != "archived" {
				t.Fatalf("%s: the other site's form changed the task: it is %s, want archived", page, st)
			}
			refused, err := chromedp.Run(ctx, chromedp.Evaluate[bool](
				`location.href.includes(":run") && !!document.body && document.body.innerText.includes("cross-origin request refused")`))
			if err == nil && refused {
				break
			}
			if time.Now().After(deadline) {
				body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " " + (document.body ? document.body.innerText : "")`))
				t.Fatalf("%s: no answer to the post within 30 s (page: %.300s)", page, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if st := b.state(t, id); st != "archived" {
			t.Fatalf("%s: the other site's form changed the task: it is %s, want archived", page, st)
		}
	}

	// The dashboard itself.
	browsertest.Open(ctx, t, b.url+"/monitoring/", "Queues")
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](
		`fetch("/monitoring/api/queues/default/archived_tasks/`+id+`", {method: "DELETE"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusNoContent {
		t.Fatalf("the dashboard's own DELETE: %d, %v; want 204", status, err)
	}
	if st := b.state(t, id); st != "gone" {
		t.Errorf("after the dashboard's DELETE the task is %s", st)
	}
}
