package worker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

func TestRetryDelaySchedule(t *testing.T) {
	t.Parallel()
	// Nominal delays (jitter at its midpoint), as the README's table lists them.
	want := []time.Duration{
		30 * time.Second,
		75 * time.Second,
		187500 * time.Millisecond,
		468750 * time.Millisecond,
		1171875 * time.Millisecond,
		2929687500 * time.Microsecond,
		7324218750 * time.Microsecond,
		4 * time.Hour, 4 * time.Hour, 4 * time.Hour, 4 * time.Hour, 4 * time.Hour,
	}
	var total time.Duration
	for n, w := range want {
		got := retryDelay(n, func() float64 { return 0.5 })
		if diff := got - w; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("retry %d: delay %v, want %v", n+1, got, w)
		}
		total += got
		lo, hi := retryDelay(n, func() float64 { return 0 }), retryDelay(n, func() float64 { return 1 })
		if lo != time.Duration(0.8*float64(got)) || hi != time.Duration(1.2*float64(got)) {
			t.Errorf("retry %d: jitter range [%v, %v], want ±20%% of %v", n+1, lo, hi, got)
		}
	}
	// 12 retries (the default) span about a day.
	if total < 22*time.Hour || total > 24*time.Hour {
		t.Errorf("12 retries span %v, want about 23h", total)
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
