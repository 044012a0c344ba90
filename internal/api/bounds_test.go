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

	"github.com/certmail/certmail/internal/account"
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
		// ops.Show gives JSON that is no object as text; the page shows it as JSON still.
		{"a JSON array", `[1,2]`, func(s string) bool { return s == "[\n  1,\n  2\n]" }},
		{"JSON null", `null`, func(s string) bool { return s == "null" }},
		{"invalid UTF-8", "a\xffb", func(s string) bool { return s == "[base64: not valid UTF-8]\nYf9i" }},
		{"invalid UTF-8 in JSON", "{\"a\":\"\xff\"}", func(s string) bool { return strings.HasPrefix(s, "[base64: not valid UTF-8]\n") }},
		{"deep JSON is not indented", deep, func(s string) bool { return s == deep }},
		// A string before the nesting: its quotes open and close it, so the
		// nesting after it still counts.
		{"deep JSON after a string is not indented", `{"k":` + deep + `}`, func(s string) bool { return s == `{"k":`+deep+`}` }},
		// The page parses JSON again with JavaScript's numbers: JSON it
		// would round is not JSON to it, so it shows the digits as they are.
		{"sequence beyond 2^53", `{"order_id":1,"sequence":1764500000000000123}`, func(s string) bool {
			return s == "{\n  \"order_id\": 1,\n  \"sequence\": 1764500000000000123\n}"+api.ExactNote && shownByPage(s) == s
		}},
		{"2^53 itself, and below -2^53", `[9007199254740992,-9007199254740993]`, func(s string) bool {
			return strings.HasSuffix(s, api.ExactNote) && strings.Contains(s, "-9007199254740993")
		}},
		{"out of float64's range", `{"a":1e400}`, func(s string) bool { return strings.HasSuffix(s, api.ExactNote) }},
		{"below the smallest float64", `{"b":1e-400}`, func(s string) bool { return strings.HasSuffix(s, api.ExactNote) }},
		{"beyond 2^53 with a fraction", `{"c":9007199254740993.0}`, func(s string) bool { return strings.HasSuffix(s, api.ExactNote) }},
		{"beyond 2^53 with an exponent", `{"d":12345678901234567890e0}`, func(s string) bool { return strings.HasSuffix(s, api.ExactNote) }},
		{"zeros and small numbers", `{"a":0.0,"b":-0e5,"c":1e-300,"d":123.25}`, func(s string) bool { return !strings.Contains(s, "[shown") }},
		{"numbers JavaScript holds", `{"a":9007199254740992,"b":-9007199254740992,"c":2.5,"d":"12345678901234567890"}`, func(s string) bool {
			return !strings.Contains(s, "[shown") && shownByPage(s) == s
		}},
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

// shownByPage is what asynqmon's page shows of a formatted payload s: JSON
// parsed with JavaScript's numbers (float64) and printed indented again,
// anything else as it is.
func shownByPage(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) != nil {
		return s
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "(not printable: " + err.Error() + ")"
	}
	return string(b)
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

// heldBody is a request whose body is sent in part, then stalls until the
// test sends the rest or aborts it.
type heldBody struct {
	pw     *io.PipeWriter
	answer chan int // the status, 0 when the request failed
}

// holdBody sends a request of token that declares a body of declared bytes
// (-1: chunked) and sends sent bytes of it (spaces, which are not JSON).
func (b *bundle) holdBody(t *testing.T, token string, declared int64, sent int) *heldBody {
	t.Helper()
	pr, pw := io.Pipe()
	h := &heldBody{pw: pw, answer: make(chan int, 1)}
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
	req, err := http.NewRequest(http.MethodPost, b.url+"/v1/tasks/set-emails", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = declared
	req.Header = http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	go func() {
		res, err := b.http.Do(req)
		if err != nil {
			h.answer <- 0
			return
		}
		res.Body.Close()
		h.answer <- res.StatusCode
	}()
	go func() { _, _ = pw.Write(bytes.Repeat([]byte{' '}, sent)) }()
	return h
}

// finish sends the rest of a body of declared bytes of which sent were sent.
func (h *heldBody) finish(declared, sent int) {
	go func() {
		_, _ = h.pw.Write(bytes.Repeat([]byte{' '}, declared-sent))
		h.pw.Close()
	}()
}

// waitBodies waits until the server holds want bytes of bodies and waiters
// requests wait for room.
func (b *bundle) waitBodies(t *testing.T, want, waiters int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second) // within the client's timeout
	for b.srv.BodyBytesHeld() != want || b.srv.BodyWaiters() != waiters {
		if time.Now().After(deadline) {
			t.Fatalf("bodies hold %d bytes with %d waiting; want %d bytes with %d waiting",
				b.srv.BodyBytesHeld(), b.srv.BodyWaiters(), want, waiters)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// smallRequest enqueues a valid task with token; its status comes on the
// channel, with Retry-After.
func (b *bundle) smallRequest(t *testing.T, token string) chan [2]string {
	t.Helper()
	c := make(chan [2]string, 1)
	req, err := http.NewRequest(http.MethodPost, b.url+"/v1/tasks/set-emails", strings.NewReader(`{"order_id": 1, "additional_emails": []}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	go func() {
		res, err := b.http.Do(req)
		if err != nil {
			c <- [2]string{err.Error()}
			return
		}
		res.Body.Close()
		c <- [2]string{res.Status, res.Header.Get("Retry-After")}
	}()
	return c
}

// TestBodyRoomGivenBackWhenAllIsFull: a request whose token has room but
// that finds MaxBodiesInFlight taken gets 503 after BodyWait and gives back
// what it took of its token's share: the token can then fill its whole
// MaxBodiesPerToken again.
func TestBodyRoomGivenBackWhenAllIsFull(t *testing.T) {
	t.Parallel()
	const (
		mib  = 1 << 20
		part = 600 << 10
	)
	fill := []string{producerToken, "tok-fill-1-a7e0c3d9", "tok-fill-2-5b81f6e2", "tok-fill-3-c09d4a17"}
	b := setup(t, setupOpts{configure: func(c *api.Config) {
		for _, tok := range fill[1:] {
			c.Tokens = append(c.Tokens, api.Token{Secret: account.Secret(tok), Role: api.RoleProducer})
		}
	}})
	var held []*heldBody
	for _, tok := range fill {
		for range api.MaxBodiesPerToken / mib {
			held = append(held, b.holdBody(t, tok, mib, part))
		}
	}
	b.waitBodies(t, api.MaxBodiesInFlight, 0)
	if a := <-b.smallRequest(t, testToken); a != [2]string{"503 Service Unavailable", "1"} {
		t.Errorf("a request with no room under MaxBodiesInFlight: %v, want 503 with Retry-After 1", a)
	}
	for _, h := range held {
		h.pw.CloseWithError(errors.New("client gone"))
		<-h.answer
	}
	b.waitBodies(t, 0, 0)
	var mine []*heldBody
	for range api.MaxBodiesPerToken / mib {
		mine = append(mine, b.holdBody(t, testToken, mib, part))
	}
	b.waitBodies(t, api.MaxBodiesPerToken, 0) // a share missing what the 503 took would leave one waiting
	for _, h := range mine {
		h.pw.CloseWithError(errors.New("client gone"))
		<-h.answer
	}
	b.waitBodies(t, 0, 0)
}

// TestBodiesInFlightBounded: request bodies are counted as they arrive, so
// a body that is not being sent holds only its first buffer; one token's
// bodies hold at most MaxBodiesPerToken, beyond which its requests wait and
// get 503 after BodyWait while other tokens' go on; all bodies hold at most
// MaxBodiesInFlight, beyond which any request waits until room is let go;
// and every request gives back what it held, however it ends.
func TestBodiesInFlightBounded(t *testing.T) {
	t.Parallel()
	const (
		kib  = 1 << 10
		mib  = 1 << 20
		part = 600 * kib // of a 1 MiB body: read into a 1 MiB buffer
	)
	fill := []string{producerToken, "tok-fill-1-a7e0c3d9", "tok-fill-2-5b81f6e2", "tok-fill-3-c09d4a17"}
	b := setup(t, setupOpts{configure: func(c *api.Config) {
		for _, tok := range fill[1:] {
			c.Tokens = append(c.Tokens, api.Token{Secret: account.Secret(tok), Role: api.RoleProducer})
		}
	}})

	// (a) Bodies that stall hold what arrived, rounded up to their buffer:
	// 100 KiB sent of 1 MiB declared is read into 128 KiB, nothing sent
	// into the first 32 KiB. Aborted, they give it all back.
	var stalled []*heldBody
	for range 4 {
		stalled = append(stalled, b.holdBody(t, testToken, mib, 100*kib))
	}
	stalled = append(stalled, b.holdBody(t, testToken, mib, 0), b.holdBody(t, testToken, -1, 0))
	b.waitBodies(t, 4*128*kib+2*32*kib, 0)
	for _, h := range stalled {
		h.pw.CloseWithError(errors.New("client gone"))
		<-h.answer
	}
	b.waitBodies(t, 0, 0)

	// (b) One token fills its share: its next request waits and is 503
	// after BodyWait, while another token's goes through.
	var held [][]*heldBody
	held = append(held, nil)
	for range api.MaxBodiesPerToken / mib {
		held[0] = append(held[0], b.holdBody(t, fill[0], mib, part))
	}
	b.waitBodies(t, api.MaxBodiesPerToken, 0)
	beyondShare := b.smallRequest(t, fill[0])
	b.waitBodies(t, api.MaxBodiesPerToken, 1)
	if res := b.do(t, http.MethodPost, "/v1/tasks/set-emails", `{"order_id": 1, "additional_emails": []}`, nil); res.status != http.StatusAccepted {
		t.Errorf("another token's request: %d, want 202", res.status)
	}
	select {
	case a := <-beyondShare:
		t.Fatalf("the request beyond its token's share answered %v before BodyWait", a)
	default: // still waiting: the other token's request did not wait for it
	}
	if a := <-beyondShare; a != [2]string{"503 Service Unavailable", "1"} {
		t.Errorf("the request beyond its token's share: %v, want 503 with Retry-After 1", a)
	}

	// (c) Several tokens fill the whole budget: a request of a token that
	// holds nothing waits, and goes on once a body is let go.
	for _, tok := range fill[1:] {
		var hs []*heldBody
		for range api.MaxBodiesPerToken / mib {
			hs = append(hs, b.holdBody(t, tok, mib, part))
		}
		held = append(held, hs)
	}
	b.waitBodies(t, api.MaxBodiesInFlight, 0)
	waiting := b.smallRequest(t, testToken)
	b.waitBodies(t, api.MaxBodiesInFlight, 1)
	held[1][0].finish(mib, part)
	if status := <-held[1][0].answer; status != http.StatusBadRequest {
		t.Errorf("the body let go: %d, want 400", status)
	}
	if a := <-waiting; a[0] != "202 Accepted" {
		t.Errorf("the waiting request once room was let go: %v, want 202", a)
	}

	// (d) Whatever way they end, the requests give back all they held.
	for i, hs := range held {
		for j, h := range hs {
			if i != 1 || j != 0 {
				h.pw.CloseWithError(errors.New("client gone"))
				<-h.answer
			}
		}
	}
	chunked, err := http.NewRequest(http.MethodPost, b.url+"/v1/tasks/set-emails", io.MultiReader(strings.NewReader(strings.Repeat(" ", api.MaxBodyBytes+1))))
	if err != nil {
		t.Fatal(err)
	}
	chunked.Header = authJSON()
	if res, err := b.http.Do(chunked); err != nil || res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a chunked body over MaxBodyBytes: %v %v, want 413", res, err)
	} else {
		res.Body.Close()
	}
	b.waitBodies(t, 0, 0)
}
