package logging

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// RedisLogger carries go-redis's own messages (a failed dial, a Sentinel
// switching masters) to a zap logger at WARN, so that a process's stderr
// stays one JSON line per entry. A message repeated within its throttle's
// period (the same but for addresses and counts: a dial that fails again
// while Redis is away) is held back, and counted on the next line of it.
// Install it with redis.SetLogger, which is process-wide; Detach silences
// it when its logger's output goes away.
type RedisLogger struct {
	throttle *Throttle
	mu       sync.RWMutex
	log      *zap.Logger // nil once detached
}

// NewRedisLogger returns a RedisLogger writing to log through throttle (a
// new one of ThrottlePeriod when nil).
func NewRedisLogger(log *zap.Logger, throttle *Throttle) *RedisLogger {
	if throttle == nil {
		throttle = NewThrottle(0, nil)
	}
	return &RedisLogger{log: log, throttle: throttle}
}

// Printf implements go-redis's logging interface. go-redis starts some
// messages with "redis: " and ends some with a newline; both are dropped.
func (l *RedisLogger) Printf(_ context.Context, format string, v ...any) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.log == nil {
		return
	}
	msg := strings.TrimSpace(strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
	ok, n := l.throttle.Allow(Key(zapcore.WarnLevel, msg))
	switch {
	case !ok:
	case n > 0:
		l.log.Warn(msg, zap.Int("suppressed", n))
	default:
		l.log.Warn(msg)
	}
}

// Detach reports the repeats held back and not yet reported (Throttle's
// Flush), then makes every later message a no-op, once the messages being
// written are done.
func (l *RedisLogger) Detach() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.log != nil {
		l.throttle.Flush(l.log)
	}
	l.log = nil
}
