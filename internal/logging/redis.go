package logging

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// RedisLogger carries go-redis's own messages (a failed dial, a Sentinel
// switching masters) to a zap logger at WARN, so that a process's stderr
// stays one JSON line per entry. Install it with redis.SetLogger, which is
// process-wide; Detach silences it when its logger's output goes away.
type RedisLogger struct {
	mu  sync.RWMutex
	log *zap.Logger // nil once detached
}

// NewRedisLogger returns a RedisLogger writing to log.
func NewRedisLogger(log *zap.Logger) *RedisLogger {
	return &RedisLogger{log: log}
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
	l.log.Warn(msg)
}

// Detach makes every later message a no-op, once the messages being written
// are done.
func (l *RedisLogger) Detach() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = nil
}
