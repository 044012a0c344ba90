package worker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

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
// least one capped one, is the nominal one ±20 %.
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
