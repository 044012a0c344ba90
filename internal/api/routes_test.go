package api_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/tasks"
)

// deadLetterStream is the contract's dead-letter stream.
const deadLetterStream = "certmail:deadletter"

// craftedIDs are task ids that, put in a path with their slashes encoded,
// clean to open paths ("/v1/dead-letters/../../healthz/requeue" is
// "/healthz/requeue"), while the mux matches them as ids of a protected
// route: what judging the cleaned path instead of the matched route lets
// through.
var craftedIDs = []string{"../../healthz", "../openapi.json", "../../metrics/x"}

// archiveCrafted stores an archived task under each crafted id, with a
// dead-letter entry, as if a producer had picked these ids.
func (b *bundle) archiveCrafted(t *testing.T) {
	t.Helper()
	client := asynq.NewClient(b.redis.ConnOpt())
	defer client.Close()
	for i, id := range craftedIDs {
		task, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: int64(9000 + i)}, asynq.TaskID(id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Enqueue(task); err != nil {
			t.Fatal(err)
		}
		if err := b.inspector.ArchiveTask("default", id); err != nil {
			t.Fatal(err)
		}
		if err := b.redis.Client().XAdd(context.Background(), &redis.XAddArgs{Stream: deadLetterStream,
			Values: map[string]any{"task_id": id, "type": "resend-dcv", "queue": "default"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// variants are the ways a request for path (of a route with method) is
// dressed up: encoded slashes and dots in ids, dot-segments, double and
// trailing slashes, other methods.
func variants(method, path string, ids []string) [][2]string {
	var out [][2]string
	add := func(m, p string) { out = append(out, [2]string{m, p}) }
	param := regexp.MustCompile(`\{[^}]+\}`)
	for _, id := range ids {
		for _, enc := range []string{
			strings.ReplaceAll(id, "/", "%2F"),
			strings.ReplaceAll(strings.ReplaceAll(id, ".", "%2e"), "/", "%2F"),
			url.PathEscape(id),
		} {
			p := param.ReplaceAllString(path, enc)
			add(method, p)
			add(method, p+"/")
			add(method, strings.Replace(p, "/v1/", "/v1//", 1))
			add(method, strings.Replace(p, "/v1/", "/v1/./", 1))
			add(method, strings.Replace(p, "/v1/", "/v1/x/../", 1))
			add(method, strings.Replace(p, "/v1/", "/v1/x/%2e%2e/", 1))
			add(method, "/"+p)
			for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, strings.ToLower(method)} {
				if m != method {
					add(m, p)
				}
			}
		}
	}
	return out
}

// TestAuthSeesTheRoute sends every protected route, dressed up every way,
// without a token: none may reach a handler. Each answer is 401, 404, 405 or
// a redirect (followed once, to the same end), and afterwards nothing
// changed: no task enqueued, the archived tasks still archived, their
// dead-letter entries still there.
func TestAuthSeesTheRoute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.archiveCrafted(t)
	tasksBefore := b.taskCount(t)
	entriesBefore, err := b.redis.Client().XLen(context.Background(), deadLetterStream).Result()
	if err != nil {
		t.Fatal(err)
	}
	guards := b.srv.Guards()
	sent := 0
	for _, pattern := range b.srv.Patterns() {
		if guards[pattern] == "open" {
			continue
		}
		method, path, ok := strings.Cut(pattern, " ")
		if !ok { // the dashboard: any method
			method, path = http.MethodPost, pattern+"api/queues/default/archived_tasks/{id}:run"
		}
		for _, v := range variants(method, path, craftedIDs) {
			sent++
			res := b.do(t, v[0], v[1], `{"order_id": 1}`, http.Header{"Content-Type": {"application/json"}})
			if res.status/100 == 3 {
				loc := res.header.Get("Location")
				res = b.do(t, v[0], loc, `{"order_id": 1}`, http.Header{"Content-Type": {"application/json"}})
				v[1] += " -> " + loc
			}
			if !slices.Contains([]int{401, 404, 405}, res.status) && res.status/100 != 3 {
				t.Errorf("%s %s without a token: %d %.200s", v[0], v[1], res.status, res.body)
			}
		}
	}
	if sent < 100 {
		t.Fatalf("only %d requests sent: the route list is broken", sent)
	}
	if n := b.taskCount(t); n != tasksBefore {
		t.Errorf("%d tasks, want %d: a handler ran", n, tasksBefore)
	}
	for _, id := range craftedIDs {
		info, err := b.inspector.GetTaskInfo("default", id)
		if err != nil || info.State != asynq.TaskStateArchived {
			t.Errorf("task %q: %v, %v; want it still archived", id, info, err)
		}
	}
	if n, err := b.redis.Client().XLen(context.Background(), deadLetterStream).Result(); err != nil || n != entriesBefore {
		t.Errorf("%d dead-letter entries (%v), want %d", n, err, entriesBefore)
	}
}

// TestGuardsComplete: every registered route has a guard, and the guards are
// the ones this test expects; a new route needs a row here.
func TestGuardsComplete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := map[string]string{
		"POST /v1/tasks/{type}":              "bearer",
		"GET /v1/tasks/{id}":                 "bearer",
		"GET /v1/dead-letters":               "bearer",
		"POST /v1/dead-letters/{id}/requeue": "bearer",
		"DELETE /v1/dead-letters/{id}":       "bearer",
		"GET /v1/schedules":                  "bearer",
		"POST /v1/schedules":                 "bearer",
		"GET /v1/schedules/{id}":             "bearer",
		"DELETE /v1/schedules/{id}":          "bearer",
		"GET /v1/openapi.json":               "open",
		"/monitoring/":                       "basic",
		"GET /healthz":                       "open",
		"GET /readyz":                        "open",
		"GET /metrics":                       "open",
	}
	got := b.srv.Guards()
	for _, p := range b.srv.Patterns() {
		if _, ok := got[p]; !ok {
			t.Errorf("route %q has no guard", p)
		}
	}
	for p, g := range want {
		if got[p] != g {
			t.Errorf("route %q: guard %q, want %q", p, got[p], g)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("route %q is not in this test's table", p)
		}
	}
}
