package api_test

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/schedule"
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
// dead-letter entry, as if a raw asynq producer had picked these ids.
func (b *bundle) archiveCrafted(t *testing.T) {
	t.Helper()
	client := asynq.NewClient(b.redis.ConnOpt())
	defer client.Close()
	for i, id := range craftedIDs {
		// Raw, as tasks.NewTask refuses these ids.
		task := asynq.NewTask(tasks.TypeResendDCV, []byte(`{"order_id":`+strconv.Itoa(9000+i)+`}`), tasks.DefaultOptions()...)
		if _, err := client.Enqueue(task, asynq.TaskID(id)); err != nil {
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
	accesses := b.srv.Accesses()
	sent := 0
	for _, pattern := range b.srv.Patterns() {
		if accesses[pattern] == "open" {
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

// accessTable is what each route asks of a request; a new route needs a row.
var accessTable = map[string]string{
	"POST /v1/tasks/{type}":              "enqueue",
	"GET /v1/tasks/{id}":                 "task",
	"GET /v1/dead-letters":               "read",
	"POST /v1/dead-letters/{id}/requeue": "manage",
	"DELETE /v1/dead-letters/{id}":       "manage",
	"GET /v1/schedules":                  "read",
	"POST /v1/schedules":                 "manage",
	"GET /v1/schedules/{id}":             "read",
	"DELETE /v1/schedules/{id}":          "manage",
	"GET /v1/openapi.json":               "open",
	"/monitoring/":                       "dashboard",
	"GET /healthz":                       "open",
	"GET /readyz":                        "open",
	"GET /metrics":                       "open",
}

// TestAccessTable: every registered route has an access, the one this
// test's table expects, and the table has no route the server lacks.
func TestAccessTable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got := b.srv.Accesses()
	for _, p := range b.srv.Patterns() {
		if _, ok := got[p]; !ok {
			t.Errorf("route %q has no access", p)
		}
	}
	for p, a := range accessTable {
		if got[p] != a {
			t.Errorf("route %q: access %q, want %q", p, got[p], a)
		}
	}
	for p := range got {
		if _, ok := accessTable[p]; !ok {
			t.Errorf("route %q is not in this test's table", p)
		}
	}
}

// roleMay is which roles each access allows ("" is no token).
var roleMay = map[string][]string{
	"open":      {"", "producer", "reader", "operator"},
	"enqueue":   {"producer", "operator"},
	"task":      {"producer", "reader", "operator"},
	"read":      {"reader", "operator"},
	"manage":    {"operator"},
	"dashboard": {"reader", "operator"},
}

// TestRoles sends a request to every route with no token and with a token
// of each role, with the API read-write and read-only: 401 without a token,
// 403 for a role the route does not allow (and for changes to dead letters
// and schedules while read-only), anything else where the role may.
func TestRoles(t *testing.T) {
	t.Parallel()
	tokens := map[string]string{"": "", "producer": producerToken, "reader": readerToken, "operator": testToken}
	for _, readOnly := range []bool{false, true} {
		t.Run(map[bool]string{false: "read-write", true: "read-only"}[readOnly], func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{configure: func(c *api.Config) { c.DashboardReadOnly = readOnly }})
			param := regexp.MustCompile(`\{[^}]+\}`)
			for pattern, a := range accessTable {
				method, path, ok := strings.Cut(pattern, " ")
				if !ok {
					method, path = http.MethodGet, pattern
				}
				path = strings.Replace(param.ReplaceAllString(path, "nope"), "{type}", "resend-dcv", 1)
				if method == http.MethodPost && strings.HasPrefix(path, "/v1/tasks/") {
					path = "/v1/tasks/resend-dcv"
				}
				for role, token := range tokens {
					h := http.Header{"Content-Type": {"application/json"}}
					if token != "" {
						h.Set("Authorization", "Bearer "+token)
					}
					res := b.do(t, method, path, "{}", h)
					allowed := slices.Contains(roleMay[a], role) && (!readOnly || a != "manage")
					switch {
					case allowed && (res.status == 401 || res.status == 403):
						t.Errorf("%s %s as %q: %d, want it allowed; %s", method, path, role, res.status, res.body)
					case !allowed && role == "":
						mustProblem(t, res, http.StatusUnauthorized)
					case !allowed:
						if p := mustProblem(t, res, http.StatusForbidden); p.Detail == "" || strings.Contains(p.Detail, token) {
							t.Errorf("%s %s as %q: detail %q", method, path, role, p.Detail)
						}
					}
				}
			}
			if b.taskCount(t) != 0 {
				t.Errorf("%d tasks enqueued by empty payloads", b.taskCount(t))
			}
		})
	}
}

// TestDashboardRoles: readers get the read-only dashboard, operators the
// configured one, producers none; with the API read-only, operators too
// get the read-only one.
func TestDashboardRoles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		readOnly bool
		token    string
		status   int  // of the page
		flag     bool // FLAG_READ_ONLY
		delete   int  // status of a DELETE through the dashboard's API
	}{
		{"operator", false, testToken, 200, false, http.StatusNoContent},
		{"reader", false, readerToken, 200, true, http.StatusMethodNotAllowed},
		{"producer", false, producerToken, 403, false, http.StatusForbidden},
		{"operator, read-only API", true, testToken, 200, true, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{configure: func(c *api.Config) { c.DashboardReadOnly = tt.readOnly }})
			res := b.do(t, http.MethodGet, "/monitoring/", "", basicAuth(tt.token))
			if res.status != tt.status {
				t.Fatalf("dashboard page: %d, want %d", res.status, tt.status)
			}
			if tt.status == 200 {
				flag := `window.FLAG_READ_ONLY="` + map[bool]string{true: "true", false: "false"}[tt.flag] + `"`
				if !strings.Contains(string(res.body), flag) {
					t.Errorf("dashboard page lacks %s", flag)
				}
			}
			var ref api.TaskRef
			mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
			res = b.do(t, http.MethodDelete, "/monitoring/api/queues/default/pending_tasks/"+ref.ID, "", basicAuth(tt.token))
			if res.status != tt.delete {
				t.Errorf("DELETE through the dashboard: %d, want %d", res.status, tt.delete)
			}
			if want := map[bool]int{true: 0, false: 1}[tt.delete == http.StatusNoContent]; b.taskCount(t) != want {
				t.Errorf("%d tasks after the DELETE, want %d", b.taskCount(t), want)
			}
		})
	}
}

// queryFree are the routes that let any query parameter through: they act
// on no data (the document, the probes, the metrics, which a probe or a
// scraper may be configured to send parameters to), or hand the request to
// asynqmon, which reads its own (the dashboard). Every other route refuses
// a parameter it does not know, as TestUnknownQueryParameterRefused checks.
var queryFree = map[string]bool{
	"GET /v1/openapi.json": true,
	"GET /healthz":         true,
	"GET /readyz":          true,
	"GET /metrics":         true,
	"/monitoring/":         true,
}

// queryBodies are valid bodies for the routes that read one, so that only
// the query can be what is refused.
var queryBodies = map[string]string{
	"POST /v1/tasks/{type}": `{"order_id": 1}`,
	"POST /v1/schedules":    `{"id": "added", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 2}}`,
}

// TestUnknownQueryParameterRefused walks every route the server registers
// (but queryFree's) with a query parameter it does not know: each answers
// 400 naming the parameter, and Redis is left as it was, byte for byte: the
// dead letter still there, the schedule not deleted, nothing enqueued or
// added. The OpenAPI document gives each of these operations a 400.
func TestUnknownQueryParameterRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// Something for each route to act on: a dead letter and a schedule,
	// both under the id of the archived task.
	id := b.archived(t)
	if err := b.redis.Client().XAdd(ctx, &redis.XAddArgs{Stream: deadLetterStream,
		Values: map[string]any{"task_id": id, "type": "resend-dcv", "queue": "default"}}).Err(); err != nil {
		t.Fatal(err)
	}
	var created schedule.Status
	mustJSON(t, b.do(t, http.MethodPost, "/v1/schedules",
		`{"id": "`+id+`", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 3}}`, nil), http.StatusCreated, &created)
	before := b.dump(t)

	param := regexp.MustCompile(`\{[^}]+\}`)
	tried := 0
	for _, pattern := range b.srv.Patterns() {
		if queryFree[pattern] {
			continue
		}
		method, path, _ := strings.Cut(pattern, " ")
		path = strings.Replace(path, "{type}", "resend-dcv", 1)
		path = param.ReplaceAllString(path, id)
		body := cmp.Or(queryBodies[pattern], "{}")
		for _, q := range []struct{ query, field string }{
			{"dry_run=true", "dry_run"},
			{"x%40example.com=1", "query"}, // not an identifier: not repeated back
		} {
			tried++
			res := b.do(t, method, path+"?"+q.query, body, nil)
			if res.status != http.StatusBadRequest {
				t.Errorf("%s %s?%s: %d, want 400; %.200s", method, path, q.query, res.status, res.body)
				continue
			}
			p := mustProblem(t, res, http.StatusBadRequest)
			if !slices.ContainsFunc(p.Errors, func(fe tasks.FieldError) bool {
				return fe.Field == q.field && strings.HasPrefix(fe.Message, "unknown query parameter")
			}) {
				t.Errorf("%s %s?%s: errors %+v, want %s named as an unknown query parameter", method, path, q.query, p.Errors, q.field)
			}
		}
	}
	if tried < 2*9 {
		t.Fatalf("only %d requests sent: the route walk is broken", tried)
	}
	if after := b.dump(t); !maps.Equal(before, after) {
		t.Errorf("Redis changed: keys %v before, %v after", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	// The same requests without the parameter would have acted.
	if res := b.do(t, http.MethodDelete, "/v1/schedules/"+id, "", nil); res.status != http.StatusNoContent {
		t.Errorf("DELETE of the schedule without a query: %d %s", res.status, res.body)
	}
	if res := b.do(t, http.MethodDelete, "/v1/dead-letters/"+id, "", nil); res.status != http.StatusNoContent {
		t.Errorf("DELETE of the dead letter without a query: %d %s", res.status, res.body)
	}

	doc := readOpenAPI(t)
	for path, item := range doc.Paths {
		for method, raw := range item {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			route := b.srv.Route(httptest.NewRequest(strings.ToUpper(method), examplePath(path), nil))
			var op openAPIOperation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			if _, ok := op.Responses["400"]; !ok && !queryFree[route] {
				t.Errorf("%s %s refuses an unknown query parameter with 400, which the document does not give", method, path)
			}
		}
	}
}

// dump is every key of Redis with its serialised value.
func (b *bundle) dump(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := b.redis.Client().Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if out[k], err = b.redis.Client().Dump(ctx, k).Result(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
