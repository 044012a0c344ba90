package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/queues"
)

// rawArchived stores an archived task of queue default under id, as a raw
// asynq producer may, whatever the id holds.
func (b *bundle) rawArchived(t *testing.T, id string) {
	t.Helper()
	client := asynq.NewClient(b.redis.ConnOpt())
	defer client.Close()
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":4040}`)), asynq.TaskID(id)); err != nil {
		t.Fatal(err)
	}
	if err := b.inspector.ArchiveTask("default", id); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardUnroutedAPI: a path under the dashboard's JSON API that
// asynqmon routes nowhere (its page handler would answer it with its
// index.html and 200) is a 404 problem, so that the dashboard's page shows
// an error rather than "deleted" or "now pending" for a Delete or a Run that
// did nothing: here those of an id with a slash, which the page puts in the
// path as it is. The task stays as it was. The dashboard's own pages, which
// are not under the API, are still served.
func TestDashboardUnroutedAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rawArchived(t, "crm/7781")
	for _, rq := range []struct{ method, path string }{
		{http.MethodGet, "/monitoring/api/queuez"},
		{http.MethodGet, "/monitoring/api/"},
		{http.MethodGet, "/monitoring/api/queues/default/tasks/crm%2F7781"},
		{http.MethodGet, "/monitoring/api/queues/default/tasks/crm/7781"},
		{http.MethodPost, "/monitoring/api/queues/default/archived_tasks/crm/7781:run"},
		{http.MethodDelete, "/monitoring/api/queues/default/archived_tasks/crm/7781"},
		{http.MethodPost, "/monitoring/api/static/js/x:run"},
	} {
		res := b.do(t, rq.method, rq.path, "", basicAuth(testToken))
		if res.status != http.StatusNotFound || res.header.Get("Content-Type") != api.ProblemContentType {
			t.Errorf("%s %s: %d %q, want a 404 problem", rq.method, rq.path, res.status, res.header.Get("Content-Type"))
			continue
		}
		if p := mustProblem(t, res, http.StatusNotFound); !strings.Contains(p.Detail, "no such path") {
			t.Errorf("%s %s: detail %q", rq.method, rq.path, p.Detail)
		}
	}
	if st := b.state(t, "crm/7781"); st != "archived" {
		t.Errorf("the task with a slash is %s, want archived", st)
	}
	if lines := b.logs.Lines("error", ""); len(lines) > 0 {
		t.Errorf("ERROR lines for paths that are not routed: %v", lines)
	}

	// The pages: the root, a page the browser opens by its address, and an
	// asset.
	for _, path := range []string{"/monitoring/", "/monitoring/queues/default", "/monitoring/queues/default/tasks/crm/7781"} {
		res := b.do(t, http.MethodGet, path, "", basicAuth(testToken))
		if res.status != http.StatusOK || !strings.HasPrefix(res.header.Get("Content-Type"), "text/html") ||
			!strings.Contains(string(res.body), "window.FLAG_ROOT_PATH") {
			t.Errorf("GET %s: %d %q, want the dashboard's page", path, res.status, res.header.Get("Content-Type"))
		}
	}
	if res := b.do(t, http.MethodGet, "/monitoring/manifest.json", "", basicAuth(testToken)); res.status != http.StatusOK ||
		!strings.Contains(string(res.body), "Asynqmon") {
		t.Errorf("GET manifest.json: %d %.100s", res.status, res.body)
	}
}

// TestDashboardActionWithQuery: no action of the dashboard's page (a
// request other than GET under its API) carries a query; one that does was
// built from a task id or queue name holding a '?', which the browser took
// for the start of a query. It is refused 400 before asynqmon sees it: the
// Delete of the task "victim?" would delete "victim", and the Pause of the
// queue "q/pending_tasks:archive_all?x=" would archive every pending task of
// "q". Nothing changes; a list's paging query still works.
func TestDashboardActionWithQuery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rawArchived(t, "victim")
	b.rawArchived(t, "victim?")
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
	for _, rq := range []struct{ method, path string }{
		{http.MethodDelete, "/monitoring/api/queues/default/archived_tasks/victim?"},
		{http.MethodPost, "/monitoring/api/queues/default/archived_tasks/victim?:run"},
		{http.MethodPost, "/monitoring/api/queues/default/pending_tasks:archive_all?x=:pause"},
		{http.MethodDelete, "/monitoring/api/queues/default/pending_tasks:delete_all?"},
		{http.MethodPost, "/monitoring/api/queues/default/archived_tasks:batch_delete?size=10"},
	} {
		res := b.do(t, rq.method, rq.path, `{"task_ids":["victim"]}`, basicAuth(testToken))
		if res.status != http.StatusBadRequest {
			t.Errorf("%s %s: %d %.200s, want 400", rq.method, rq.path, res.status, res.body)
			continue
		}
		if p := mustProblem(t, res, http.StatusBadRequest); !strings.Contains(p.Detail, "query") {
			t.Errorf("%s %s: detail %q", rq.method, rq.path, p.Detail)
		}
	}
	for id, want := range map[string]string{"victim": "archived", "victim?": "archived", ref.ID: "pending"} {
		if st := b.state(t, id); st != want {
			t.Errorf("task %q is %s, want %s", id, st, want)
		}
	}
	if res := b.do(t, http.MethodGet, "/monitoring/api/queues/default/archived_tasks?size=10&page=1", "", basicAuth(testToken)); res.status != http.StatusOK ||
		!strings.Contains(string(res.body), `"victim?"`) {
		t.Errorf("a page of archived tasks: %d %.200s", res.status, res.body)
	}
}

// TestDashboardEncodedDotSegments: a dashboard path with an empty, . or ..
// segment once decoded (%2e%2e, %2F) is a 404 problem, as one written
// plainly is, not the redirect to the cleaned path that asynqmon's router
// answers, which can lead out of the dashboard.
func TestDashboardEncodedDotSegments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{
		"/monitoring/%2e%2e/",
		"/monitoring/%2E%2E",
		"/monitoring/%2F%2Fevil.com",
		"/monitoring/api/queues/%2e%2e/redis_info",
		"/monitoring/api/x%2F..%2Fqueues",
		"/monitoring/queues/default/%2e",
	} {
		res := b.do(t, http.MethodGet, path, "", basicAuth(testToken))
		if res.status != http.StatusNotFound || res.header.Get("Location") != "" {
			t.Errorf("GET %s: %d, Location %q; want a 404 problem", path, res.status, res.header.Get("Location"))
			continue
		}
		if p := mustProblem(t, res, http.StatusNotFound); !strings.Contains(p.Detail, "segment") {
			t.Errorf("GET %s: detail %q", path, p.Detail)
		}
	}
}

// TestDashboardRedisInfoOperatorsOnly: the Redis server's INFO describes the
// whole instance (every database's keys, the clients, the executable, the
// OS), other services' data on a shared one: a reader gets 403, an operator
// the figures.
func TestDashboardRedisInfoOperatorsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.do(t, http.MethodGet, "/monitoring/api/redis_info", "", basicAuth(readerToken))
	if p := mustProblem(t, res, http.StatusForbidden); !strings.Contains(p.Detail, "operators only") {
		t.Errorf("reader: detail %q", p.Detail)
	}
	if bytes.Contains(res.body, []byte("redis_version")) {
		t.Errorf("the reader's answer holds INFO: %.200s", res.body)
	}
	if res := b.do(t, http.MethodGet, "/monitoring/api/redis_info", "", basicAuth(testToken)); res.status != http.StatusOK ||
		!bytes.Contains(res.body, []byte("redis_version")) {
		t.Errorf("operator: %d %.200s, want INFO", res.status, res.body)
	}
	// The reader's dashboard still reads the rest.
	if res := b.do(t, http.MethodGet, "/monitoring/api/queues", "", basicAuth(readerToken)); res.status != http.StatusOK {
		t.Errorf("reader, queues: %d %.200s", res.status, res.body)
	}
}

// activate makes the pending task id of queue default active, as a
// worker's dequeue does (asynq's dequeue script): off the pending list,
// onto the active one, state active, with a lease a minute long.
func (b *bundle) activate(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	pipe := b.redis.Client().TxPipeline()
	moved := pipe.LRem(ctx, "asynq:{default}:pending", 0, id)
	pipe.LPush(ctx, "asynq:{default}:active", id)
	pipe.HSet(ctx, "asynq:{default}:t:"+id, "state", "active")
	pipe.HDel(ctx, "asynq:{default}:t:"+id, "pending_since")
	pipe.ZAdd(ctx, "asynq:{default}:lease", redis.Z{Score: float64(time.Now().Add(time.Minute).Unix()), Member: id})
	if _, err := pipe.Exec(ctx); err != nil || moved.Val() != 1 {
		t.Fatalf("activate %s: moved %d (%v), want the pending task", id, moved.Val(), err)
	}
}

// TestDashboardCancelRefused: the dashboard's Cancel of active tasks (one,
// all of a queue's, those selected) would cut the DigiCert call in flight,
// after DigiCert may have acted on it. An operator's is refused 409 with a
// detail that says why and what to do instead; no cancel is published and
// the task stays active. Readers, and operators of a read-only dashboard,
// still get a 405 problem, and producers 403; the active tasks are still
// listed.
func TestDashboardCancelRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
	b.activate(t, ref.ID)
	const base = "/monitoring/api/queues/default/active_tasks"
	cancels := []struct{ path, body string }{
		{base + "/" + ref.ID + ":cancel", ""},
		{base + ":cancel_all", ""},
		{base + ":batch_cancel", `{"task_ids":["` + ref.ID + `"]}`},
	}
	b.redis.ResetStats()
	for _, c := range cancels {
		p := mustProblem(t, b.do(t, http.MethodPost, c.path, c.body, basicAuth(testToken)), http.StatusConflict)
		for _, want := range []string{"does not cut a DigiCert call in flight", "20 s", "delete or archive it", "pause the queue"} {
			if !strings.Contains(p.Detail, want) {
				t.Errorf("POST %s: detail %q lacks %q", c.path, p.Detail, want)
			}
		}
	}
	if n := b.redis.Commands()["publish"]; n != 0 {
		t.Errorf("%d cancels published, want none", n)
	}
	if st := b.state(t, ref.ID); st != "active" {
		t.Errorf("the task is %s, want active", st)
	}
	if res := b.do(t, http.MethodGet, base+"?size=10&page=1", "", basicAuth(testToken)); res.status != http.StatusOK ||
		!strings.Contains(string(res.body), ref.ID) {
		t.Errorf("the active tasks: %d %.200s", res.status, res.body)
	}
	if lines := b.logs.Lines("error", ""); len(lines) > 0 {
		t.Errorf("ERROR lines: %v", lines)
	}

	ro := setup(t, setupOpts{configure: func(c *api.Config) { c.DashboardReadOnly = true }})
	for _, tt := range []struct {
		name   string
		b      *bundle
		token  string
		status int
	}{
		{"reader", b, readerToken, http.StatusMethodNotAllowed},
		{"producer", b, producerToken, http.StatusForbidden},
		{"operator, read-only dashboard", ro, testToken, http.StatusMethodNotAllowed},
	} {
		for _, c := range cancels {
			mustProblem(t, tt.b.do(t, http.MethodPost, c.path, c.body, basicAuth(tt.token)), tt.status)
		}
	}
}

// TestDashboardPauseOfUnknownQueue: a Pause of a queue asynq does not know
// (a mistyped name, or any of thousands of names) is 404 with a detail
// saying so, and leaves no key in Redis; a Pause and a Resume of a queue
// asynq knows go through.
func TestDashboardPauseOfUnknownQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
	ctx := context.Background()
	rdb := b.redis.Client()
	before, err := rdb.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"defualt", "junk-1", strings.Repeat("b", 4000), "bulk"} {
		p := mustProblem(t, b.do(t, http.MethodPost, "/monitoring/api/queues/"+q+":pause", "", basicAuth(testToken)), http.StatusNotFound)
		if !strings.Contains(p.Detail, "asynq knows no queue of this name") {
			t.Errorf("pause of %.20s: detail %q", q, p.Detail)
		}
	}
	if after, err := rdb.DBSize(ctx).Result(); err != nil || after != before {
		t.Errorf("Redis holds %d keys after the refused pauses, %d before (%v)", after, before, err)
	}
	for _, action := range []string{":pause", ":resume"} {
		if res := b.do(t, http.MethodPost, "/monitoring/api/queues/default"+action, "", basicAuth(testToken)); res.status != http.StatusNoContent {
			t.Errorf("POST default%s: %d %.200s, want 204", action, res.status, res.body)
		}
	}
}

// TestDashboardActionOnActiveTask: a Delete, Run or Archive of a task that
// a worker took since the page was loaded (asynq refuses it:
// FAILED_PRECONDITION) is 409 with a fixed sentence, logged at INFO, not a
// 500 with an ERROR line; so is a Run of a task that another action made
// pending meanwhile. The tasks stay as they were.
func TestDashboardActionOnActiveTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var active, pending api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &active)
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":4}`, nil), http.StatusAccepted, &pending)
	b.activate(t, active.ID)
	const base = "/monitoring/api/queues/default/"
	for _, rq := range []struct{ method, path, want string }{
		{http.MethodDelete, base + "pending_tasks/" + active.ID, "running now"},
		{http.MethodPost, base + "pending_tasks/" + active.ID + ":archive", "running now"},
		{http.MethodPost, base + "archived_tasks/" + active.ID + ":run", "running now"},
		{http.MethodPost, base + "scheduled_tasks/" + pending.ID + ":run", "no longer in the state this page shows"},
	} {
		p := mustProblem(t, b.do(t, rq.method, rq.path, "", basicAuth(testToken)), http.StatusConflict)
		if !strings.Contains(p.Detail, rq.want) || strings.Contains(p.Detail, "FAILED_PRECONDITION") {
			t.Errorf("%s %s: detail %q, want %q", rq.method, rq.path, p.Detail, rq.want)
		}
		logged := false
		for _, l := range b.logs.Lines("info", "http request") {
			if l["request_id"] == p.RequestID {
				logged = l["status"] == int64(http.StatusConflict) && l["error"] == nil
			}
		}
		if !logged {
			t.Errorf("%s %s: no INFO line with status 409 and no error", rq.method, rq.path)
		}
	}
	if lines := b.logs.Lines("error", ""); len(lines) > 0 {
		t.Errorf("ERROR lines: %v", lines)
	}
	for id, want := range map[string]string{active.ID: "active", pending.ID: "pending"} {
		if st := b.state(t, id); st != want {
			t.Errorf("task %s is %s, want %s", id, st, want)
		}
	}
}

// TestDashboardJSONContentType: asynqmon sets no Content-Type on the
// answers of its JSON API, which net/http would sniff as text/plain; they
// go out as JSON, and the dashboard's page stays HTML.
func TestDashboardJSONContentType(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rawArchived(t, "crm-1")
	for _, path := range []string{"/monitoring/api/queues", "/monitoring/api/queues/default/archived_tasks?page=1&size=20",
		"/monitoring/api/scheduler_entries"} {
		res := b.do(t, http.MethodGet, path, "", basicAuth(readerToken))
		if res.status != http.StatusOK || res.header.Get("Content-Type") != "application/json; charset=utf-8" || !json.Valid(res.body) {
			t.Errorf("GET %s: %d %q %.100s, want JSON", path, res.status, res.header.Get("Content-Type"), res.body)
		}
	}
	if res := b.do(t, http.MethodGet, "/monitoring/", "", basicAuth(readerToken)); !strings.HasPrefix(res.header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /monitoring/: %q, want the page as HTML", res.header.Get("Content-Type"))
	}
}

// TestDashboardRoutesAreAsynqmons: the routes certmail matches a path
// against, for the Allow header of a 405 under /monitoring/api/, are those
// of asynqmon's own router, method for method. An upgrade of asynqmon that
// adds, drops or changes a route fails this test until the table follows.
func TestDashboardRoutesAreAsynqmons(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got, err := b.srv.AsynqmonRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if want := api.DashboardRoutes(); !slices.Equal(got, want) {
		t.Errorf("asynqmon routes\n\t%s\ncertmail knows\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// TestDashboardMethodNotAllowed: a method that no route of a path under
// /monitoring/api/ takes is answered as the API answers one: a problem,
// with Allow listing the methods the path takes on the dashboard the token
// gets. Readers and a read-only dashboard take GET only (Allow is empty
// where the path has no GET), and the problem's detail is asynqmon's
// reason. Nothing is done: the queue stays unpaused.
func TestDashboardMethodNotAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ro := setup(t, setupOpts{configure: func(c *api.Config) { c.DashboardReadOnly = true }})
	const (
		q        = "/monitoring/api/queues"
		pause    = q + "/default:pause"
		run      = q + "/default/archived_tasks/raw-unk:run"
		readOnly = "API Server is running in read-only mode: POST request is not allowed"
		generic  = "this route does not take that method; see the Allow header"
	)
	tests := []struct {
		name         string
		b            *bundle
		token        string
		method, path string
		allow        string
		detail       string
	}{
		{"list", b, testToken, http.MethodPatch, q, "GET", generic},
		{"list, HEAD", b, testToken, http.MethodHead, q, "GET", ""},
		{"pause", b, testToken, http.MethodPut, pause, "DELETE, GET, POST", generic},
		{"run", b, testToken, http.MethodGet, run, "DELETE, POST", generic},
		{"bulk", b, testToken, http.MethodDelete, q + "/default/pending_tasks:batch_delete", "POST", generic},
		{"reader, list", b, readerToken, http.MethodPatch, q, "GET", generic},
		{"reader, pause", b, readerToken, http.MethodPost, pause, "GET", readOnly},
		{"reader, run", b, readerToken, http.MethodPost, run, "", readOnly},
		{"read-only, pause", ro, testToken, http.MethodPost, pause, "GET", readOnly},
		{"read-only, run", ro, testToken, http.MethodPost, run, "", readOnly},
		{"read-only, delete", ro, testToken, http.MethodDelete, q + "/default", "GET",
			"API Server is running in read-only mode: DELETE request is not allowed"},
	}
	for _, tt := range tests {
		res := tt.b.do(t, tt.method, tt.path, "", basicAuth(tt.token))
		what := fmt.Sprintf("%s: %s %s", tt.name, tt.method, tt.path)
		if allow, ok := res.header["Allow"]; !ok || len(allow) != 1 || allow[0] != tt.allow {
			t.Errorf("%s: Allow %q (present %t), want %q", what, allow, ok, tt.allow)
		}
		if tt.method == http.MethodHead {
			if res.status != http.StatusMethodNotAllowed || res.header.Get("Content-Type") != api.ProblemContentType {
				t.Errorf("%s: %d %q, want a 405 problem", what, res.status, res.header.Get("Content-Type"))
			}
			continue
		}
		if p := mustProblem(t, res, http.StatusMethodNotAllowed); p.Detail != tt.detail {
			t.Errorf("%s: detail %q, want %q", what, p.Detail, tt.detail)
		}
		if cc := res.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", what, cc)
		}
	}
	if paused, err := b.redis.Client().Exists(context.Background(), queues.AsynqKey("default", "paused")).Result(); err != nil || paused != 0 {
		t.Errorf("the default queue is paused (%d, %v)", paused, err)
	}
}
