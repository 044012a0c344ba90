package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
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
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stderr := &certmailtest.Output{}
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(ctx, []string{"api", "--http-addr", "127.0.0.1:0", "--redis-url", e.redis.URL(), "--api-tokens", token},
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

	e.redis.Pause()
	wrote := make(chan struct{})
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(wrote) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost,
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
	<-wrote
	// The request is in flight once its claim waits in Redis's socket.
	certmailtest.WaitFor(t, 10*time.Second, func() bool { return unreadBytes(t, e.redis.Addr()) > 0 },
		func() string { return "no command waits for the paused Redis" })
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

// unreadBytes is how many bytes the connections that addr (an IPv4
// listener) accepted have received and their server not read yet, from
// /proc/net/tcp: a paused Redis's commands waiting.
func unreadBytes(t *testing.T, addr string) int64 {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	var n int64
	for line := range strings.SplitSeq(string(table), "\n") {
		f := strings.Fields(line)
		// local_address rem_address st tx_queue:rx_queue; 01 is ESTABLISHED
		if len(f) < 5 || !strings.HasSuffix(f[1], fmt.Sprintf(":%04X", p)) || f[3] != "01" {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		q, err := strconv.ParseInt(rx, 16, 64)
		if err == nil {
			n += q
		}
	}
	return n
}
