package cli_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/cli"
)

// `certmail api` stopped (SIGTERM: its context ends) while Redis stalls,
// with its defaults: the enqueue waiting on Redis is stopped and answers
// 503 with Retry-After within the shutdown timeout, and the API exits 0.
// It used to exit 1 after the timeout ("shutdown ...: context deadline
// exceeded"), closing the request's connection without an answer.
func TestAPIStoppedWhileRedisStallsExitsZero(t *testing.T) {
	t.Parallel()
	e := setup(t)
	token := strings.Repeat("s", 20)
	// Redis stalls, to the API, from the moment its request's idempotency
	// claim is sent: the proxy withholds every answer from then on. (Pausing
	// the server before the request stalled whatever the API sent first, a
	// connection's handshake or a check of its own, which the test could
	// not tell from the request's claim.)
	proxy := e.redis.Proxy()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stderr := &certmailtest.Output{}
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(ctx, []string{"api", "--http-addr", "127.0.0.1:0", "--redis-url", "redis://" + proxy.Addr() + "/0", "--api-tokens", token},
			strings.NewReader(""), io.Discard, stderr)
	}()
	base := ""
	certmailtest.WaitFor(t, 20*time.Second, func() bool {
		for line := range strings.SplitSeq(stderr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "api started" {
				base = "http://" + m["addr"].(string)
			}
		}
		return base != ""
	}, stderr.String)

	claimed := make(chan struct{})
	proxy.BeforeOnce("certmail:idempotency:", func() { close(claimed) })
	proxy.WithholdAfter("certmail:idempotency:")
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost,
		base+"/v1/tasks/resend-dcv", strings.NewReader(`{"order_id":7}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}, "Idempotency-Key": {"stop-1"}}
	type answer struct {
		status     int
		retryAfter string
		body       string
		err        error
	}
	answered := make(chan answer, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		answered <- answer{res.StatusCode, res.Header.Get("Retry-After"), string(body), err}
	}()
	select {
	case <-claimed:
	case <-time.After(10 * time.Second):
		t.Fatal("the request's idempotency claim was not sent within 10 s")
	}
	start := time.Now()
	stop()
	var c int
	select {
	case c = <-code:
	case <-time.After(api.DefaultShutdownTimeout + 10*time.Second):
		t.Fatal("certmail api did not exit")
	}
	took := time.Since(start)
	a := <-answered
	t.Logf("exit %d after %v", c, took)
	if c != 0 || took > api.DefaultShutdownTimeout+500*time.Millisecond {
		t.Errorf("exit %d after %v; want 0 within the shutdown timeout %v:\n%s", c, took, api.DefaultShutdownTimeout, stderr.String())
	}
	if a.err != nil || a.status != http.StatusServiceUnavailable || a.retryAfter == "" || !strings.Contains(a.body, "shutting down") {
		t.Errorf("answer %d %q (Retry-After %q), %v; want 503 saying the API is shutting down, with Retry-After", a.status, a.body, a.retryAfter, a.err)
	}
	if !strings.Contains(stderr.String(), "requests still running near the shutdown timeout are stopped") {
		t.Errorf("no WARN line for the stopped request:\n%s", stderr.String())
	}
}
