package ratelimit_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/ratelimit"
)

func TestParseWindows(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []ratelimit.Window
		wantErr bool
	}{
		{in: "", wantErr: true},
		{in: " \t", wantErr: true},
		{in: "100/5s,1000/3m", want: []ratelimit.Window{{100, 5 * time.Second}, {1000, 3 * time.Minute}}},
		{in: " 10 / 1s ", want: []ratelimit.Window{{10, time.Second}}},
		{in: "10/90s", want: []ratelimit.Window{{10, 90 * time.Second}}},
		{in: "100", wantErr: true},
		{in: "0/5s", wantErr: true},
		{in: "-1/5s", wantErr: true},
		{in: "x/5s", wantErr: true},
		{in: "10/soon", wantErr: true},
		{in: "10/0s", wantErr: true},
		{in: "1/1ms", want: []ratelimit.Window{{1, time.Millisecond}}},
		{in: "1/999us", wantErr: true},
		{in: "100/5s,", wantErr: true},
		{in: "1000000/100ms,1000000/24h", want: []ratelimit.Window{{1000000, 100 * time.Millisecond}, {1000000, 24 * time.Hour}}},
		{in: "1000001/5s", wantErr: true},
		{in: "1/24h1ms", wantErr: true},
		{in: "1/100000h", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ratelimit.ParseWindows(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseWindows(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseWindows(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestParseWindowsErrorIsBounded: a setting pasted wrong (a whole file, a
// key) is named in the error by its first characters only.
func TestParseWindowsErrorIsBounded(t *testing.T) {
	t.Parallel()
	for _, in := range []string{strings.Repeat("x", 5000) + "/5s", "10/" + strings.Repeat("s", 5000), strings.Repeat("1", 5000)} {
		_, err := ratelimit.ParseWindows(in)
		if err == nil || len(err.Error()) > 200 {
			t.Errorf("ParseWindows of %d bytes: error of %d bytes, want one of at most 200: %.300v", len(in), len(fmt.Sprint(err)), err)
		}
	}
}

func TestWindowStringRoundTrip(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"100/5s,1000/3m", "10/10s", "5/1h", "7/1m30s", "3/250ms"} {
		ws, err := ratelimit.ParseWindows(in)
		if err != nil {
			t.Fatalf("ParseWindows(%q): %v", in, err)
		}
		parts := make([]string, len(ws))
		for i, w := range ws {
			parts[i] = w.String()
		}
		if got := strings.Join(parts, ","); got != in {
			t.Errorf("the windows of ParseWindows(%q) print as %q", in, got)
		}
	}
}

func TestConfigDefaultsAndValidate(t *testing.T) {
	t.Parallel()
	c := ratelimit.Config{Windows: []ratelimit.Window{{Limit: 100, Period: 5 * time.Second}, {Limit: 1000, Period: 3 * time.Minute}}}.WithDefaults()
	if c.Margin != 50*time.Millisecond || c.MaxWait != 30*time.Second || c.InFlight != ratelimit.DefaultInFlight {
		t.Errorf("defaults: margin %v, max wait %v, in flight %v; want 1%% of 5s, 30s and the default in-flight bound", c.Margin, c.MaxWait, c.InFlight)
	}
	if c := (ratelimit.Config{Windows: []ratelimit.Window{{Limit: 1, Period: time.Hour}}}).WithDefaults(); c.Margin != 100*time.Millisecond {
		t.Errorf("margin %v, want it capped at 100ms", c.Margin)
	}
	if c := (ratelimit.Config{}).WithDefaults(); c.Margin != 0 {
		t.Errorf("margin %v without windows, want 0", c.Margin)
	}
	for _, good := range []ratelimit.Config{
		c,
		{}, // no windows; margin and wait zero take their defaults
		{Windows: []ratelimit.Window{{Limit: 1, Period: time.Millisecond}}}, // the least window
	} {
		if err := good.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", good, err)
		}
	}
	for _, bad := range []ratelimit.Config{
		{Windows: []ratelimit.Window{{Limit: 0, Period: time.Second}}},
		{Windows: []ratelimit.Window{{Limit: 1, Period: 0}}},
		{Margin: -time.Millisecond},
		{MaxWait: -time.Second},
		{InFlight: -time.Second},
	} {
		if bad.Validate() == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}
