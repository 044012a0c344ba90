package worker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/logging"
)

// asynq's errors, repeated by its loops while Redis is away, make one line
// at once, then one per period with the count of those held back; another
// message is not held back by them.
func TestAsynqLoggerThrottlesRepeats(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	core, logs := zapobserver.New(zapcore.DebugLevel)
	l := asynqLogger{s: zap.New(core).Sugar(), throttle: logging.NewThrottle(30*time.Second, clock)}
	for i := range 100 {
		l.Error(fmt.Sprintf("Dequeue error: UNKNOWN: redis eval error: dial tcp 127.0.0.1:%d: connect: connection refused", 40000+i))
		mu.Lock()
		now = now.Add(200 * time.Millisecond) // 20 s in all
		mu.Unlock()
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines for 100 repeats, want 1: %v", n, logs.All())
	}
	l.Error("Failed to forward scheduled tasks: INTERNAL_ERROR: redis eval error: dial tcp 127.0.0.1:1: connect: connection refused")
	l.Warn("Quitting worker. task id=77d763ba-40a6-445c-a19c-adc210ae01fa")
	if n := logs.Len(); n != 3 {
		t.Fatalf("other messages held back: %v", logs.All())
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	l.Error("Dequeue error: UNKNOWN: redis eval error: dial tcp 127.0.0.1:1: connect: connection refused")
	if n := logs.Len(); n != 4 {
		t.Fatalf("%d lines, want the reminder after the period", n)
	}
	last := logs.All()[3]
	if last.Level != zapcore.ErrorLevel || last.ContextMap()["suppressed"] != int64(99) {
		t.Errorf("reminder %v %v, want an error with suppressed=99", last.Level, last.ContextMap())
	}
}
