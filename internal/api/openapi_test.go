package api_test

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// openAPIDoc is the part of the document the tests read.
type openAPIDoc struct {
	OpenAPI  string                                `json:"openapi"`
	Security []map[string][]string                 `json:"security"`
	Paths    map[string]map[string]json.RawMessage `json:"paths"`
	Comps    struct {
		Schemas map[string]struct {
			Required   []string                   `json:"required"`
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
		SecuritySchemes map[string]struct {
			Type   string `json:"type"`
			Scheme string `json:"scheme"`
		} `json:"securitySchemes"`
	} `json:"components"`
}

type openAPIOperation struct {
	OperationID string                     `json:"operationId"`
	Security    *[]map[string][]string     `json:"security"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Roles       []string                   `json:"x-certmail-roles"`
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func readOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc
}

// TestOpenAPIRoutes walks the document's paths and methods against the
// server's mux: every documented operation reaches a registered route, and
// every registered route is documented.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := readOpenAPI(t)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	covered := map[string]bool{}
	var enqueueTypes []string
	for path, item := range doc.Paths {
		for method := range item {
			if !slices.Contains(httpMethods, method) {
				continue // parameters, summary, ...
			}
			M := strings.ToUpper(method)
			req := httptest.NewRequest(M, examplePath(path), nil)
			route := b.srv.Route(req)
			switch {
			case route == "":
				t.Errorf("%s %s is documented but no route serves it", M, path)
				continue
			case !slices.Contains(b.srv.Patterns(), route):
				t.Errorf("%s %s reaches %q, which is not a registered pattern", M, path, route)
			case strings.Contains(path, "{") && route != M+" "+path:
				t.Errorf("%s %s reaches route %q, want the same pattern", M, path, route)
			case route == "POST /v1/tasks/{type}":
				enqueueTypes = append(enqueueTypes, strings.TrimPrefix(path, "/v1/tasks/"))
			case !strings.Contains(path, "{") && route != M+" "+path && route != path:
				t.Errorf("%s %s reaches route %q", M, path, route)
			}
			covered[route] = true
		}
	}
	for _, p := range b.srv.Patterns() {
		if !covered[p] {
			t.Errorf("route %q is not documented", p)
		}
	}
	if want := tasks.Types(); !sameSet(enqueueTypes, want) {
		t.Errorf("documented task types %q, want %q", enqueueTypes, want)
	}
}

// TestOpenAPITaskTypeEnums: every enum of the document that names a task
// type (the schedule's type, which ScheduleStatus shares) names exactly
// tasks.Types(), so that the API never answers a type its document forbids.
func TestOpenAPITaskTypeEnums(t *testing.T) {
	t.Parallel()
	found := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				walk(path+"/"+k, e)
			}
		case []any:
			var names []string
			for _, e := range v {
				if s, ok := e.(string); ok {
					names = append(names, s)
				}
			}
			if !strings.HasSuffix(path, "/enum") || !slices.ContainsFunc(names, isTaskType) {
				for i, e := range v {
					walk(path+"/"+strconv.Itoa(i), e)
				}
				return
			}
			found++
			if want := tasks.Types(); !sameSet(names, want) {
				t.Errorf("%s: %q, task types %q", path, names, want)
			}
		}
	}
	walk("#", openAPIMap(t))
	if found == 0 {
		t.Error("no enum of task types found; the schedule's type has one")
	}
}

// isTaskType reports whether s is one of tasks.Types().
func isTaskType(s string) bool { return slices.Contains(tasks.Types(), s) }

// TestOpenAPISecurity checks each operation's security against the server:
// an operation documented as open answers without a token, every other one
// answers 401 and documents that; none answers or documents 405.
func TestOpenAPISecurity(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := readOpenAPI(t)
	if s := doc.Comps.SecuritySchemes["bearerAuth"]; s.Type != "http" || s.Scheme != "bearer" {
		t.Errorf("bearerAuth scheme %+v", s)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearerAuth"] == nil {
		t.Errorf("top-level security %v, want bearerAuth", doc.Security)
	}
	for path, item := range doc.Paths {
		for method, raw := range item {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			var op openAPIOperation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			if op.OperationID == "" {
				t.Errorf("%s %s has no operationId", method, path)
			}
			open := op.Security != nil && len(*op.Security) == 0
			res := b.do(t, strings.ToUpper(method), examplePath(path), "{}", http.Header{"Content-Type": {"application/json"}})
			if got := res.status == http.StatusUnauthorized; got == open {
				t.Errorf("%s %s: documented open=%t, answered %d without a token", method, path, open, res.status)
			}
			// Only the mux answers 405, to a method no pattern of the path
			// takes: never to an operation's own method. The dashboard's
			// operation stands for every route of asynqmon's JSON API, some
			// of which take no GET: it documents their 405
			// (TestOpenAPIDashboardMethodNotAllowed).
			if _, documented := op.Responses["405"]; documented != (path == "/monitoring/") || res.status == http.StatusMethodNotAllowed {
				t.Errorf("%s %s: 405 documented=%t, answered %d", method, path, documented, res.status)
			}
			if _, documented := op.Responses["401"]; documented == open {
				t.Errorf("%s %s: open=%t but 401 documented=%t", method, path, open, documented)
			}
			if _, documented := op.Responses["503"]; strings.HasPrefix(path, "/v1/") && !open && !documented {
				t.Errorf("%s %s needs Redis but does not document 503", method, path)
			}
			// Every route answers 403 to a host CERTMAIL_API_HOSTS leaves out
			// (TestAPIHosts), the open ones too; only the routes that need a
			// token can answer the failure limiter's 429.
			if _, documented := op.Responses["403"]; !documented {
				t.Errorf("%s %s does not document 403", method, path)
			}
			if _, documented := op.Responses["429"]; documented == open {
				t.Errorf("%s %s: open=%t but 429 documented=%t", method, path, open, documented)
			}
			// The roles it documents are those the route's access allows.
			route := b.srv.Route(httptest.NewRequest(strings.ToUpper(method), examplePath(path), nil))
			var want []string
			for _, role := range []string{"producer", "reader", "operator"} {
				if !open && slices.Contains(roleMay[b.srv.Accesses()[route]], role) {
					want = append(want, role)
				}
			}
			if !slices.Equal(op.Roles, want) {
				t.Errorf("%s %s documents roles %q, the route allows %q", method, path, op.Roles, want)
			}
		}
	}
}

// TestOpenAPISchemas holds the schemas to the Go types they describe: the
// same member names, and the payloads' required members as the contract says.
func TestOpenAPISchemas(t *testing.T) {
	t.Parallel()
	doc := readOpenAPI(t)
	tests := []struct {
		schema   string
		goType   any
		required []string
	}{
		{"SetEmails", tasks.SetEmails{}, []string{"order_id", "additional_emails"}},
		{"ResendDCV", tasks.ResendDCV{}, []string{"order_id"}},
		{"DomainApprovalEmail", tasks.DomainApprovalEmail{}, []string{"domain", "email"}},
		{"SendCert", tasks.SendCert{}, []string{"certificate_id", "emails", "certificate_collect_format"}},
		{"ResendDomainDCV", tasks.ResendDomainDCV{}, []string{"domain_id"}},
		{"TaskRef", api.TaskRef{}, nil},
		{"ReplayedTaskRef", api.TaskRef{}, nil},
		{"TaskResult", taskresult.Result{}, []string{"outcome", "attempts", "duration_ms"}},
		{"TaskResultSent", taskresult.Sent{}, []string{"via", "outcome"}},
		{"TaskStatus", ops.TaskStatus{}, nil},
		{"DeadLetter", ops.DeadLetter{}, nil},
		{"DeadLetterPage", api.DeadLetterPage{}, nil},
		{"Problem", api.Problem{}, []string{"type", "title", "status"}},
		{"FieldError", tasks.FieldError{}, []string{"field", "message"}},
		{"Schedule", schedule.Schedule{}, []string{"id", "cron", "type", "payload"}},
		{"ScheduleStatus", schedule.Status{}, []string{"id", "cron", "type", "payload", "source", "state", "runs", "ended"}},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			t.Parallel()
			s, ok := doc.Comps.Schemas[tt.schema]
			if !ok {
				t.Fatalf("no schema %s", tt.schema)
			}
			var got []string
			for name := range s.Properties {
				got = append(got, name)
			}
			want := jsonNames(reflect.TypeOf(tt.goType))
			if !sameSet(got, want) {
				t.Errorf("properties %q, want %q", got, want)
			}
			if tt.required != nil && !slices.Equal(s.Required, tt.required) {
				t.Errorf("required %q, want %q", s.Required, tt.required)
			}
		})
	}
}

// sameSet reports whether a and b hold the same strings, whatever their
// order; it sorts both, so that a message shows them in order.
func sameSet(a, b []string) bool {
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}

// jsonNames lists the JSON member names of a struct type's fields that have
// a json tag naming them, and those of an embedded struct without one, which
// encoding/json promotes into the outer object.
func jsonNames(typ reflect.Type) []string {
	var names []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			names = append(names, jsonNames(f.Type)...)
		case name != "" && name != "-":
			names = append(names, name)
		}
	}
	return names
}

// TestOpenAPIRefs checks that every $ref points at a component that exists.
func TestOpenAPIRefs(t *testing.T) {
	t.Parallel()
	doc := openAPIMap(t)
	var walk func(v any)
	n := 0
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if k == "$ref" {
					n++
					ref, _ := child.(string)
					if !resolves(doc, ref) {
						t.Errorf("$ref %q does not resolve", ref)
					}
					continue
				}
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(doc)
	if n == 0 {
		t.Fatal("no $ref found: the walk is broken")
	}
}

func resolves(doc map[string]any, ref string) bool {
	_, ok := lookup(doc, ref)
	return ok
}

// lookup returns what the local reference ref (a JSON pointer after "#",
// through objects only) names in doc.
func lookup(doc map[string]any, ref string) (any, bool) {
	path, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, false
	}
	var cur any = doc
	for _, part := range strings.Split(path, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.do(t, http.MethodGet, "/v1/openapi.json", "", http.Header{})
	if res.status != 200 || res.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/openapi.json: %d %s", res.status, res.header.Get("Content-Type"))
	}
	if !bytes.Equal(res.body, api.OpenAPI()) {
		t.Error("the served document differs from the embedded one")
	}
}

// TestOpenAPIRetryAfter: the answers that tell a client to come back (503,
// 429) document their Retry-After header.
func TestOpenAPIRetryAfter(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Responses map[string]struct {
				Headers map[string]json.RawMessage `json:"headers"`
			} `json:"responses"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Unavailable", "EnqueueUnavailable", "TooManyAuthFailures"} {
		if _, ok := doc.Components.Responses[name].Headers["Retry-After"]; !ok {
			t.Errorf("response %s does not document Retry-After", name)
		}
	}
}

// resolveSchema follows the $ref of schema, if any, to the schema it names;
// ref is the last $ref followed.
func resolveSchema(doc map[string]any, schema any) (s map[string]any, ref string) {
	s, _ = schema.(map[string]any)
	for range 10 { // a longer chain is a loop
		r, ok := s["$ref"].(string)
		if !ok {
			break
		}
		ref = r
		target, _ := lookup(doc, r)
		s, _ = target.(map[string]any)
	}
	return s, ref
}

// TestOpenAPIListLengths: every list of a task payload documents the
// longest list the rules take as sent, MaxListLength, and says so.
func TestOpenAPIListLengths(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Type        any    `json:"type"` // a string or a list of them
					MaxItems    *int   `json:"maxItems"`
					Description string `json:"description"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	say := fmt.Sprintf("At most %d elements as sent, duplicates included.", tasks.MaxListLength)
	lists := 0
	for _, name := range []string{"SetEmails", "ResendDCV", "SendCert", "ResendDomainDCV"} {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("no schema %s", name)
			continue
		}
		for field, p := range s.Properties {
			if p.Type != "array" {
				continue
			}
			lists++
			switch {
			case p.MaxItems == nil:
				t.Errorf("%s.%s: no maxItems, want %d", name, field, tasks.MaxListLength)
			case *p.MaxItems != tasks.MaxListLength:
				t.Errorf("%s.%s: maxItems %d, want %d", name, field, *p.MaxItems, tasks.MaxListLength)
			}
			if !strings.Contains(p.Description, say) {
				t.Errorf("%s.%s: description does not say %q", name, field, say)
			}
		}
	}
	if lists < 4 {
		t.Errorf("%d lists found, want at least 4: the walk is broken", lists)
	}
}

// TestOpenAPIScheduleBounds: the document's maxLength of a schedule's cron
// and timezone (the components ScheduleCron and ScheduleTimezone, which
// Schedule and ScheduleStatus refer to) are the bounds the API applies.
func TestOpenAPIScheduleBounds(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				MaxLength *int `json:"maxLength"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"ScheduleCron": schedule.MaxCronBytes, "ScheduleTimezone": schedule.MaxTimezoneBytes} {
		if got := doc.Components.Schemas[name].MaxLength; got == nil || *got != want {
			t.Errorf("%s: maxLength %v, want %d", name, got, want)
		}
	}
}

// TestOpenAPIGeneratorFriendly holds the document to rules that common
// client generators need, though OpenAPI 3.1 allows more: no "type" is a
// list of types (oneOf says it), and no $ref reaches into a schema
// (#/components/schemas/Schedule/properties/cron): a $ref names a
// component, #/components/<kind>/<name>, and a shared member is a component
// of its own (oapi-codegen reads neither). An object schema without
// properties says additionalProperties, which openapi-typescript otherwise
// types as an object that can hold no member.
func TestOpenAPIGeneratorFriendly(t *testing.T) {
	t.Parallel()
	component := regexp.MustCompile(`^#/components/[A-Za-z]+/[A-Za-z0-9._-]+$`)
	refs := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			_, props := v["properties"]
			_, extra := v["additionalProperties"]
			if typ, _ := v["type"].(string); typ == "object" && !props && !extra {
				t.Errorf("%s: an object schema with neither properties nor additionalProperties", path)
			}
			for k, e := range v {
				switch _, list := e.([]any); {
				case k == "type" && list && !strings.HasSuffix(path, "/properties"):
					t.Errorf("%s/type is a list of types %v; write a oneOf", path, e)
				case k == "$ref":
					refs++
					if ref, _ := e.(string); !component.MatchString(ref) {
						t.Errorf("%s: $ref %q names no component; make the target a component of its own", path, ref)
					}
				}
				walk(path+"/"+k, e)
			}
		case []any:
			for i, e := range v {
				walk(path+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", openAPIMap(t))
	if refs == 0 {
		t.Fatal("no $ref found: the walk is broken")
	}
}

// documentedAnswer is an operation of the document that documents a
// response status, with that response (a $ref or the response itself).
type documentedAnswer struct {
	method, path string // method as the document writes it (lower case)
	op           map[string]any
	response     any
}

// answersDocumenting lists, in path order, the operations of doc that
// document the response status.
func answersDocumenting(doc map[string]any, status string) []documentedAnswer {
	var out []documentedAnswer
	paths, _ := doc["paths"].(map[string]any)
	for _, path := range slices.Sorted(maps.Keys(paths)) {
		item, _ := paths[path].(map[string]any)
		for _, method := range httpMethods {
			op, ok := item[method].(map[string]any)
			if !ok {
				continue
			}
			responses, _ := op["responses"].(map[string]any)
			if r, ok := responses[status]; ok {
				out = append(out, documentedAnswer{method: method, path: path, op: op, response: r})
			}
		}
	}
	return out
}

// examplePath is path with each parameter given a value.
func examplePath(path string) string { return pathParam.ReplaceAllString(path, "x1") }

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// openAPIMap is the document as generic JSON.
func openAPIMap(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestOpenAPIConflict: every operation that documents 409 is one whose
// route answers it, and the description names that route's cause.
func TestOpenAPIConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := openAPIMap(t)
	// The routes that answer 409 (writeOpsError, writeScheduleError, the
	// dashboard's "Archive all" over asynq's cap), and
	// the words that name each of their causes.
	causes := map[string][]string{
		"POST /v1/tasks/{type}":     {"Idempotency-Key was used before"},
		"POST /v1/schedules":        {"a schedule with this id exists", "CERTMAIL_SCHEDULE_MAX"},
		"DELETE /v1/schedules/{id}": {"schedules file"},
		"/monitoring/":              {"Archive all", "10 000"}, // refuseArchiveOverCap
	}
	documented := map[string]bool{}
	for _, a := range answersDocumenting(doc, "409") {
		route := b.srv.Route(httptest.NewRequest(strings.ToUpper(a.method), examplePath(a.path), nil))
		documented[route] = true
		want, ok := causes[route]
		if !ok {
			t.Errorf("%s %s documents 409, which its route %q never answers", a.method, a.path, route)
			continue
		}
		resolved, _ := resolveSchema(doc, a.response)
		d, _ := resolved["description"].(string)
		for _, cause := range want {
			if !strings.Contains(d, cause) {
				t.Errorf("%s %s: 409 %q does not say %q", a.method, a.path, d, cause)
			}
		}
	}
	for route := range causes {
		if !documented[route] {
			t.Errorf("%s answers 409 but does not document it", route)
		}
	}
}

// TestOpenAPIDashboardMethodNotAllowed: the dashboard's 405, a GET of
// an action, is the answer the document gives it, with the Allow header it
// documents; the document says what the detail and Allow are for readers
// and a read-only dashboard; and the description of the whole API, which
// says every wrong method is a 405 with Allow, sends the reader to it.
func TestOpenAPIDashboardMethodNotAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.checkAnswer(t, call{method: "GET", path: "/monitoring/api/queues/default/archived_tasks:run_all",
		header: basicAuth(testToken), status: 405, headers: []string{"Allow"}})
	doc := openAPIMap(t)
	info, _ := doc["info"].(map[string]any)
	if d, _ := info["description"].(string); !strings.Contains(d, "under `/monitoring/api/`") {
		t.Errorf("the API's description does not say how /monitoring/api/ answers a wrong method")
	}
	get, _ := doc["paths"].(map[string]any)["/monitoring/"].(map[string]any)["get"].(map[string]any)
	r405, _ := get["responses"].(map[string]any)["405"].(map[string]any)
	d, _ := r405["description"].(string)
	for _, want := range []string{"`Allow`", "API Server is running in read-only mode", "empty where it has none", "Nothing is done"} {
		if !strings.Contains(d, want) {
			t.Errorf("the dashboard's 405 %q does not say %q", d, want)
		}
	}
}

// TestOpenAPIDashboardGuard: the description of the dashboard names each
// kind of task id or queue name for which guard.js refuses to send a
// single-task action. Each refusal of guard.js is a line that returns true;
// the table holds the condition of each, and the words that name what it
// refuses. A refusal added to guard.js, or a condition changed, fails the
// test until the table and the description say it.
func TestOpenAPIDashboardGuard(t *testing.T) {
	t.Parallel()
	refusals := []struct {
		condition string   // in guard.js: if (condition) return true;
		named     []string // in the description of /monitoring/
	}{
		{`/[?#%\\]/.test(path)`, []string{"`?`", "`#`", "`%`", "a backslash"}},
		{`/[\x00-\x1f\x7f]| $/.test(path)`, []string{"a control character", "ends with a space"}},
		{`segs[j] === "." || segs[j] === ".."`, []string{"a `.` or `..` segment"}},
	}
	src, err := os.ReadFile("dashboard/guard.js")
	if err != nil {
		t.Fatal(err)
	}
	var conditions []string
	for _, m := range guardRefusal.FindAllStringSubmatch(string(src), -1) {
		conditions = append(conditions, m[1])
	}
	if n := strings.Count(string(src), "return true"); n != len(conditions) {
		t.Fatalf("guard.js returns true %d times, %d of them as if (condition) return true;: read it again", n, len(conditions))
	}
	var known []string
	for _, r := range refusals {
		known = append(known, r.condition)
	}
	if !slices.Equal(conditions, known) {
		t.Errorf("guard.js refuses when\n\t%s\nthe table knows\n\t%s", strings.Join(conditions, "\n\t"), strings.Join(known, "\n\t"))
	}
	get, _ := openAPIMap(t)["paths"].(map[string]any)["/monitoring/"].(map[string]any)["get"].(map[string]any)
	description, _ := get["description"].(string)
	for _, r := range refusals {
		for _, words := range r.named {
			if !strings.Contains(description, words) {
				t.Errorf("guard.js refuses %s, which the description of /monitoring/ does not name (%q)", r.condition, words)
			}
		}
	}
}

// guardRefusal matches a refusal of guard.js, the condition in its group.
var guardRefusal = regexp.MustCompile(`if \((.+)\) return true;`)

// TestOpenAPIChallenges: each 401 answer documents the WWW-Authenticate
// challenges the server sends with it, without a token and with a wrong one.
func TestOpenAPIChallenges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := openAPIMap(t)
	checked := map[string]bool{} // by 401 response: one operation each
	for _, a := range answersDocumenting(doc, "401") {
		resolved, ref := resolveSchema(doc, a.response)
		key := cmp.Or(ref, a.method+" "+a.path)
		if checked[key] {
			continue
		}
		checked[key] = true
		headers, _ := resolved["headers"].(map[string]any)
		challenge, _ := headers["WWW-Authenticate"].(map[string]any)
		described, _ := challenge["description"].(string)
		basic := strings.Contains(fmt.Sprint(a.op["security"]), "basicAuth")
		for _, token := range []string{"", "not-a-token-0123456789abcdef"} {
			h := http.Header{"Content-Type": {"application/json"}}
			switch {
			case token != "" && basic:
				h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("user:"+token)))
			case token != "":
				h.Set("Authorization", "Bearer "+token)
			}
			res := b.do(t, strings.ToUpper(a.method), examplePath(a.path), "{}", h)
			got := res.header.Get("WWW-Authenticate")
			if res.status != http.StatusUnauthorized || got == "" {
				t.Errorf("%s %s with token %q: %d, WWW-Authenticate %q", a.method, a.path, token, res.status, got)
				continue
			}
			if !strings.Contains(described, "`"+got+"`") {
				t.Errorf("%s %s (%s): WWW-Authenticate %q, described as %q", a.method, a.path, key, got, described)
			}
		}
	}
	if len(checked) < 2 {
		t.Errorf("%d 401 answers checked, want the bearer and the dashboard's: the walk is broken", len(checked))
	}
}

// TestOpenAPIMetrics: the /metrics operation names every certmail metric
// the API registers, with its labels.
func TestOpenAPIMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var doc struct {
		Paths map[string]map[string]struct {
			Description string `json:"description"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	described := doc.Paths["/metrics"]["get"].Description
	b.get(t, "/healthz") // a request, so that the request series exist
	families, err := b.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "certmail_") {
			continue
		}
		n++
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		want := "`" + f.GetName() + "`"
		if len(labels) > 0 {
			want = "`" + f.GetName() + "{" + strings.Join(labels, ",") + "}`"
		}
		if !strings.Contains(described, want) {
			t.Errorf("/metrics description %q does not name %s", described, want)
		}
	}
	if n < 3 {
		t.Errorf("%d certmail metrics registered, want at least 3: the gathering is broken", n)
	}
}

// plainInteger is what the document says of every integer a request body
// carries: the parsers take digits only, while JSON Schema's integer is any
// number with a zero fraction (1.0, 1e2).
const plainInteger = "Written as a plain JSON integer, digits only: `1.0` and `1e2` are refused, though JSON Schema counts them as integers."

// TestOpenAPIPlainIntegers: every integer member of a request body says
// that it must be written as digits only, and the server does refuse it
// written with a fraction or an exponent.
func TestOpenAPIPlainIntegers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := openAPIMap(t)
	// A valid body for each operation that takes one.
	valid := map[string]string{
		"/v1/tasks/set-emails":        `{"order_id": 1, "additional_emails": ["a@example.com"]}`,
		"/v1/tasks/resend-dcv":        `{"order_id": 1}`,
		"/v1/tasks/send-cert":         `{"certificate_id": 1, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`,
		"/v1/tasks/resend-domain-dcv": `{"domain_id": 1}`,
		"/v1/schedules":               `{"id": "s1", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}}`,
	}
	checked := 0
	for _, a := range answersDocumenting(doc, "400") {
		body, _ := a.op["requestBody"].(map[string]any)
		content, _ := body["content"].(map[string]any)
		media, _ := content["application/json"].(map[string]any)
		schema, _ := resolveSchema(doc, media["schema"])
		props, _ := schema["properties"].(map[string]any)
		for _, field := range slices.Sorted(maps.Keys(props)) {
			p, _ := resolveSchema(doc, props[field])
			if p["type"] != "integer" {
				continue
			}
			checked++
			if d, _ := p["description"].(string); !strings.Contains(d, plainInteger) {
				t.Errorf("%s %s: %s's description %q does not say %q", a.method, a.path, field, d, plainInteger)
			}
			base, ok := valid[a.path]
			if !ok {
				t.Errorf("%s %s: no valid body to try %s in", a.method, a.path, field)
				continue
			}
			for _, written := range []string{"1.0", "1e2", "1E2"} {
				var m map[string]json.RawMessage
				if err := json.Unmarshal([]byte(base), &m); err != nil {
					t.Fatal(err)
				}
				m[field] = json.RawMessage(written)
				req, _ := json.Marshal(m)
				res := b.do(t, strings.ToUpper(a.method), a.path, string(req), nil)
				if res.status != http.StatusBadRequest {
					t.Errorf("%s %s with %s %s: %d, want 400", a.method, a.path, field, written, res.status)
					continue
				}
				p := mustProblem(t, res, http.StatusBadRequest)
				if !slices.ContainsFunc(p.Errors, func(e tasks.FieldError) bool { return e.Field == field }) {
					t.Errorf("%s %s with %s %s: errors %v do not name it", a.method, a.path, field, written, p.Errors)
				}
			}
		}
	}
	if checked < 6 {
		t.Errorf("%d integer members checked, want at least 6 (ids, sequence, max_runs): the walk is broken", checked)
	}
}

// TestOpenAPIProcessInPattern: the document's pattern for process_in takes
// exactly the durations the server does (enqueue.Parse, then enqueue.Check,
// as the enqueue route runs them), within the bound the description states:
// a client that validates against the document neither refuses a value the
// server takes nor sends one it refuses.
func TestOpenAPIProcessInPattern(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Parameters map[string]struct {
				Schema struct {
					Pattern string `json:"pattern"`
				} `json:"schema"`
			} `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	pattern, err := regexp.Compile(doc.Components.Parameters["ProcessIn"].Schema.Pattern)
	if err != nil {
		t.Fatalf("ProcessIn pattern: %v", err)
	}
	values := []string{
		"0", "+0", "0s", "90s", "1h30m", ".5h", "1.h", "1.5h", "0.000h", "+5m", "00001m", "10h0m0s",
		"1ns", "1us", "1\u00b5s", "1\u03bcs", "1ms",
		"", "-0", "-0s", "-5m", "5", "00", "0.", "1d", "1H", ".h", ".", "h", "++1h", "+-1h", "1.2.3h",
		" 1h", "1h ", "5 minutes", "1h-5m", "0x",
	}
	for _, v := range values {
		req, errs := enqueue.Parse(tasks.TypeResendDCV, []byte(`{"order_id": 1}`), map[string]string{enqueue.OptionProcessIn: v})
		if len(errs) == 0 {
			if _, err := enqueue.Check(req, enqueue.Rules{}); err != nil {
				errs = append(errs, tasks.FieldError{Field: enqueue.OptionProcessIn, Message: err.Error()})
			}
		}
		if server, document := len(errs) == 0, pattern.MatchString(v); server != document {
			t.Errorf("process_in %q: the server takes it %t (%v), the document's pattern %t", v, server, errs, document)
		}
	}
}
