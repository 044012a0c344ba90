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
// switching masters) to a zap logger, at WARN unless made with
// NewRedisLoggerAt, so that a process's stderr stays one JSON line per
// entry. A message repeated within its throttle's
// period (the same but for addresses and counts: a dial that fails again
// while Redis is away) is held back, and counted on the next line of it.
// Install it with redis.SetLogger, which is process-wide; Detach silences
// it when its logger's output goes away.
type RedisLogger struct {
	throttle *Throttle
	level    zapcore.Level
	mu       sync.RWMutex
	log      *zap.Logger // nil once detached
}

// NewRedisLogger returns a RedisLogger writing to log through throttle (a
// new one of ThrottlePeriod when nil).
func NewRedisLogger(log *zap.Logger, throttle *Throttle) *RedisLogger {
	return NewRedisLoggerAt(log, zapcore.WarnLevel, throttle)
}

// NewRedisLoggerAt is NewRedisLogger writing at level: a one-shot command
// that reports its own failure in one line keeps go-redis's lines for
// DEBUG, where they explain that line without repeating it.
func NewRedisLoggerAt(log *zap.Logger, level zapcore.Level, throttle *Throttle) *RedisLogger {
	if throttle == nil {
		throttle = NewThrottle(0, nil)
	}
	return &RedisLogger{log: log, level: level, throttle: throttle}
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
	ok, n := l.throttle.Allow(Key(l.level, msg))
	if !ok {
		return
	}
	if ce := l.log.Check(l.level, msg); ce != nil {
		if n > 0 {
			ce.Write(zap.Int("suppressed", n))
		} else {
			ce.Write()
		}
	}
}

// Detach reports the repeats held back and not yet reported (Throttle's
// Flush), then makes every later message a no-op, once the messages being
// written are done.
func (l *RedisLogger) Detach() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.log != nil {
		l.throttle.FlushAt(l.log, l.level)
	}
	l.log = nil
}
