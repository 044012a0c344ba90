package api_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/api"
)

// postTask sends an enqueue with an Idempotency-Key to the API at addr and
// returns its answer read in full.
func postTask(client *http.Client, addr, key string) (response, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/tasks/resend-dcv", strings.NewReader(`{"order_id":7}`))
	if err != nil {
		return response{}, err
	}
	req.Header = authJSON()
	req.Header.Set("Idempotency-Key", key)
	res, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: body}, err
}

// An enqueue with an Idempotency-Key while Redis stalls answers 503 with
// Retry-After within the handler's deadline, the release of its key
// included: the claim is given the deadline less the release's reserve,
// where the release used to take a fresh 5 s once the deadline was spent
// (25 s for the API's 20 s).
func TestEnqueueAnswersByTheHandlerDeadlineWhileRedisStalls(t *testing.T) {
	t.Parallel()
	const handlerTimeout = 2 * time.Second
	b := setup(t)
	addr := run(t, api.Config{Ops: b.ops, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}},
		Addr: "127.0.0.1:0", Logger: zap.NewNop(), Limits: admin.Limits{HandlerTimeout: handlerTimeout}})
	b.redis.Pause()
	start := time.Now()
	res, err := postTask(b.http, addr, "stall-1")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	mustProblem(t, res, http.StatusServiceUnavailable)
	if res.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After: %s", res.body)
	}
	// The answer comes at the deadline (2.00 to 2.06 s measured); the fault
	// this test holds took a fresh 5 s past it. The slack between is for a
	// loaded machine's scheduling, not for the API.
	if limit := handlerTimeout + 1500*time.Millisecond; took > limit {
		t.Errorf("the answer took %v; want it by the handler's deadline (%v), within %v", took, handlerTimeout, limit)
	}
}

// A body that stops arriving is answered 408, as problem+json, within three
// quarters of the handler's deadline and with Connection: close; before,
// the body had the server's ReadTimeout, which ends with the write
// deadline, so the client got the connection closed without an answer
// while the log recorded a 400. Both a body of a declared length and a
// chunked one, read by the API and by asynqmon (a dashboard action).
func TestStalledBodyIsAnswered408(t *testing.T) {
	t.Parallel()
	const handlerTimeout = 2 * time.Second
	b := setup(t)
	addr := run(t, api.Config{Ops: b.ops, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}},
		Addr: "127.0.0.1:0", Logger: zap.NewNop(), Limits: admin.Limits{HandlerTimeout: handlerTimeout}})
	const batch = "/monitoring/api/queues/default/pending_tasks:batch_delete" // asynqmon reads its body itself
	for name, c := range map[string]struct{ path, framing string }{
		"declared length":            {"/v1/tasks/resend-dcv", "Content-Length: 100\r\n\r\n{\"order_id\":"},
		"chunked":                    {"/v1/tasks/resend-dcv", "Transfer-Encoding: chunked\r\n\r\nc\r\n{\"order_id\":\r\n"},
		"dashboard, declared length": {batch, "Content-Length: 100\r\n\r\n{\"task_ids\":"},
		"dashboard, chunked":         {batch, "Transfer-Encoding: chunked\r\n\r\nc\r\n{\"task_ids\":\r\n"},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		head := "POST " + c.path + " HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + testToken +
			"\r\nContent-Type: application/json\r\n" + c.framing
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		// No more of the body is sent; the handler's deadline plus the
		// write timeout's default would be 30 s.
		if err := conn.SetReadDeadline(time.Now().Add(handlerTimeout + 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: no answer to a stalled body after %v: %v", name, time.Since(start), err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		p := mustProblem(t, response{status: res.StatusCode, header: res.Header, body: body}, http.StatusRequestTimeout)
		if !strings.Contains(p.Detail, "1.5s") {
			t.Errorf("%s: detail %q, want the time the body had (1.5s)", name, p.Detail)
		}
		if !res.Close {
			t.Errorf("%s: 408 without Connection: close", name)
		}
		if took < handlerTimeout*3/4 || took > handlerTimeout+time.Second {
			t.Errorf("%s: answered after %v, want at three quarters of the handler's %v", name, took, handlerTimeout)
		}
	}
}
