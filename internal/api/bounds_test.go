package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/tasks"
)

// maxProblemBytes is what a validation answer may reach whatever the request.
const maxProblemBytes = 16 << 10

// filled returns a body of about 1 MiB (under api.MaxBodyBytes): prefix,
// elem repeated with commas, suffix.
func filled(prefix, elem, suffix string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for b.Len()+2*len(elem)+len(suffix)+2 < api.MaxBodyBytes {
		b.WriteString(elem + ",")
	}
	b.WriteString(elem + suffix)
	return b.String()
}

// hugeBodies break rules in every way that grows with the body.
func hugeBodies() map[string]string {
	var keys strings.Builder
	keys.WriteString(`{"order_id":1,"additional_emails":[]`)
	for i := 0; keys.Len() < api.MaxBodyBytes-32; i++ {
		fmt.Fprintf(&keys, `,"k%d":1`, i)
	}
	keys.WriteString("}")
	return map[string]string{
		"1 MiB of bad emails":         filled(`{"order_id":0,"additional_emails":[`, `"not an address"`, `]}`),
		"500k-element array":          filled(`{"order_id":1,"additional_emails":[`, `1`, `]}`),
		"deeply nested JSON":          `{"order_id":1,"additional_emails":` + strings.Repeat("[", 400000) + strings.Repeat("]", 400000) + `}`,
		"100k unknown members":        keys.String(),
		"a 1 MiB unknown member name": `{"order_id":1,"additional_emails":[],"` + strings.Repeat("k", api.MaxBodyBytes-64) + `":1}`,
	}
}

// A rejected request of any size answers a small problem listing at most 20
// problems and how many it left out.
func TestValidationAnswerIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for name, body := range hugeBodies() {
		res := b.do(t, http.MethodPost, "/v1/tasks/set-emails?queue=default", body, nil)
		p := mustProblem(t, res, http.StatusBadRequest)
		if len(res.body) > maxProblemBytes || len(p.Errors) > tasks.MaxFieldErrors+1 {
			t.Errorf("%s: answer of %d bytes with %d errors", name, len(res.body), len(p.Errors))
		}
		t.Logf("%s (%d bytes): %d-byte answer, %d errors, %q", name, len(body), len(res.body), len(p.Errors), p.Detail)
	}
	// Query parameters too: each unknown one is a problem.
	q := url.Values{}
	for i := range 5000 {
		q.Set(fmt.Sprintf("p%d", i), "x")
	}
	res := b.do(t, http.MethodPost, "/v1/tasks/set-emails?"+q.Encode(), `{"order_id":1,"additional_emails":[]}`, nil)
	p := mustProblem(t, res, http.StatusBadRequest)
	if len(res.body) > maxProblemBytes || len(p.Errors) != tasks.MaxFieldErrors+1 || p.Detail != "the request breaks 5000 rules; see errors" {
		t.Errorf("5000 unknown parameters: %d bytes, %d errors, %q", len(res.body), len(p.Errors), p.Detail)
	}
}

// The API's heap rises by a bounded amount for each of these requests. Not
// parallel: it measures the process's heap.
func TestValidationMemoryIsBounded(t *testing.T) {
	b := setup(t)
	for name, body := range hugeBodies() {
		req, err := http.NewRequest(http.MethodPost, b.url+"/v1/tasks/set-emails", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = authJSON()
		peak := certmailtest.HeapPeak(func() {
			res, err := b.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
		})
		t.Logf("%s: heap rose %.1f MiB", name, float64(peak)/(1<<20))
		if peak > 8<<20 {
			t.Errorf("%s: heap rose %.1f MiB, want at most 8", name, float64(peak)/(1<<20))
		}
	}
}

// A task whose payload a raw producer made huge, or not UTF-8, is shown
// bounded and as valid UTF-8 by GET /v1/tasks/{id}.
func TestTaskAnswerIsBoundedAndUTF8(t *testing.T) {
	t.Parallel()
	b := setup(t)
	client := asynq.NewClient(b.redis.ConnOpt())
	t.Cleanup(func() { _ = client.Close() })
	for name, payload := range map[string][]byte{
		"10 MB":         bytes.Repeat([]byte(`"a",`), 10<<20/4),
		"invalid UTF-8": []byte("{\"order_id\":1,\"account\":\"\xc3\x28\"}"),
	} {
		info, err := client.Enqueue(asynq.NewTask("set-emails", payload), asynq.ProcessIn(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		res := b.get(t, "/v1/tasks/"+info.ID)
		var st ops.TaskStatus
		mustJSON(t, res, http.StatusOK, &st)
		if !utf8.Valid(res.body) || len(res.body) > 2*ops.MaxShownBytes+4096 { // escaping quotes doubles them
			t.Errorf("%s: answer of %d bytes, valid UTF-8 %v", name, len(res.body), utf8.Valid(res.body))
		}
		if st.PayloadEncoding == "" || st.PayloadBytes != len(payload) {
			t.Errorf("%s: encoding %q, %d bytes", name, st.PayloadEncoding, st.PayloadBytes)
		}
	}
}

// A task for a queue no worker serves is refused with the field named.
func TestEnqueueRefusesUnservedQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.do(t, http.MethodPost, "/v1/tasks/set-emails?queue=nobody-serves-this", `{"order_id":1,"additional_emails":[]}`, nil)
	p := mustProblem(t, res, http.StatusBadRequest)
	if len(p.Errors) != 1 || p.Errors[0].Field != "queue" || !strings.Contains(p.Errors[0].Message, "bulk, critical, default") {
		t.Errorf("errors = %+v", p.Errors)
	}
	if qs, _ := b.inspector.Queues(); len(qs) != 0 {
		t.Errorf("queues in Redis: %v", qs)
	}
}

// The dashboard's formatter shows JSON indented and anything else bounded,
// as valid UTF-8, saying what it did.
func TestDashboardFormatter(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", 3000) + strings.Repeat("]", 3000)
	for _, tt := range []struct {
		name, in string
		want     func(string) bool
	}{
		{"JSON", `{"order_id":1}`, func(s string) bool { return s == "{\n  \"order_id\": 1\n}" }},
		{"text", "order 5", func(s string) bool { return s == "order 5" }},
		{"invalid UTF-8", "a\xffb", func(s string) bool { return s == "[base64: not valid UTF-8]\nYf9i" }},
		{"invalid UTF-8 in JSON", "{\"a\":\"\xff\"}", func(s string) bool { return strings.HasPrefix(s, "[base64: not valid UTF-8]\n") }},
		{"deep JSON is not indented", deep, func(s string) bool { return s == deep }},
		{"10 MB", strings.Repeat("x", 10<<20), func(s string) bool {
			return len(s) < ops.MaxShownBytes+100 && strings.HasSuffix(s, "\n[truncated: first 8192 of 10485760 bytes shown]")
		}},
	} {
		got := api.FormatPayload("set-emails", []byte(tt.in))
		if !utf8.ValidString(got) || !tt.want(got) {
			t.Errorf("%s: %.200q", tt.name, got)
		}
	}
}

// TestDashboardPageBounded checks that a dashboard page of tasks cannot be
// made longer than the dashboard's own largest page: asynqmon hands any size
// to asynq, which lists a whole queue for a size of 0 or less.
func TestDashboardPageBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 105 {
		var ref api.TaskRef
		mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", fmt.Sprintf(`{"order_id":%d}`, i+1), nil), http.StatusAccepted, &ref)
	}
	const list = "/monitoring/api/queues/default/pending_tasks"
	for _, q := range []string{"size=0", "size=-7", "size=101", "size=1000000", "size=abc", "size=20&size=0", "page=0", "page=-1", "page=x", "page=1000000001"} {
		res := b.do(t, http.MethodGet, list+"?"+q, "", basicAuth(readerToken))
		if res.status != http.StatusBadRequest || !strings.Contains(string(res.body), "from 1 to") {
			t.Errorf("?%s: %d %.200s, want 400 naming the range", q, res.status, res.body)
		}
	}
	for q, want := range map[string]int{"": 20, "size=100": 100, "size=60&page=2": 45, "page=1000000000": 0} {
		res := b.do(t, http.MethodGet, list+"?"+q, "", basicAuth(readerToken))
		var page struct {
			Tasks []json.RawMessage `json:"tasks"`
		}
		if res.status != http.StatusOK || json.Unmarshal(res.body, &page) != nil || len(page.Tasks) != want {
			t.Errorf("?%s: %d, %d tasks, want 200 with %d (%.200s)", q, res.status, len(page.Tasks), want, res.body)
		}
	}
}

// TestDeadLetterIDNotEchoed checks that the 404 of a dead-letter route stays
// short whatever id the path names: no dead letter has an id longer than
// deadletter.MaxID, and the answer does not repeat a longer one.
func TestDeadLetterIDNotEchoed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, id := range []string{strings.Repeat("A", 257), strings.Repeat("A", 30000), strings.Repeat("%C3%A9", 5000)} {
		for _, req := range []struct{ method, path string }{
			{http.MethodDelete, "/v1/dead-letters/" + id},
			{http.MethodPost, "/v1/dead-letters/" + id + "/requeue"},
		} {
			res := b.do(t, req.method, req.path, "", nil)
			p := mustProblem(t, res, http.StatusNotFound)
			if len(res.body) > 512 || strings.Contains(p.Detail, "AAAA") || strings.Contains(p.Detail, "éé") {
				t.Errorf("%s %.60s...: %d bytes, detail %.100q", req.method, req.path, len(res.body), p.Detail)
			}
		}
	}
	// An id of the longest length a dead letter can have is looked up, and
	// its answer still bounded.
	res := b.do(t, http.MethodDelete, "/v1/dead-letters/"+strings.Repeat("B", 256), "", nil)
	if mustProblem(t, res, http.StatusNotFound); len(res.body) > 1024 {
		t.Errorf("256-byte id: %d bytes of answer", len(res.body))
	}
}

// TestBodiesInFlightBounded: the request bodies held at once are bounded
// (MaxBodiesInFlight, counted at their declared length): a request beyond
// waits for room, goes on when a body is let go, and is answered 503 with
// Retry-After when none is within BodyWait.
func TestBodiesInFlightBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Requests that declare a 1 MiB body and send none hold their room.
	var held []*io.PipeWriter
	answers := make(chan int, api.MaxBodiesInFlight/api.MaxBodyBytes)
	hold := func() {
		pr, pw := io.Pipe()
		held = append(held, pw)
		req, err := http.NewRequest("POST", b.url+"/v1/tasks/set-emails", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = api.MaxBodyBytes
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		go func() {
			res, err := b.http.Do(req)
			if err != nil {
				answers <- 0
				return
			}
			res.Body.Close()
			answers <- res.StatusCode
		}()
	}
	for range api.MaxBodiesInFlight / api.MaxBodyBytes {
		hold()
	}
	t.Cleanup(func() {
		for _, pw := range held {
			pw.CloseWithError(errors.New("test over"))
		}
	})
	type answer struct {
		status     int
		retryAfter string
	}
	small := func() chan answer {
		c := make(chan answer, 1)
		req, err := http.NewRequest("POST", b.url+"/v1/tasks/set-emails", strings.NewReader(`{"order_id": 1, "additional_emails": []}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = authJSON()
		go func() {
			res, err := b.http.Do(req)
			if err != nil {
				c <- answer{}
				return
			}
			res.Body.Close()
			c <- answer{res.StatusCode, res.Header.Get("Retry-After")}
		}()
		return c
	}
	// blocked returns a small request that waits: the budget is full once
	// every held request is being read.
	blocked := func() (chan answer, time.Time) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			start, c := time.Now(), small()
			select {
			case a := <-c:
				if a.status != http.StatusAccepted {
					t.Fatalf("a small request before the budget was full: %d", a.status)
				}
				if time.Now().After(deadline) {
					t.Fatal("the held bodies never filled the budget")
				}
			case <-time.After(300 * time.Millisecond):
				return c, start
			}
		}
	}
	waiting, _ := blocked()
	// One held body ends (a 1 MiB body that is not JSON): its room goes to
	// the waiting request.
	go func() {
		_, _ = held[0].Write(bytes.Repeat([]byte{' '}, api.MaxBodyBytes))
		held[0].Close()
	}()
	if status := <-answers; status != http.StatusBadRequest {
		t.Errorf("the body let go: %d, want 400", status)
	}
	select {
	case a := <-waiting:
		if a.status != http.StatusAccepted {
			t.Errorf("the waiting request: %d, want 202", a.status)
		}
	case <-time.After(api.BodyWait):
		t.Fatal("the waiting request did not go on when room was made")
	}
	// Full again: a request that finds no room within BodyWait is 503.
	hold()
	waiting, start := blocked()
	a := <-waiting
	if a.status != http.StatusServiceUnavailable || a.retryAfter == "" || time.Since(start) < api.BodyWait {
		t.Errorf("no room: %d, Retry-After %q after %v; want 503 with Retry-After after %v", a.status, a.retryAfter,
			time.Since(start), api.BodyWait)
	}
}
