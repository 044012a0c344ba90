package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/api"
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
	param := regexp.MustCompile(`\{[^}]+\}`)
	covered := map[string]bool{}
	var enqueueTypes []string
	for path, item := range doc.Paths {
		for method := range item {
			if !slices.Contains(httpMethods, method) {
				continue // parameters, summary, ...
			}
			M := strings.ToUpper(method)
			req := httptest.NewRequest(M, param.ReplaceAllString(path, "x1"), nil)
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
	sort.Strings(enqueueTypes)
	want := tasks.Types()
	sort.Strings(want)
	if !slices.Equal(enqueueTypes, want) {
		t.Errorf("documented task types %q, want %q", enqueueTypes, want)
	}
}

// TestOpenAPISecurity checks each operation's security against the server:
// an operation documented as open answers without a token, every other one
// answers 401 and documents that.
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
	param := regexp.MustCompile(`\{[^}]+\}`)
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
			res := b.do(t, strings.ToUpper(method), param.ReplaceAllString(path, "x1"), "{}", http.Header{"Content-Type": {"application/json"}})
			if got := res.status == http.StatusUnauthorized; got == open {
				t.Errorf("%s %s: documented open=%t, answered %d without a token", method, path, open, res.status)
			}
			if _, documented := op.Responses["401"]; documented == open {
				t.Errorf("%s %s: open=%t but 401 documented=%t", method, path, open, documented)
			}
			if _, documented := op.Responses["503"]; strings.HasPrefix(path, "/v1/") && !open && !documented {
				t.Errorf("%s %s needs Redis but does not document 503", method, path)
			}
			for _, code := range []string{"403", "429"} {
				if _, documented := op.Responses[code]; documented == open {
					t.Errorf("%s %s: open=%t but %s documented=%t", method, path, open, code, documented)
				}
			}
			// The roles it documents are those the route's access allows.
			route := b.srv.Route(httptest.NewRequest(strings.ToUpper(method), param.ReplaceAllString(path, "x1"), nil))
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
		{"TaskResult", taskresult.Result{}, []string{"outcome", "attempts", "duration_ms"}},
		{"TaskResultSent", taskresult.Sent{}, []string{"via", "outcome"}},
		{"TaskStatus", ops.TaskStatus{}, nil},
		{"DeadLetter", ops.DeadLetter{}, nil},
		{"DeadLetterPage", api.DeadLetterPage{}, nil},
		{"Problem", api.Problem{}, []string{"type", "title", "status"}},
		{"FieldError", tasks.FieldError{}, []string{"field", "message"}},
		{"Schedule", schedule.Schedule{}, []string{"id", "cron", "type", "payload"}},
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
			sort.Strings(got)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("properties %q, want %q", got, want)
			}
			if tt.required != nil && !slices.Equal(s.Required, tt.required) {
				t.Errorf("required %q, want %q", s.Required, tt.required)
			}
		})
	}
}

// jsonNames lists the JSON member names of a struct type.
func jsonNames(typ reflect.Type) []string {
	var names []string
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// TestOpenAPIRefs checks that every $ref points at a component that exists.
func TestOpenAPIRefs(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
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
	path, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = doc
	for _, part := range strings.Split(path, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
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
	for _, name := range []string{"Unavailable", "TooManyAuthFailures"} {
		if _, ok := doc.Components.Responses[name].Headers["Retry-After"]; !ok {
			t.Errorf("response %s does not document Retry-After", name)
		}
	}
}
