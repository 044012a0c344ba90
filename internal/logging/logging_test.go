package logging_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/logging"
)

// fixedClock is a zap clock that always reads t.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time                         { return c.t }
func (c fixedClock) NewTicker(d time.Duration) *time.Ticker { return time.NewTicker(d) }

// TestTimestamps holds both formats to RFC 3339 timestamps with milliseconds
// in UTC, so that lines from several processes sort together: a clock in
// another zone is written as UTC, whatever zone the machine is in.
func TestTimestamps(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 15, 4, 5, 123456789, time.FixedZone("UTC+1", 3600))
	for _, format := range []string{"json", "console"} {
		var out bytes.Buffer
		log, err := logging.New("info", format, &out)
		if err != nil {
			t.Fatal(err)
		}
		log.WithOptions(zap.WithClock(fixedClock{at})).Info("hello")
		var ts string
		if format == "json" {
			var m map[string]any
			if err := json.Unmarshal(out.Bytes(), &m); err != nil {
				t.Fatalf("json: not one JSON line: %q", out.String())
			}
			ts, _ = m["ts"].(string)
		} else {
			ts, _, _ = strings.Cut(out.String(), "\t")
		}
		if ts != "2026-01-02T14:04:05.123Z" {
			t.Errorf("%s: timestamp %q, want 2026-01-02T14:04:05.123Z; line %q", format, ts, out.String())
		}
	}
}

// A message that holds control characters (text from outside: a library's
// line through the standard log package, a panic's value) stays one line
// in the console format, its characters escaped, also in a logger made by
// With; the JSON format escapes them already.
func TestConsoleMessageIsOneLine(t *testing.T) {
	const msg = "a\nINJECTED 2026-12-02T00:00:00.000Z\tERROR\x1b[31m\r\u2028\u0085end"
	var buf bytes.Buffer
	log, err := logging.New("info", "console", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info(msg, zap.String("field", "x\ny"))
	log.With(zap.Int("n", 1)).Warn(msg)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %q", len(lines), buf.String())
	}
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\x1b\u2028\u0085") || !strings.Contains(l, `a\nINJECTED 2026-12-02T00:00:00.000Z\tERROR\u001b[31m\r\u2028\u0085end`) {
			t.Errorf("line %q: want the message escaped", l)
		}
	}
	if !strings.Contains(lines[0], `"field": "x\ny"`) {
		t.Errorf("line %q: want the field JSON-escaped", lines[0])
	}
}
