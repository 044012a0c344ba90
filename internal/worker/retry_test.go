package worker

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/tasks"
)

// retryNominal are the nominal delays (jitter at its midpoint) of the first
// retries, as the README's table lists them; every later one is retryMax.
var retryNominal = []time.Duration{
	30 * time.Second,
	75 * time.Second,
	187500 * time.Millisecond,
	468750 * time.Millisecond,
	1171875 * time.Millisecond,
	2929687500 * time.Microsecond,
	7324218750 * time.Microsecond,
}

// nominalDelay is the nominal delay before retry n+1.
func nominalDelay(n int) time.Duration {
	if n < len(retryNominal) {
		return retryNominal[n]
	}
	return 4 * time.Hour
}

// TestRetryDelaySchedule: each delay, over the default's retries and at
// least one capped one, is the nominal one ±20 % (the window the default's
// retries span is the README's: TestReadmeRetryFigures).
func TestRetryDelaySchedule(t *testing.T) {
	t.Parallel()
	for n := range max(tasks.DefaultMaxRetry, len(retryNominal)+1) {
		w := nominalDelay(n)
		got := retryDelay(n, func() float64 { return 0.5 })
		if diff := got - w; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("retry %d: delay %v, want %v", n+1, got, w)
		}
		lo, hi := retryDelay(n, func() float64 { return 0 }), retryDelay(n, func() float64 { return 1 })
		if lo != time.Duration(0.8*float64(got)) || hi != time.Duration(1.2*float64(got)) {
			t.Errorf("retry %d: jitter range [%v, %v], want ±20%% of %v", n+1, lo, hi, got)
		}
	}
	if got := RetryDelay(30); got < time.Duration(0.8*float64(4*time.Hour)) || got > time.Duration(1.2*float64(4*time.Hour)) {
		t.Errorf("RetryDelay(30) = %v, want 4h ±20%%", got)
	}
}

func TestRetryDelayFunc(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    error
		lo, hi time.Duration
	}{
		{&taskError{class: classRateLimited, retryAfter: 7 * time.Second, err: errors.New("429")}, 7 * time.Second, 7 * time.Second},
		{fmt.Errorf("wrapped: %w", &taskError{class: classTransient, retryAfter: time.Minute, err: errors.New("503")}), time.Minute, time.Minute},
		{asynq.ErrLeaseExpired, leaseExpiredDelay, leaseExpiredDelay},
		{errors.New("panic or deadline"), 24 * time.Second, 36 * time.Second},
	}
	for _, tt := range tests {
		if got := retryDelayFunc(0, tt.err, nil); got < tt.lo || got > tt.hi {
			t.Errorf("retryDelayFunc(%v) = %v, want in [%v, %v]", tt.err, got, tt.lo, tt.hi)
		}
	}
}

// TestReadmeRetryFigures: the figures of the README's Retries section are
// those of the retry schedule, tasks.DefaultMaxRetry and the client's
// default attempts, so that a change to any of them fails here until the
// README follows: the table's columns and delays, the window the default's
// retries span, and the most DigiCert calls one task can cause.
func TestReadmeRetryFigures(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	checkRetryTable(t, string(readme))
	text := strings.Join(strings.Fields(string(readme)), " ")
	retries := tasks.DefaultMaxRetry
	var window time.Duration
	for n := range retries {
		window += retryDelay(n, func() float64 { return 0.5 })
	}
	calls := (retries + 1) * digicert.Config{}.WithDefaults().MaxAttempts
	perDomain := calls * (digicert.MaxOrderNames + 1)
	for _, want := range []string{
		fmt.Sprintf("With the default %d retries a task is retried for about %d h before it is dead-lettered", retries, int(math.Round(window.Hours()))),
		fmt.Sprintf("%d deliveries × %d attempts = **%d**", retries+1, digicert.Config{}.WithDefaults().MaxAttempts, calls),
		fmt.Sprintf("its budget is %d × (1 + the number of those domains", calls),
		fmt.Sprintf("at most %d × %d = %s, as an order holds at most %d domains", calls, digicert.MaxOrderNames+1, thousands(perDomain), digicert.MaxOrderNames),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the README's Retries section does not say %q", want)
		}
	}
}

// checkRetryTable checks the README's table of retry delays: a column for
// each retry up to the first at retryMax, then one for the rest of the
// default's, each delay the nominal one (as the README rounds it, within 1 %).
func checkRetryTable(t *testing.T, readme string) {
	t.Helper()
	_, table, ok := strings.Cut(readme, "\n| retry |")
	if !ok {
		t.Fatal("the README has no table of retry delays")
	}
	lines := strings.Split(table, "\n")
	header, delays := strings.Fields(strings.Trim(lines[0], " |")), strings.Split(strings.Trim(lines[2], " |"), " | ")
	half := func() float64 { return 0.5 }
	var want []string
	first := make([]int, 0, len(header)) // each column's first retry, from 0
	for n := 0; n < tasks.DefaultMaxRetry; n++ {
		if retryDelay(n, half) < retryMax {
			want, first = append(want, strconv.Itoa(n+1)), append(first, n)
			continue
		}
		if n+1 < tasks.DefaultMaxRetry {
			want = append(want, fmt.Sprintf("%d–%d", n+1, tasks.DefaultMaxRetry))
		} else {
			want = append(want, strconv.Itoa(n+1))
		}
		first = append(first, n)
		break
	}
	if got := slices.DeleteFunc(header, func(s string) bool { return s == "|" }); !slices.Equal(got, want) {
		t.Errorf("the README's retry table has the columns %q, want %q", got, want)
		return
	}
	if len(delays) != len(want)+1 || delays[0] != "delay (±20 %)" {
		t.Fatalf("the README's retry table has no row of delays under its columns: %q", lines[2])
	}
	for i, n := range first {
		got, nominal := readmeDuration(t, delays[i+1]), retryDelay(n, half)
		if math.Abs(float64(got-nominal)) > 0.01*float64(nominal) {
			t.Errorf("the README's retry table gives retry %d a delay of %q, want about %v", n+1, delays[i+1], nominal)
		}
	}
}

// readmeDuration reads a delay as the README writes it: "30 s",
// "3.1 min", "2 h 2 min", "4 h each".
func readmeDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	units := map[string]time.Duration{"s": time.Second, "min": time.Minute, "h": time.Hour}
	var d time.Duration
	f := strings.Fields(strings.TrimSuffix(s, " each"))
	if len(f) == 0 || len(f)%2 != 0 {
		t.Fatalf("the README's retry table has a delay %q that is not numbers with units", s)
	}
	for i := 0; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || units[f[i+1]] == 0 {
			t.Fatalf("the README's retry table has a delay %q that is not numbers with units", s)
		}
		d += time.Duration(v * float64(units[f[i+1]]))
	}
	return d
}

// thousands writes n as the README does, its digits in groups of three
// separated by spaces: 13 052.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + " " + s[i:]
	}
	return s
}
