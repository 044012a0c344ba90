package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/tasks"
)

// FuzzEnqueue sends arbitrary types, bodies, queries and idempotency keys to
// POST /v1/tasks/{type}: never a 5xx; every error a problem+json whose status
// is the HTTP status; a task enqueued only when tasks.Parse accepts the body,
// and then stored as a payload that parses again; a rejected request leaves
// Redis as it was.
func FuzzEnqueue(f *testing.F) {
	seeds := []struct{ typ, body, query, key string }{
		{"set-emails", `{"order_id": 123, "additional_emails": ["a@example.com"]}`, "", ""},
		{"set-emails", `{"order_id": 123, "additional_emails": []}`, "queue=critical", "k-1"},
		{"resend-dcv", `{"order_id": 1, "domain_approval_emails": [{"domain": "www.example.com", "email": "admin@example.com", "email_domain": "example.com"}], "locale": "en"}`, "process_in=10m", ""},
		{"send-cert", `{"certificate_id": 456, "emails": ["a@example.com"], "certificate_collect_format": "attachment", "custom_message": "hi"}`, "process_at=2030-01-01T00:00:00Z", ""},
		{"set-emails", `{"order_id": 0, "additional_emails": ["Bob <b@example.com>"]}`, "", ""},
		{"set-emails", `{"order_id": 1e3, "additional_emails": []}`, "", ""},
		{"resend-dcv", `{"order_id": 1} {}`, "", ""},
		{"send-cert", `{"certificate_id": "456"}`, "queue=Bad Queue", "key with spaces"},
		{"nope", `{}`, "", ""},
		{"set-emails", `null`, "process_in=-1s&process_at=x", ""},
		{"resend-dcv", "\xff\xfe", "", "\x00"},
	}
	for _, s := range seeds {
		f.Add(s.typ, s.body, s.query, s.key)
	}
	b := setup(f)
	f.Fuzz(func(t *testing.T, typ, body, query, key string) {
		if len(body) > api.MaxBodyBytes || len(typ) > 100 || len(query) > 1000 {
			t.Skip("sizes covered by the body-limit test")
		}
		// Only requests an HTTP client can send: a header value without
		// control characters, a query in its encoded form.
		for _, c := range []byte(key) {
			if (c < ' ' && c != '\t') || c == 0x7f {
				t.Skip("not a header value a client can send")
			}
		}
		q, err := url.ParseQuery(query)
		if err != nil {
			t.Skip("not a query a client can send")
		}
		before := b.taskCount(t)
		h := authJSON()
		if key != "" {
			h.Set("Idempotency-Key", key)
		}
		path := "/v1/tasks/" + url.PathEscape(typ)
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		res := b.do(t, http.MethodPost, path, body, h)
		if res.status >= 500 {
			t.Fatalf("%s %q: %d %s", path, body, res.status, res.body)
		}
		_, parseErr := tasks.Parse(typ, []byte(body))
		switch res.status {
		case http.StatusAccepted, http.StatusOK:
			if parseErr != nil {
				t.Fatalf("enqueued a body tasks.Parse rejects (%v): %q", parseErr, body)
			}
			var ref api.TaskRef
			if err := json.Unmarshal(res.body, &ref); err != nil {
				t.Fatalf("answer %s: %v", res.body, err)
			}
			info, err := b.inspector.GetTaskInfo(ref.Queue, ref.ID)
			if err != nil {
				t.Fatalf("task %s not in Redis: %v", ref.ID, err)
			}
			if _, err := tasks.Parse(info.Type, info.Payload); err != nil {
				t.Fatalf("stored payload %s does not parse: %v", info.Payload, err)
			}
		default:
			var p api.Problem
			if err := json.Unmarshal(res.body, &p); err != nil || p.Status != res.status ||
				res.header.Get("Content-Type") != api.ProblemContentType {
				t.Fatalf("%d answer is not a problem document: %s (%v)", res.status, res.body, err)
			}
			if after := b.taskCount(t); after != before {
				t.Fatalf("a %d answer changed Redis: %d tasks before, %d after", res.status, before, after)
			}
		}
	})
}
