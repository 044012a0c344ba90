package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/deadletter"
)

// loadOpenAPI parses the API's document with kin-openapi once per test
// binary, with strict checks of the formats the document uses: a
// date-time is RFC 3339, a uri absolute, a uri-reference parses.
var loadOpenAPI = sync.OnceValues(func() (*openapi3.T, error) {
	openapi3.DefineStringFormatValidator("date-time", openapi3.NewCallbackValidator(func(s string) error {
		_, err := time.Parse(time.RFC3339Nano, s)
		return err
	}))
	openapi3.DefineStringFormatValidator("uri", openapi3.NewCallbackValidator(func(s string) error {
		u, err := url.Parse(s)
		if err == nil && u.Scheme == "" {
			err = errors.New("not an absolute URI")
		}
		return err
	}))
	openapi3.DefineStringFormatValidator("uri-reference", openapi3.NewCallbackValidator(func(s string) error {
		_, err := url.Parse(s)
		return err
	}))
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder) // the dashboard's page
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("load openapi.json: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.json is not a valid document: %w", err)
	}
	return doc, nil
})

// oasOptional are documented response headers an answer carries only in a
// case the status does not tell: Accept-Encoding only in the 415 to a body
// sent with a Content-Encoding.
var oasOptional = map[string]bool{"Accept-Encoding": true}

// call is one request of TestAnswersMatchOpenAPI, and what its answer must
// be.
type call struct {
	method, path, body string
	header             http.Header // nil: authJSON()
	status             int
	headers            []string // headers the answer must carry beyond the documented ones
}

// checkAnswer sends c to the API and holds its answer to the document: a
// status the operation documents, a body of the documented media type that
// its schema accepts, and every header documented for that status (but
// those of oasOptional). An answer of no route (404, 405, documented in the
// document's description) must be a problem whose status is the HTTP
// status. Every answer carries X-Request-Id. A request the server took
// (2xx) must be one the document accepts.
func (b *bundle) checkAnswer(t *testing.T, c call) response {
	t.Helper()
	doc, err := loadOpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	header := c.header
	if header == nil {
		header = authJSON()
	}
	res := b.do(t, c.method, c.path, c.body, header.Clone())
	what := fmt.Sprintf("%s %s -> %d %.300s", c.method, c.path, res.status, res.body)
	if res.status != c.status {
		t.Errorf("%s: want %d", what, c.status)
	}
	for _, h := range append([]string{"X-Request-Id"}, c.headers...) {
		if res.header.Get(h) == "" {
			t.Errorf("%s: no %s header", what, h)
		}
	}
	if strings.HasPrefix(res.header.Get("Content-Type"), api.ProblemContentType) &&
		!bytes.Contains(res.body, fmt.Appendf(nil, `"status":%d`, res.status)) {
		t.Errorf("%s: the problem's status is not the HTTP status", what)
	}
	req, err := http.NewRequest(c.method, b.url+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	route, params := openAPIRoute(doc, b.srv.Route(req), req)
	if route == nil {
		if res.status != http.StatusNotFound && res.status != http.StatusMethodNotAllowed ||
			res.header.Get("Content-Type") != api.ProblemContentType {
			t.Errorf("%s: no documented operation, and not a 404 or 405 problem", what)
		}
		return res
	}
	rin := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	if res.status < 300 && c.method != http.MethodHead {
		if err := openapi3filter.ValidateRequest(context.Background(), rin); err != nil {
			t.Errorf("%s: the server took a request the document refuses: %v", what, err)
		}
		req.Body = io.NopCloser(strings.NewReader(c.body)) // read by ValidateRequest
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: rin,
		Status:                 res.status,
		Header:                 res.header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(res.body)
	if c.method == http.MethodHead {
		in.Options.ExcludeResponseBody = true
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s: the answer breaks the document: %v", what, err)
	}
	if ref := route.Operation.Responses.Status(res.status); ref != nil && ref.Value != nil {
		for name := range ref.Value.Headers {
			if !oasOptional[name] && res.header.Get(name) == "" {
				t.Errorf("%s: no %s header, which the document gives this answer", what, name)
			}
		}
	}
	return res
}

// openAPIRoute finds the document's operation for req, whose route in the
// server's mux is pattern ("" for none): the document's path that is
// req's path itself (the enqueue routes, one per type), or the pattern's;
// a HEAD is held to the GET. It returns nil when the document has no such
// operation.
func openAPIRoute(doc *openapi3.T, pattern string, req *http.Request) (*routers.Route, map[string]string) {
	method := req.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	path := req.URL.Path
	item := doc.Paths.Value(path)
	if item == nil || item.GetOperation(method) == nil {
		_, path, _ = strings.Cut(pattern, " ")
		if path == "" {
			path = pattern
		}
		item = doc.Paths.Value(path)
	}
	if item == nil || item.GetOperation(method) == nil {
		return nil, nil
	}
	params := map[string]string{}
	tmpl, got := strings.Split(path, "/"), strings.Split(req.URL.Path, "/")
	for i, seg := range tmpl {
		if strings.HasPrefix(seg, "{") && i < len(got) {
			params[strings.Trim(seg, "{}")], _ = url.PathUnescape(got[i])
		}
	}
	return &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: item.GetOperation(method)}, params
}

// TestAnswersMatchOpenAPI drives every operation of the document with a
// valid request and with the errors it documents, and holds each answer to
// the document (checkAnswer): its status, body and headers. Payloads a raw
// asynq producer stored that are JSON but no object are shown as text, as
// the schemas say, in a task and in a dead letter. The dashboard's JSON API
// answers JSON.
func TestAnswersMatchOpenAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	J := func(token string, kv ...string) http.Header {
		h := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	noBody := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }
	bodies := map[string]string{
		"set-emails":        `{"order_id": 123, "additional_emails": ["a@example.com"], "account": ""}`,
		"resend-dcv":        `{"order_id": 124, "domain_approval_emails": [{"domain": "www.example.com", "email": "admin@example.com", "email_domain": "example.com"}], "locale": "en", "only_if_pending": true}`,
		"send-cert":         `{"certificate_id": 456, "emails": ["a@example.com"], "certificate_collect_format": "attachment", "custom_message": "hi"}`,
		"resend-domain-dcv": `{"domain_id": 1234, "name_scope": "sub.example.com", "locale": "en", "email_array": ["admin@example.com"]}`,
	}
	var ids []string
	for typ, body := range bodies {
		path := "/v1/tasks/" + typ
		var ref api.TaskRef
		res := b.checkAnswer(t, call{method: "POST", path: path, body: body, header: J(producerToken), status: 202})
		if json.Unmarshal(res.body, &ref) == nil {
			ids = append(ids, ref.ID)
		}
		b.checkAnswer(t, call{method: "POST", path: path + "?queue=critical&process_in=1h", body: body, status: 202})
		key := J(testToken, "Idempotency-Key", "k-"+typ)
		b.checkAnswer(t, call{method: "POST", path: path + "?process_at=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)),
			body: body, header: key, status: 202})
		b.checkAnswer(t, call{method: "POST", path: path, body: body, header: key, status: 200})
	}
	good := bodies["set-emails"]
	for _, c := range []call{
		{body: `{"order_id":`, status: 400},
		{body: `[1]`, status: 400},
		{body: `{"order_id": 0, "additional_emails": [], "zzz": 1}`, status: 400},
		{body: `{"order_id": 1, "additional_emails": [], "account": "nope"}`, status: 400},
		{path: "?queue=nope", body: good, status: 400},
		{path: "?process_in=1h&process_at=2030-01-01T00:00:00Z", body: good, status: 400},
		{path: "?foo=1", body: good, status: 400},
		{body: good, header: J(testToken, "Idempotency-Key", strings.Repeat("k", 300)), status: 400},
		{body: `{"order_id": 999, "additional_emails": []}`, header: J(testToken, "Idempotency-Key", "k-set-emails"), status: 409},
		{body: good, header: http.Header{"Content-Type": {"application/json"}}, status: 401},
		{body: good, header: J("wrong-token-0123456789"), status: 401},
		{body: good, header: J(readerToken), status: 403},
		{body: good, header: J(testToken, "Sec-Fetch-Site", "cross-site"), status: 403},
		{body: good, header: http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {"text/plain"}}, status: 415},
		{body: good, header: J(testToken, "Content-Encoding", "gzip"), status: 415, headers: []string{"Accept-Encoding"}},
		{body: `{"order_id": 1, "additional_emails": [], "x": "` + strings.Repeat("x", 1<<20) + `"}`, status: 413},
	} {
		c.method, c.path = "POST", "/v1/tasks/set-emails"+c.path
		b.checkAnswer(t, c)
	}
	b.checkAnswer(t, call{method: "POST", path: "/v1/tasks/no-such-type", body: good, status: 404})

	// Tasks, among them a raw producer's payloads that are JSON but no object.
	client := asynq.NewClient(b.redis.ConnOpt())
	t.Cleanup(func() { _ = client.Close() })
	for _, payload := range []string{`[1,2]`, `42`, `null`, `"text"`, "\xff\xfe"} {
		info, err := client.Enqueue(asynq.NewTask("set-emails", []byte(payload)), asynq.ProcessIn(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	for _, id := range ids {
		b.checkAnswer(t, call{method: "GET", path: "/v1/tasks/" + id, header: noBody(readerToken), status: 200})
	}
	b.checkAnswer(t, call{method: "HEAD", path: "/v1/tasks/" + ids[0], header: noBody(readerToken), status: 200})
	b.checkAnswer(t, call{method: "GET", path: "/v1/tasks/no-such-task", header: noBody(readerToken), status: 404})
	b.checkAnswer(t, call{method: "GET", path: "/v1/tasks/x?queue=NOPE!", header: noBody(readerToken), status: 400})

	// Dead letters, one of them a payload that is JSON but no object.
	for _, payload := range []string{`{"order_id":1}`, `[1]`} {
		if err := b.conn.Client.XAdd(ctx, &redis.XAddArgs{Stream: deadletter.Stream, Values: []any{"task_id", "t-" + payload,
			"type", "set-emails", "queue", "default", "payload", payload, "error_code", "not_found|order", "error_message", "gone",
			"http_status", "404", "attempts", "1", "failed_at", time.Now().UTC().Format(time.RFC3339)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b.checkAnswer(t, call{method: "GET", path: "/v1/dead-letters?limit=10", header: noBody(readerToken), status: 200})
	b.checkAnswer(t, call{method: "GET", path: "/v1/dead-letters?limit=0", header: noBody(readerToken), status: 400})
	b.checkAnswer(t, call{method: "POST", path: "/v1/dead-letters/0-1/requeue", header: noBody(testToken), status: 404})
	b.checkAnswer(t, call{method: "DELETE", path: "/v1/dead-letters/0-1", header: noBody(testToken), status: 404})
	b.checkAnswer(t, call{method: "DELETE", path: "/v1/dead-letters/0-1", header: noBody(producerToken), status: 403})

	// Schedules.
	schedule := `{"id": "s1", "cron": "@hourly", "type": "resend-dcv", "payload": {"order_id": 5}, "queue": "bulk", "max_runs": 3}`
	b.checkAnswer(t, call{method: "POST", path: "/v1/schedules", body: schedule, status: 201})
	b.checkAnswer(t, call{method: "POST", path: "/v1/schedules", body: schedule, status: 409})
	b.checkAnswer(t, call{method: "POST", path: "/v1/schedules", body: `{"id": "s2", "cron": "0 0 30 2 *", "type": "set-emails", "payload": {}}`, status: 400})
	b.checkAnswer(t, call{method: "POST", path: "/v1/schedules", body: schedule, header: http.Header{"Authorization": {"Bearer " + testToken}}, status: 415})
	b.checkAnswer(t, call{method: "GET", path: "/v1/schedules", header: noBody(readerToken), status: 200})
	b.checkAnswer(t, call{method: "GET", path: "/v1/schedules/s1", header: noBody(readerToken), status: 200})
	b.checkAnswer(t, call{method: "GET", path: "/v1/schedules/none", header: noBody(readerToken), status: 404})
	b.checkAnswer(t, call{method: "DELETE", path: "/v1/schedules/s1", header: noBody(testToken), status: 204})
	b.checkAnswer(t, call{method: "DELETE", path: "/v1/schedules/s1", header: noBody(testToken), status: 404})

	// Open routes, the dashboard, and requests no route takes.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/openapi.json"} {
		b.checkAnswer(t, call{method: "GET", path: path, header: http.Header{}, status: 200})
	}
	b.checkAnswer(t, call{method: "GET", path: "/monitoring/", header: basicAuth(readerToken), status: 200})
	b.checkAnswer(t, call{method: "GET", path: "/monitoring/api/queues", header: basicAuth(readerToken), status: 200})
	b.checkAnswer(t, call{method: "GET", path: "/monitoring/api/queues/nope/pending_tasks", header: basicAuth(readerToken), status: 404})
	b.checkAnswer(t, call{method: "GET", path: "/monitoring/", header: http.Header{}, status: 401})
	b.checkAnswer(t, call{method: "PATCH", path: "/v1/schedules/s1", header: noBody(testToken), status: 405, headers: []string{"Allow"}})
	b.checkAnswer(t, call{method: "GET", path: "/v1//tasks/x", header: noBody(testToken), status: 404})

	// Redis gone: 503 with Retry-After. Each answer waits for the Redis
	// client's dial retries (about 1.7 s): two routes stand for the others,
	// which TestRedisOutage covers.
	b.redis.Stop()
	b.checkAnswer(t, call{method: "POST", path: "/v1/tasks/set-emails", body: good, status: 503, headers: []string{"Retry-After"}})
	b.checkAnswer(t, call{method: "GET", path: "/v1/dead-letters", header: noBody(testToken), status: 503, headers: []string{"Retry-After"}})
}
