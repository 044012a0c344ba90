package logging_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/logging"
)

// TestTimestamps holds both formats to RFC 3339 timestamps with milliseconds
// in UTC, so that lines from several processes sort together.
func TestTimestamps(t *testing.T) {
	t.Parallel()
	want := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	for _, format := range []string{"json", "console"} {
		var out bytes.Buffer
		log, err := logging.New("info", format, &out)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello")
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
		if !want.MatchString(ts) {
			t.Errorf("%s: timestamp %q, want like 2026-01-02T15:04:05.000Z; line %q", format, ts, out.String())
		}
	}
}
