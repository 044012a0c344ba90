// Package ranges words the range of a bounded setting one way wherever it
// is stated: a Config's Validate error, a command's refusal, --help and
// the README all say "LO to HI", a duration written as --help writes a
// default (5m, not 5m0s; 720h, not 720h0m0s).
package ranges

import (
	"fmt"
	"strings"
	"time"
)

// Bounded is the type of a setting with a range.
type Bounded interface {
	int | int64 | time.Duration
}

// Of is the range lo to hi as certmail states it: "1s to 5m", "1 to 100".
func Of[T Bounded](lo, hi T) string {
	return Value(lo) + " to " + Value(hi)
}

// Value is v as a range states it: a duration by Duration, a number in
// decimal.
func Value[T Bounded](v T) string {
	if d, ok := any(v).(time.Duration); ok {
		return Duration(d)
	}
	return fmt.Sprint(v)
}

// Duration is d without the zero units time.Duration's String ends a
// whole number of minutes or hours with: 5m, 24h, 1h30m, 1m30s.
func Duration(d time.Duration) string {
	s := d.String()
	for _, zeros := range []string{"m0s", "h0m"} {
		if strings.HasSuffix(s, zeros) {
			s = s[:len(s)-len("0s")]
		}
	}
	return s
}
