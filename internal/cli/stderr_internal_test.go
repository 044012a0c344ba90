package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// overlapWriter records whether two writes were ever in progress at once.
type overlapWriter struct {
	inFlight, overlaps atomic.Int32
	mu                 sync.Mutex
	text               strings.Builder
}

func (w *overlapWriter) Write(p []byte) (int, error) {
	if w.inFlight.Add(1) > 1 {
		w.overlaps.Add(1)
	}
	defer w.inFlight.Add(-1)
	time.Sleep(time.Millisecond) // a slow terminal or pipe: room for another write to overlap
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.text.Write(p)
}

// TestStderrSharedWithGoRedis: go-redis logs from goroutines of its own (a
// dial that fails in the background) while the command writes its own
// lines to the same stderr, a bytes.Buffer in tests: the writes must come
// one at a time, whole.
func TestStderrSharedWithGoRedis(t *testing.T) {
	w := &overlapWriter{}
	env := newEnv(context.Background(), strings.NewReader(""), io.Discard, w)
	log, err := (LogFlags{LogLevel: "warn", LogFormat: "json"}).logger(env)
	if err != nil {
		t.Fatal(err)
	}
	env.logRedisTo(log) // as opening Redis does
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(2)
		go func() { // as go-redis's dialer does, through redis.SetLogger
			defer wg.Done()
			env.redisLog.Printf(context.Background(), "redis: dial failed on %c", 'a'+i)
		}()
		go func() {
			defer wg.Done()
			fmt.Fprintf(env.Stderr, "command line %c\n", 'a'+i)
		}()
	}
	wg.Wait()
	env.done()
	if n := w.overlaps.Load(); n > 0 {
		t.Errorf("%d writes to stderr overlapped", n)
	}
	if got := strings.Count(w.text.String(), "dial failed on"); got != 20 {
		t.Errorf("%d of go-redis's 20 lines written, want 20:\n%s", got, w.text.String())
	}
}

// go-redis's logger is process-wide, and several commands may run in one
// process (tests run many at once). A command gets go-redis's lines once it
// opens Redis, not before: a command refused before that, whenever it
// starts, gets none of another command's failed dials.
func TestRedisLinesOnlyOnceRedisIsOpened(t *testing.T) {
	var opened, refused strings.Builder
	a := newEnv(context.Background(), strings.NewReader(""), io.Discard, &opened)
	if _, err := (LogFlags{LogLevel: "warn", LogFormat: "json"}).logger(a); err != nil {
		t.Fatal(err)
	}
	conn, err := (RedisFlags{RedisURL: "redis://127.0.0.1:1/0"}).open(a) // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Client.Close()
	b := newEnv(context.Background(), strings.NewReader(""), io.Discard, &refused)
	if _, err := (LogFlags{LogLevel: "warn", LogFormat: "json"}).logger(b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Client.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered on port 1")
	}
	b.done()
	a.done()
	if got := refused.String(); got != "" {
		t.Errorf("the command that never opened Redis got go-redis's lines:\n%s", got)
	}
	if got := opened.String(); !strings.Contains(got, "failed to dial") {
		t.Errorf("the command that opened Redis did not get its failed dial:\n%s", got)
	}
}

// Every error line a command prints is one line, whatever the error's text
// holds (go-redis joins the errors of the sentinels it could not reach
// with newlines), with control characters escaped, and bounded; a list of
// problems gets a line per problem under its heading, each one line too.
func TestErrorLinesAreOneLineEach(t *testing.T) {
	t.Parallel()
	sentinels := errors.New("redis: all sentinels specified in configuration are unreachable: dial tcp 127.0.0.1:1: refused\ndial tcp 127.0.0.1:2: refused")
	problems := problemsError{head: "invalid schedule", problems: []string{"cron: bad\nvalue", "id: \x1b[2J"}}
	tests := []struct {
		name, text string
		err        error
		want       string
	}{
		{"sentinels", sentinels.Error() + "; Redis at … did not answer", sentinels,
			"certmail x: redis: all sentinels specified in configuration are unreachable: dial tcp 127.0.0.1:1: refused; dial tcp 127.0.0.1:2: refused; Redis at … did not answer\n"},
		{"line breaks of every kind", "a\r\nb\rc\n", errors.New(""), "certmail x: a; b; c\n"},
		{"control characters", "a\x1b[2J\tb\xff", errors.New(""), `certmail x: a\x1b[2J\tb\xff` + "\n"},
		{"problems", problems.Error(), usageError{problems}, "certmail x: invalid schedule:\n  cron: bad; value\n  id: \\x1b[2J\n"},
		{"problems wrapped", "add: " + problems.Error(), fmt.Errorf("add: %w", problems), "certmail x: add: invalid schedule:\n  cron: bad; value\n  id: \\x1b[2J\n"},
		{"problems and more", problems.Error() + "\nlater", problems, "certmail x: invalid schedule:;   cron: bad; value;   id: \\x1b[2J; later\n"},
	}
	for _, tt := range tests {
		var b strings.Builder
		printError(&b, "x", tt.text, tt.err)
		if b.String() != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, b.String(), tt.want)
		}
	}
	var b strings.Builder
	printError(&b, "x", strings.Repeat("a\n", 10000), errors.New(""))
	if got := b.String(); strings.Count(got, "\n") != 1 || len(got) > maxErrorLine+64 || !strings.HasSuffix(got, "…\n") {
		t.Errorf("a long error: %d bytes, %d lines; want one line of about %d bytes, cut", len(got), strings.Count(got, "\n"), maxErrorLine)
	}
}
