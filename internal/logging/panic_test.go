package logging

import (
	"fmt"
	stdlog "log"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// panicLine is net/http's line for a handler's panic: client's address,
// value and a stack whose bug is at site (a file:line).
func panicLine(addr, value, site string) string {
	return "http: panic serving " + addr + ": " + value + "\ngoroutine 7 [running]:\n" +
		"net/http.(*conn).serve.func1()\n\t/usr/local/go/src/net/http/server.go:1897 +0xbd\n" +
		"panic({0x9925c0?, 0xb372d9511d0?})\n\t/usr/local/go/src/runtime/panic.go:860 +0x13a\n" +
		"runtime.goPanicIndex(0x3, 0x0)\n\t/usr/local/go/src/runtime/panic.go:115 +0x74\n" +
		"example.com/app/internal/api.(*Server).handle(0x1d050bd3e1b0, {0xa19ef0, 0x1d050bed8120})\n\t" + site + " +0x28\n" +
		"net/http.HandlerFunc.ServeHTTP(0x1d050bdda180?, {0xa196e8?, 0x1d050bdeef00?}, 0x1d050bd0ea10?)\n\t/usr/local/go/src/net/http/server.go:2286 +0x29\n" +
		"created by net/http.(*Server).Serve in goroutine 26\n\t/usr/local/go/src/net/http/server.go:3464 +0x485"
}

// A panic's key is its site and its value without the client's address:
// the same bug from two clients, or with another index, is one key; two
// runtime errors at two sites, or two values at one site, are two; a key
// is at most maxKey bytes, its site kept whatever the value's length.
func TestPanicKey(t *testing.T) {
	t.Parallel()
	const site = "/src/app/internal/api/tasks.go:120"
	key := panicKey(panicLine("127.0.0.1:46936", "runtime error: index out of range [3] with length 0", site))
	if want := "error http: panic at /src/app/internal/api/tasks.go:120: runtime error: index out of range # with length #"; key != want {
		t.Errorf("key %q, want %q", key, want)
	}
	same := []string{
		panicLine("[::1]:50000", "runtime error: index out of range [3] with length 0", site),
		panicLine("10.0.0.9:1234", "runtime error: index out of range [7] with length 2", site),
	}
	for _, msg := range same {
		if k := panicKey(msg); k != key {
			t.Errorf("the same bug's key %q, want %q", k, key)
		}
	}
	other := []string{
		panicLine("127.0.0.1:46936", "runtime error: index out of range [3] with length 0", "/src/app/internal/api/tasks.go:121"),
		panicLine("127.0.0.1:46936", "runtime error: invalid memory address or nil pointer dereference", site),
	}
	for _, msg := range other {
		if k := panicKey(msg); k == key {
			t.Errorf("another bug has the key %q", k)
		}
	}
	long := panicKey(panicLine("127.0.0.1:1", strings.Repeat("v", 10_000), "/"+strings.Repeat("d/", 300)+"tasks.go:120"))
	if len(long) > maxKey || !strings.Contains(long, "/tasks.go:120: vvv") {
		t.Errorf("a long site and value gave a key of %d bytes: %.300q", len(long), long)
	}
	if k := panicKey("http: panic serving 127.0.0.1:1: boom"); k != "error http: panic at unknown: boom" {
		t.Errorf("a panic without its stack: key %q", k)
	}
}

// Panics with any number of distinct values keep the HTTP error log's
// throttle table bounded: each is written, none taken for a repeat.
func TestPanicKeysBounded(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	th := NewThrottle(0, nil)
	l := HTTPErrorLog(zap.New(core), th)
	for i := range 5_000 {
		l.Print(panicLine("127.0.0.1:1", fmt.Sprintf("bad input %q", fmt.Sprint("x", i)), "/src/app/api.go:9"))
	}
	th.mu.Lock()
	n := len(th.seen)
	th.mu.Unlock()
	if n > maxThrottled || logs.Len() != 5_000 {
		t.Errorf("%d keys remembered (at most %d), %d lines written (want 5000)", n, maxThrottled, logs.Len())
	}
}

// FlushHTTPErrorLog reports a panic's repeats at ERROR and another line's
// at WARN, once; a logger HTTPErrorLog did not make, or none, is left
// alone.
func TestFlushHTTPErrorLog(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	l := HTTPErrorLog(zap.New(core), nil)
	for range 3 {
		l.Print(panicLine("127.0.0.1:1", "boom", "/src/app/api.go:9"))
		l.Print("http: superfluous response.WriteHeader call from example.com/app.f (a.go:1)")
	}
	FlushHTTPErrorLog(l)
	FlushHTTPErrorLog(l) // counted: nothing more
	FlushHTTPErrorLog(nil)
	FlushHTTPErrorLog(stdlog.Default())
	held := logs.FilterMessage("repeated lines held back").All()
	levels := map[zapcore.Level]any{}
	for _, e := range held {
		levels[e.Level] = e.ContextMap()["suppressed"]
	}
	if len(held) != 2 || levels[zapcore.ErrorLevel] != int64(2) || levels[zapcore.WarnLevel] != int64(2) {
		t.Errorf("flushed %v, want the panic's 2 at ERROR and the other's 2 at WARN", held)
	}
}
