package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/logging"
)

// clock is a time a test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// A message repeated 100 times within the period is logged once, at once;
// the next one after the period carries the 99 held back; another message
// is not held back by the first.
func TestThrottleLog(t *testing.T) {
	t.Parallel()
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	th := logging.NewThrottle(30*time.Second, c.Now)
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	for range 100 {
		th.Log(log, zapcore.WarnLevel, "could not move parked tasks out of the archive; will try again", zap.String("error", "dial tcp: refused"))
		c.Add(100 * time.Millisecond)
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines for 100 repeats within the period, want 1: %v", n, logs.All())
	}
	if _, found := logs.All()[0].ContextMap()["suppressed"]; found {
		t.Errorf("the first line has a suppressed count: %v", logs.All()[0].ContextMap())
	}
	th.Log(log, zapcore.WarnLevel, "could not look for tasks archived after a lost lease; will try again")
	th.Log(log, zapcore.ErrorLevel, "could not move parked tasks out of the archive; will try again")
	if n := logs.Len(); n != 3 {
		t.Fatalf("another message or level was held back: %v", logs.All())
	}
	c.Add(21 * time.Second) // 31 s after the first
	th.Log(log, zapcore.WarnLevel, "could not move parked tasks out of the archive; will try again")
	last := logs.All()[logs.Len()-1]
	if logs.Len() != 4 || last.ContextMap()["suppressed"] != int64(99) {
		t.Fatalf("after the period: %d lines, the last %v; want a 4th with suppressed=99", logs.Len(), last.ContextMap())
	}
	th.Log(log, zapcore.WarnLevel, "could not move parked tasks out of the archive; will try again")
	if logs.Len() != 4 {
		t.Errorf("a repeat right after the reminder was logged: %v", logs.All())
	}
}

// Key leaves out what changes from one repeat of a library's message to
// the next (addresses, ports, counts, ids) but keeps what tells messages
// apart, the queue's name included.
func TestKey(t *testing.T) {
	t.Parallel()
	same := [][2]string{
		{"Dequeue error: UNKNOWN: redis eval error: dial tcp 127.0.0.1:36333: connect: connection refused",
			"Dequeue error: UNKNOWN: redis eval error: dial tcp 10.0.0.7:6379: connect: connection refused"},
		{"Failed to extend lease for tasks [77d763ba-40a6-445c-a19c-adc210ae01fa 88e7]: dial tcp 127.0.0.1:1: connect: connection refused",
			"Failed to extend lease for tasks [12345678-90ab-4cde-8f01-23456789abcd]: dial tcp 127.0.0.1:2: connect: connection refused"},
		{"connection pool: failed to dial after 5 attempts: dial tcp 127.0.0.1:42549: connect: connection refused",
			"connection pool: failed to dial after 4 attempts: dial tcp 127.0.0.1:42549: connect: connection refused"},
		{"connection pool: failed to dial after 5 attempts: tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2026-12-01T05:43:09Z is after 2026-11-30T00:00:00Z",
			"connection pool: failed to dial after 5 attempts: tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2026-12-01T05:43:10.25Z is after 2026-11-30T00:00:00Z"},
	}
	for _, p := range same {
		if a, b := logging.Key(zapcore.ErrorLevel, p[0]), logging.Key(zapcore.ErrorLevel, p[1]); a != b {
			t.Errorf("different keys for repeats:\n%q\n%q", a, b)
		}
	}
	differ := [][2]string{
		{`Failed to delete expired completed tasks from queue "default": refused`, `Failed to delete expired completed tasks from queue "bulk": refused`},
		{"Dequeue error: refused", "Failed to forward scheduled tasks: refused"},
		{`Failed to delete expired completed tasks from queue "tier1": refused`, `Failed to delete expired completed tasks from queue "tier2": refused`},
		{"Quitting worker. task id=77d763ba-40a6-445c-a19c-adc210ae01fa", "Quitting worker. task id=12345678-90ab-4cde-8f01-23456789abcd"},
		{"Could not push task id=raw-1 back to queue: refused", "Could not push task id=raw-2 back to queue: refused"},
	}
	for _, p := range differ {
		if a, b := logging.Key(zapcore.ErrorLevel, p[0]), logging.Key(zapcore.ErrorLevel, p[1]); a == b {
			t.Errorf("one key for different messages: %q", a)
		}
	}
	if logging.Key(zapcore.WarnLevel, "x") == logging.Key(zapcore.ErrorLevel, "x") {
		t.Error("one key for two levels")
	}
	if k := logging.Key(zapcore.ErrorLevel, strings.Repeat("word ", 10_000)); len(k) > 200 {
		t.Errorf("key of %d bytes, want at most 200", len(k))
	}
}

// A Throttle remembers a bounded number of messages: a flood of distinct
// ones is logged (none is a repeat) without growing it without bound.
func TestThrottleBounded(t *testing.T) {
	t.Parallel()
	th := logging.NewThrottle(time.Minute, nil)
	for i := range 10_000 {
		if ok, _ := th.Allow(strings.Repeat("x", i%50) + string(rune('a'+i%26)) + time.Duration(i).String()); !ok {
			t.Fatalf("distinct message %d held back", i)
		}
	}
}

// go-redis's failed dials, repeated while Redis is away, make one line,
// then one per period with the count of those held back.
func TestRedisLoggerThrottles(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log, err := logging.New("info", "json", &out)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	rl := logging.NewRedisLogger(log, logging.NewThrottle(30*time.Second, c.Now))
	for i := range 100 {
		rl.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: dial tcp 127.0.0.1:%d: connect: connection refused\n", 5, 40000+i)
	}
	rl.Printf(context.Background(), "redis: sentinel: new master=%q addr=%q", "mymaster", "10.0.0.2:6379")
	c.Add(30 * time.Second)
	rl.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: dial tcp 127.0.0.1:%d: connect: connection refused\n", 5, 1)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[2]), &last); err != nil {
		t.Fatal(err)
	}
	if last["suppressed"] != float64(99) {
		t.Errorf("the reminder %v, want suppressed 99", last)
	}
	// Repeats held back when the command ends are reported as it detaches
	// the logger, and nothing is written after.
	for range 3 {
		rl.Printf(context.Background(), "redis: connection pool: failed to dial after 5 attempts: dial tcp 127.0.0.1:1: connect: connection refused")
	}
	rl.Detach()
	rl.Printf(context.Background(), "redis: after the end")
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[3], `"msg":"repeated lines held back"`) || !strings.Contains(lines[3], `"suppressed":3`) {
		t.Errorf("after Detach, lines:\n%s\nwant a fourth and last one reporting 3 held back", out.String())
	}
}

// Flush reports each message's held-back repeats once, as one WARN line
// naming it, and nothing for a message without any: a process that stops
// does not take the count with it.
func TestThrottleFlush(t *testing.T) {
	t.Parallel()
	c := &clock{now: time.Unix(1_800_000_000, 0)}
	th := logging.NewThrottle(time.Minute, c.Now)
	for range 3 {
		th.Allow("repeated")
	}
	th.Allow("once")
	core, logs := observer.New(zapcore.DebugLevel)
	th.Flush(zap.New(core))
	th.Flush(zap.New(core)) // the count was reported: nothing more
	got := logs.All()
	if len(got) != 1 || got[0].Message != "repeated lines held back" || got[0].Level != zapcore.WarnLevel ||
		got[0].ContextMap()["message"] != "repeated" || got[0].ContextMap()["suppressed"] != int64(2) {
		t.Fatalf("flushed %v, want one WARN line: repeated, 2 held back", got)
	}
	var none *logging.Throttle
	none.Flush(zap.New(core)) // a nil Throttle holds nothing back
}
