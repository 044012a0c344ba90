package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
)

// scriptBundle is a Redis, an account's gate and a limiter of one request
// per minute, for the tests of the before- and after-call scripts.
type scriptBundle struct {
	srv     *redistest.Server
	rdb     *redis.Client
	gate    *authGate
	limiter *ratelimit.Limiter
}

func setupScripts(t *testing.T) *scriptBundle {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client()
	return &scriptBundle{srv: srv, rdb: rdb, gate: newAuthGate(rdb, "acct", time.Minute),
		limiter: ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "acct",
			Windows: []ratelimit.Window{{Limit: 1, Period: time.Minute}}, MaxWait: time.Millisecond})}
}

// admitted reports whether the script admitted the ticket: its member is in
// the window, and Acquire on its context goes through at once although the
// window (of one) is full. The window is emptied after, unless keepFull.
func (b *scriptBundle) admitted(t *testing.T, tk *ratelimit.Ticket) bool {
	t.Helper()
	ctx := context.Background()
	keys, args := tk.AppendKeys(nil), tk.AppendArgs(nil)
	inWindow := b.rdb.ZScore(ctx, keys[1].(string), args[0].(string)).Err() == nil
	if inWindow {
		release, err := b.limiter.Acquire(tk.Context(ctx))
		if err != nil {
			t.Fatalf("admitted by the script, but Acquire: %v", err)
		}
		release()
	}
	if err := b.rdb.Del(ctx, keys[1].(string)).Err(); err != nil {
		t.Fatal(err)
	}
	return inWindow
}

// fill takes the window's one slot.
func (b *scriptBundle) fill(t *testing.T) {
	t.Helper()
	if d, err := b.limiter.Reserve(context.Background()); err != nil || d != 0 {
		t.Fatalf("fill the window: %v, %v", d, err)
	}
}

// TestBeforeScriptAdmitsOnlyACallThatGoes: the round trip before a call
// admits it at the limiter when the gate lets it go ahead, and leaves the
// limiter alone when the guard is set or the account paused; a full window
// leaves the ticket unadmitted (Acquire then waits as usual).
func TestBeforeScriptAdmitsOnlyACallThatGoes(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	guard := deliveredKey("t-before")
	check := func(step string, want gateVerdict, wantAdmitted bool) {
		t.Helper()
		tk := b.limiter.NewTicket()
		v, _, err := b.gate.check(ctx, guard, tk)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if v != want {
			t.Fatalf("%s: verdict %d, want %d", step, v, want)
		}
		if got := b.admitted(t, tk); got != wantAdmitted {
			t.Fatalf("%s: admitted %t, want %t", step, got, wantAdmitted)
		}
	}
	if _, err := b.gate.pause(ctx); err != nil {
		t.Fatal(err)
	}
	check("paused", gateWait, false)
	if _, err := b.gate.resume(ctx); err != nil {
		t.Fatal(err)
	}
	check("go", gateGo, true)
	b.fill(t)
	check("go, window full", gateGo, false)
	if err := b.rdb.Set(ctx, guard, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	check("guard set", gateDone, false)
}

// TestBeforeOrderScriptVerdicts: the round trip before a set-emails' call
// answers, in this order, a busy order, a superseded or already applied
// sequence (superseded also by a newer one recorded as sending; applied
// only when the task's duplicate guard is set: another task at the applied
// sequence goes ahead), the auth pause; it takes the order's lock (with the
// holder's token), records the sequence as sending (for the given
// lifetime), returns what the record held before (and its lifetime left)
// and takes the limiter's admission only for a call that goes ahead.
// Sequences compare as decimal strings, exactly at nanosecond scale.
func TestBeforeOrderScriptVerdicts(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	applied, sending := orderKey("acct", 7, "applied"), orderKey("acct", 7, "sending")
	guard := deliveredKey("t-verdicts")
	const cur = 1764500000000000100 // nanoseconds: above 2^53
	if err := b.rdb.Set(ctx, applied, cur, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	check := func(step string, seq int64, want gateVerdict, wantLock, wantAdmitted bool) *lease.Lease {
		t.Helper()
		k := newOrderKeys(b.rdb, "acct", 7)
		if k.applied != applied || k.sending != sending {
			t.Fatalf("order keys %s, %s; want %s, %s", k.applied, k.sending, applied, sending)
		}
		before := b.rdb.Get(ctx, sending).Val()
		beforeTTL := b.rdb.PTTL(ctx, sending).Val()
		tk := b.limiter.NewTicket()
		v, _, got, err := b.gate.checkOrder(ctx, k, guard, seq, time.Hour, tk)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		var wantBefore string
		if wantLock {
			wantBefore = before
		}
		if got.seq != wantBefore {
			t.Fatalf("%s: the record held %q before, want %q", step, got.seq, wantBefore)
		}
		switch {
		case wantBefore == "" || wantBefore == strconv.FormatInt(seq, 10):
			if got.ttl != 0 {
				t.Fatalf("%s: the record's lifetime left before %v, want none (no record, or the task's own)", step, got.ttl)
			}
		case got.ttl > beforeTTL || got.ttl < beforeTTL-time.Second:
			t.Fatalf("%s: the record's lifetime left before %v, want about %v", step, got.ttl, beforeTTL)
		}
		held, err := b.rdb.Get(ctx, k.lock.Key()).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		if v != want || (held == k.lock.Token()) != wantLock {
			t.Fatalf("%s: verdict %d, lock ours %t; want %d, %t", step, v, held == k.lock.Token(), want, wantLock)
		}
		wantSending := before
		if wantLock {
			wantSending = strconv.FormatInt(seq, 10)
		}
		if got := b.rdb.Get(ctx, sending).Val(); got != wantSending {
			t.Fatalf("%s: sending %q, want %q", step, got, wantSending)
		}
		if ttl := b.rdb.PTTL(ctx, sending).Val(); wantLock && (ttl <= 59*time.Minute || ttl > time.Hour) {
			t.Fatalf("%s: sending record's lifetime %v, want the one given, an hour", step, ttl)
		}
		if got := b.admitted(t, tk); got != wantAdmitted {
			t.Fatalf("%s: admitted %t, want %t", step, got, wantAdmitted)
		}
		return k.lock
	}
	check("superseded by 1 ns", cur-1, gateSuperseded, false, false)
	check("shorter sequence", 99, gateSuperseded, false, false)
	if err := b.rdb.Set(ctx, guard, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	check("already applied: this task's list", cur, gateApplied, false, false)
	if err := b.rdb.Del(ctx, guard).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.gate.pause(ctx); err != nil {
		t.Fatal(err)
	}
	check("paused", cur+1, gateWait, false, false)
	check("the applied sequence, another task's list, paused", cur, gateWait, false, false)
	if _, err := b.gate.resume(ctx); err != nil {
		t.Fatal(err)
	}
	// Another task at the applied sequence (no guard of its own) is a
	// second update of the order: it goes on as a newer one would.
	lock := check("the applied sequence, another task's list", cur, gateGo, true, true)
	check("order busy after a tie", cur, gateBusy, false, false)
	if _, err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lock = check("newer by 1 ns", cur+1, gateGo, true, true)
	check("order busy", cur+2, gateBusy, false, false)
	if _, err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b.fill(t)
	lock = check("lock free, window full", cur+20, gateGo, true, false)
	if _, err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// cur+20 was sent and is not recorded applied (its worker lost Redis,
	// its lock expired): an older sequence, newer than the one applied, is
	// superseded; cur+20 itself (its redelivery) and a newer one go.
	check("older than the one sending", cur+19, gateSuperseded, false, false)
	lock = check("the one sending, again", cur+20, gateGo, true, true)
	if _, err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// Without a limiter ticket, as check allows: the lock, no admission.
	k := newOrderKeys(b.rdb, "acct", 7)
	if v, _, before, err := b.gate.checkOrder(ctx, k, guard, cur+100, time.Hour, nil); err != nil || v != gateGo || before.seq != strconv.FormatInt(cur+20, 10) {
		t.Fatalf("without a ticket: %v, held before %q, %v; want go, %d", v, before.seq, err, cur+20)
	}
	if held := b.rdb.Get(ctx, k.lock.Key()).Val(); held != k.lock.Token() {
		t.Errorf("without a ticket: lock held by %q, want this delivery's", held)
	}
	if got := b.rdb.Get(ctx, sending).Val(); got != strconv.FormatInt(cur+100, 10) {
		t.Errorf("without a ticket: sending %q, want the newer sequence", got)
	}
}

// TestAfterScripts: the round trip after a 2xx writes the task's result into
// asynq's hash, the guard, and for a set-emails the applied sequence (never
// an older one; an equal one lives on from the write) as well as the guard,
// restamps the call's admission, and releases the order's lock only while it
// is the delivery's.
func TestAfterScripts(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	p := &processor{rdb: b.rdb, log: zap.NewNop(), retention: time.Hour}

	d := &delivery{taskID: "t-after", queue: "default", dedupKey: deliveredKey("t-after"), result: []byte(`{"outcome":"delivered"}`),
		ticket: b.limiter.NewTicket()}
	if _, _, err := b.gate.check(ctx, d.dedupKey, d.ticket); err != nil {
		t.Fatal(err)
	}
	restampedAtAnswer(t, b, d, func() { p.writeGuard(ctx, d) })
	if got := b.rdb.HGet(ctx, queues.AsynqTaskKey("default", "t-after"), "result").Val(); got != string(d.result) {
		t.Errorf("result %q, want %q", got, d.result)
	}
	if ttl := b.rdb.PTTL(ctx, d.dedupKey).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("guard's lifetime %v, want at most the retention", ttl)
	}
	domain := &delivery{taskID: "t-domain", queue: "default", dedupKey: domainDeliveredKey("t-domain", 3)}
	p.writeGuard(ctx, domain)
	if n := b.rdb.Exists(ctx, queues.AsynqTaskKey("default", "t-domain")).Val(); n != 0 || b.rdb.Exists(ctx, domain.dedupKey).Val() != 1 {
		t.Errorf("a domain's guard without a result: result hash exists %d, guard %d", n, b.rdb.Exists(ctx, domain.dedupKey).Val())
	}

	applied, lockKey, sending := orderKey("acct", 9, "applied"), orderKey("acct", 9, "lock"), orderKey("acct", 9, "sending")
	run := func(seq int64, token string) {
		t.Helper()
		keys := []string{queues.AsynqTaskKey("default", "t-order"), applied, lockKey, sending, deliveredKey(fmt.Sprintf("t-order-%d", seq)), "certmail:ratelimit:{acct}:cooldown"}
		if err := afterOrderScript.Run(ctx, b.rdb, keys, `{"outcome":"delivered"}`, seq, 60000, token, "2026-01-02T03:04:05Z", "").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.rdb.Set(ctx, lockKey, "other", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	// A newer list was sent after the lock expired: its record stays.
	if err := b.rdb.Set(ctx, sending, "1764500000000000201", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	run(1764500000000000200, "mine")
	run(1764500000000000199, "mine")
	if got := b.rdb.Get(ctx, applied).Val(); got != "1764500000000000200" {
		t.Errorf("applied %s, want the newer sequence kept", got)
	}
	if got := b.rdb.Get(ctx, sending).Val(); got != "1764500000000000201" {
		t.Errorf("sending %q: the record of a newer list was ended by an older one's", got)
	}
	if got := b.rdb.Get(ctx, lockKey).Val(); got != "other" {
		t.Errorf("lock %q: another holder's lock was released", got)
	}
	run(1764500000000000201, "other")
	if n := b.rdb.Exists(ctx, lockKey).Val(); n != 0 {
		t.Error("the holder's lock was not released")
	}
	if n := b.rdb.Exists(ctx, sending).Val(); n != 0 {
		t.Error("the sending record outlived its list's applied sequence")
	}
	if got := b.rdb.HGet(ctx, queues.AsynqTaskKey("default", "t-order"), "result").Val(); got == "" {
		t.Error("no result written")
	}
	// Every set-emails applied gets its duplicate guard, for the applied
	// sequence's lifetime: an older one too (its list went to DigiCert).
	for _, seq := range []int64{1764500000000000199, 1764500000000000200, 1764500000000000201} {
		guard := deliveredKey(fmt.Sprintf("t-order-%d", seq))
		if got := b.rdb.Get(ctx, guard).Val(); got != "2026-01-02T03:04:05Z" {
			t.Errorf("guard of %d: %q, want the time given", seq, got)
		}
		if ttl := b.rdb.PTTL(ctx, guard).Val(); ttl <= 59*time.Second || ttl > time.Minute {
			t.Errorf("guard of %d lives %v, want the applied sequence's lifetime, a minute", seq, ttl)
		}
	}
	// An equal sequence (another task's list at it) keeps the value and
	// lives on from its write, as long as that task's guard.
	if err := b.rdb.PExpire(ctx, applied, time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	run(1764500000000000201, "other")
	if got, ttl := b.rdb.Get(ctx, applied).Val(), b.rdb.PTTL(ctx, applied).Val(); got != "1764500000000000201" || ttl <= 59*time.Second {
		t.Errorf("applied %s living %v after an equal sequence, want it kept for a minute", got, ttl)
	}
	// Sequences of different lengths compare as numbers: 100 is newer than
	// 99 although "100" < "99" as strings.
	if err := b.rdb.Del(ctx, applied).Err(); err != nil {
		t.Fatal(err)
	}
	run(99, "mine")
	run(100, "mine")
	if got := b.rdb.Get(ctx, applied).Val(); got != "100" {
		t.Errorf("applied %s after 99 then 100, want 100", got)
	}
	run(99, "mine")
	if got := b.rdb.Get(ctx, applied).Val(); got != "100" {
		t.Errorf("applied %s after 100 then 99, want 100 kept", got)
	}
}

// The round trip after a set-emails' 2xx restamps its request at its
// answer, as writeGuard does for the other types: the request's limiter
// slot then ends a window after the answer, not after its admission plus
// the in-flight bound (a minute ahead), which would hold it for ten times
// a short window.
func TestSetEmailsRequestIsRestampedAtItsAnswer(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	p := &processor{rdb: b.rdb, log: zap.NewNop(), retention: time.Hour}
	d := &delivery{taskID: "t-restamp", queue: "default", dedupKey: deliveredKey("t-restamp"), result: []byte(`{"outcome":"delivered"}`), ticket: b.limiter.NewTicket()}
	k := newOrderKeys(b.rdb, "acct", 12)
	const seq = 1764500000000000300
	if v, _, _, err := b.gate.checkOrder(ctx, k, d.dedupKey, seq, time.Hour, d.ticket); err != nil || v != gateGo {
		t.Fatalf("checkOrder: verdict %d, %v; want go", v, err)
	}
	restampedAtAnswer(t, b, d, func() { p.writeApplied(ctx, d, k, seq) })
	if got := b.rdb.Get(ctx, k.applied).Val(); got != strconv.Itoa(seq) {
		t.Errorf("applied %q, want the task's sequence", got)
	}
}

// TestReleaseOrderScript: a set-emails whose call got no 2xx releases the
// order's lock if it is still its own. The record that its list is being
// sent goes back to what it held before the delivery's round trip (or goes,
// when it held nothing) only when the call left DigiCert's list unchanged,
// the delivery's round trip is what put the task's sequence there, the
// lock is still the delivery's and the record still holds the sequence.
func TestReleaseOrderScript(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	p := &processor{rdb: b.rdb, log: zap.NewNop()}
	d := &delivery{report: &report{}}
	k := newOrderKeys(b.rdb, "acct", 11)
	set := func(lock, sending string) {
		t.Helper()
		if err := b.rdb.Set(ctx, k.lock.Key(), lock, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if err := b.rdb.Set(ctx, k.sending, sending, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	none := sendingBefore{at: time.Now()}
	older := sendingBefore{seq: "99", ttl: 10 * time.Minute, at: time.Now()}
	expired := sendingBefore{seq: "99", ttl: time.Second, at: time.Now().Add(-2 * time.Second)}
	own := sendingBefore{seq: "100", at: time.Now()}
	for _, c := range []struct {
		name          string
		lock, sending string
		before        sendingBefore
		unchanged     bool
		wantLock      bool
		wantRecord    string // "" for none
	}{
		{"no answer: the record stays", k.lock.Token(), "100", none, false, false, "100"},
		{"refused, none before: both go", k.lock.Token(), "100", none, true, false, ""},
		{"refused, an older one before: it is back", k.lock.Token(), "100", older, true, false, "99"},
		{"refused, the older one before has expired since: the record goes", k.lock.Token(), "100", expired, true, false, ""},
		{"refused, the task's own before (an earlier delivery's send): the record stays", k.lock.Token(), "100", own, true, false, "100"},
		{"refused, a newer list sent since: its record stays", "another", "101", older, true, true, "101"},
		{"refused, the lock expired: the record stays", "another", "100", older, true, true, "100"},
	} {
		set(c.lock, c.sending)
		p.releaseOrder(ctx, d, k, 100, c.before, c.unchanged)
		if got := b.rdb.Exists(ctx, k.lock.Key()).Val() == 1; got != c.wantLock {
			t.Errorf("%s: lock kept %t, want %t", c.name, got, c.wantLock)
		}
		if got := b.rdb.Get(ctx, k.sending).Val(); got != c.wantRecord {
			t.Errorf("%s: sending record %q, want %q", c.name, got, c.wantRecord)
		}
		if ttl := b.rdb.PTTL(ctx, k.sending).Val(); c.before == older && c.wantRecord == "99" && (ttl > 10*time.Minute || ttl < 9*time.Minute) {
			t.Errorf("%s: the record put back lives %v, want what it had left, about 10m", c.name, ttl)
		}
	}
}

// The auth gate of an account neither paused nor broken, which is nearly
// every delivery's, costs Redis one EXISTS; a paused one still waits.
func TestGateOfAWorkingAccountCostsOneCommand(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	b.srv.ResetStats()
	if v, _, err := b.gate.check(ctx, "", nil); err != nil || v != gateGo {
		t.Fatalf("gate of a working account: %v, %v; want go", v, err)
	}
	calls := b.srv.Commands()
	if calls["exists"] != 1 || calls["pttl"] != 0 || calls["set"] != 0 {
		t.Errorf("the gate of a working account ran EXISTS %d, PTTL %d, SET %d times; want one EXISTS alone",
			calls["exists"], calls["pttl"], calls["set"])
	}
	if _, err := b.gate.pause(ctx); err != nil {
		t.Fatal(err)
	}
	if v, wait, err := b.gate.check(ctx, "", nil); err != nil || v != gateWait || wait <= 0 {
		t.Errorf("gate of a paused account: %v for %v, %v; want wait", v, wait, err)
	}
}

// A Redis that lost its scripts (a restart, SCRIPT FLUSH) is given them
// again: the round trips before and after a call still go through.
func TestScriptsAreLoadedAgainAfterAFlush(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	for range 2 {
		if err := b.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		tk := b.limiter.NewTicket()
		if v, _, err := b.gate.check(ctx, deliveredKey("t-flush"), tk); err != nil || v != gateGo {
			t.Fatalf("before the call, after SCRIPT FLUSH: %v, %v; want go", v, err)
		}
		if !b.admitted(t, tk) {
			t.Error("the ticket was not admitted")
		}
	}
	if err := b.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p := &processor{rdb: b.rdb, log: zap.NewNop(), retention: time.Hour}
	d := &delivery{queue: "default", taskID: "t-flush", dedupKey: deliveredKey("t-flush"), result: []byte(`{"outcome":"delivered"}`)}
	p.writeGuard(ctx, d)
	if n := b.rdb.Exists(ctx, d.dedupKey).Val(); n != 1 {
		t.Error("the duplicate guard was not written after SCRIPT FLUSH")
	}
}

// A set-emails without a sequence is stamped with Redis's clock (TIME), as
// the limiter is timed, not with the clock of the worker that first runs
// it: a worker whose clock runs ahead would stamp an older list newer than
// a later one, which would then be skipped as superseded. Redis runs on
// this machine's clock, so the test tells the two apart by resolution:
// TIME gives microseconds, Go's clock nanoseconds. Twenty stamps that are
// all whole microseconds, each between two readings of TIME, come from
// Redis.
func TestFirstSeenStampIsRedisTime(t *testing.T) {
	t.Parallel()
	b := setupScripts(t)
	ctx := context.Background()
	redisNow := func() int64 {
		now, err := b.rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now.UnixNano()
	}
	for i := range 20 {
		id := fmt.Sprintf("task-%d", i)
		before := redisNow()
		seq, err := firstSeen(ctx, b.rdb, id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		after := redisNow()
		if seq < before || seq > after {
			t.Errorf("stamp %d outside Redis's TIME %d to %d", seq, before, after)
		}
		if seq%1000 != 0 {
			t.Fatalf("stamp %d is not a whole microsecond: not Redis's TIME", seq)
		}
		if again, err := firstSeen(ctx, b.rdb, id, time.Hour); err != nil || again != seq {
			t.Errorf("second stamp of %s = %d, %v; want the first, %d", id, again, err, seq)
		}
	}
}

// restampedAtAnswer takes the limiter slot of d's ticket, holds it for a
// call of 20 ms, then runs write, the round trip after the 2xx: the
// request must then be stamped at its answer, after the call, not at its
// admission.
func restampedAtAnswer(t *testing.T, b *scriptBundle, d *delivery, write func()) {
	t.Helper()
	ctx := context.Background()
	release, err := b.limiter.Acquire(d.ticket.Context(ctx))
	if err != nil {
		t.Fatal(err)
	}
	window, args := d.ticket.AppendKeys(nil), d.ticket.AppendArgs(nil)
	redisMS := func() float64 { return float64(b.rdb.Time(ctx).Val().UnixMilli()) }
	called := redisMS()
	time.Sleep(20 * time.Millisecond) // the call
	release()
	write()
	if at, answered := b.rdb.ZScore(ctx, window[1].(string), args[0].(string)).Val(), redisMS(); at < called+20 || at > answered {
		t.Errorf("request stamped at %.0f ms after the call, which ran from %.0f to before %.0f: not restamped at its answer", at, called, answered)
	}
}
