package api_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/browsertest"
)

// TestDashboardInBrowser opens the dashboard in Chromium with the token as
// basic-auth password, finds the queue and a dead-lettered task with its
// payload and last error, and saves a screenshot.
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
}
