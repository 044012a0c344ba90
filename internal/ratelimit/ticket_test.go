package ratelimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
)

// admitOnly is a caller's script that does nothing but Lua's admit, with the
// ticket's keys and arguments first.
var admitOnly = redis.NewScript(ratelimit.Lua + `return admit(1, 1)`)

// restampOnly is a caller's script that does nothing but Lua's restamp.
var restampOnly = redis.NewScript(ratelimit.Lua + `return restamp(1, 1)`)

// scriptOf is what a ticket appends to a command, as the keys and
// arguments of a script run through go-redis's Script.
func scriptOf(tk *ratelimit.Ticket) ([]string, []any) {
	var keys []string
	for _, k := range tk.AppendKeys(nil) {
		keys = append(keys, k.(string))
	}
	return keys, tk.AppendArgs(nil)
}

// A ticket admitted by a caller's script lets the first Acquire on its
// context through without a slot of its own, once; the restamp is the
// caller's (Due), and an admission no request used is given back (Settle).
func TestTicketAdmissionIsUsedOnceAndRestampedByTheCaller(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	l := ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 1, Period: 400 * time.Millisecond}},
		Margin: time.Millisecond, MaxWait: time.Millisecond})
	admit := func(tk *ratelimit.Ticket) int64 {
		t.Helper()
		keys, args := scriptOf(tk)
		ms, err := admitOnly.Run(ctx, rdb, keys, args...).Int64()
		if err != nil {
			t.Fatal(err)
		}
		if ms == 0 {
			tk.Admitted()
		}
		return ms
	}

	tk := l.NewTicket()
	if tk.Ready() {
		t.Fatal("a ticket not admitted is ready")
	}
	if ms := admit(tk); ms != 0 {
		t.Fatalf("first admission: wait %d ms, want 0", ms)
	}
	if !tk.Ready() {
		t.Fatal("an admitted ticket is not ready")
	}
	if ms := admit(l.NewTicket()); ms <= 0 {
		t.Fatalf("a second ticket within the window: wait %d ms, want a wait", ms)
	}
	tctx := tk.Context(ctx)
	release, err := l.Acquire(tctx)
	if err != nil {
		t.Fatalf("Acquire with the admitted ticket: %v", err)
	}
	if tk.Ready() {
		t.Fatal("a ticket whose admission an Acquire took is still ready")
	}
	var we *ratelimit.WaitError
	if _, err := l.Acquire(tctx); !errors.As(err, &we) {
		t.Fatalf("a second Acquire on the ticket's context: %v, want a wait (the admission is used once)", err)
	}
	if got := tk.Due(); got != "" {
		t.Fatalf("Due before the release: %q, want none", got)
	}
	time.Sleep(300 * time.Millisecond) // the request is in flight for 300ms
	release()
	member := tk.Due()
	if member == "" {
		t.Fatal("Due after the release: none, want the member")
	}
	if again := tk.Due(); again != "" {
		t.Fatalf("Due a second time: %q, want none (handed over once)", again)
	}
	keys, args := scriptOf(tk)
	t0 := redisMillis(t, rdb)
	if err := restampOnly.Run(ctx, rdb, keys, args...).Err(); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	d, err := l.Reserve(ctx)
	t1 := redisMillis(t, rdb)
	// On Redis's clock the restamp ran after t0 and Reserve before t1: the
	// slot frees a window after t0 at the soonest.
	if soonest := time.Duration(t0+400-t1) * time.Millisecond; err != nil || d < soonest {
		t.Errorf("next slot %v after the caller's restamp (%v), want at least %v: a window after it", d, err, soonest)
	}
	if err := tk.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	for time.Since(released) < 450*time.Millisecond { // the window passes
		time.Sleep(50 * time.Millisecond)
	}

	unused := l.NewTicket()
	if ms := admit(unused); ms != 0 {
		t.Fatalf("admission after the window: wait %d ms, want 0", ms)
	}
	if err := unused.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := l.Reserve(ctx); err != nil || d != 0 {
		t.Errorf("after an unused admission was given back: wait %v, %v; want a free slot", d, err)
	}
}

// A ticket that was never admitted (its script found no room) does not let
// Acquire through: the request waits for a slot as usual.
func TestTicketNotAdmittedWaits(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "a", Windows: []ratelimit.Window{{Limit: 1, Period: time.Minute}},
		MaxWait: time.Millisecond})
	if _, err := l.Reserve(ctx); err != nil {
		t.Fatal(err)
	}
	var we *ratelimit.WaitError
	if _, err := l.Acquire(l.NewTicket().Context(ctx)); !errors.As(err, &we) {
		t.Fatalf("Acquire with a ticket never admitted: %v, want a wait", err)
	}
}
