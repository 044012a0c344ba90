package dev_test

import (
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/browsertest"
	"github.com/certmail/certmail/internal/dev"
)

// screenshotsDir holds the README's pictures of the dashboard, written by
// `make screenshots` (go test -screenshots): they show what `certmail dev`
// shows, so they live next to the test that takes them.
const screenshotsDir = "screenshots"

var updateScreenshots = flag.Bool("screenshots", false, "write the dashboard's screenshots into "+screenshotsDir+"/ (make screenshots)")

// TestDashboardInBrowser looks at the dashboard of `certmail dev` in
// Chromium as an operator does: the Schedulers tab lists the demo schedule
// with its spec and options, its history lists a tick's task, and the
// archived demo task shows why it failed. It saves screenshots of the
// Queues, Schedulers and Archived views: into screenshots/ with
// -screenshots, else into the artifacts directory.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Start(t, *updateScreenshots)
	dir := browsertest.ArtifactsDir(t)
	if *updateScreenshots {
		dir = screenshotsDir
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shot := func(name string) { t.Helper(); browsertest.Screenshot(ctx, t, filepath.Join(dir, name)) }
	// The demo schedule fires every 2 s instead of every minute.
	st, _, _ := stack(t, dev.Config{DemoEvery: 2 * time.Second})
	dashboard := st.APIURL + "/monitoring"
	browsertest.BasicAuth(ctx, t, "operator", st.Token)

	// The Schedulers tab, once the schedule has fired.
	var tickTask string
	waitUntil(t, 30*time.Second, "the demo schedule's first tick is in its history", func() bool {
		status, body := call(t, "GET", dashboard+"/api/scheduler_entries/"+dev.DemoSchedule.ID+"/enqueue_events", st.Token, "operator", "")
		var h struct {
			Events []struct {
				TaskID string `json:"task_id"`
			} `json:"events"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &h) != nil || len(h.Events) == 0 {
			return false
		}
		tickTask = h.Events[len(h.Events)-1].TaskID // the oldest: still listed when the page opens
		return true
	})
	if !strings.HasPrefix(tickTask, "sched:"+dev.DemoSchedule.ID+":") {
		t.Errorf("history row %q is not a tick's task", tickTask)
	}
	browsertest.Open(ctx, t, dashboard+"/schedulers", dev.DemoSchedule.ID, "@every 2s", "resend-dcv", `"order_id": 1002`, `Queue("bulk")`)
	shot("schedulers.png")
	browsertest.Click(ctx, t, `button[aria-label="expand row"]`) // "See History"
	browsertest.Wait(ctx, t, "Recent History", tickTask)

	// The archived demo task and its reason, in the list and on its page.
	var archived string
	waitUntil(t, 30*time.Second, "the demo's failing task is dead-lettered", func() bool {
		status, body := call(t, "GET", st.APIURL+"/v1/dead-letters", st.Token, "", "")
		var dl struct {
			DeadLetters []struct {
				TaskID string `json:"task_id"`
			} `json:"dead_letters"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &dl) != nil || len(dl.DeadLetters) == 0 {
			return false
		}
		archived = dl.DeadLetters[0].TaskID
		return true
	})
	const reason = "not_found|order: Order not found"
	browsertest.Open(ctx, t, dashboard+"/queues/default?status=archived", archived[:8], "404404", reason)
	shot("archived.png")
	browsertest.Open(ctx, t, dashboard+"/queues/default/tasks/"+archived, archived, "Last Failure", reason)

	// The Queues view last, when the demo has tasks in every queue.
	browsertest.Open(ctx, t, dashboard+"/", "Queues", "default", "bulk")
	shot("queues.png")
}
