package ratelimit_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
)

// Many goroutines with their own Redis clients share two windows: no
// sliding window of either length ever holds more admissions than its limit,
// and the limiter admits close to the limit.
func TestLimiterHoldsEverySlidingWindow(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	windows := []ratelimit.Window{{Limit: 10, Period: 200 * time.Millisecond}, {Limit: 30, Period: time.Second}}
	const workers, perWorker = 6, 10 // 60 admissions: the 1 s window makes this take about 1.5 s
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
	)
	for range workers {
		l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "acct", Windows: windows, Margin: 5 * time.Millisecond})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				release, err := l.Acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
				release()
			}
		}()
	}
	wg.Wait()
	if len(times) != workers*perWorker {
		t.Fatalf("%d admissions, want %d", len(times), workers*perWorker)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for _, w := range windows {
		// Admission times are taken after Wait returns, so allow the few ms
		// between Redis's clock and ours by shrinking the checked window.
		checked := w.Period - 20*time.Millisecond
		for i := range times {
			n := 0
			for j := i; j < len(times) && times[j].Sub(times[i]) < checked; j++ {
				n++
			}
			if n > w.Limit {
				t.Errorf("%d admissions within %v starting at #%d, limit %d per %v", n, checked, i, w.Limit, w.Period)
				break
			}
		}
	}
	// 60 admissions under 30/s take at least 1 s (two full windows after the first 30).
	if span := times[len(times)-1].Sub(times[0]); span < time.Second-50*time.Millisecond {
		t.Errorf("60 admissions in %v: the 30/1s window was not enforced", span)
	}
}

func TestLimiterWaitErrorBeyondMaxWait(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 1, Period: time.Minute}},
		MaxWait: 50 * time.Millisecond})
	ctx := context.Background()
	if _, err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := l.Acquire(ctx)
	var we *ratelimit.WaitError
	if !errors.As(err, &we) {
		t.Fatalf("second Wait = %v, want *WaitError", err)
	}
	if we.RetryAfter() < 50*time.Second || we.RetryAfter() > time.Minute+time.Second {
		t.Errorf("RetryAfter = %v, want about a minute", we.RetryAfter())
	}
	if time.Since(start) > 5*time.Second {
		t.Error("Wait slept although the wait was beyond MaxWait")
	}
	if we.CoolDown || strings.Contains(we.Error(), "429") {
		t.Errorf("a full window's wait = %+v (%v), want one that is no cool-down", we, we)
	}
}

// A wait for the cool-down that DigiCert's 429 started says so: it is not
// the limiter's windows that hold the request back.
func TestLimiterWaitErrorNamesTheCoolDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 100, Period: time.Minute}},
		MaxWait: 50 * time.Millisecond})
	ctx := context.Background()
	if _, _, err := l.CoolDown(ctx, time.Minute, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, err := l.Acquire(ctx)
	var we *ratelimit.WaitError
	if !errors.As(err, &we) || !we.CoolDown || we.Wait < 50*time.Second || !strings.Contains(we.Error(), "cool-down after DigiCert's 429") {
		t.Errorf("Acquire during a cool-down = %v (%+v), want a *WaitError for the cool-down, about a minute", err, we)
	}
}

// TestLimiterWaitsUpTo30sByDefault: with MaxWait left at its default, the
// README's 30 s, a slot 32 s away is refused at once (the task is handed
// back) and one 28 s away is waited for.
func TestLimiterWaitsUpTo30sByDefault(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// acquire fills a window of one per period and acquires again: it
	// reports whether Acquire was still waiting a second on (then canceled),
	// and the error it returned.
	acquire := func(account string, period time.Duration) (waited bool, err error) {
		t.Helper()
		l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: account, Windows: []ratelimit.Window{{Limit: 1, Period: period}}})
		if d, err := l.Reserve(context.Background()); err != nil || d != 0 {
			t.Fatalf("fill the window: %v, %v", d, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := l.Acquire(ctx)
			done <- err
		}()
		select {
		case err := <-done:
			return false, err
		case <-time.After(time.Second):
		}
		cancel()
		return true, <-done
	}
	var we *ratelimit.WaitError
	if waited, err := acquire("far", 32*time.Second); waited || !errors.As(err, &we) {
		t.Errorf("a slot 32 s away: Acquire = %v, waited %t; want *WaitError at once", err, waited)
	}
	if waited, err := acquire("near", 28*time.Second); !waited || !errors.Is(err, context.Canceled) {
		t.Errorf("a slot 28 s away: Acquire = %v, waited %t; want it to wait (until canceled)", err, waited)
	}
}

func TestLimiterWaitErrorBeforeDeadline(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 1, Period: 10 * time.Second}}})
	if _, err := l.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var we *ratelimit.WaitError
	if _, err := l.Acquire(ctx); !errors.As(err, &we) {
		t.Fatalf("Wait = %v, want *WaitError (the slot is past the deadline)", err)
	}
	if ctx.Err() != nil {
		t.Error("Wait slept until the deadline")
	}
}

// A cool-down stops every process of the account, and no other account,
// for what is left of it; the first 429 after it has ended doubles it, up
// to the ceiling.
func TestCoolDownStopsEveryoneAndDoubles(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "acct"})
	b := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "acct"})
	other := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "other"})
	ctx := context.Background()
	left := func() time.Duration { return coolDownLeft(t, srv.Client(), "acct") }
	first, started, err := a.CoolDown(ctx, 200*time.Millisecond, time.Second)
	if err != nil || first != 200*time.Millisecond || !started {
		t.Fatalf("first CoolDown = %v, %t, %v; want 200ms, started", first, started, err)
	}
	// A cool-down still in force after Reserve was in force during it: the
	// wait is then at least what is left (a stalled machine may see it end
	// before Reserve and be admitted, rightly).
	d, err := b.Reserve(ctx)
	if after := left(); err != nil || d > first || (after > 0 && d < after) {
		t.Errorf("another process's Reserve during the cool-down = %v, %v; want a wait of up to 200ms and at least the %v left after it", d, err, after)
	}
	if d, err := other.Reserve(ctx); err != nil || d != 0 {
		t.Errorf("another account's Reserve = %v, %v; want admitted", d, err)
	}
	var streak []time.Duration
	for _, l := range []*ratelimit.Limiter{b, a, a} {
		waitCoolDownOver(t, srv.Client(), "acct")
		d, started, err := l.CoolDown(ctx, 200*time.Millisecond, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !started {
			t.Errorf("a 429 after the cool-down ended (%v) started none", d)
		}
		streak = append(streak, d)
	}
	if streak[0] != 400*time.Millisecond || streak[1] != 800*time.Millisecond || streak[2] != time.Second {
		t.Errorf("streak = %v; want 400ms, 800ms, 1s (capped)", streak)
	}
	// Acquire cannot return before what is left of the cool-down, read
	// after start, has passed (Redis runs on this machine's clock, rounded
	// to the ms).
	start := time.Now()
	rest := left()
	if _, err := b.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < rest-2*time.Millisecond {
		t.Errorf("Acquire returned after %v during a 1s cool-down with %v left", waited, rest)
	}
}

// The 429s that answer requests admitted before a cool-down began, however
// many arrive at once or one after another while it is in force, neither
// lengthen it nor count in its streak: the cool-down doubles once per
// cool-down, when the first 429 after it has ended arrives, up to the
// ceiling. Each 429 keeps the streak for 4 × the ceiling.
func TestCoolDownDoublesOncePerCoolDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	const base, ceiling = 10 * time.Second, 25 * time.Second
	var limiters []*ratelimit.Limiter // one per process
	for range 4 {
		limiters = append(limiters, ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "acct"}))
	}
	streak := func() int {
		n, err := rdb.Get(ctx, "certmail:ratelimit:{acct}:streak").Int()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// burst is a 429 answered to every process at once; it returns the
	// longest cool-down they were told of and how many of them started one.
	burst := func() (time.Duration, int) {
		got := make([]time.Duration, len(limiters))
		var starts atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, l := range limiters {
			wg.Go(func() {
				<-start
				d, started, err := l.CoolDown(ctx, base, ceiling)
				if err != nil {
					t.Error(err)
				}
				if started {
					starts.Add(1)
				}
				got[i] = d
			})
		}
		close(start)
		wg.Wait()
		return slices.Max(got), int(starts.Load())
	}
	for i, want := range []time.Duration{base, 2 * base, ceiling} {
		if i > 0 {
			// End the cool-down as its expiry would, without waiting for it.
			if err := rdb.PExpire(ctx, "certmail:ratelimit:{acct}:cooldown", time.Millisecond).Err(); err != nil {
				t.Fatal(err)
			}
			waitCoolDownOver(t, rdb, "acct")
		}
		if got, starts := burst(); got != want || starts != 1 {
			t.Errorf("cool-down #%d: %d concurrent 429s told of %v, %d of them started one; want %v, one", i+1, len(limiters), got, starts, want)
		}
		if n := streak(); n != i+1 {
			t.Errorf("cool-down #%d: streak %d after %d concurrent 429s; want %d", i+1, n, len(limiters), i+1)
		}
		// Later 429s while it is in force: what is left, no longer.
		for _, l := range limiters {
			before := coolDownLeft(t, rdb, "acct")
			d, started, err := l.CoolDown(ctx, base, ceiling)
			if after := coolDownLeft(t, rdb, "acct"); err != nil || started || d > before || after > before {
				t.Errorf("cool-down #%d: a 429 with %v left = %v, %t, %v, leaving %v; want at most what was left, none started", i+1, before, d, started, err, after)
			}
		}
		if n := streak(); n != i+1 {
			t.Errorf("cool-down #%d: streak %d after 429s during it; want %d", i+1, n, i+1)
		}
		if ttl := rdb.PTTL(ctx, "certmail:ratelimit:{acct}:streak").Val(); ttl <= 4*ceiling-10*time.Second || ttl > 4*ceiling {
			t.Errorf("cool-down #%d: streak kept for %v after the last 429; want 4 × %v", i+1, ttl, ceiling)
		}
	}
}

// coolDownLeft is what is left of account's cool-down, or below 0 when none
// is in force.
func coolDownLeft(t *testing.T, rdb redis.UniversalClient, account string) time.Duration {
	t.Helper()
	ttl, err := rdb.PTTL(context.Background(), "certmail:ratelimit:{"+account+"}:cooldown").Result()
	if err != nil {
		t.Fatal(err)
	}
	return ttl
}

// waitCoolDownOver waits until Redis sees account's cool-down ended.
func waitCoolDownOver(t *testing.T, rdb redis.UniversalClient, account string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for left := coolDownLeft(t, rdb, account); left > 0; left = coolDownLeft(t, rdb, account) {
		if time.Now().After(deadline) {
			t.Fatalf("cool-down of %s still in force (%v left)", account, left)
		}
		time.Sleep(left + time.Millisecond)
	}
}

// A request counts from its admission until a whole window after its
// release: a slow request holds its slot for longer.
func TestReleaseRestampsTheRequest(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	l := ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 1, Period: 400 * time.Millisecond}},
		Margin: time.Millisecond})
	ctx := context.Background()
	release, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := l.Reserve(ctx); err != nil || d <= 0 {
		t.Fatalf("a second request within the window: wait %v, %v; want a wait", d, err)
	}
	time.Sleep(300 * time.Millisecond) // the request is "in flight" for 300ms
	before, t0 := time.Now(), redisMillis(t, rdb)
	release()
	d, err := l.Reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t1 := redisMillis(t, rdb)
	// On Redis's clock the release ran after t0 and Reserve before t1, so
	// the slot frees a window after t0 at the soonest; counted from the
	// admission, it would free 100ms from t0.
	if soonest := time.Duration(t0+400-t1) * time.Millisecond; d < soonest {
		t.Errorf("next slot in %v after the release, want at least %v: a window after it", d, soonest)
	}
	if _, err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	// Redis runs on this machine's clock (rounded to the ms).
	if waited := time.Since(before); waited < 400*time.Millisecond-2*time.Millisecond {
		t.Errorf("admitted %v after the release, want at least a window", waited)
	}
}

// A request in flight for longer than a window, which the window dropped
// meanwhile, counts again from its release: DigiCert may have seen it just
// before it answered.
func TestReleaseCountsARequestLongerThanTheWindow(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 2, Period: 200 * time.Millisecond}},
		Margin: time.Millisecond})
	ctx := context.Background()
	release, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond) // in flight for longer than the window
	if d, err := l.Reserve(ctx); err != nil || d != 0 {
		t.Fatalf("a request after the window: wait %v, %v; want admitted", d, err)
	}
	release()
	if d, err := l.Reserve(ctx); err != nil || d <= 0 {
		t.Errorf("a third request right after the long one's release: wait %v, %v; want a wait (two in the window)", d, err)
	}
}

// An admitted request counts for its window's period plus the margin: the
// configured one, or by default 1% of the shortest period, at most 100ms.
func TestMarginLengthensEveryWindow(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()

	// An explicit margin, large enough to see on any clock.
	l := ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "explicit", Windows: []ratelimit.Window{{Limit: 1, Period: time.Second}},
		Margin: time.Second})
	if d, err := l.Reserve(ctx); err != nil || d != 0 {
		t.Fatalf("first Reserve = %v, %v; want admitted", d, err)
	}
	if d, err := l.Reserve(ctx); err != nil || d <= 1500*time.Millisecond || d > 2001*time.Millisecond {
		t.Errorf("with a 1s margin on 1/1s, the next slot is in %v, %v; want about 2s", d, err)
	}

	// The default margins are a few ms: measure them on Redis's clock.
	for _, tt := range []struct {
		name    string
		windows []ratelimit.Window
		want    time.Duration
	}{
		{"1% of the shortest period", []ratelimit.Window{{Limit: 100, Period: time.Minute}, {Limit: 1, Period: 2 * time.Second}}, 2020 * time.Millisecond},
		{"at most 100ms", []ratelimit.Window{{Limit: 1, Period: 20 * time.Second}}, 20100 * time.Millisecond},
	} {
		lo, hi := heldFor(t, rdb, tt.windows)
		if tt.want < lo || tt.want > hi {
			t.Errorf("%s: %v holds a request for %v to %v, want %v", tt.name, tt.windows, lo, hi, tt.want)
		}
	}
}

// heldFor admits one request under windows (with the default margin) on a
// fresh account and returns bounds, on Redis's clock, of how long it keeps
// the fullest window closed. It tries again until Redis answered fast
// enough for the bounds to be a few ms apart.
func heldFor(t *testing.T, rdb *redis.Client, windows []ratelimit.Window) (lo, hi time.Duration) {
	t.Helper()
	ctx := context.Background()
	now := func() int64 { return redisMillis(t, rdb) }
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		l := ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "held" + strconv.Itoa(i), Windows: windows})
		t0 := now()
		if d, err := l.Reserve(ctx); err != nil || d != 0 {
			t.Fatalf("first Reserve = %v, %v; want admitted", d, err)
		}
		t1, t2 := now(), now()
		d, err := l.Reserve(ctx)
		t3 := now()
		if err != nil {
			t.Fatal(err)
		}
		if t3-t0 > 5 {
			continue // too slow to measure closely
		}
		// d = admitted + held - asked + 1 ms, admitted in [t0, t1], asked in [t2, t3].
		ms := d.Milliseconds()
		return time.Duration(ms+t2-t1-1) * time.Millisecond, time.Duration(ms+t3-t0-1) * time.Millisecond
	}
	t.Fatal("Redis never answered within 5ms")
	return 0, 0
}

// redisMillis returns Redis's clock in whole ms, as the scripts read it.
func redisMillis(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	tm, err := rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return tm.UnixMilli()
}

// OnWait hears of every wait, with its length, and of nothing else.
func TestOnWaitHearsOfEveryWait(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var (
		mu    sync.Mutex
		waits []time.Duration
	)
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 1, Period: 300 * time.Millisecond}},
		Margin: time.Millisecond, OnWait: func(d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			waits = append(waits, d)
		}})
	ctx := context.Background()
	got := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), waits...)
	}
	release, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if w := got(); len(w) != 0 {
		t.Errorf("an admission without a wait told OnWait %v", w)
	}
	start := time.Now()
	release, err = l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release()
	waited := time.Since(start)
	if w := got(); len(w) != 1 || w[0] <= 0 || w[0] > waited {
		t.Errorf("after a wait of %v OnWait was told %v, want one wait of at most that", waited, w)
	}
}

// A request still in flight after a whole window keeps its slot until its
// answer: it may reach DigiCert only now, so a request admitted meanwhile
// could land in the same window of DigiCert's. Admitted by Acquire or by a
// caller's script (Ticket), alike.
func TestInFlightRequestKeepsItsSlotUntilItsAnswer(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	window := ratelimit.Window{Limit: 1, Period: 200 * time.Millisecond}
	for _, via := range []string{"acquire", "ticket"} {
		l := ratelimit.NewLimiter(rdb, ratelimit.Config{Account: via, Windows: []ratelimit.Window{window}, Margin: time.Millisecond})
		var release func()
		switch via {
		case "acquire":
			var err error
			if release, err = l.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
		case "ticket":
			tk := l.NewTicket()
			keys, args := scriptOf(tk)
			if ms, err := admitOnly.Run(ctx, rdb, keys, args...).Int64(); err != nil || ms != 0 {
				t.Fatalf("ticket admission: wait %d ms, %v", ms, err)
			}
			release = func() {
				if err := restampOnly.Run(ctx, rdb, keys, args...).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(250 * time.Millisecond) // still in flight after the window
		if d, err := l.Reserve(ctx); err != nil || d <= 0 {
			t.Errorf("%s: a request while the first is in flight for longer than the window: wait %v, %v; want a wait", via, d, err)
		}
		release()
		answered := time.Now()
		if d, err := l.Reserve(ctx); err != nil || d <= 0 {
			t.Errorf("%s: a request right after the answer: wait %v, %v; want a wait", via, d, err)
		}
		for time.Since(answered) < 250*time.Millisecond { // a window after the answer
			time.Sleep(20 * time.Millisecond)
		}
		if d, err := l.Reserve(ctx); err != nil || d != 0 {
			t.Errorf("%s: a window after the answer: wait %v, %v; want admitted", via, d, err)
		}
	}
}

// A request admitted and answered at once (Reserve) beside one in flight
// does not shorten the window's lifetime in Redis below the in-flight one's.
func TestInFlightRequestOutlivesItsNeighboursExpiry(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 3, Period: 200 * time.Millisecond}},
		Margin: time.Millisecond, InFlight: 10 * time.Second})
	release, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if d, err := l.Reserve(ctx); err != nil || d != 0 {
		t.Fatalf("a second request: wait %v, %v; want admitted", d, err)
	}
	if ttl := srv.Client().PTTL(ctx, "certmail:ratelimit:{a}:3/200ms").Val(); ttl < 5*time.Second {
		t.Errorf("window kept for %v with a request in flight for up to 10s", ttl)
	}
}

// A busy window's expiry is moved about once per lifetime, not with every
// request (a PEXPIRE per window saved in nearly every admission), and is
// never shorter than its newest member needs.
func TestBusyWindowMovesItsExpiryOncePerLifetime(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a",
		Windows: []ratelimit.Window{{Limit: 100, Period: time.Minute}, {Limit: 100, Period: time.Hour}},
		Margin:  time.Millisecond, InFlight: 10 * time.Second})
	srv.ResetStats()
	for range 20 {
		release, err := l.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	calls := srv.Commands()
	if calls["zadd"] != 80 {
		t.Fatalf("%d ZADDs for 20 requests in two windows; want 80, an admission and a restamp each", calls["zadd"])
	}
	if calls["pexpire"] != 2 {
		t.Errorf("20 requests moved the expiry of two windows %d times; want once each", calls["pexpire"])
	}
	for key, least := range map[string]time.Duration{"certmail:ratelimit:{a}:100/1m0s": time.Minute, "certmail:ratelimit:{a}:100/1h0m0s": time.Hour} {
		if ttl := srv.Client().PTTL(ctx, key).Val(); ttl < least {
			t.Errorf("%s kept for %v, under its period %v", key, ttl, least)
		}
	}
}
