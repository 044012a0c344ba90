// Package certmailtest holds what certmail's tests share beyond a Redis
// server (package redistest) and a fake CertCentral (digicerttest): a
// logger whose lines a test reads through zap's observer (NewLogger), a
// buffer a command writes its output to while the test reads it (Output),
// a Redis connection closed when the test ends (Conn), a real worker run
// for the length of a test (StartWorker), waiting on a condition with a
// deadline (WaitFor), and how far a call raises the live heap (HeapPeak).
// It is imported by tests only.
package certmailtest

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/redisconn"
)

// Logs is what a logger from NewLogger wrote: every entry as zap's observer
// keeps it, and the same lines as certmail's JSON encoder writes them, for
// the tests that search the text for what must never be logged.
type Logs struct {
	*observer.ObservedLogs
	text Output
}

// NewLogger returns a debug-level logger whose lines the test reads
// through the returned Logs.
func NewLogger(tb testing.TB) (*zap.Logger, *Logs) {
	tb.Helper()
	core, observed := observer.New(zapcore.DebugLevel)
	l := &Logs{ObservedLogs: observed}
	text, err := logging.New("debug", "json", &l.text)
	if err != nil {
		tb.Fatal(err)
	}
	return zap.New(zapcore.NewTee(core, text.Core()), zap.AddCaller()), l
}

// Text returns every line as the JSON encoder wrote it.
func (l *Logs) Text() string { return l.text.String() }

// Lines returns the fields of the entries at level (debug, info, warn,
// error; "" for any) with the message msg ("" for any), in order. Field
// values are as zap's encoders receive them: an int64 for zap.Int, a
// time.Duration for zap.Duration, the error's text for zap.Error.
func (l *Logs) Lines(level, msg string) []map[string]any {
	var out []map[string]any
	for _, e := range l.All() {
		if (level == "" || e.Level.String() == level) && (msg == "" || e.Message == msg) {
			out = append(out, e.ContextMap())
		}
	}
	return out
}

// Output is a buffer a command writes to while the test reads it; it is
// safe for concurrent use.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns what was written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// JSONLines decodes what was written as JSON lines; a line that is not a
// JSON object fails the test.
func (o *Output) JSONLines(tb testing.TB) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(o.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			tb.Fatalf("line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// Conn returns a connection to the Redis at url, closed when the test ends.
func Conn(tb testing.TB, url string) *redisconn.Conn {
	tb.Helper()
	c, err := redisconn.Open(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Client.Close() })
	return c
}

// WaitFor polls cond until it holds, failing the test with describe's
// account of what it saw when within passes.
func WaitFor(tb testing.TB, within time.Duration, cond func() bool, describe func() string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v: %s", within, describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
