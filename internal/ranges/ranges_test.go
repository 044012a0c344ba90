package ranges_test

import (
	"testing"
	"time"

	"github.com/certmail/certmail/internal/ranges"
)

// A range reads as --help and the README write it: no trailing zero units
// on a duration (time.Duration's String writes 5m0s), numbers in decimal.
func TestOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ got, want string }{
		{ranges.Of(time.Second, 5*time.Minute), "1s to 5m"},
		{ranges.Of(time.Minute, 720*time.Hour), "1m to 720h"},
		{ranges.Of(10*time.Millisecond, 90*time.Minute), "10ms to 1h30m"},
		{ranges.Of(90*time.Second, 43800*time.Hour), "1m30s to 43800h"},
		{ranges.Of(1, 1000), "1 to 1000"},
		{ranges.Of[int64](0, 100), "0 to 100"},
	} {
		if tt.got != tt.want {
			t.Errorf("%q, want %q", tt.got, tt.want)
		}
	}
}
