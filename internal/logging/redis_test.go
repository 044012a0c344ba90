package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

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
