package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/certmail/certmail/internal/api"
)

// browser starts headless Chromium for the test. Without chromium it skips,
// except in CI (CI=true), where .ci/test-deps installs it and a skip would
// hide a failure.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed; .ci/test-deps installs it")
		}
		t.Skip("chromium not installed (apt-get install -y chromium): the dashboard's browser test is skipped")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// artifactsDir is where screenshots go: CERTMAIL_ARTIFACTS_DIR, or the
// repository's artifacts/ directory (ignored by git).
func artifactsDir(t *testing.T) string {
	d := os.Getenv("CERTMAIL_ARTIFACTS_DIR")
	if d == "" {
		d = filepath.Join("..", "..", "artifacts")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDashboardInBrowser opens the dashboard in Chromium with the token as
// basic-auth password, finds the queue and a dead-lettered task with its
// payload and last error, and saves a screenshot.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	b := setup(t, setupOpts{worker: true})

	// A task the fake does not know: 404, dead-lettered at once.
	res := b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id": 4040, "locale": "en"}`, nil)
	var ref api.TaskRef
	mustJSON(t, res, http.StatusAccepted, &ref)
	b.waitState(t, ref.ID, "archived")

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+testToken))
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders,
		network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatal(err)
	}
	// text opens url and waits until the page's text holds every want.
	text := func(url string, want ...string) string {
		t.Helper()
		err := chromedp.Do(ctx, chromedp.Navigate(url))
		if err == nil {
			_, err = chromedp.Run(ctx, chromedp.Poll[bool](containsAll(want), chromedp.WithPollingTimeout(30*time.Second)))
		}
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		if err != nil {
			t.Fatalf("%s: waiting for %q: %v (page text: %.500s)", url, want, err, body)
		}
		return body
	}
	text(b.url+"/monitoring/", "Queues", "default")
	page := text(b.url+"/monitoring/queues/default?status=archived", ref.ID[:8], "4040", "Order not found")
	if !strings.Contains(page, "Archived") {
		t.Errorf("archived view without its tab: %.500s", page)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactsDir(t), "dashboard-archived.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
}

// containsAll is a JavaScript predicate: the page's text contains every want.
func containsAll(want []string) string {
	js, _ := json.Marshal(want) // strings always encode
	return `(() => { const t = document.body ? document.body.innerText : ""; return ` + string(js) + `.every(w => t.includes(w)); })()`
}
