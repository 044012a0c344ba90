package admin_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/admin"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestBackground(t *testing.T) {
	t.Parallel()
	reg := admin.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "certmail_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Inc()
	core, logs := observer.New(zap.DebugLevel)
	b, setReady := startSettable(t, reg, zap.New(core))
	base := "http://" + b.Addr().String()
	tests := []struct {
		path   string
		ready  error
		status int
		body   string
	}{
		{"/healthz", nil, 200, "ok"},
		{"/readyz", nil, 200, "ready"},
		{"/readyz", errors.New("redis 10.0.0.7:6379: connection refused"), 503, "not ready"},
		{"/healthz", errors.New("redis down"), 200, "ok"},
		{"/metrics", nil, 200, "certmail_test_total 1"},
		{"/metrics", nil, 200, "go_goroutines"},
		{"/nothing", nil, 404, ""},
	}
	for _, tt := range tests {
		setReady(tt.ready)
		status, body := get(t, base+tt.path)
		if status != tt.status || !strings.Contains(body, tt.body) {
			t.Errorf("GET %s (ready error %v) = %d %q, want %d with %q", tt.path, tt.ready, status, body, tt.status, tt.body)
		}
		if tt.ready != nil && strings.Contains(body, "10.0.0.7") {
			t.Errorf("GET %s tells the cause: %q", tt.path, body)
		}
	}
	// The cause goes to the log instead.
	if l := logs.FilterMessage("not ready").All(); len(l) != 1 || !strings.Contains(l[0].ContextMap()["error"].(string), "10.0.0.7:6379") {
		t.Errorf("log of the failed /readyz: %v", l)
	}
	select {
	case <-b.Done():
		t.Fatal("the server stopped by itself")
	default:
	}
	if err := b.Stop(time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after Stop")
	}
}

func TestBackgroundNone(t *testing.T) {
	t.Parallel()
	b, err := admin.Start("", nil, nil, zap.NewNop())
	if err != nil || b != nil || b.Addr() != nil || b.Done() != nil || b.Stop(time.Second) != nil {
		t.Errorf("Start(\"\") = %v, %v; want a nil server that does nothing", b, err)
	}
	if _, err := admin.Start("256.0.0.1:1", nil, admin.NewRegistry(), zap.NewNop()); err == nil {
		t.Error("Start on a bad address succeeded")
	}
}

// Profiles are served only when asked for: a CPU profile of the process on
// request with WithProfiling, nothing under /debug/pprof/ without it.
func TestProfiling(t *testing.T) {
	t.Parallel()
	ready := func(context.Context) error { return nil }
	plain, err := admin.Start("127.0.0.1:0", ready, admin.NewRegistry(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Stop(time.Second) })
	profiled, err := admin.Start("127.0.0.1:0", ready, admin.NewRegistry(), zap.NewNop(), admin.WithProfiling())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = profiled.Stop(time.Second) })

	for _, path := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1", "/debug/pprof/heap"} {
		if status, _ := get(t, "http://"+plain.Addr().String()+path); status != http.StatusNotFound {
			t.Errorf("GET %s without profiling = %d, want 404", path, status)
		}
	}
	base := "http://" + profiled.Addr().String()
	if status, body := get(t, base+"/debug/pprof/"); status != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/ = %d %.200q, want the index of profiles", status, body)
	}
	// A CPU profile is gzip-compressed protobuf.
	if status, body := get(t, base+"/debug/pprof/profile?seconds=1"); status != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Errorf("GET /debug/pprof/profile?seconds=1 = %d, %d bytes, want a CPU profile", status, len(body))
	}
	if status, _ := get(t, base+"/healthz"); status != http.StatusOK {
		t.Errorf("GET /healthz with profiling = %d", status)
	}
	// The command line can hold a secret given as a flag.
	if status, body := get(t, base+"/debug/pprof/cmdline"); status != http.StatusNotFound || strings.Contains(body, "admin.test") {
		t.Errorf("GET /debug/pprof/cmdline = %d %.100q, want 404", status, body)
	}
}

// shortLimits are limits a test can watch run out.
var shortLimits = admin.Limits{
	ReadHeaderTimeout: 300 * time.Millisecond,
	ReadTimeout:       500 * time.Millisecond,
	HandlerTimeout:    400 * time.Millisecond,
	WriteTimeout:      time.Second,
	IdleTimeout:       300 * time.Millisecond,
	MaxHeaderBytes:    4 << 10,
}

// serveLimited serves h through admin.NewServer with limits on a loopback
// port until the test ends, and returns the address.
func serveLimited(t *testing.T, h http.Handler, limits admin.Limits) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- admin.Serve(ctx, "127.0.0.1:0", admin.NewServer(h, limits, nil), admin.Shutdown{Timeout: limitedShutdown}, func(a net.Addr) { addr <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a.String()
	case err := <-done:
		t.Fatalf("Serve: %v", err)
		return ""
	}
}

// limitedShutdown is serveLimited's shutdown timeout. net/http keeps a
// connection it refused (431, 400, a timed-out header) active for 500 ms
// after its answer before it closes it, and Shutdown looks for idle
// connections at most every 500 ms: a test that ends right after such a
// refusal needs up to a second and a bit, which a 1 s timeout missed on a
// loaded machine ("0 requests still running after the shutdown timeout").
// No test here is about the shutdown's length.
const limitedShutdown = 10 * time.Second

// closedWithin reads from conn until the server closes it, and fails the test
// when that takes longer than within (far less than a connection left open
// without limits would take: forever).
func closedWithin(t *testing.T, conn net.Conn, within time.Duration) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %v", within)
	}
}

func TestServerLimits(t *testing.T) {
	t.Parallel()
	var bodyErr sync.Map // what a handler got reading a body that never came
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_, err := io.ReadAll(r.Body)
			bodyErr.Store("err", err)
		}
		if r.URL.Path == "/deadline" {
			_, ok := r.Context().Deadline()
			fmt.Fprintf(w, "deadline %t\n", ok)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	addr := serveLimited(t, h, shortLimits)
	dial := func(t *testing.T) net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	t.Run("idle keep-alive connection is closed", func(t *testing.T) {
		t.Parallel()
		conn := dial(t)
		if _, err := io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		if res.StatusCode != 200 || res.Close {
			t.Fatalf("first answer %d, close %t: want a kept-alive 200", res.StatusCode, res.Close)
		}
		closedWithin(t, conn, 10*time.Second)
	})
	t.Run("headers that never end are cut off", func(t *testing.T) {
		t.Parallel()
		conn := dial(t)
		if _, err := io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: a\r\n"); err != nil {
			t.Fatal(err)
		}
		closedWithin(t, conn, 10*time.Second)
	})
	t.Run("body that never arrives is cut off", func(t *testing.T) {
		t.Parallel()
		conn := dial(t)
		if _, err := io.WriteString(conn, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		closedWithin(t, conn, 10*time.Second)
		waitErr := time.Now().Add(10 * time.Second)
		for {
			if v, ok := bodyErr.Load("err"); ok {
				var ne net.Error
				if err, _ := v.(error); !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("the handler read the body with error %v, want a timeout", err)
				}
				break
			}
			if time.Now().After(waitErr) {
				t.Fatal("the handler never finished reading the body")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("oversized headers are refused", func(t *testing.T) {
		t.Parallel()
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("16 KiB header: %d, want 431", res.StatusCode)
		}
	})
	t.Run("handlers get a deadline", func(t *testing.T) {
		t.Parallel()
		if status, body := get(t, "http://"+addr+"/deadline"); status != 200 || body != "deadline true\n" {
			t.Errorf("GET /deadline = %d %q", status, body)
		}
	})
}

// TestServerConnectionCap: a server keeps at most MaxConns connections
// open. Connections stalled in their headers (each holds what its headers
// parsed into, until ReadHeaderTimeout) fill the cap; the next ones are
// closed at once, not held or queued; once the stalled ones become idle
// keep-alive connections, a new client takes the place of one of them.
func TestServerConnectionCap(t *testing.T) {
	t.Parallel()
	const maxConns = 4
	limits := admin.Limits{ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute, MaxConns: maxConns}
	addr := serveLimited(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	}), limits)
	dial := func() net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	stalled := make([]net.Conn, maxConns)
	for i := range stalled {
		stalled[i] = dial()
		if _, err := io.WriteString(stalled[i], "GET /x HTTP/1.1\r\nHost: a\r\nX-Stall: 1\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	// Over the cap: closed well before the minute of ReadHeaderTimeout.
	for range 3 {
		extra := dial()
		_, _ = io.WriteString(extra, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
		closedWithin(t, extra, 10*time.Second)
	}
	// The stalled ones were kept: each gets its answer, and stays open.
	for i, conn := range stalled {
		if _, err := io.WriteString(conn, "\r\n"); err != nil {
			t.Fatalf("stalled connection %d: %v", i, err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("stalled connection %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Close {
			t.Fatalf("stalled connection %d: %d, close %t, want a kept-alive 200", i, res.StatusCode, res.Close)
		}
	}
	// All are idle now (the server marks them so just after answering, so
	// a dial may still be too early): a new client gets through.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := client.Get("http://" + addr + "/x")
		if err == nil {
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("GET with idle connections at the cap: %d", res.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET with idle connections at the cap: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An admin server (Start) keeps AdminMaxConns connections open at most.
func TestBackgroundConnectionCap(t *testing.T) {
	t.Parallel()
	b, err := admin.Start("127.0.0.1:0", func(context.Context) error { return nil }, prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(time.Second) })
	for i := range admin.AdminMaxConns + 1 {
		conn, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: a\r\n"); err != nil {
			t.Fatal(err)
		}
		if i == admin.AdminMaxConns {
			closedWithin(t, conn, 5*time.Second) // ReadHeaderTimeout would take 10 s
		}
	}
}

func TestNewServerDefaults(t *testing.T) {
	t.Parallel()
	srv := admin.NewServer(http.NotFoundHandler(), admin.Limits{}, nil)
	got := []any{srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes}
	want := []any{admin.DefaultReadHeaderTimeout, admin.DefaultReadTimeout, admin.DefaultWriteTimeout, admin.DefaultIdleTimeout, admin.DefaultMaxHeaderBytes}
	for i := range got {
		if got[i] != want[i] || got[i] == time.Duration(0) {
			t.Errorf("limit %d: %v, want %v", i, got[i], want[i])
		}
	}
	if err := (admin.Limits{}).WithDefaults().Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	if err := (admin.Limits{HandlerTimeout: time.Minute}).WithDefaults().Validate(); err == nil {
		t.Error("a handler timeout longer than the write timeout validates")
	}
}

// CheckAddr accepts what net.Listen takes for an address and refuses what it
// cannot, saying why without echoing much of it; a name is not looked up.
func TestCheckAddr(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{":8080", "127.0.0.1:0", "[::1]:9090", "[fe80::1%eth0]:80", "localhost:8080", "api.example.com.:443",
		"no-such-host.invalid:80", "0.0.0.0:", ":http"} {
		if err := admin.CheckAddr(addr); err != nil {
			t.Errorf("CheckAddr(%q) = %v, want accepted", addr, err)
		}
	}
	for _, addr := range []string{"", "garbage", "8080", "127.0.0.1:65536", ":-1", ":port", "a host:80", "[::1:80", "-bad-:80",
		strings.Repeat("a", 300) + ":80", "x..y:80"} {
		err := admin.CheckAddr(addr)
		if err == nil || !strings.Contains(err.Error(), "is not a listen address") || len(err.Error()) > 200 {
			t.Errorf("CheckAddr(%.80q) = %v, want refused in a short message", addr, err)
		}
	}
}

// A port in use fails at listening, naming the address and why, once.
func TestListenError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	err = admin.Serve(context.Background(), addr, admin.NewServer(http.NotFoundHandler(), admin.Limits{}, nil), admin.Shutdown{Timeout: time.Second}, nil)
	if want := "listen " + addr + ": bind: address already in use"; err == nil || err.Error() != want {
		t.Errorf("Serve on a taken port: %v, want %q", err, want)
	}
	if _, err := admin.Start(addr, nil, prometheus.NewRegistry(), zap.NewNop()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Start on a taken port: %v", err)
	}
}

// TestDefaultHeaderLimit: with the default limits, net/http reads up to
// 4 KiB of request headers past DefaultMaxHeaderBytes before it answers
// 431 (and a later request on a keep-alive connection up to 4 KiB more,
// which it read ahead while the connection was idle), as the README's
// Limits table says.
func TestDefaultHeaderLimit(t *testing.T) {
	t.Parallel()
	addr := serveLimited(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), admin.Limits{})
	send := func(conn net.Conn, br *bufio.Reader, size int) int {
		t.Helper()
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", size)); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%d-byte header: %v", size, err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, bufio.NewReader(conn)
	}
	for _, c := range []struct {
		over int
		want int
	}{
		{3 << 10, http.StatusOK},
		{5 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		conn, br := dial()
		if got := send(conn, br, admin.DefaultMaxHeaderBytes+c.over); got != c.want {
			t.Errorf("a new connection's header %d bytes over the limit: %d, want %d", c.over, got, c.want)
		}
	}
	conn, br := dial()
	if got := send(conn, br, 0); got != http.StatusOK {
		t.Fatalf("a small first request: %d", got)
	}
	if got := send(conn, br, admin.DefaultMaxHeaderBytes+9<<10); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a kept-alive connection's header 9 KiB over the limit: %d, want 431", got)
	}
}

// TestReadyzLogThrottled: a probe that fails every few seconds through a
// Redis outage logs its cause once, not once per probe: repeats of the same
// cause (but for addresses and ports) are held back, and a new cause is
// logged at once.
func TestReadyzLogThrottled(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	b, setReady := startSettable(t, admin.NewRegistry(), zap.New(core))
	t.Cleanup(func() { _ = b.Stop(time.Second) })
	probe := func(cause error) {
		t.Helper()
		setReady(cause)
		if status, _ := get(t, "http://"+b.Addr().String()+"/readyz"); status != http.StatusServiceUnavailable {
			t.Fatalf("/readyz failing with %v: %d, want 503", cause, status)
		}
	}
	const probes = 12 // a minute of deploy/'s readiness probe
	for i := range probes {
		probe(fmt.Errorf("redis 10.0.0.7:6379: dial tcp 10.0.0.7:6379: connect %d: connection refused", 40000+i))
	}
	if l := logs.FilterMessage("not ready").All(); len(l) != 1 {
		t.Errorf("%d probes failing for the same cause logged %d lines, want 1", probes, len(l))
	}
	probe(errors.New("stopping"))
	probe(errors.New("stopping"))
	l := logs.FilterMessage("not ready").All()
	if len(l) != 2 || l[1].ContextMap()["error"] != "stopping" {
		t.Errorf("a new cause, twice: %d lines in all, the last %v; want one more line, naming it", len(l), l[len(l)-1].ContextMap())
	}
}

// startSettable starts an admin server on a free port whose readiness
// answers the error last given to setReady (nil at first).
func startSettable(t *testing.T, reg *prometheus.Registry, log *zap.Logger) (b *admin.Background, setReady func(error)) {
	t.Helper()
	var mu sync.Mutex
	var readyErr error
	b, err := admin.Start("127.0.0.1:0", func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return readyErr
	}, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	return b, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		readyErr = err
	}
}

// Serve cancels the requests still running sd.CancelBefore before the
// shutdown timeout, with the cause admin.ErrStopping, so that a handler
// that heeds its context answers; one that does not is cut at the timeout,
// and Serve's error says how many were.
func TestServeStopsRequestsBeforeItsTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{}) // the handler that ignores its context waits for it
	defer close(release)
	running := make(chan struct{}, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		running <- struct{}{}
		if r.URL.Path == "/ignores" {
			<-release
			return
		}
		<-r.Context().Done()
		if !errors.Is(context.Cause(r.Context()), admin.ErrStopping) {
			t.Errorf("cause %v, want admin.ErrStopping", context.Cause(r.Context()))
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	var cancelled atomic.Int64
	// The handler that heeds its context has CancelBefore to answer once
	// cancelled: 400 ms of a 1 s timeout were too few on a loaded machine
	// with -race (both requests still running at the timeout).
	sd := admin.Shutdown{Timeout: 3 * time.Second, CancelBefore: 1500 * time.Millisecond, Cancelled: func(n int) { cancelled.Store(int64(n)) }}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- admin.Serve(ctx, "127.0.0.1:0", admin.NewServer(h, admin.Limits{}, nil), sd, func(a net.Addr) { addrc <- a })
	}()
	base := "http://" + (<-addrc).String()
	statuses := make(chan string, 2)
	for _, path := range []string{"/heeds", "/ignores"} {
		go func() {
			res, err := http.Get(base + path)
			if err != nil {
				statuses <- path + ": no answer"
				return
			}
			res.Body.Close()
			statuses <- fmt.Sprintf("%s: %d", path, res.StatusCode)
		}()
	}
	<-running
	<-running
	start := time.Now()
	stop()
	err := <-done
	if took := time.Since(start); took < sd.Timeout || took > sd.Timeout+500*time.Millisecond {
		t.Errorf("Serve returned %v after its context ended, want at its timeout %v", took, sd.Timeout)
	}
	if want := "1 request still running after the shutdown timeout (3s), closed without an answer: context deadline exceeded"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Serve: %v; want it to say %q", err, want)
	}
	got := []string{<-statuses, <-statuses}
	slices.Sort(got)
	if want := []string{"/heeds: 503", "/ignores: no answer"}; !slices.Equal(got, want) {
		t.Errorf("answers %v, want %v", got, want)
	}
	if n := cancelled.Load(); n != 2 {
		t.Errorf("Cancelled told of %d requests, want 2", n)
	}
}
