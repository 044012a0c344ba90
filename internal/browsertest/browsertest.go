// Package browsertest drives headless Chromium (through chromedp) for the
// tests that look at the dashboard as an operator does: open a page, wait
// for its text, point at and click what it shows, take a screenshot.
package browsertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// waitFor is how long Open and Wait wait for a page's text.
const waitFor = 30 * time.Second

// Start starts headless Chromium for the test and returns the context to
// drive it with; Chromium stops at the test's cleanup. Without chromium the
// test is skipped, unless required or in CI (CI=true), where .ci/test-deps
// installs it and a skip would hide a failure.
func Start(tb testing.TB, required bool) context.Context {
	tb.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if required || os.Getenv("CI") == "true" {
			tb.Fatal("chromium is not installed (apt-get install -y chromium; .ci/test-deps installs it)")
		}
		tb.Skip("chromium not installed (apt-get install -y chromium): the dashboard's browser test is skipped")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	tb.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		tb.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// BasicAuth sends HTTP basic credentials with every request from now on, as
// the dashboard asks for them.
func BasicAuth(ctx context.Context, tb testing.TB, user, password string) {
	tb.Helper()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders,
		network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		tb.Fatal(err)
	}
}

// Open navigates to url and waits until the page's text holds every want;
// it returns the text. The test fails, showing the text, when it does not.
func Open(ctx context.Context, tb testing.TB, url string, want ...string) string {
	tb.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		tb.Fatalf("open %s: %v", url, err)
	}
	return Wait(ctx, tb, want...)
}

// Wait waits until the current page's text holds every want and returns it.
func Wait(ctx context.Context, tb testing.TB, want ...string) string {
	tb.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](containsAll(want), chromedp.WithPollingTimeout(waitFor)))
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`)) // for the failure message too
	if err != nil {
		url, _ := chromedp.Run(ctx, chromedp.Location())
		tb.Fatalf("%s: waiting for %q: %v (page text: %.800s)", url, want, err, text)
	}
	return text
}

// Click clicks the first element matching the CSS selector, once visible.
func Click(ctx context.Context, tb testing.TB, selector string) {
	tb.Helper()
	tctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(tctx, chromedp.Click(chromedp.CSS(selector), chromedp.NodeVisible)); err != nil {
		tb.Fatalf("click %s: %v", selector, err)
	}
}

// ClickXPath clicks the first element the XPath expression finds, once
// visible: an element told by its text or its place, which CSS cannot say
// ("the Run button of the row holding this id").
func ClickXPath(ctx context.Context, tb testing.TB, xpath string) {
	tb.Helper()
	tctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(tctx, chromedp.Click(chromedp.Search(xpath), chromedp.NodeVisible)); err != nil {
		tb.Fatalf("click %s: %v", xpath, err)
	}
}

// Hover moves the mouse onto the middle of the first element the XPath
// expression finds, once visible, as an operator points at it (asynqmon
// shows a row's buttons only while the mouse is over its actions cell).
func Hover(ctx context.Context, tb testing.TB, xpath string) {
	tb.Helper()
	tctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	x, _ := json.Marshal(xpath) // strings always encode
	err := chromedp.Do(tctx, chromedp.ScrollIntoView(chromedp.Search(xpath), chromedp.NodeVisible))
	var at []float64
	if err == nil {
		at, err = chromedp.Run(tctx, chromedp.Evaluate[[]float64](`(() => { const r = document.evaluate(`+string(x)+
			`, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue.getBoundingClientRect(); `+
			`return [r.x + r.width / 2, r.y + r.height / 2]; })()`))
	}
	if err == nil && len(at) == 2 { // from the corner: a mouse already there enters nothing
		err = chromedp.Do(tctx, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 0, 0),
			chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, at[0], at[1]))
	}
	if err != nil || len(at) != 2 {
		tb.Fatalf("hover %s: %v (at %v)", xpath, err, at)
	}
}

// Screenshot saves the whole page as a PNG at path.
func Screenshot(ctx context.Context, tb testing.TB, path string) {
	tb.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// ArtifactsDir is where tests put what CI keeps: CERTMAIL_ARTIFACTS_DIR, or
// artifacts/ at the repository's root (ignored by git). It is created.
func ArtifactsDir(tb testing.TB) string {
	tb.Helper()
	d := os.Getenv("CERTMAIL_ARTIFACTS_DIR")
	if d == "" {
		root, err := moduleRoot()
		if err != nil {
			tb.Fatal(err)
		}
		d = filepath.Join(root, "artifacts")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		tb.Fatal(err)
	}
	return d
}

// moduleRoot is the nearest directory above the working directory (a
// package's, in tests) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}

// containsAll is a JavaScript predicate: the page's text contains every want.
func containsAll(want []string) string {
	js, _ := json.Marshal(want) // strings always encode
	return `(() => { const t = document.body ? document.body.innerText : ""; return ` + string(js) + `.every(w => t.includes(w)); })()`
}
