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
