package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/logging"
)

func TestRedisLogger(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log, err := logging.New("info", "json", &out)
	if err != nil {
		t.Fatal(err)
	}
	rl := logging.NewRedisLogger(log.Named("redis"), nil)
	rl.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v\n", 5, "connection refused")
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("not one JSON line: %q", out.String())
	}
	if m["level"] != "warn" || m["logger"] != "redis" || m["msg"] != "connection pool: failed to dial after 5 attempts: connection refused" {
		t.Errorf("line %v", m)
	}
	rl.Detach()
	out.Reset()
	rl.Printf(context.Background(), "after detach")
	if strings.TrimSpace(out.String()) != "" {
		t.Errorf("a detached logger wrote %q", out.String())
	}
}

// A RedisLogger made at DEBUG (a one-shot command's) writes go-redis's
// messages, and the count of the repeats it held back, at DEBUG: nothing
// at the default level, JSON lines at debug.
func TestRedisLoggerAtDebug(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"info", "debug"} {
		var out bytes.Buffer
		log, err := logging.New(level, "json", &out)
		if err != nil {
			t.Fatal(err)
		}
		rl := logging.NewRedisLoggerAt(log.Named("redis"), zapcore.DebugLevel, nil)
		for range 3 {
			rl.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v\n", 5, "connection refused")
		}
		rl.Detach()
		got := strings.TrimSpace(out.String())
		if level == "info" {
			if got != "" {
				t.Errorf("at info, the DEBUG logger wrote %q", got)
			}
			continue
		}
		lines := strings.Split(got, "\n")
		if len(lines) != 2 {
			t.Fatalf("at debug, %d lines, want the message and the count held back:\n%s", len(lines), got)
		}
		for _, line := range lines {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil || m["level"] != "debug" || m["logger"] != "redis" {
				t.Errorf("line %q: want a JSON line at debug from logger redis", line)
			}
		}
	}
}
