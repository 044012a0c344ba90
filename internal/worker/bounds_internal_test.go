package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/redistest"
)

// jitter spreads a wait by up to +25 % and never shortens it; a wait of zero
// or less becomes a second, spread the same way.
func TestJitter(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, lo time.Duration }{
		{300 * time.Millisecond, 300 * time.Millisecond},
		{time.Minute, time.Minute},
		{0, time.Second},
		{-time.Second, time.Second},
	} {
		hi := tt.lo + tt.lo/4
		spread := false
		for range 200 {
			got := jitter(tt.in)
			if got < tt.lo || got > hi {
				t.Fatalf("jitter(%v) = %v, want %v to %v", tt.in, got, tt.lo, hi)
			}
			spread = spread || got != tt.lo
		}
		if !spread {
			t.Errorf("jitter(%v) never spread the wait in 200 draws", tt.in)
		}
	}
}

// The round trip after a call that succeeded is retried with backoff while
// Redis does not answer: a few tries a second, not a busy loop against a
// server that is restarting.
func TestPersistBacksOff(t *testing.T) {
	t.Parallel()
	log := zap.NewNop()
	p := &processor{log: log}
	start := time.Now()
	tries := 0
	p.persist(context.Background(), &delivery{taskID: "t-backoff"}, "duplicate guard", func(context.Context) error {
		tries++
		if time.Since(start) < 400*time.Millisecond {
			return errors.New("connection refused")
		}
		return nil
	})
	// From 50 ms growing ×1.5: 400 ms hold at most 5 tries.
	if tries > 10 {
		t.Errorf("%d tries while Redis was away for 400 ms, want a handful", tries)
	}
}

// persist's retries start soon after the first failure, 50 ms, grow by
// half each time up to a second, and never stop by themselves: a guard is
// written soon after a short Redis hiccup, and within a second of the end
// of a long outage, before asynq's recoverer can hand the task back.
func TestPersistBackOffTiming(t *testing.T) {
	t.Parallel()
	b := persistBackOff()
	want := 50 * time.Millisecond
	for i := range 200 {
		d := b.NextBackOff()
		if d == backoff.Stop {
			t.Fatalf("retry %d: persist gave up", i+1)
		}
		if d != want {
			t.Fatalf("retry %d after %v, want %v (no jitter, a second at most)", i+1, d, want)
		}
		want = min(want*3/2, time.Second)
	}
}

// Parked tasks are looked for as often as asynq looks for tasks due for a
// retry: the configured interval, or asynq's 5 s default.
func TestUnparkInterval(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ cfg, want time.Duration }{
		{100 * time.Millisecond, 100 * time.Millisecond},
		{0, 5 * time.Second},
	} {
		w := &Worker{cfg: Config{DelayedTaskCheckInterval: tt.cfg}}
		if got := w.unparkInterval(); got != tt.want {
			t.Errorf("DelayedTaskCheckInterval %v: unpark interval %v, want %v", tt.cfg, got, tt.want)
		}
	}
}

// One look handles more than one page of parked entries: the entries of
// tasks deleted meanwhile, two pages and some, are all dropped, and each
// task reported lost once, by the same look.
func TestUnparkerTakesSeveralPagesALook(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	lost := map[string]int{}
	u := &unparker{rdb: rdb, log: zap.NewNop(), interval: time.Second,
		lost: func(_ context.Context, p deadletter.Parked) { lost[p.ID]++ }}
	now := time.Now()
	const n = 2*parkedPage + 10
	for i := range n {
		p := deadletter.Parked{Queue: "default", ID: fmt.Sprintf("gone-%d", i)}
		if err := deadletter.Park(ctx, rdb, p, now.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if waiting, err := u.once(ctx); err != nil || waiting != 0 {
		t.Fatalf("once = %d waiting, %v", waiting, err)
	}
	if left, err := rdb.ZCard(ctx, deadletter.ParkedKey).Result(); err != nil || left != 0 {
		t.Errorf("%d of %d entries left after one look (%v), want 0", left, n, err)
	}
	for i := range n {
		if k := lost[fmt.Sprintf("gone-%d", i)]; k != 1 {
			t.Fatalf("gone-%d reported lost %d times, want once", i, k)
		}
	}
}

// An error code is its own label value when it is made of the characters of
// DigiCert's and certmail's codes and is among the first maxErrorCodes
// distinct ones, and at most maxLabelLength bytes long; any other is
// otherLabel.
func TestErrorCodeLabels(t *testing.T) {
	t.Parallel()
	m := &metrics{codes: map[string]bool{}}
	for _, code := range []string{"azAZ09_|:.-", "not_found|order", "a", "Z", "0", "9", "_", "|", ":", ".", "-", strings.Repeat("x", maxLabelLength)} {
		if got := m.errorCode(code); got != code {
			t.Errorf("errorCode(%q) = %q, want it kept", code, got)
		}
	}
	// The bytes just outside each range, and a code too long.
	for _, code := range []string{"", "x`", "x{", "x@", "x[", "x/", "x;", "x y", "é", strings.Repeat("x", maxLabelLength+1)} {
		if got := m.errorCode(code); got != otherLabel {
			t.Errorf("errorCode(%q) = %q, want %q", code, got, otherLabel)
		}
	}
	for i := len(m.codes); i < maxErrorCodes; i++ {
		code := fmt.Sprintf("code_%d", i)
		if got := m.errorCode(code); got != code {
			t.Fatalf("code %d of %d, %q, = %q, want it kept", i+1, maxErrorCodes, code, got)
		}
	}
	if got := m.errorCode("one_more"); got != otherLabel {
		t.Errorf("code %d = %q, want %q", maxErrorCodes+1, got, otherLabel)
	}
	if got := m.errorCode("not_found|order"); got != "not_found|order" {
		t.Errorf("a code seen before the bound = %q, want it kept", got)
	}
}

// A set-emails without a sequence whose first-seen stamp cannot be written
// (Redis away) is retried on the transient schedule: its first retry about
// 30 s later, as README "Retries" lists it.
func TestFirstSeenFailureRetriesOnTheSchedule(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	srv.Kill()
	client, err := digicert.New(digicert.Config{APIKey: "k"}) // never called: Redis fails first
	if err != nil {
		t.Fatal(err)
	}
	p := &processor{rdb: rdb, log: zap.NewNop(), accounts: map[string]*accountRuntime{"default": {name: "default", client: client}}}
	task := asynq.NewTask("set-emails", []byte(`{"order_id": 1, "additional_emails": ["ops@example.com"]}`))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = p.handleSetEmails(ctx, task)
	var te *taskError
	if !errors.As(err, &te) || te.code != "redis" || !IsFailure(err) {
		t.Fatalf("handleSetEmails = %v, want a transient redis failure", err)
	}
	if lo, hi := 24*time.Second, 36*time.Second; te.retryAfter < lo || te.retryAfter > hi {
		t.Errorf("first retry after %v, want %v to %v", te.retryAfter, lo, hi)
	}
}
