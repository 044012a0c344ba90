package api_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/ops"
)

// emails returns n distinct addresses.
func emails(n int) string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("%q", fmt.Sprintf("user%d@example.com", i))
	}
	return "[" + strings.Join(list, ",") + "]"
}

// approvals returns n distinct domain approval entries.
func approvals(n int) string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf(`{"domain":"d%d.example.com","email":"admin@example.com","email_domain":"example.com"}`, i)
	}
	return "[" + strings.Join(list, ",") + "]"
}

func TestEnqueueRejects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bearer := func(token string) http.Header {
		return http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	}
	withCT := func(ct string) http.Header {
		h := http.Header{"Authorization": {"Bearer " + testToken}}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		return h
	}
	withKey := func(key string) http.Header {
		h := authJSON()
		h.Set("Idempotency-Key", key)
		return h
	}
	basic := func(password string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}}
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("user:"+password)))
		return h
	}
	const goodSet = `{"order_id":1,"additional_emails":["a@example.com"]}`
	tests := []struct {
		name   string
		method string // default POST
		path   string // default /v1/tasks/set-emails
		body   string
		header http.Header // nil: authJSON()
		status int
		fields []string // errors[].field of a validation problem, in any order
	}{
		// The body as a whole.
		{name: "malformed JSON", body: `{"order_id": 1,`, status: 400, fields: []string{""}},
		{name: "trailing data", body: goodSet + ` {}`, status: 400, fields: []string{""}},
		{name: "not an object", body: `["a@example.com"]`, status: 400, fields: []string{""}},
		{name: "empty body", body: ``, status: 400, fields: []string{""}},
		{name: "null body", body: `null`, status: 400, fields: []string{""}},
		// JSON types.
		{name: "id as string", body: `{"order_id":"1","additional_emails":[]}`, status: 400, fields: []string{"order_id"}},
		{name: "id as float", body: `{"order_id":1.5,"additional_emails":[]}`, status: 400, fields: []string{"order_id"}},
		{name: "id beyond int64", body: `{"order_id":9223372036854775808,"additional_emails":[]}`, status: 400, fields: []string{"order_id"}},
		{name: "emails as string", body: `{"order_id":1,"additional_emails":"a@example.com"}`, status: 400, fields: []string{"additional_emails"}},
		{name: "email as number", body: `{"order_id":1,"additional_emails":["a@example.com",7]}`, status: 400, fields: []string{"additional_emails[1]"}},
		{name: "approval as string", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":["example.com"]}`, status: 400, fields: []string{"domain_approval_emails[0]"}},
		{name: "locale as number", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"locale":1}`, status: 400, fields: []string{"locale"}},
		// Fields.
		{name: "unknown field", body: `{"order_id":1,"additional_emails":[],"emails":[]}`, status: 400, fields: []string{"emails"}},
		{name: "unknown field named by an address", body: `{"order_id":1,"additional_emails":[],"jill@example.com":1}`, status: 400, fields: []string{`"[email]"`}},
		{name: "unknown nested field", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.com","mail":"x"}]}`, status: 400, fields: []string{"domain_approval_emails[0].mail"}},
		{name: "repeated field", body: `{"order_id":1,"order_id":2,"additional_emails":[]}`, status: 400, fields: []string{"order_id"}},
		{name: "set-emails missing fields", body: `{}`, status: 400, fields: []string{"order_id", "additional_emails"}},
		{name: "resend-dcv missing fields", path: "/v1/tasks/resend-dcv", body: `{}`, status: 400, fields: []string{"order_id"}},
		{name: "send-cert missing fields", path: "/v1/tasks/send-cert", body: `{}`, status: 400, fields: []string{"certificate_id", "emails", "certificate_collect_format"}},
		{name: "approval missing fields", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":[{}]}`, status: 400, fields: []string{"domain_approval_emails[0].domain", "domain_approval_emails[0].email"}},
		// Rules: ids.
		{name: "order id zero", body: `{"order_id":0,"additional_emails":[]}`, status: 400, fields: []string{"order_id"}},
		{name: "order id negative", body: `{"order_id":-5,"additional_emails":[]}`, status: 400, fields: []string{"order_id"}},
		{name: "certificate id zero", path: "/v1/tasks/send-cert", body: `{"certificate_id":0,"emails":["a@example.com"],"certificate_collect_format":"attachment"}`, status: 400, fields: []string{"certificate_id"}},
		// Rules: emails.
		{name: "display name", body: `{"order_id":1,"additional_emails":["Jill <jill@example.com>"]}`, status: 400, fields: []string{"additional_emails[0]"}},
		{name: "email too long", body: `{"order_id":1,"additional_emails":["` + strings.Repeat("a", 60) + "@" + strings.Repeat("b", 190) + `.com"]}`, status: 400, fields: []string{"additional_emails[0]"}},
		{name: "local part not a dot-atom", body: `{"order_id":1,"additional_emails":["a..b@example.com"]}`, status: 400, fields: []string{"additional_emails[0]"}},
		{name: "email domain not a DNS name", body: `{"order_id":1,"additional_emails":["a@localhost"]}`, status: 400, fields: []string{"additional_emails[0]"}},
		{name: "email not ASCII", body: `{"order_id":1,"additional_emails":["jöe@example.com"]}`, status: 400, fields: []string{"additional_emails[0]"}},
		{name: "empty email", body: `{"order_id":1,"additional_emails":[""]}`, status: 400, fields: []string{"additional_emails[0]"}},
		{name: "every bad email listed", body: `{"additional_emails":["bad","a@example.com","<c@example.com>"]}`, status: 400, fields: []string{"order_id", "additional_emails[0]", "additional_emails[2]"}},
		{name: "more than 100 emails", body: `{"order_id":1,"additional_emails":` + emails(101) + `}`, status: 400, fields: []string{"additional_emails"}},
		{name: "send-cert emails empty", path: "/v1/tasks/send-cert", body: `{"certificate_id":1,"emails":[],"certificate_collect_format":"attachment"}`, status: 400, fields: []string{"emails"}},
		{name: "send-cert bad email", path: "/v1/tasks/send-cert", body: `{"certificate_id":1,"emails":["a@example.com","not-an-address"],"certificate_collect_format":"attachment"}`, status: 400, fields: []string{"emails[1]"}},
		// Rules: approvals.
		{name: "domain not a DNS name", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":[{"domain":"-bad.example.com","email":"a@example.com"}]}`, status: 400, fields: []string{"domain_approval_emails[0].domain"}},
		{name: "email_domain not a DNS name", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.com","email_domain":"com"}]}`, status: 400, fields: []string{"domain_approval_emails[0].email_domain"}},
		{name: "domain outside email_domain", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.org","email":"a@example.com","email_domain":"example.com"}]}`, status: 400, fields: []string{"domain_approval_emails[0].email_domain"}},
		{name: "approval email bad", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"admin"}]}`, status: 400, fields: []string{"domain_approval_emails[0].email"}},
		{name: "more than 100 approvals", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"domain_approval_emails":` + approvals(101) + `}`, status: 400, fields: []string{"domain_approval_emails"}},
		{name: "locale word", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"locale":"english"}`, status: 400, fields: []string{"locale"}},
		{name: "locale with hyphen", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"locale":"en-US"}`, status: 400, fields: []string{"locale"}},
		{name: "only_if_pending as string", path: "/v1/tasks/resend-dcv", body: `{"order_id":1,"only_if_pending":"yes"}`, status: 400, fields: []string{"only_if_pending"}},
		// Rules: resend-domain-dcv.
		{name: "resend-domain-dcv missing fields", path: "/v1/tasks/resend-domain-dcv", body: `{}`, status: 400, fields: []string{"domain_id"}},
		{name: "resend-domain-dcv with an order id", path: "/v1/tasks/resend-domain-dcv", body: `{"order_id":1}`, status: 400, fields: []string{"order_id", "domain_id"}},
		{name: "resend-domain-dcv every rule", path: "/v1/tasks/resend-domain-dcv",
			body:   `{"domain_id":0,"name_scope":"*.example.com","locale":"en-US","email_array":["a@example.com","Jill <j@example.com>"],"account":"other"}`,
			status: 400, fields: []string{"domain_id", "name_scope", "locale", "email_array[1]", "account"}},
		{name: "resend-domain-dcv more than 100 emails", path: "/v1/tasks/resend-domain-dcv", body: `{"domain_id":1,"email_array":` + emails(101) + `}`, status: 400, fields: []string{"email_array"}},
		// Rules: send-cert.
		{name: "collect format unknown", path: "/v1/tasks/send-cert", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"pdf"}`, status: 400, fields: []string{"certificate_collect_format"}},
		{name: "custom message too long", path: "/v1/tasks/send-cert", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":"` + strings.Repeat("é", 2001) + `"}`, status: 400, fields: []string{"custom_message"}},
		{name: "custom message control character", path: "/v1/tasks/send-cert", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":"hi\u0007"}`, status: 400, fields: []string{"custom_message"}},
		// Rules: account and sequence.
		{name: "account malformed", body: `{"order_id":1,"additional_emails":[],"account":"Prod!"}`, status: 400, fields: []string{"account"}},
		{name: "account not configured", body: `{"order_id":1,"additional_emails":[],"account":"other"}`, status: 400, fields: []string{"account"}},
		{name: "sequence negative", body: `{"order_id":1,"additional_emails":[],"sequence":-1}`, status: 400, fields: []string{"sequence"}},
		// Transport.
		{name: "oversized body", body: `{"order_id":1,"additional_emails":["` + strings.Repeat("a", api.MaxBodyBytes) + `"]}`, status: 413},
		{name: "no content type", body: goodSet, header: withCT(""), status: 415},
		{name: "text content type", body: goodSet, header: withCT("text/plain"), status: 415},
		{name: "form content type", body: goodSet, header: withCT("application/x-www-form-urlencoded"), status: 415},
		{name: "json with latin1 charset", body: goodSet, header: withCT("application/json; charset=latin1"), status: 415},
		{name: "no token", body: goodSet, header: http.Header{"Content-Type": {"application/json"}}, status: 401},
		{name: "wrong token", body: goodSet, header: bearer("tok-wrong"), status: 401},
		{name: "token prefix", body: goodSet, header: bearer(testToken[:len(testToken)-1]), status: 401},
		{name: "basic auth on the API", body: goodSet, header: basic(testToken), status: 401},
		{name: "unknown type", path: "/v1/tasks/set-email", body: goodSet, status: 404},
		{name: "type in another case", path: "/v1/tasks/Set-Emails", body: goodSet, status: 404},
		{name: "no type", path: "/v1/tasks/", body: goodSet, status: 404},
		{name: "wrong method PUT", method: http.MethodPut, body: goodSet, status: 405},
		{name: "wrong method PATCH", method: http.MethodPatch, body: goodSet, status: 405},
		// Query options.
		{name: "queue malformed", path: "/v1/tasks/set-emails?queue=Bad%20Queue", body: goodSet, status: 400, fields: []string{"queue"}},
		{name: "queue empty", path: "/v1/tasks/set-emails?queue=", body: goodSet, status: 400, fields: []string{"queue"}},
		{name: "queue too long", path: "/v1/tasks/set-emails?queue=" + strings.Repeat("q", 64), body: goodSet, status: 400, fields: []string{"queue"}},
		{name: "queue twice", path: "/v1/tasks/set-emails?queue=a&queue=b", body: goodSet, status: 400, fields: []string{"queue"}},
		{name: "process_at not RFC 3339", path: "/v1/tasks/set-emails?process_at=tomorrow", body: goodSet, status: 400, fields: []string{"process_at"}},
		{name: "process_at without zone", path: "/v1/tasks/set-emails?process_at=2030-01-02T15:04:05", body: goodSet, status: 400, fields: []string{"process_at"}},
		{name: "process_in not a duration", path: "/v1/tasks/set-emails?process_in=5%20minutes", body: goodSet, status: 400, fields: []string{"process_in"}},
		{name: "process_in negative", path: "/v1/tasks/set-emails?process_in=-5m", body: goodSet, status: 400, fields: []string{"process_in"}},
		{name: "process_at centuries ahead", path: "/v1/tasks/set-emails?process_at=2999-01-01T00:00:00Z", body: goodSet, status: 400, fields: []string{"process_at"}},
		{name: "process_in over 43800h", path: "/v1/tasks/set-emails?process_in=2000000h", body: goodSet, status: 400, fields: []string{"process_in"}},
		{name: "process_at and process_in", path: "/v1/tasks/set-emails?process_at=2030-01-02T15:04:05Z&process_in=5m", body: goodSet, status: 400, fields: []string{"process_at"}},
		{name: "unknown parameter", path: "/v1/tasks/set-emails?delay=5s", body: goodSet, status: 400, fields: []string{"delay"}},
		{name: "unknown parameter not an identifier", path: "/v1/tasks/set-emails?a%40example.com=1", body: goodSet, status: 400, fields: []string{"query"}},
		{name: "malformed query", path: "/v1/tasks/set-emails?queue=%zz", body: goodSet, status: 400, fields: []string{"query"}},
		{name: "query and payload problems together", path: "/v1/tasks/set-emails?process_in=soon&queue=Bad", body: `{"order_id":0,"additional_emails":[]}`, status: 400, fields: []string{"process_in", "queue", "order_id"}},
		// Idempotency-Key.
		{name: "idempotency key too long", body: goodSet, header: withKey(strings.Repeat("k", 256)), status: 400, fields: []string{"Idempotency-Key"}},
		{name: "idempotency key not printable", body: goodSet, header: withKey("clé"), status: 400, fields: []string{"Idempotency-Key"}},
		{name: "idempotency key twice", body: goodSet, header: http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {"application/json"}, "Idempotency-Key": {"a", "b"}}, status: 400, fields: []string{"Idempotency-Key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			method, path := tt.method, tt.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/v1/tasks/set-emails"
			}
			res := b.do(t, method, path, tt.body, tt.header)
			p := mustProblem(t, res, tt.status)
			if bytes.Contains(res.body, []byte("@")) {
				t.Errorf("the problem repeats an address: %s", res.body)
			}
			switch tt.status {
			case 401:
				if got := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
					t.Errorf("WWW-Authenticate %q, want a Bearer challenge", got)
				}
			case 405:
				if allow := res.header.Get("Allow"); !strings.Contains(allow, "POST") {
					t.Errorf("Allow %q, want POST among them", allow)
				}
			}
			if tt.fields != nil {
				if p.Type != api.TypeValidation {
					t.Errorf("type %q, want %q", p.Type, api.TypeValidation)
				}
				var got []string
				for _, fe := range p.Errors {
					got = append(got, fe.Field)
					if fe.Message == "" {
						t.Errorf("field %q has no message", fe.Field)
					}
				}
				want := slices.Clone(tt.fields)
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("error fields %q, want %q; body: %s", got, want, res.body)
				}
			} else if len(p.Errors) > 0 {
				t.Errorf("unexpected errors: %s", res.body)
			}
			b.assertUntouched(t)
		})
	}
}

func TestEnqueueAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, body, contentType string
		queue                         string
		wantPayload                   map[string]any // members of the stored payload
	}{
		{
			name:        "set-emails",
			path:        "/v1/tasks/set-emails",
			body:        `{"order_id":123,"additional_emails":[" Jill@EXAMPLE.com","jill@example.com","leon@example.com"]}`,
			queue:       "default",
			wantPayload: map[string]any{"order_id": 123.0, "additional_emails": []any{"Jill@example.com", "leon@example.com"}},
		},
		{
			name:        "set-emails clearing the list",
			path:        "/v1/tasks/set-emails",
			body:        `{"order_id":7,"additional_emails":[],"account":"eu"}`,
			queue:       "default",
			wantPayload: map[string]any{"order_id": 7.0, "additional_emails": []any{}, "account": "eu"},
		},
		{
			name:        "set-emails with 101 entries, 100 after duplicates",
			path:        "/v1/tasks/set-emails",
			body:        `{"order_id":8,"additional_emails":` + strings.TrimSuffix(emails(100), "]") + `,"USER0@example.com"]}`,
			queue:       "default",
			wantPayload: map[string]any{"order_id": 8.0},
		},
		{
			name:        "resend-dcv",
			path:        "/v1/tasks/resend-dcv?queue=critical",
			body:        `{"order_id":123,"domain_approval_emails":[{"domain":"Sub.Example.com.","email":"admin@example.com","email_domain":"example.com"}],"locale":"en_US"}`,
			queue:       "critical",
			wantPayload: map[string]any{"order_id": 123.0, "locale": "en_US", "domain_approval_emails": []any{map[string]any{"domain": "sub.example.com", "email": "admin@example.com", "email_domain": "example.com"}}},
		},
		{
			name:        "resend-dcv with nulls",
			path:        "/v1/tasks/resend-dcv",
			body:        `{"order_id":5,"domain_approval_emails":null,"locale":null}`,
			queue:       "default",
			wantPayload: map[string]any{"order_id": 5.0},
		},
		{
			name:        "resend-dcv only if pending",
			path:        "/v1/tasks/resend-dcv",
			body:        `{"order_id":6,"only_if_pending":true}`,
			queue:       "default",
			wantPayload: map[string]any{"order_id": 6.0, "only_if_pending": true},
		},
		{
			name:        "resend-domain-dcv",
			path:        "/v1/tasks/resend-domain-dcv?queue=bulk",
			body:        `{"domain_id":1234,"name_scope":"Sub.Example.com","locale":"en","email_array":["admin@example.com","ADMIN@example.com"]}`,
			queue:       "bulk",
			wantPayload: map[string]any{"domain_id": 1234.0, "name_scope": "sub.example.com", "locale": "en", "email_array": []any{"admin@example.com"}},
		},
		{
			name:        "send-cert with charset",
			path:        "/v1/tasks/send-cert?queue=bulk",
			body:        `{"certificate_id":456,"emails":["a@example.com"],"certificate_collect_format":"downloadlink","custom_message":"Hello,\n\tthe certificate."}`,
			contentType: "application/json; charset=UTF-8",
			queue:       "bulk",
			wantPayload: map[string]any{"certificate_id": 456.0, "emails": []any{"a@example.com"}, "certificate_collect_format": "downloadlink", "custom_message": "Hello,\n\tthe certificate."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			h := authJSON()
			if tt.contentType != "" {
				h.Set("Content-Type", tt.contentType)
			}
			var ref api.TaskRef
			res := b.do(t, http.MethodPost, tt.path, tt.body, h)
			mustJSON(t, res, http.StatusAccepted, &ref)
			typ := strings.TrimPrefix(strings.SplitN(tt.path, "?", 2)[0], "/v1/tasks/")
			if ref.ID == "" || ref.Type != typ || ref.Queue != tt.queue || ref.State != "pending" || ref.StatusURL != "/v1/tasks/"+ref.ID {
				t.Errorf("answer %+v", ref)
			}
			if loc := res.header.Get("Location"); loc != ref.StatusURL {
				t.Errorf("Location %q, want %q", loc, ref.StatusURL)
			}
			var st ops.TaskStatus
			mustJSON(t, b.get(t, ref.StatusURL), http.StatusOK, &st)
			if st.ID != ref.ID || st.Type != typ || st.Queue != tt.queue || st.State != "pending" {
				t.Errorf("status %+v", st)
			}
			var payload map[string]any
			if err := json.Unmarshal(st.Payload, &payload); err != nil {
				t.Fatalf("payload %s: %v", st.Payload, err)
			}
			for k, want := range tt.wantPayload {
				if got, _ := json.Marshal(payload[k]); string(got) != mustMarshal(t, want) {
					t.Errorf("payload %s = %s, want %s", k, got, mustMarshal(t, want))
				}
			}
			if info, err := b.inspector.GetTaskInfo(tt.queue, ref.ID); err != nil || info.Type != typ {
				t.Errorf("inspector: %v, %+v", err, info)
			}
			if n := b.taskCount(t); n != 1 {
				t.Errorf("%d tasks in Redis, want 1", n)
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEnqueueScheduled(t *testing.T) {
	t.Parallel()
	at := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Second)
	tests := []struct {
		name  string
		query string
		want  time.Time     // for process_at
		in    time.Duration // for process_in: from when the request is sent
		slack time.Duration
	}{
		{"process_in", "?process_in=1h30m", time.Time{}, 90 * time.Minute, 10 * time.Second},
		{"process_at", "?process_at=" + at.Format(time.RFC3339), at, 0, time.Second},
		{"process_at with offset", "?process_at=" + strings.ReplaceAll(at.In(time.FixedZone("", 2*3600)).Format(time.RFC3339), "+", "%2B"), at, 0, time.Second},
		// RFC 3339 (section 5.6) allows a lower-case t and z.
		{"process_at with lower-case t and z", "?process_at=" + strings.ToLower(at.Format(time.RFC3339)), at, 0, time.Second},
		{"process_in .5h", "?process_in=.5h", time.Time{}, 30 * time.Minute, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if tt.in != 0 {
				tt.want = time.Now().Add(tt.in)
			}
			var ref api.TaskRef
			mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv"+tt.query, `{"order_id":9}`, nil), http.StatusAccepted, &ref)
			if ref.State != "scheduled" {
				t.Errorf("state %q, want scheduled", ref.State)
			}
			var st ops.TaskStatus
			mustJSON(t, b.get(t, ref.StatusURL), http.StatusOK, &st)
			if st.State != "scheduled" || st.NextProcessAt == nil {
				t.Fatalf("status %+v", st)
			}
			if d := st.NextProcessAt.Sub(tt.want); d < -tt.slack || d > tt.slack {
				t.Errorf("next_process_at %v, want %v", st.NextProcessAt, tt.want)
			}
			info, err := b.inspector.GetTaskInfo("default", ref.ID)
			if err != nil || info.State != asynq.TaskStateScheduled {
				t.Errorf("inspector: %v %+v", err, info)
			}
		})
	}
}

func TestEnqueueIdempotency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	withKey := func(key string) http.Header {
		h := authJSON()
		h.Set("Idempotency-Key", key)
		return h
	}
	const body = `{"order_id":42,"additional_emails":["a@example.com"],"sequence":5}`
	var first api.TaskRef
	res := b.do(t, http.MethodPost, "/v1/tasks/set-emails", body, withKey("order-42-v5"))
	mustJSON(t, res, http.StatusAccepted, &first)

	// The same request again: 200 and the same task, nothing enqueued.
	var replay api.TaskRef
	res = b.do(t, http.MethodPost, "/v1/tasks/set-emails", body, withKey("order-42-v5"))
	mustJSON(t, res, http.StatusOK, &replay)
	if replay != first {
		t.Errorf("replay %+v, want %+v", replay, first)
	}
	if res.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("no Idempotent-Replayed header on a replay")
	}
	// The same payload spelled differently is the same request.
	respaced := `{ "sequence": 5, "additional_emails": ["a@EXAMPLE.com"], "order_id": 42 }`
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/set-emails", respaced, withKey("order-42-v5")), http.StatusOK, &replay)
	if replay.ID != first.ID {
		t.Errorf("respaced replay got task %s, want %s", replay.ID, first.ID)
	}

	// Another time is the same request: the time a task runs is not part of
	// it (a key sent before an upgrade must keep matching), and the replay
	// keeps the first task's time: it still runs now.
	at := time.Now().Add(3 * time.Hour).UTC().Format(time.RFC3339)
	for _, query := range []string{"?process_in=1h", "?process_at=" + at} {
		res := b.do(t, http.MethodPost, "/v1/tasks/set-emails"+query, body, withKey("order-42-v5"))
		mustJSON(t, res, http.StatusOK, &replay)
		if replay != first {
			t.Errorf("replay with %s: %+v, want the first task %+v", query, replay, first)
		}
		info, err := b.inspector.GetTaskInfo(first.Queue, first.ID)
		if err != nil || info.State != asynq.TaskStatePending {
			t.Errorf("after a replay with %s, the task: %v %+v, want it pending", query, err, info)
		}
	}

	// The same key with another body, or another queue: 409.
	conflicts := []struct{ path, body string }{
		{"/v1/tasks/set-emails", `{"order_id":42,"additional_emails":["b@example.com"],"sequence":5}`},
		{"/v1/tasks/set-emails?queue=bulk", body},
	}
	for _, c := range conflicts {
		res := b.do(t, http.MethodPost, c.path, c.body, withKey("order-42-v5"))
		mustProblem(t, res, http.StatusConflict)
		if bytes.Contains(res.body, []byte("@")) {
			t.Errorf("the problem repeats an address: %s", res.body)
		}
	}
	if n := b.taskCount(t); n != 1 {
		t.Errorf("%d tasks in Redis, want 1", n)
	}

	// Another key is another task.
	var second api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/set-emails", body, withKey("order-42-v5-again")), http.StatusAccepted, &second)
	if second.ID == first.ID {
		t.Errorf("a new key gave the same task %s", second.ID)
	}
	if n := b.taskCount(t); n != 2 {
		t.Errorf("%d tasks in Redis, want 2", n)
	}
}

// TestEnqueueIdempotencyPerToken: Idempotency-Keys are scoped by the token
// that sends them. Two producers that pick the same key get a task each;
// one cannot claim another's keys first nor be handed another's task by
// sending its request under its key; each replays its own. No token
// reaches Redis.
func TestEnqueueIdempotencyPerToken(t *testing.T) {
	t.Parallel()
	const producerB = "tok-producer-b-7f2c9e10"
	b := setup(t, setupOpts{configure: func(c *api.Config) {
		c.Tokens = append(c.Tokens, api.Token{Secret: producerB, Role: api.RoleProducer})
	}})
	send := func(token, path, body, key string) response {
		h := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}, "Idempotency-Key": {key}}
		return b.do(t, http.MethodPost, path, body, h)
	}
	const setA = `{"order_id": 123, "additional_emails": ["a@example.com"]}`
	var byB, byA, replay api.TaskRef
	mustJSON(t, send(producerB, "/v1/tasks/resend-dcv", `{"order_id": 999}`, "crm-7781"), http.StatusAccepted, &byB)
	mustJSON(t, send(producerToken, "/v1/tasks/set-emails", setA, "crm-7781"), http.StatusAccepted, &byA)
	if byA.ID == byB.ID {
		t.Fatalf("two producers' crm-7781 gave one task %s", byA.ID)
	}
	res := send(producerToken, "/v1/tasks/set-emails", setA, "crm-7781")
	mustJSON(t, res, http.StatusOK, &replay)
	if replay.ID != byA.ID || res.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("producer A's replay: %+v, want task %s replayed", replay, byA.ID)
	}
	// B sends A's request under A's key: B's own key, B's own task or conflict.
	mustProblem(t, send(producerB, "/v1/tasks/set-emails", setA, "crm-7781"), http.StatusConflict)
	mustJSON(t, send(producerToken, "/v1/tasks/set-emails", setA, "crm-7782"), http.StatusAccepted, &byA)
	var second api.TaskRef
	mustJSON(t, send(producerB, "/v1/tasks/set-emails", setA, "crm-7782"), http.StatusAccepted, &second)
	if second.ID == byA.ID {
		t.Errorf("producer B was handed producer A's task %s", byA.ID)
	}
	if n := b.taskCount(t); n != 4 {
		t.Errorf("%d tasks in Redis, want 4", n)
	}
	ctx := context.Background()
	keys, err := b.redis.Client().Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		v, _ := b.redis.Client().Dump(ctx, k).Result()
		for _, tok := range []string{producerToken, producerB} {
			if strings.Contains(k, tok) || strings.Contains(v, tok) {
				t.Errorf("Redis key %s holds a token", k)
			}
		}
	}
}

// TestEnqueueIdempotencyWithoutAuth: without authentication every request
// shares one scope: the same key replays.
func TestEnqueueIdempotencyWithoutAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) { c.Tokens, c.InsecureNoAuth = nil, true }})
	h := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"crm-7781"}}
	const body = `{"order_id": 999}`
	var first, replay api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", body, h), http.StatusAccepted, &first)
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", body, h), http.StatusOK, &replay)
	if replay.ID != first.ID {
		t.Errorf("without authentication the same key gave task %s, then %s", first.ID, replay.ID)
	}
}

// A replay answers with the task as it is now, the state GET gives: a
// client that retried after a timeout read "pending" for a task the worker
// had long dead-lettered. One that no queue holds any more is "unknown".
func TestEnqueueIdempotencyReplayIsCurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{worker: true}) // its DigiCert knows no order: every task is dead-lettered
	header := authJSON()
	header.Set("Idempotency-Key", "crm-7781")
	const body = `{"order_id":7781,"additional_emails":["a@example.com"]}`
	var first api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/set-emails", body, header), http.StatusAccepted, &first)
	now := b.waitState(t, first.ID, "archived")

	var replay api.TaskRef
	res := b.do(t, http.MethodPost, "/v1/tasks/set-emails", body, header)
	mustJSON(t, res, http.StatusOK, &replay)
	want := first
	want.State = now.State
	if replay != want || res.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay of a dead-lettered task = %+v (Idempotent-Replayed %q), want %+v", replay, res.header.Get("Idempotent-Replayed"), want)
	}

	if err := b.inspector.DeleteTask(first.Queue, first.ID); err != nil {
		t.Fatal(err)
	}
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/set-emails", body, header), http.StatusOK, &replay)
	want.State = ops.StateUnknown
	if replay != want {
		t.Errorf("replay of a deleted task = %+v, want %+v", replay, want)
	}
	if n := b.taskCount(t); n != 0 {
		t.Errorf("%d tasks in Redis after the replays, want 0", n)
	}
}

func TestEnqueueBodyLimit(t *testing.T) {
	t.Parallel()
	const payload = `{"order_id":1,"additional_emails":[]}`
	tests := []struct {
		name    string
		size    int  // bytes of body: the payload padded with spaces
		chunked bool // send without Content-Length
		status  int
	}{
		{"exactly 1 MiB", api.MaxBodyBytes, false, http.StatusAccepted},
		{"exactly 1 MiB chunked", api.MaxBodyBytes, true, http.StatusAccepted},
		{"1 MiB and a byte", api.MaxBodyBytes + 1, false, http.StatusRequestEntityTooLarge},
		{"1 MiB and a byte chunked", api.MaxBodyBytes + 1, true, http.StatusRequestEntityTooLarge},
		{"8 MiB chunked", 8 * api.MaxBodyBytes, true, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			body := payload + strings.Repeat(" ", tt.size-len(payload))
			var r io.Reader = strings.NewReader(body)
			if tt.chunked {
				r = io.MultiReader(r) // hides the length from the client
			}
			req, err := http.NewRequest(http.MethodPost, b.url+"/v1/tasks/set-emails", r)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = authJSON()
			res, err := b.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			answer := response{status: res.StatusCode, header: res.Header, body: got}
			if tt.status == http.StatusAccepted {
				var ref api.TaskRef
				mustJSON(t, answer, tt.status, &ref)
				return
			}
			mustProblem(t, answer, tt.status)
			b.assertUntouched(t)
		})
	}
}

// TestEnqueueContentEncoding: a body sent with a content coding other than
// identity is answered 415 naming the coding (cut to a bounded length),
// with Accept-Encoding: identity, before the body is read, rather than read
// as raw bytes and refused as invalid UTF-8; nothing is enqueued. identity
// itself, in any case, is taken.
func TestEnqueueContentEncoding(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const payload = `{"order_id":77,"additional_emails":[]}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	with := func(codings ...string) http.Header {
		h := authJSON()
		h["Content-Encoding"] = codings
		return h
	}
	long := strings.Repeat("x", 10000)
	tests := []struct {
		name, path, body string
		header           http.Header
		named            string // the coding the 415 names; "" for an accepted body
	}{
		{"gzip", "/v1/tasks/set-emails", gz.String(), with("gzip"), `"gzip"`},
		{"br", "/v1/tasks/set-emails", payload, with("br"), `"br"`},
		{"identity then gzip", "/v1/tasks/set-emails", gz.String(), with("identity, gzip"), `"gzip"`},
		{"gzip on a second line", "/v1/tasks/set-emails", gz.String(), with("identity", "gzip"), `"gzip"`},
		{"a long coding", "/v1/tasks/set-emails", payload, with(long), `"` + long[:64] + `"`},
		{"schedule in gzip", "/v1/schedules", gz.String(), with("gzip"), `"gzip"`},
		{"identity", "/v1/tasks/set-emails", payload, with("identity"), ""},
		{"Identity", "/v1/tasks/set-emails", payload, with("Identity"), ""},
	}
	for _, tt := range tests {
		res := b.do(t, http.MethodPost, tt.path, tt.body, tt.header)
		if tt.named == "" {
			mustJSON(t, res, http.StatusAccepted, &api.TaskRef{})
			continue
		}
		if res.status != http.StatusUnsupportedMediaType {
			t.Errorf("%s: %d %.200s, want 415", tt.name, res.status, res.body)
			continue
		}
		p := mustProblem(t, res, http.StatusUnsupportedMediaType)
		if !strings.Contains(p.Detail, "Content-Encoding "+tt.named) || len(p.Detail) > 200 {
			t.Errorf("%s: detail %.300q, want it to name Content-Encoding %.80s, in at most 200 bytes", tt.name, p.Detail, tt.named)
		}
		if got := res.header.Get("Accept-Encoding"); got != "identity" {
			t.Errorf("%s: Accept-Encoding %q, want identity", tt.name, got)
		}
	}
	if n := b.taskCount(t); n != 2 {
		t.Errorf("%d tasks, want the 2 sent as identity", n)
	}

	// Before the body is read: a client that waits for 100 Continue gets
	// the 415 instead, and none of its body was asked for.
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/tasks/set-emails HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n", testToken)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("waiting for 100 Continue: %d, want 415 without asking for the body", res.StatusCode)
	}
}

func TestTaskNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{
		"/v1/tasks/6f1c2a4e-0000-4000-8000-000000000000",
		"/v1/tasks/a%20b",
		"/v1/tasks/" + strings.Repeat("x", 300),
	} {
		t.Run(path[:min(len(path), 40)], func(t *testing.T) {
			t.Parallel()
			mustProblem(t, b.get(t, path), http.StatusNotFound)
		})
	}
	// With a task in a queue, other ids are still not found.
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":1}`, nil), http.StatusAccepted, &api.TaskRef{})
	mustProblem(t, b.get(t, "/v1/tasks/not-this-one"), http.StatusNotFound)
}

// A task looked for in a queue asynq has never known (?queue=defualt) is
// 404, and the detail says so and names the queues asynq knows: the name is
// likely mistyped. A known queue that does not hold the id says only that.
func TestTaskInAQueueAsynqHasNeverKnown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":1}`, nil), http.StatusAccepted, &ref)
	p := mustProblem(t, b.get(t, "/v1/tasks/"+ref.ID+"?queue=defualt"), http.StatusNotFound)
	if !strings.HasPrefix(p.Detail, "queue defualt holds no task with this id: asynq has never known queue defualt (it knows: default)") {
		t.Errorf("?queue=defualt: detail %q; want it to say asynq has never known the queue, and which it knows", p.Detail)
	}
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv?queue=critical", `{"order_id":2}`, nil), http.StatusAccepted, &api.TaskRef{})
	p = mustProblem(t, b.get(t, "/v1/tasks/"+ref.ID+"?queue=critical"), http.StatusNotFound)
	if strings.Contains(p.Detail, "never known") {
		t.Errorf("?queue=critical: detail %q; want only that the queue holds no task with this id", p.Detail)
	}
}

// TestTaskOfAnIDInTwoQueues: one id in two queues (a producer's own
// asynq.TaskID sent to both). GET /v1/tasks/{id} shows the first queue
// asynq lists and names the other in other_queues; ?queue= looks in that
// queue only, and is checked as every query parameter is.
func TestTaskOfAnIDInTwoQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	client := asynq.NewClient(b.redis.ConnOpt())
	t.Cleanup(func() { _ = client.Close() })
	holders := []string{"default", "critical"}
	for i, q := range holders {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", fmt.Appendf(nil, `{"order_id":%d}`, i+1)), asynq.TaskID("dup-api"), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	queues, err := b.inspector.Queues()
	if err != nil || len(queues) != 2 {
		t.Fatalf("queues %q, %v", queues, err)
	}
	first, other := queues[0], queues[1]
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":3}`)), asynq.Queue("bulk")); err != nil {
		t.Fatal(err)
	}

	var st ops.TaskStatus
	mustJSON(t, b.get(t, "/v1/tasks/dup-api"), http.StatusOK, &st)
	if st.Queue != first || !slices.Equal(st.OtherQueues, []string{other}) || st.OtherQueuesCount != 1 {
		t.Errorf("GET dup-api: queue %q, other queues %q (%d); want %q and [%q]", st.Queue, st.OtherQueues, st.OtherQueuesCount, first, other)
	}
	for i, q := range holders {
		res := b.get(t, "/v1/tasks/dup-api?queue="+q)
		var st ops.TaskStatus
		mustJSON(t, res, http.StatusOK, &st)
		if st.Queue != q || string(st.Payload) != fmt.Sprintf(`{"order_id":%d}`, i+1) || bytes.Contains(res.body, []byte("other_queues")) {
			t.Errorf("GET dup-api?queue=%s: %s; want the task of %s alone", q, res.body, q)
		}
	}
	for _, q := range []string{"bulk", "nowhere"} { // a queue that does not hold it, one asynq does not know
		if p := mustProblem(t, b.get(t, "/v1/tasks/dup-api?queue="+q), http.StatusNotFound); !strings.Contains(p.Detail, "queue "+q+" holds no task with this id") {
			t.Errorf("GET dup-api?queue=%s: detail %q, want it to name the queue", q, p.Detail)
		}
	}
	for _, tt := range []struct {
		name, query string
		fields      []string
	}{
		{"upper case", "queue=Default", []string{"queue"}},
		{"space", "queue=a%20b", []string{"queue"}},
		{"empty", "queue=", []string{"queue"}},
		{"too long", "queue=" + strings.Repeat("q", 64), []string{"queue"}},
		{"control character", "queue=a%1B%5B2J", []string{"queue"}},
		{"twice", "queue=default&queue=critical", []string{"queue"}},
		{"unknown parameter", "queues=default", []string{"queues"}},
		{"unknown parameter beside queue", "queue=default&state=pending", []string{"state"}},
		{"malformed", "queue=%zz", []string{"query"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := b.get(t, "/v1/tasks/dup-api?"+tt.query)
			p := mustProblem(t, res, http.StatusBadRequest)
			var got []string
			for _, fe := range p.Errors {
				got = append(got, fe.Field)
			}
			if !slices.Equal(got, tt.fields) || p.Type != api.TypeValidation || bytes.Contains(res.body, []byte("qqqq")) {
				t.Errorf("%s: %s; want a validation problem on %q that does not repeat the value", tt.query, res.body, tt.fields)
			}
		})
	}
}
