package api_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/schedule"
)

func basicAuth(password string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+password))}}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	none := http.Header{}
	bearer := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }
	tests := []struct {
		name      string
		path      string
		header    http.Header
		status    int
		challenge string // prefix of WWW-Authenticate on a 401
	}{
		{"healthz is open", "/healthz", none, 200, ""},
		{"readyz is open", "/readyz", none, 200, ""},
		{"metrics is open", "/metrics", none, 200, ""},
		{"openapi is open", "/v1/openapi.json", none, 200, ""},
		{"unknown path outside /v1 is open", "/nothing-here", none, 404, ""},
		{"task needs a token", "/v1/tasks/x", none, 401, "Bearer "},
		{"dead letters need a token", "/v1/dead-letters", none, 401, "Bearer "},
		{"unknown /v1 route is not found, token or not", "/v1/nothing-here", none, 404, ""},
		{"encoded slash in an id needs a token", "/v1/tasks/..%2Fopenapi.json", none, 401, "Bearer "},
		{"path to clean is not found, token or not", "/v1/openapi.json/../dead-letters", none, 404, ""},
		{"wrong token", "/v1/dead-letters", bearer("nope"), 401, `Bearer realm="certmail", error="invalid_token"`},
		{"empty bearer", "/v1/dead-letters", http.Header{"Authorization": {"Bearer "}}, 401, "Bearer "},
		{"first token", "/v1/dead-letters", bearer(testToken), 200, ""},
		{"second token", "/v1/dead-letters", bearer(otherToken), 200, ""},
		{"scheme in lower case", "/v1/dead-letters", http.Header{"Authorization": {"bearer " + testToken}}, 200, ""},
		{"token with a suffix", "/v1/dead-letters", bearer(testToken + "x"), 401, "Bearer "},
		{"two tokens glued", "/v1/dead-letters", bearer(testToken + otherToken), 401, "Bearer "},
		{"basic on the API", "/v1/dead-letters", basicAuth(testToken), 401, "Bearer "},
		{"dashboard needs a login", "/monitoring/", none, 401, `Basic realm="certmail"`},
		{"dashboard without slash needs a login", "/monitoring", none, 401, `Basic realm="certmail"`},
		{"dashboard API needs a login", "/monitoring/api/queues", none, 401, `Basic realm="certmail"`},
		{"dashboard wrong password", "/monitoring/", basicAuth("nope"), 401, `Basic realm="certmail"`},
		{"dashboard token as password", "/monitoring/", basicAuth(testToken), 200, ""},
		{"dashboard second token as password", "/monitoring/api/queues", basicAuth(otherToken), 200, ""},
		{"dashboard bearer token", "/monitoring/api/queues", bearer(testToken), 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := b.do(t, http.MethodGet, tt.path, "", tt.header)
			if tt.status != 200 {
				mustProblem(t, res, tt.status)
			} else if res.status != 200 {
				t.Fatalf("status %d, want 200; body: %.200s", res.status, res.body)
			}
			if got := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, tt.challenge) || (tt.challenge == "") != (got == "") {
				t.Errorf("WWW-Authenticate %q, want %q...", got, tt.challenge)
			}
		})
	}
}

func TestInsecureNoAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) { c.Tokens, c.InsecureNoAuth = nil, true }})
	for _, path := range []string{"/v1/dead-letters", "/monitoring/", "/monitoring/api/queues"} {
		if res := b.do(t, http.MethodGet, path, "", http.Header{}); res.status != http.StatusOK {
			t.Errorf("GET %s without a token: %d %.200s", path, res.status, res.body)
		}
	}
	res := b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, http.Header{"Content-Type": {"application/json"}})
	mustJSON(t, res, http.StatusAccepted, &api.TaskRef{})
}

func TestUnknownRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/v1/nothing-here", 404, ""},
		{http.MethodPut, "/v1/schedules", 405, "GET, HEAD, POST"},
		{http.MethodGet, "/v1", 404, ""},
		{http.MethodGet, "/nothing-here", 404, ""},
		{http.MethodPut, "/v1/tasks/set-emails", 405, "GET, HEAD, POST"},
		{http.MethodDelete, "/v1/tasks/abc", 405, "GET, HEAD, POST"},
		{http.MethodPut, "/v1/dead-letters", 405, "GET, HEAD"},
		{http.MethodPost, "/healthz", 405, "GET, HEAD"},
		{http.MethodPost, "/v1/openapi.json", 405, "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			res := b.do(t, tt.method, tt.path, "", http.Header{"Authorization": {"Bearer " + testToken}})
			mustProblem(t, res, tt.status)
			if got := res.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
}

// TestPathsWithEmptyOrDotSegments: a path the mux would clean (an empty
// segment, a . or .. segment) is answered 404 problem+json, token or not,
// not with the mux's 307 and its HTML body, which a client of the API would
// have to follow, sending a POST's body again. It counts as no route, in
// the request log too. The dashboard's path without its slash still
// redirects to it.
func TestPathsWithEmptyOrDotSegments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bearer := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }
	tests := []struct {
		method, path, body string
		header             http.Header
	}{
		{http.MethodGet, "/v1//tasks/x", "", bearer(testToken)},
		{http.MethodGet, "/v1/tasks/./x", "", bearer(testToken)},
		{http.MethodGet, "/v1/x/../dead-letters", "", bearer(testToken)},
		{http.MethodGet, "//v1/dead-letters", "", bearer(testToken)},
		{http.MethodPost, "/v1//tasks/set-emails", `{"order_id":77,"additional_emails":[]}`, authJSON()},
		{http.MethodPost, "/v1/tasks/./set-emails", `{"order_id":77,"additional_emails":[]}`, authJSON()},
		{http.MethodGet, "/v1/tasks/../dead-letters", "", bearer(producerToken)},
		{http.MethodGet, "/v1/openapi.json/../dead-letters", "", http.Header{}},
		{http.MethodDelete, "/v1//schedules/x", "", bearer(testToken)},
		{http.MethodGet, "/monitoring//api/queues", "", basicAuth(testToken)},
		{http.MethodGet, "/monitoring/./", "", basicAuth(testToken)},
		{http.MethodGet, "/./healthz", "", http.Header{}},
	}
	for _, tt := range tests {
		res := b.do(t, tt.method, tt.path, tt.body, tt.header)
		if res.status != http.StatusNotFound || res.header.Get("Content-Type") != api.ProblemContentType {
			t.Errorf("%s %s: %d %s %.200s, want 404 problem+json", tt.method, tt.path, res.status, res.header.Get("Content-Type"), res.body)
			continue
		}
		mustProblem(t, res, http.StatusNotFound)
		if loc := res.header.Get("Location"); loc != "" {
			t.Errorf("%s %s: Location %q, want none", tt.method, tt.path, loc)
		}
		id := res.header.Get("X-Request-Id")
		for _, l := range b.logs.Lines("", "http request") {
			if l["request_id"] == id && l["route"] != "unmatched" {
				t.Errorf("%s %s: logged route %q, want unmatched", tt.method, tt.path, l["route"])
			}
		}
	}
	if n := b.taskCount(t); n != 0 {
		t.Errorf("%d tasks enqueued, want none", n)
	}
	if res := b.do(t, http.MethodGet, "/monitoring", "", basicAuth(testToken)); res.status != http.StatusTemporaryRedirect || res.header.Get("Location") != "/monitoring/" {
		t.Errorf("GET /monitoring: %d Location %q, want a redirect to /monitoring/", res.status, res.header.Get("Location"))
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if res := b.do(t, http.MethodGet, "/healthz", "", http.Header{}); res.status != 200 || string(res.body) != "ok\n" {
		t.Errorf("/healthz: %d %q", res.status, res.body)
	}
	if res := b.do(t, http.MethodGet, "/readyz", "", http.Header{}); res.status != 200 {
		t.Errorf("/readyz with Redis up: %d %q", res.status, res.body)
	}
	b.redis.Kill()
	res := b.do(t, http.MethodGet, "/readyz", "", http.Header{})
	if res.status != http.StatusServiceUnavailable || string(res.body) != "not ready\n" {
		t.Errorf("/readyz with Redis down: %d %q, want 503 \"not ready\" without the cause", res.status, res.body)
	}
	if res := b.do(t, http.MethodGet, "/healthz", "", http.Header{}); res.status != 200 {
		t.Errorf("/healthz with Redis down: %d %q", res.status, res.body)
	}
}

// TestReadyzOutageLog: through a Redis outage, a probe every few seconds
// writes its request line at INFO (a 503 is /readyz's answer, not a failure
// of the API) and the cause once, not an ERROR line per probe.
func TestReadyzOutageLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.redis.Kill()
	const probes = 6 // half a minute of deploy/'s readiness probe
	for range probes {
		if res := b.do(t, http.MethodGet, "/readyz", "", http.Header{}); res.status != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with Redis down: %d %q", res.status, res.body)
		}
	}
	if l := b.logs.Lines("error", ""); len(l) != 0 {
		t.Errorf("%d probes with Redis down logged %d ERROR lines, want none: %v", probes, len(l), l[0])
	}
	requests := 0
	for _, l := range b.logs.Lines("info", "http request") {
		if l["route"] == "GET /readyz" && l["status"] == int64(http.StatusServiceUnavailable) {
			requests++
		}
	}
	if requests != probes {
		t.Errorf("%d probes with Redis down: %d INFO request lines with status 503, want one each", probes, requests)
	}
	// One line per cause: a probe that waits out its deadline on a loaded
	// machine fails with "context deadline exceeded" instead of "connection
	// refused", a second cause with a line of its own.
	warned := map[any]int{}
	for _, l := range b.logs.Lines("warn", "not ready") {
		warned[l["error"]]++
	}
	if len(warned) == 0 {
		t.Errorf("%d probes with Redis down: no WARN line with the cause", probes)
	}
	for cause, n := range warned {
		if n != 1 {
			t.Errorf("%d probes with Redis down: %d WARN lines for the cause %v, want 1", probes, n, cause)
		}
	}
}

// TestRedisStatesAsynqFlattensAre503: asynq turns some Redis errors into
// text ("redis eval error: %v"), which loses them for errors.Is. Right after
// a Redis restart the request fails with LOADING while the PING that would
// decide already succeeds: the text alone must give 503, not 500. An error
// that says nothing of Redis stays a 500 while Redis answers.
func TestRedisStatesAsynqFlattensAre503(t *testing.T) {
	t.Parallel()
	b := setup(t)
	unavailable := []string{
		"redis eval error: LOADING Redis is loading the dataset in memory",
		"redis eval error: READONLY You can't write against a read only replica.",
		"redis eval error: MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
		"redis command error: HSET failed: LOADING Redis is loading the dataset in memory",
		"redis eval error: dial tcp 127.0.0.1:6379: connect: connection refused",
		"redis eval error: read tcp 127.0.0.1:1->127.0.0.1:6379: read: connection reset by peer",
		"redis eval error: redis: connection pool timeout",
		"redis eval error: EOF",
	}
	for _, text := range unavailable {
		err := fmt.Errorf("enqueue: %w", errors.New(text))
		if !b.srv.RedisUnavailable(err) {
			t.Errorf("%q with Redis answering: not judged unavailable (a 500)", text)
		}
	}
	for _, text := range []string{"redis eval error: ERR Error running script: bad argument", "task payload: invalid"} {
		if b.srv.RedisUnavailable(errors.New(text)) {
			t.Errorf("%q with Redis answering: judged unavailable (a 503)", text)
		}
	}
}

// TestRedisOutage: with Redis gone, every /v1 route that needs it, and the
// dashboard's JSON API, answers 503 problem+json with Retry-After, never 500, and tells no address; the
// cause is in the request's log line. Once Redis is back, the same server
// serves again.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
	b.redis.Kill()
	withKey := authJSON()
	withKey.Set("Idempotency-Key", "outage-1")
	schedule := `{"id":"s1","cron":"@daily","type":"resend-dcv","payload":{"order_id":1}}`
	requests := []struct {
		method, path, body string
		header             http.Header
	}{
		{http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil},
		{http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, withKey},
		{http.MethodPost, "/v1/tasks/resend-dcv?process_in=1h", `{"order_id":3}`, nil},
		{http.MethodGet, "/v1/tasks/" + ref.ID, "", nil},
		{http.MethodGet, "/v1/dead-letters", "", nil},
		{http.MethodPost, "/v1/dead-letters/" + ref.ID + "/requeue", "", nil},
		{http.MethodDelete, "/v1/dead-letters/" + ref.ID, "", nil},
		{http.MethodGet, "/v1/schedules", "", nil},
		{http.MethodPost, "/v1/schedules", schedule, nil},
		{http.MethodGet, "/v1/schedules/s1", "", nil},
		{http.MethodDelete, "/v1/schedules/s1", "", nil},
		{http.MethodGet, "/monitoring/api/queues", "", basicAuth(testToken)},
	}
	for _, rq := range requests {
		res := b.do(t, rq.method, rq.path, rq.body, rq.header)
		if res.status != http.StatusServiceUnavailable {
			t.Errorf("%s %s with Redis down: %d %s, want 503", rq.method, rq.path, res.status, res.body)
			continue
		}
		p := mustProblem(t, res, http.StatusServiceUnavailable)
		if got := res.header.Get("Retry-After"); got != strconv.Itoa(api.RetryAfterUnavailable) {
			t.Errorf("%s %s: Retry-After %q", rq.method, rq.path, got)
		}
		if strings.Contains(p.Detail, "127.0.0.1") || strings.Contains(p.Detail, "refused") || strings.Contains(p.Detail, strconv.Itoa(b.redis.Port())) {
			t.Errorf("%s %s: the problem tells the cause: %q", rq.method, rq.path, p.Detail)
		}
		var found bool
		for _, e := range b.logs.All() {
			if l := e.ContextMap(); l["request_id"] == p.RequestID {
				found = true
				if e.Level != zapcore.ErrorLevel || l["status"] != int64(503) || l["error"] == nil {
					t.Errorf("log line of %s %s: %s %v", rq.method, rq.path, e.Level, l)
				}
			}
		}
		if !found {
			t.Errorf("no log line with request_id %s", p.RequestID)
		}
	}
	b.redis.Relaunch()
	waitFor(t, 20*time.Second, func() bool {
		return b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":4}`, nil).status == http.StatusAccepted
	}, func() string { return "enqueues do not succeed after Redis came back" })
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &api.TaskRef{})
	mustProblem(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{}`, nil), http.StatusBadRequest)
	mustProblem(t, b.get(t, "/v1/no/such/route/12345"), http.StatusNotFound)
	res := b.do(t, http.MethodGet, "/metrics", "", http.Header{})
	if res.status != 200 {
		t.Fatalf("/metrics: %d", res.status)
	}
	text := string(res.body)
	for _, want := range []string{
		`certmail_api_requests_total{route="POST /v1/tasks/{type}",status="202"} 1`,
		`certmail_api_requests_total{route="POST /v1/tasks/{type}",status="400"} 1`,
		`certmail_api_requests_total{route="unmatched",status="404"} 1`,
		`certmail_api_request_duration_seconds_count{route="POST /v1/tasks/{type}"} 2`,
		`certmail_api_request_duration_seconds_bucket{route="POST /v1/tasks/{type}",le="+Inf"} 2`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, "/v1/no/such/route") {
		t.Errorf("an unmatched path became a label value")
	}
}

// A request refused before its handler runs (no token, a token not valid,
// a role that may not, an address that failed too often, a cross-origin
// change) is counted under the pattern of the route it asked for, as its
// handler's answers are; "unmatched" stays for requests that match no
// route, with or without a token.
func TestMetricsRouteOfRefusedRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) { c.AuthFailures = api.AuthFailureLimit{Burst: 2, Every: time.Hour} }})
	serve := func(method, path, remote string, header http.Header, status int) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(`{"order_id": 1}`))
		req.RemoteAddr = remote
		req.Header = header
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		if rec.Code != status {
			t.Fatalf("%s %s: %d %.200s, want %d", method, path, rec.Code, rec.Body, status)
		}
	}
	const client, guesser = "203.0.113.5:40000", "198.51.100.9:40000"
	none := http.Header{}
	bearer := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }
	crossSite := func(h http.Header) http.Header {
		h.Set("Sec-Fetch-Site", "cross-site")
		h.Set("Content-Type", "text/plain")
		return h
	}
	serve(http.MethodGet, "/v1/tasks/abc", client, none, http.StatusUnauthorized)
	serve(http.MethodGet, "/v1/dead-letters", client, bearer(producerToken), http.StatusForbidden)
	serve(http.MethodGet, "/monitoring/api/queues", client, none, http.StatusUnauthorized)
	serve(http.MethodPost, "/v1/tasks/resend-dcv", client, crossSite(bearer(testToken)), http.StatusForbidden)
	serve(http.MethodPost, "/monitoring/api/queues/default:pause", client, crossSite(basicAuth(testToken)), http.StatusForbidden)
	for i := range 2 {
		serve(http.MethodGet, "/v1/schedules", guesser, bearer(fmt.Sprintf("guess-%d-0123456789abcdef", i)), http.StatusUnauthorized)
	}
	serve(http.MethodGet, "/v1/schedules", guesser, bearer(testToken), http.StatusTooManyRequests)
	serve(http.MethodGet, "/v1/no/such/route/12345", client, none, http.StatusNotFound)
	serve(http.MethodGet, "/v1/no/such/route/12345", client, bearer(testToken), http.StatusNotFound)
	serve(http.MethodPut, "/v1/schedules", client, none, http.StatusMethodNotAllowed)

	res := b.do(t, http.MethodGet, "/metrics", "", http.Header{})
	text := string(res.body)
	for _, want := range []string{
		`certmail_api_requests_total{route="GET /v1/tasks/{id}",status="401"} 1`,
		`certmail_api_requests_total{route="GET /v1/dead-letters",status="403"} 1`,
		`certmail_api_requests_total{route="/monitoring/",status="401"} 1`,
		`certmail_api_requests_total{route="POST /v1/tasks/{type}",status="403"} 1`,
		`certmail_api_requests_total{route="/monitoring/",status="403"} 1`,
		`certmail_api_requests_total{route="GET /v1/schedules",status="401"} 2`,
		`certmail_api_requests_total{route="GET /v1/schedules",status="429"} 1`,
		`certmail_api_requests_total{route="unmatched",status="404"} 2`,
		`certmail_api_requests_total{route="unmatched",status="405"} 1`,
		`certmail_api_request_duration_seconds_count{route="GET /v1/schedules"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, `certmail_api_requests_total{route="unmatched"`) &&
			!strings.Contains(line, `status="404"`) && !strings.Contains(line, `status="405"`) {
			t.Errorf("a refusal counted as matching no route: %s", line)
		}
	}
	for _, path := range []string{"/v1/no/such", "/v1/tasks/abc", "default:pause", "/monitoring/api"} {
		if strings.Contains(text, path) {
			t.Errorf("the path %s became a label value", path)
		}
	}
}

func TestRequestLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const address = "claire.redfield@example.com"
	h := authJSON()
	h.Set("X-Request-Id", "req-from-client.1")
	res := b.do(t, http.MethodPost, "/v1/tasks/set-emails?queue=bulk", `{"order_id":1,"additional_emails":["`+address+`"]}`, h)
	mustJSON(t, res, http.StatusAccepted, &api.TaskRef{})
	if got := res.header.Get("X-Request-Id"); got != "req-from-client.1" {
		t.Errorf("X-Request-Id %q, want the client's", got)
	}
	h.Set("X-Request-Id", "not a sensible id\t")
	res = b.do(t, http.MethodPost, "/v1/tasks/set-emails", `{"order_id":0,"additional_emails":["`+address+`", "bad"]}`, h)
	p := mustProblem(t, res, http.StatusBadRequest)
	if p.RequestID == "not a sensible id\t" || len(p.RequestID) != 24 {
		t.Errorf("request id %q, want a generated one", p.RequestID)
	}
	logs := b.logs.Text()
	for _, secret := range []string{address, "claire", testToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %q:\n%s", secret, logs)
		}
	}
	entries := b.logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d log lines for 2 requests:\n%s", len(entries), logs)
	}
	for i, want := range []struct {
		id     string
		status int64
	}{{"req-from-client.1", 202}, {p.RequestID, 400}} {
		e, l := entries[i], entries[i].ContextMap()
		if e.Level != zapcore.InfoLevel || e.Message != "http request" || l["method"] != "POST" || l["route"] != "POST /v1/tasks/{type}" ||
			l["status"] != want.status || l["request_id"] != want.id || l["duration"] == nil {
			t.Errorf("log line %d: %s %q %v", i, e.Level, e.Message, l)
		}
		if e.Caller.Defined { // always the same line of observe.go: not worth its cost per request
			t.Errorf("log line %d names its caller %s", i, e.Caller)
		}
	}
}

// TestRequestLogMethodBounded: the request line names a standard method as
// it is and any other as "other", so that a client cannot write 60 KB of
// method into every line; no metric label takes the method either.
func TestRequestLogMethodBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	long := strings.Repeat("A", 60000)
	for _, rq := range []struct{ method, path, logged string }{
		{long, "/healthz", "other"},
		{"PROPFIND", "/healthz", "other"},
		{"get", "/healthz", "other"},
		{long, "/monitoring/", "other"},
		{http.MethodGet, "/healthz", "GET"},
		{http.MethodPatch, "/healthz", "PATCH"},
	} {
		res := b.do(t, rq.method, rq.path, "", basicAuth(testToken))
		id := res.header.Get("X-Request-Id")
		var found bool
		for _, l := range b.logs.Lines("", "http request") {
			if l["request_id"] == id {
				found = true
				if l["method"] != rq.logged {
					t.Errorf("%.20s %s: logged method %.40q, want %q", rq.method, rq.path, l["method"], rq.logged)
				}
			}
		}
		if !found {
			t.Errorf("%.20s %s: no log line with request_id %q", rq.method, rq.path, id)
		}
	}
	if text := b.logs.Text(); strings.Contains(text, "AAAAAAAA") || strings.Contains(text, "PROPFIND") {
		t.Errorf("the log holds a method that is not standard (%d bytes)", len(text))
	}
	if res := b.do(t, http.MethodGet, "/metrics", "", http.Header{}); strings.Contains(string(res.body), "AAAAAAAA") ||
		strings.Contains(string(res.body), "PROPFIND") {
		t.Errorf("a method that is not standard became a label value")
	}
}

func TestDashboard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		readOnly bool
		delete   int // status of a DELETE through the dashboard's API
	}{
		{"read-write", false, http.StatusNoContent},
		{"read-only", true, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{configure: func(c *api.Config) { c.DashboardReadOnly = tt.readOnly }})
			res := b.do(t, http.MethodGet, "/monitoring/", "", basicAuth(testToken))
			if res.status != 200 || !strings.Contains(string(res.body), `window.FLAG_ROOT_PATH="\/monitoring"`) {
				t.Fatalf("dashboard: %d %.300s", res.status, res.body)
			}
			if flag := `window.FLAG_READ_ONLY="` + map[bool]string{true: "true", false: "false"}[tt.readOnly] + `"`; !strings.Contains(string(res.body), flag) {
				t.Errorf("dashboard page lacks %s", flag)
			}
			if res := b.do(t, http.MethodGet, "/monitoring", "", basicAuth(testToken)); res.status/100 != 3 || res.header.Get("Location") != "/monitoring/" {
				t.Errorf("/monitoring: %d to %q, want a redirect to /monitoring/", res.status, res.header.Get("Location"))
			}
			var ref api.TaskRef
			mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
			res = b.do(t, http.MethodGet, "/monitoring/api/queues/default/pending_tasks", "", basicAuth(testToken))
			if res.status != 200 || !strings.Contains(string(res.body), ref.ID) {
				t.Errorf("pending tasks: %d %.300s", res.status, res.body)
			}
			// The payload formatter indents certmail's JSON.
			if !strings.Contains(string(res.body), `"payload":"{\n  \"order_id\": 3\n}"`) {
				t.Errorf("payload not indented: %.500s", res.body)
			}
			res = b.do(t, http.MethodDelete, "/monitoring/api/queues/default/pending_tasks/"+ref.ID, "", basicAuth(testToken))
			if res.status != tt.delete {
				t.Errorf("DELETE through the dashboard: %d, want %d", res.status, tt.delete)
			}
		})
	}
}

// TestDashboardNotFound: the dashboard's JSON API answers a queue or a task
// that does not exist (asynqmon says so with a 500 or a 404 of plain text
// that repeats the name) with a 404 problem that does not repeat it, logged
// at INFO; any other failure of asynqmon is a 500 problem with a fixed
// detail, its text in the ERROR line.
func TestDashboardNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
	long := strings.Repeat("Q", 30000)
	for _, rq := range []struct{ method, path, token string }{
		{http.MethodGet, "/monitoring/api/queues/nope", readerToken},
		{http.MethodGet, "/monitoring/api/queues/" + long, readerToken},
		{http.MethodGet, "/monitoring/api/queues/nope/pending_tasks", readerToken},
		{http.MethodGet, "/monitoring/api/queues/" + long + "/archived_tasks?size=10", readerToken},
		{http.MethodGet, "/monitoring/api/queues/default/tasks/nope", readerToken},
		{http.MethodGet, "/monitoring/api/queues/nope/tasks/" + ref.ID, readerToken},
		{http.MethodDelete, "/monitoring/api/queues/default/archived_tasks/nope", testToken},
		{http.MethodDelete, "/monitoring/api/queues/default/archived_tasks/" + long, testToken},
		{http.MethodPost, "/monitoring/api/queues/default/archived_tasks/nope:run", testToken},
		{http.MethodDelete, "/monitoring/api/queues/nope", testToken},
	} {
		res := b.do(t, rq.method, rq.path, "", basicAuth(rq.token))
		if res.status != http.StatusNotFound {
			t.Errorf("%s %.80s: %d %q, want 404", rq.method, rq.path, res.status, res.header.Get("Content-Type"))
			continue
		}
		p := mustProblem(t, res, http.StatusNotFound)
		if len(res.body) > 300 || strings.Contains(string(res.body), "nope") || strings.Contains(string(res.body), "QQQQ") {
			t.Errorf("%s %.80s: the answer repeats the name or is long (%d bytes): %.200s", rq.method, rq.path, len(res.body), res.body)
		}
		for _, l := range b.logs.Lines("", "http request") {
			if l["request_id"] == p.RequestID && (l["status"] != int64(404) || l["error"] != nil) {
				t.Errorf("%s %.80s: log line %v, want 404 without error", rq.method, rq.path, l)
			}
		}
	}
	if lines := b.logs.Lines("error", ""); len(lines) > 0 {
		t.Errorf("ERROR lines for answers that are not found: %v", lines)
	}
	// The dashboard's own page shows the body as text: it gets the detail.
	h := basicAuth(readerToken)
	h.Set("Sec-Fetch-Site", "same-origin")
	res := b.do(t, http.MethodGet, "/monitoring/api/queues/default/tasks/nope", "", h)
	if res.status != http.StatusNotFound || res.header.Get("Content-Type") != "text/plain; charset=utf-8" ||
		!strings.HasPrefix(string(res.body), "the dashboard knows no task of this id in this queue (request_id ") {
		t.Errorf("from the dashboard's page: %d %q %.200s", res.status, res.header.Get("Content-Type"), res.body)
	}

	// A failure that is not a missing queue or task: the list of queues is
	// not a set.
	if err := b.redis.Client().Set(context.Background(), "asynq:queues", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	res = b.do(t, http.MethodGet, "/monitoring/api/queues", "", basicAuth(readerToken))
	p := mustProblem(t, res, http.StatusInternalServerError)
	if strings.Contains(p.Detail, "WRONGTYPE") {
		t.Errorf("the 500 tells its cause: %q", p.Detail)
	}
	var logged bool
	for _, l := range b.logs.Lines("error", "http request") {
		if l["request_id"] == p.RequestID {
			e, _ := l["error"].(string)
			logged = strings.Contains(e, "WRONGTYPE") && l["status"] == int64(500)
		}
	}
	if !logged {
		t.Errorf("no ERROR line with the cause for request %s: %s", p.RequestID, b.logs.Text())
	}
}

// TestDashboardQueryNeverLogged: asynqmon's Prometheus view has no backend
// (certmail configures no Prometheus for the dashboard), so it is a 404
// problem, not a 500 and an ERROR line; and no query text a client sends
// reaches the log, through that route or through asynqmon's failures on
// any other, here with Redis gone.
func TestDashboardQueryNeverLogged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const secret = "alice-7f3a@example.com"
	query := "?queues=" + url.QueryEscape(secret) + "&duration=" + secret + "&size=10&page=1&x=" + secret
	for _, token := range []string{readerToken, testToken} {
		for _, q := range []string{"?queues=" + url.QueryEscape(secret), query} {
			res := b.do(t, http.MethodGet, "/monitoring/api/metrics"+q, "", basicAuth(token))
			p := mustProblem(t, res, http.StatusNotFound)
			if !strings.Contains(p.Detail, "Prometheus") || strings.Contains(string(res.body), "alice") {
				t.Errorf("metrics%s: %q", q, p.Detail)
			}
		}
	}
	if lines := b.logs.Lines("error", ""); len(lines) > 0 {
		t.Errorf("ERROR lines for the metrics view: %v", lines)
	}
	if text := b.logs.Text(); strings.Contains(text, "alice") {
		t.Errorf("the log holds the query:\n%s", text)
	}
	b.redis.Kill()
	for _, path := range []string{
		"/monitoring/api/metrics",
		"/monitoring/api/queues",
		"/monitoring/api/queues/default",
		"/monitoring/api/queue_stats",
		"/monitoring/api/queues/default/pending_tasks",
		"/monitoring/api/queues/default/archived_tasks",
		"/monitoring/api/queues/default/tasks/x",
		"/monitoring/api/queues/default/groups",
		"/monitoring/api/servers",
		"/monitoring/api/scheduler_entries",
		"/monitoring/api/scheduler_entries/x/enqueue_events",
		"/monitoring/api/redis_info",
	} {
		if res := b.do(t, http.MethodGet, path+query, "", basicAuth(testToken)); res.status < 400 {
			t.Errorf("%s with Redis down: %d", path, res.status)
		}
	}
	if text := b.logs.Text(); strings.Contains(text, "alice") {
		t.Errorf("the log holds the query:\n%s", text)
	}
	if len(b.logs.Lines("error", "http request")) == 0 {
		t.Error("no failure was logged: the check above proves nothing")
	}
}

// TestDashboardCauseClipped: what asynqmon says of a failure reaches the log
// clipped and valid UTF-8, however long it was.
func TestDashboardCauseClipped(t *testing.T) {
	t.Parallel()
	text := "NOT_FOUND: " + strings.Repeat("\xff", 10000) + "\n"
	got := api.DashboardCause([]byte(text)[:api.MaxDashboardErrorText], len(text)).Error()
	if len(got) > api.MaxDashboardErrorText+64 || !utf8.ValidString(got) || !strings.Contains(got, "10012 bytes") {
		t.Errorf("cause %d bytes: %.300q", len(got), got)
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	conn, err := redisconn.Open("redis://127.0.0.1:1/0") // never dialled
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Client.Close() })
	svc, err := ops.New(ops.Config{Redis: conn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	store, err := schedule.NewStore(schedule.Config{Redis: conn.Client})
	if err != nil {
		t.Fatal(err)
	}
	good := func() api.Config {
		return api.Config{Ops: svc, Redis: conn, Schedules: store, Tokens: []api.Token{{Secret: testToken}}, Logger: zap.NewNop()}
	}
	tests := []struct {
		name   string
		change func(*api.Config)
		want   string
	}{
		{"no ops", func(c *api.Config) { c.Ops = nil }, "no queue operations service"},
		{"no redis", func(c *api.Config) { c.Redis = nil }, "no Redis"},
		{"no schedule store", func(c *api.Config) { c.Schedules = nil }, "no schedule store"},
		{"no logger", func(c *api.Config) { c.Logger = nil }, "no logger"},
		{"no token", func(c *api.Config) { c.Tokens = nil }, "no API token configured"},
		{"tokens and insecure", func(c *api.Config) { c.InsecureNoAuth = true }, "drop one of them"},
		{"empty token", func(c *api.Config) { c.Tokens = []api.Token{{Secret: testToken}, {}} }, "API token 2:"},
		{"token with a space", func(c *api.Config) { c.Tokens = []api.Token{{Secret: "two words in a token"}} }, "API token 1:"},
		{"token too long", func(c *api.Config) { c.Tokens = []api.Token{{Secret: account.Secret(strings.Repeat("t", 4097))}} }, "API token 1:"},
		{"short token", func(c *api.Config) { c.Tokens = []api.Token{{Secret: "short-token"}} }, "fewer than 16"},
		{"placeholder", func(c *api.Config) { c.Tokens = []api.Token{{Secret: "replace-me-with-a-long-random-token"}} }, "placeholder"},
		{"unknown role", func(c *api.Config) { c.Tokens = []api.Token{{Secret: testToken, Role: "admin"}} }, "unknown role"},
		{"one token, two roles", func(c *api.Config) {
			c.Tokens = []api.Token{{Secret: testToken, Role: api.RoleProducer}, {Secret: testToken, Role: api.RoleOperator}}
		}, "API tokens 1 and 2 are the same token"},
		{"handler timeout past the write timeout", func(c *api.Config) { c.Limits.HandlerTimeout = time.Hour }, "shorter than the write timeout"},
		{"negative shutdown timeout", func(c *api.Config) { c.ShutdownTimeout = -time.Second }, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good()
			tt.change(&cfg)
			_, err := api.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "two words") || strings.Contains(err.Error(), "replace-me") || strings.Contains(err.Error(), testToken) {
				t.Errorf("the error repeats the token: %v", err)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		t.Parallel()
		s, err := api.New(good())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		insecure bool
	}{
		{"with tokens", false},
		{"insecure", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			log, logs := certmailtest.NewLogger(t)
			cfg := api.Config{Ops: b.ops, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}}, Addr: "127.0.0.1:0", Logger: log}
			if tt.insecure {
				cfg.Tokens, cfg.InsecureNoAuth = nil, true
			}
			s, err := api.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			addr := make(chan net.Addr, 1)
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, func(a net.Addr) { addr <- a }) }()
			var base string
			select {
			case a := <-addr:
				base = "http://" + a.String()
			case err := <-done:
				t.Fatalf("Run: %v", err)
			}
			res, err := b.http.Get(base + "/v1/dead-letters")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if want := map[bool]int{false: 401, true: 200}[tt.insecure]; res.StatusCode != want {
				t.Errorf("/v1/dead-letters without a token: %d, want %d", res.StatusCode, want)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run after cancel: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return after its context was cancelled")
			}
			if logs.FilterMessage("api started").Len() != 1 || logs.FilterMessage("api stopped").Len() != 1 {
				t.Errorf("log lacks start or stop:\n%s", logs.Text())
			}
			warned := false
			for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
				warned = warned || strings.Contains(e.Message, "--insecure-no-auth")
			}
			if warned != tt.insecure {
				t.Errorf("warned about missing authentication: %t, want %t:\n%s", warned, tt.insecure, logs.Text())
			}
		})
	}
}

// TestRunReportsAnEvictingRedis: the API reads Redis's eviction policy
// once Redis answers, beside serving: one ERROR line naming a policy that
// may evict the idempotency keys, none for noeviction, and a Redis that
// does not answer at start neither holds the API back nor escapes the
// check once it answers.
func TestRunReportsAnEvictingRedis(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, policy string
		stalled      bool // Redis takes no command until the API serves
	}{{"volatile-lru", "volatile-lru", false}, {"noeviction", "noeviction", false}, {"late", "volatile-lru", true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{redis: redistest.Options{Args: []string{"--maxmemory", "8mb", "--maxmemory-policy", c.policy}}})
			log, logs := certmailtest.NewLogger(t)
			s, err := api.New(api.Config{Ops: b.ops, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}},
				Addr: "127.0.0.1:0", Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if c.stalled {
				b.redis.Pause()
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			addr := make(chan net.Addr, 1)
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, func(a net.Addr) { addr <- a }) }()
			select {
			case <-addr:
			case err := <-done:
				t.Fatalf("Run: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the API does not serve")
			}
			b.redis.Continue()
			policyLines := func() []map[string]any {
				var lines []map[string]any
				for _, l := range logs.Lines("error", "") {
					if _, ok := l["maxmemory_policy"]; ok {
						lines = append(lines, l)
					}
				}
				return lines
			}
			// The check has run once it logged the policy: at DEBUG for noeviction.
			certmailtest.WaitFor(t, 30*time.Second, func() bool {
				return len(policyLines()) > 0 || logs.FilterMessage("Redis's maxmemory-policy is noeviction").Len() > 0
			}, logs.Text)
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
			lines := policyLines()
			want := 0
			if c.policy != "noeviction" {
				want = 1
			}
			if len(lines) != want {
				t.Fatalf("%d ERROR lines about the eviction policy, want %d:\n%s", len(lines), want, logs.Text())
			}
			if want == 1 && (lines[0]["maxmemory_policy"] != c.policy || !strings.Contains(lines[0]["risk"].(string), "Idempotency-Key")) {
				t.Errorf("ERROR line %v: want maxmemory_policy %s and the risk to the idempotency keys", lines[0], c.policy)
			}
			if warned := logs.Lines("warn", ""); len(warned) != 0 {
				t.Errorf("WARN lines %v: a Redis that answers late is not one whose policy is unknown", warned)
			}
		})
	}
}

// TestInsecureNoAuthHost: without authentication, the API answers only
// requests addressed to a host that a page of another site cannot rebind
// to this server (an IP address, localhost, a name without dots); with
// tokens, the Host does not matter.
func TestInsecureNoAuthHost(t *testing.T) {
	t.Parallel()
	open := setup(t, setupOpts{configure: func(c *api.Config) { c.Tokens, c.InsecureNoAuth = nil, true }})
	withTokens := setup(t)
	serve := func(b *bundle, host, path string) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, host := range []string{"127.0.0.1:8080", "[::1]:8080", "10.0.0.7", "localhost:8080", "LOCALHOST", "api.localhost:8080", "api:8080", "certmail-api", ""} {
		if code := serve(open, host, "/v1/dead-letters"); code != http.StatusOK {
			t.Errorf("no auth, Host %q: %d, want 200", host, code)
		}
	}
	for _, host := range []string{"evil.example:8080", "evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "evil.example."} {
		for _, path := range []string{"/v1/dead-letters", "/monitoring/"} {
			if code := serve(open, host, path); code != http.StatusForbidden {
				t.Errorf("no auth, Host %q, %s: %d, want 403", host, path, code)
			}
		}
		if code := serve(open, host, "/healthz"); code != http.StatusOK {
			t.Errorf("no auth, Host %q, open route: %d, want 200", host, code)
		}
		if code := serve(withTokens, host, "/v1/dead-letters"); code != http.StatusOK {
			t.Errorf("with tokens, Host %q: %d, want 200", host, code)
		}
	}
}

// run starts a server from cfg with Run until the test ends, and returns
// its address.
func run(t *testing.T, cfg api.Config) string {
	t.Helper()
	s, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(a net.Addr) { addr <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a.String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
		return ""
	}
}

// TestRunLimits: the server Run starts takes Config.Limits; an idle
// keep-alive connection is closed once its idle timeout runs out.
func TestRunLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	addr := run(t, api.Config{Ops: b.ops, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}}, Addr: "127.0.0.1:0", Logger: zap.NewNop(),
		Limits: admin.Limits{IdleTimeout: 200 * time.Millisecond}})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the API kept an idle connection open for 10 s")
	}
}

// TestRunConnectionCap: by default the API keeps MaxConns connections open
// at most. Connections stalled in their headers, before any token is
// looked at, fill it; the next one is closed at once instead of holding
// memory until the header timeout (10 s).
func TestRunConnectionCap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := prometheus.NewRegistry()
	addr := run(t, api.Config{Ops: b.ops, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}}, Addr: "127.0.0.1:0",
		Logger: zap.NewNop(), Registry: reg})
	for i := range api.MaxConns + 1 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Stall: 1\r\n"); err != nil {
			t.Fatal(err)
		}
		if i < api.MaxConns {
			continue
		}
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d, over the cap, was kept open", i+1)
		}
	}
	// The refusal is counted, for the operator who sees clients fail.
	if got := counterValue(t, reg, "certmail_api_connections_refused_total"); got != 1 {
		t.Errorf("certmail_api_connections_refused_total = %v, want 1", got)
	}
}

// counterValue reads the counter name (without labels) from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestAuthFailureLimitFullTable checks that a full table of failing
// addresses does not lock out others: a client is refused for its own
// failures only, so a valid token from a new address always gets through.
func TestAuthFailureLimitFullTable(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) { c.AuthFailures = api.AuthFailureLimit{Burst: 1, Every: time.Hour, Clients: 2} }})
	serve := func(remote, token string) int {
		req := httptest.NewRequest(http.MethodGet, "/v1/dead-letters", nil)
		req.RemoteAddr = remote
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 50 {
		if code := serve(fmt.Sprintf("198.51.100.%d:4000", i), "guess-0123456789abcdef"); code != http.StatusUnauthorized {
			t.Fatalf("first guess of address %d: %d, want 401", i, code)
		}
	}
	if code := serve("198.51.100.49:4000", "guess-0123456789abcdef"); code != http.StatusTooManyRequests {
		t.Errorf("second guess of the last address: %d, want 429", code)
	}
	for i := range 5 {
		if code := serve(fmt.Sprintf("203.0.113.%d:4000", i), testToken); code != http.StatusOK {
			t.Errorf("valid token from new address %d: %d, want 200", i, code)
		}
	}
}

// TestAuthFailureLimitBrowserApart: wrong tokens in requests a browser
// marked with Sec-Fetch-Site (an operator's stale dashboard password, say)
// spend the budget of that address's browsers only: a service at the same
// address (behind one proxy, say) is still served, and the browsers' budget
// is limited as the others' is.
func TestAuthFailureLimitBrowserApart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) { c.AuthFailures = api.AuthFailureLimit{Burst: 3, Every: time.Hour} }})
	serve := func(token string, browser bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/v1/dead-letters", nil)
		req.RemoteAddr = "198.51.100.9:40000"
		req.Header.Set("Authorization", "Bearer "+token)
		if browser {
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		return rec
	}
	for i := range 3 {
		if rec := serve(fmt.Sprintf("from-page-%d-0123456789abcdef", i), true); rec.Code != http.StatusUnauthorized {
			t.Fatalf("browser's wrong token %d: %d, want 401", i, rec.Code)
		}
	}
	for _, token := range []string{"from-page-9-0123456789abcdef", testToken} {
		rec := serve(token, true)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" ||
			!strings.Contains(rec.Body.String(), "from browsers at this address") {
			t.Errorf("browser after 3 wrong tokens, token %.6q: %d %.200s, want 429 with Retry-After naming browsers", token, rec.Code, rec.Body)
		}
	}
	if rec := serve(testToken, false); rec.Code != http.StatusOK {
		t.Errorf("service at the browser's address with a valid token: %d %.200s, want 200", rec.Code, rec.Body)
	}
	// The service's own budget is whole, and its own failures still lock
	// it out.
	for i := range 3 {
		if rec := serve(fmt.Sprintf("guess-%d-0123456789abcdef", i), false); rec.Code != http.StatusUnauthorized {
			t.Fatalf("service's wrong token %d: %d, want 401", i, rec.Code)
		}
	}
	if rec := serve(testToken, false); rec.Code != http.StatusTooManyRequests {
		t.Errorf("service after 3 wrong tokens of its own: %d, want 429", rec.Code)
	}
}

// TestAuthFailureLimit: an address that sent too many invalid tokens gets
// 429 with Retry-After on every protected route, even with a valid token,
// while other addresses and open routes are served; every refusal is
// counted by reason, and no presented token reaches the log.
func TestAuthFailureLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) { c.AuthFailures = api.AuthFailureLimit{Burst: 3, Every: time.Hour} }})
	serve := func(remote, path, token string) *httptest.ResponseRecorder {
		return hostRequest(b, "example.com", remote, path, token) // httptest's own host
	}
	const attacker, other = "198.51.100.9:40000", "203.0.113.5:40000"
	for i := range 3 {
		if rec := serve(attacker, "/v1/dead-letters", fmt.Sprintf("guess-%d-0123456789abcdef", i)); rec.Code != 401 {
			t.Fatalf("guess %d: %d, want 401", i, rec.Code)
		}
	}
	for _, token := range []string{"guess-9-0123456789abcdef", testToken, ""} {
		rec := serve(attacker, "/v1/dead-letters", token)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Content-Type") != api.ProblemContentType {
			t.Fatalf("after 3 guesses, token %.6q: %d %s, want 429 problem", token, rec.Code, rec.Header().Get("Content-Type"))
		}
		if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 3600 {
			t.Errorf("Retry-After %q, want 1 to 3600 seconds", rec.Header().Get("Retry-After"))
		}
	}
	if rec := serve(attacker, "/healthz", ""); rec.Code != 200 {
		t.Errorf("open route for the limited address: %d", rec.Code)
	}
	if rec := serve(other, "/v1/dead-letters", testToken); rec.Code != 200 {
		t.Errorf("another address with a valid token: %d", rec.Code)
	}
	// Missing tokens and forbidden roles do not count towards the limit.
	for range 5 {
		serve(other, "/v1/dead-letters", "")
		serve(other, "/v1/dead-letters", producerToken)
	}
	if rec := serve(other, "/v1/dead-letters", testToken); rec.Code != 200 {
		t.Errorf("after missing tokens and forbidden roles: %d, want 200", rec.Code)
	}
	res := b.do(t, http.MethodGet, "/metrics", "", http.Header{})
	for _, want := range []string{
		`certmail_api_auth_failures_total{reason="invalid"} 3`,
		`certmail_api_auth_failures_total{reason="rate_limited"} 3`,
		`certmail_api_auth_failures_total{reason="missing"} 5`,
		`certmail_api_auth_failures_total{reason="forbidden"} 5`,
	} {
		if !strings.Contains(string(res.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if logs := b.logs.Text(); strings.Contains(logs, "guess-") || strings.Contains(logs, testToken) {
		t.Errorf("the log holds a presented token:\n%s", logs)
	}
}

// TestNoStore: every answer of a route that needs a token (tasks and their
// payloads, dead letters, schedules, the dashboard's JSON API), its
// refusals included, and the problem answered to a request no route takes
// (404, 405) say Cache-Control: no-store, so that no cache keeps
// the email addresses in it; the OpenAPI document, open to all, stays
// cacheable, and so does the dashboard's page, which holds no data.
func TestNoStore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ref api.TaskRef
	res := b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil)
	mustJSON(t, res, http.StatusAccepted, &ref)
	answers := map[string]response{"POST /v1/tasks/resend-dcv": res}
	for _, path := range []string{"/v1/tasks/" + ref.ID, "/v1/tasks/no-such-task", "/v1/dead-letters", "/v1/schedules"} {
		answers["GET "+path] = b.get(t, path)
	}
	for _, path := range []string{"/monitoring/api/queues", "/monitoring/api/queues/default/pending_tasks"} {
		answers["GET "+path] = b.do(t, http.MethodGet, path, "", basicAuth(readerToken))
	}
	// The refusals of those routes too: the rule has no exception to
	// remember but the dashboard's page and files.
	refusals := map[string]struct {
		path   string
		header http.Header
		status int
	}{
		"GET /v1/tasks/x without a token":          {"/v1/tasks/x", http.Header{}, http.StatusUnauthorized},
		"GET /v1/schedules with a producer token":  {"/v1/schedules", bearer(producerToken), http.StatusForbidden},
		"GET /monitoring/api/queues without login": {"/monitoring/api/queues", http.Header{}, http.StatusUnauthorized},
	}
	// The answers of no route (404, 405) are problems like the others.
	for what, r := range map[string]struct{ method, path string }{
		"PATCH /v1/schedules/x": {http.MethodPatch, "/v1/schedules/x"},
		"GET /v1/nowhere":       {http.MethodGet, "/v1/nowhere"},
		"GET /v1//tasks/x":      {http.MethodGet, "/v1//tasks/x"},
	} {
		answers[what] = b.do(t, r.method, r.path, "", bearer(testToken))
	}
	for what, r := range refusals {
		res := b.do(t, http.MethodGet, r.path, "", r.header)
		if res.status != r.status {
			t.Errorf("%s: %d, want %d", what, res.status, r.status)
		}
		answers[what] = res
	}
	for what, res := range answers {
		if got := res.header.Values("Cache-Control"); len(got) != 1 || got[0] != "no-store" {
			t.Errorf("%s: %d, Cache-Control %q, want no-store", what, res.status, got)
		}
	}
	if got := b.get(t, "/v1/openapi.json").header.Get("Cache-Control"); got == "no-store" {
		t.Errorf("GET /v1/openapi.json: Cache-Control %q, want it cacheable", got)
	}
	if res := b.do(t, http.MethodGet, "/monitoring/", "", basicAuth(readerToken)); res.status != http.StatusOK ||
		res.header.Get("Cache-Control") == "no-store" {
		t.Errorf("GET /monitoring/: %d, Cache-Control %q; want 200, the dashboard's page not no-store", res.status, res.header.Get("Cache-Control"))
	}
}

// bearer is the header of a request with token and nothing else.
func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}
