package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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

// rowButton is the XPath of the button with the tooltip tip in the table
// row that holds text: the tooltip is the button's title until it shows,
// then an element the button names (aria-describedby).
func rowButton(text, tip string) string {
	return `//tr[contains(., "` + text + `")]//button[@title="` + tip + `" or ` +
		`@aria-describedby = //*[@role="tooltip"][normalize-space(.)="` + tip + `"]/@id]`
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + "'"
}

// TestDashboardActionFailuresInBrowser: asynqmon's page shows no failed
// action (it logs it to the console); certmail's guard shows why, as an
// operator clicks asynqmon's own buttons. "Archive all" of scheduled tasks
// that would fill the archive shows the 409's detail, and nothing moves; Run
// on the row of an archived task deleted since the page was loaded shows
// the 404's; Cancel of an active task shows why certmail refuses it, and
// the task stays active. An answer of asynqmon's own (plain text: the 400
// for deleting a queue that holds tasks) gets a fixed sentence with its
// status.
func TestDashboardActionFailuresInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Start(t, false)
	b := setup(t)
	rdb := b.redis.Client()
	client := asynq.NewClient(b.redis.ConnOpt())
	defer client.Close()
	for i := range 3 {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":5}`)), asynq.Queue("bulk"),
			asynq.TaskID(fmt.Sprintf("later%d", i)), asynq.ProcessIn(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	// 9 997 archived tasks, with hashes: the queue's page samples their
	// memory.
	fill := make([]redis.Z, 9997)
	pipe := rdb.Pipeline()
	for i := range fill {
		fill[i] = redis.Z{Score: float64(time.Now().Add(-time.Minute).Unix()), Member: fmt.Sprintf("placeholder-%04d", i)}
		pipe.HSet(context.Background(), fmt.Sprintf("asynq:{bulk}:t:placeholder-%04d", i), "state", "archived")
	}
	pipe.ZAdd(context.Background(), "asynq:{bulk}:archived", fill...)
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.rawArchived(t, "gone1")
	b.rawArchived(t, "kept1")
	var running api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &running)
	b.activate(t, running.ID)

	browsertest.BasicAuth(ctx, t, "operator", testToken)
	// The page reloads its lists every 8 s, and would drop a row that went
	// stale: it polls once an hour here, as an operator may set it.
	browsertest.Open(ctx, t, b.url+"/monitoring/settings", "Settings")
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](
		`localStorage.setItem("asynqmon:state", JSON.stringify({settings: {pollInterval: 3600}})), true`)); err != nil {
		t.Fatal(err)
	}

	t.Run("archive all over the cap", func(t *testing.T) {
		browsertest.Open(ctx, t, b.url+"/monitoring/queues/bulk?status=scheduled", "Scheduled 3", "later0", "later2")
		browsertest.Click(ctx, t, `button[aria-label="actions"]`)
		browsertest.ClickXPath(ctx, t, `//li[normalize-space(.)="Archive All"]`)
		browsertest.Wait(ctx, t, "Archive all refused: it would move 3 tasks into this queue's archive, which holds 9997")
		if n, err := rdb.ZCard(context.Background(), "asynq:{bulk}:scheduled").Result(); err != nil || n != 3 {
			t.Errorf("scheduled tasks after the refusal: %d (%v), want 3", n, err)
		}
	})

	t.Run("run of a task deleted meanwhile", func(t *testing.T) {
		browsertest.Open(ctx, t, b.url+"/monitoring/queues/default?status=archived", "gone1", "kept1")
		if err := b.inspector.DeleteTask("default", "gone1"); err != nil {
			t.Fatal(err)
		}
		browsertest.Hover(ctx, t, `//tr[contains(., "gone1")]/td[last()]`) // the row's actions cell
		browsertest.ClickXPath(ctx, t, rowButton("gone1", "Run"))
		browsertest.Wait(ctx, t, "the dashboard knows no task of this id in this queue")
	})

	t.Run("cancel", func(t *testing.T) {
		browsertest.Open(ctx, t, b.url+"/monitoring/queues/default?status=active", running.ID[:8])
		b.redis.ResetStats()
		browsertest.Hover(ctx, t, `//tr[contains(., "`+running.ID[:8]+`")]/td[last()]`)
		browsertest.ClickXPath(ctx, t, rowButton(running.ID[:8], "Cancel"))
		browsertest.Wait(ctx, t, "certmail does not cut a DigiCert call in flight", "pause the queue")
		if st := b.state(t, running.ID); st != "active" {
			t.Errorf("the task is %s after Cancel, want active", st)
		}
		if n := b.redis.Commands()["publish"]; n != 0 {
			t.Errorf("%d cancels published, want none", n)
		}
	})

	t.Run("asynqmon's own answer", func(t *testing.T) {
		// Plain text: a fixed sentence with the status, not the text.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](
			`(() => { const x = new XMLHttpRequest(); x.open("DELETE", "/monitoring/api/queues/bulk"); x.send(); return true; })()`)); err != nil {
			t.Fatal(err)
		}
		shown := browsertest.Wait(ctx, t, "the server answered 400 without a reason to show here")
		if strings.Contains(shown, "not empty") {
			t.Errorf("asynqmon's text is shown as it is: %.500s", shown)
		}
	})
}

// TestDashboardShowsSequenceExactly: a set-emails' sequence (Unix
// nanoseconds, beyond the 2^53 JavaScript numbers hold) shows on the
// task's page with the digits it was stored with; asynqmon's page parsed
// it as a number and showed it rounded.
func TestDashboardShowsSequenceExactly(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Start(t, false)
	b := setup(t)
	seq := time.Now().UnixNano()/1000*1000 + 123 // never a multiple of a power of two JavaScript could hold
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/set-emails",
		fmt.Sprintf(`{"order_id":3,"additional_emails":["a@example.com"],"sequence":%d}`, seq), nil), http.StatusAccepted, &ref)
	browsertest.BasicAuth(ctx, t, "operator", testToken)
	shown := browsertest.Open(ctx, t, b.url+"/monitoring/queues/default/tasks/"+ref.ID, "additional_emails")
	if want := fmt.Sprintf(`"sequence": %d`, seq); !strings.Contains(shown, want) {
		t.Errorf("the task's page does not show %s: %.800s", want, shown)
	}
}

// TestDashboardPauseResumeInBrowser: asynqmon's Pause and Resume buttons of
// the Queues tab go through certmail's guard and the dashboard's routes to
// asynq: the queue's pause, which workers read, follows them.
func TestDashboardPauseResumeInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Start(t, false)
	b := setup(t)
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
	browsertest.BasicAuth(ctx, t, "operator", testToken)
	paused := func() bool {
		info, err := b.inspector.GetQueueInfo("default")
		if err != nil {
			t.Fatal(err)
		}
		return info.Paused
	}
	browsertest.Open(ctx, t, b.url+"/monitoring/", "Queues", "default")
	for _, step := range []struct {
		button string
		want   bool
	}{{"Pause", true}, {"Resume", false}} {
		browsertest.Hover(ctx, t, `//tr[contains(., "default")]/td[last()]`)
		browsertest.ClickXPath(ctx, t, rowButton("default", step.button))
		waitFor(t, 10*time.Second, func() bool { return paused() == step.want }, func() string {
			return fmt.Sprintf("after %s the queue's pause is not %v", step.button, step.want)
		})
	}
}
