package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/redistest"
)

// Only the holder renews and releases: another token, or a lease taken over
// after it expired, leaves the key alone.
func TestOnlyTheHolderRenewsAndReleases(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	a := lease.New(rdb, "certmail:test:lease", time.Minute)
	b := lease.New(rdb, "certmail:test:lease", time.Minute)
	if a.Token() == b.Token() || len(a.Token()) != 32 {
		t.Fatalf("tokens %q and %q: want two different random tokens", a.Token(), b.Token())
	}
	if ok, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("a.Acquire = %v, %v; want the lease", ok, err)
	}
	if ok, err := b.Acquire(ctx); err != nil || ok {
		t.Fatalf("b.Acquire = %v, %v; want refused while a holds it", ok, err)
	}
	if err := rdb.PExpire(ctx, a.Key(), time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Renew(ctx); err != nil || ok {
		t.Errorf("b.Renew = %v, %v; want refused", ok, err)
	}
	if ttl := rdb.PTTL(ctx, a.Key()).Val(); ttl > time.Second {
		t.Errorf("another holder's renewal extended the lease to %v", ttl)
	}
	if ok, err := a.Renew(ctx); err != nil || !ok {
		t.Errorf("a.Renew = %v, %v; want renewed", ok, err)
	}
	if ttl := rdb.PTTL(ctx, a.Key()).Val(); ttl <= 50*time.Second {
		t.Errorf("after a.Renew the lease has %v left, want about a minute", ttl)
	}
	if ok, err := b.Release(ctx); err != nil || ok {
		t.Errorf("b.Release = %v, %v; want refused", ok, err)
	}
	if got := rdb.Get(ctx, a.Key()).Val(); got != a.Token() {
		t.Fatalf("key holds %q after another holder's release, want a's token", got)
	}
	if ok, err := a.Release(ctx); err != nil || !ok {
		t.Errorf("a.Release = %v, %v; want released", ok, err)
	}
	if n := rdb.Exists(ctx, a.Key()).Val(); n != 0 {
		t.Error("the key outlived its holder's release")
	}
	// Released, the lease is free for the next holder; the first one can no
	// longer renew it.
	if ok, err := b.Acquire(ctx); err != nil || !ok {
		t.Fatalf("b.Acquire after the release = %v, %v", ok, err)
	}
	if ok, err := a.Renew(ctx); err != nil || ok {
		t.Errorf("a.Renew of b's lease = %v, %v; want refused", ok, err)
	}
}

// A lease expires when nobody renews it; KeepAlive renews it, putting it
// back up to a whole ttl, until stopped.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	// Renewed every second with a second's budget: only a stall of 2s
	// would let the kept lease expire.
	const ttl = 3 * time.Second
	kept := lease.New(rdb, "certmail:test:kept", ttl)
	left := lease.New(rdb, "certmail:test:left", ttl)
	for _, l := range []*lease.Lease{kept, left} {
		if ok, err := l.Acquire(ctx); err != nil || !ok {
			t.Fatalf("Acquire %s = %v, %v", l.Key(), ok, err)
		}
	}
	pttl := func() time.Duration { // only a renewal makes it go up
		d, err := rdb.PTTL(ctx, kept.Key()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	stop := kept.KeepAlive()
	defer stop()
	last, renewals := pttl(), 0
	for deadline := time.Now().Add(20 * time.Second); renewals < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals in 20s of a lease renewed every %v", renewals, ttl/3)
		}
		time.Sleep(20 * time.Millisecond)
		d := pttl()
		if d <= 0 {
			t.Fatalf("a lease kept alive expired after %d renewals (PTTL %v)", renewals, d)
		}
		if d > last {
			renewals++
		}
		last = d
	}
	stop()
	stop() // stopping twice is harmless
	// Neither lease is renewed now: both expire, the kept one within a ttl
	// of its last renewal.
	deadline := time.Now().Add(2 * ttl)
	for rdb.Exists(ctx, kept.Key(), left.Key()).Val() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the leases outlived %v after the renewals stopped", rdb.Exists(ctx, kept.Key(), left.Key()).Val(), 2*ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WithToken's token is the value stored: a holder can keep a record in the
// key and still release only its own.
func TestWithToken(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	l := lease.WithToken(rdb, "certmail:test:record", `{"hash":"1"}`, time.Minute)
	if ok, err := l.Acquire(ctx); err != nil || !ok {
		t.Fatalf("Acquire = %v, %v", ok, err)
	}
	if got := rdb.Get(ctx, l.Key()).Val(); got != `{"hash":"1"}` {
		t.Errorf("key holds %q, want the record", got)
	}
	other := lease.WithToken(rdb, l.Key(), `{"hash":"2"}`, time.Minute)
	if ok, err := other.Release(ctx); err != nil || ok {
		t.Errorf("release with another record = %v, %v; want refused", ok, err)
	}
	if ok, err := l.Release(ctx); err != nil || !ok {
		t.Errorf("Release = %v, %v", ok, err)
	}
}

// Redis errors come back as errors, never as a lease held or lost.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l := lease.New(rdb, "certmail:test:down", time.Minute)
	if ok, err := l.Acquire(ctx); err == nil || ok {
		t.Errorf("Acquire = %v, %v; want an error", ok, err)
	}
	if ok, err := l.Renew(ctx); err == nil || ok {
		t.Errorf("Renew = %v, %v; want an error", ok, err)
	}
	if ok, err := l.Release(ctx); err == nil || ok {
		t.Errorf("Release = %v, %v; want an error", ok, err)
	}
}

// KeepAlive gives each renewal a third of the ttl: a renewal that hangs
// (Redis paused) ends within it, so stop returns within a third of the ttl
// of the renewal's start, not after the lease has long expired.
func TestKeepAliveRenewalBounded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// As certmail's own clients (redisconn): the context's deadline bounds a command.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	const ttl = 900 * time.Millisecond
	l := lease.New(rdb, "certmail:test:hang", ttl)
	if ok, err := l.Acquire(context.Background()); err != nil || !ok {
		t.Fatalf("Acquire = %v, %v", ok, err)
	}
	stop := l.KeepAlive()
	srv.Pause()
	time.Sleep(ttl/3 + 100*time.Millisecond) // the first renewal is hanging
	start := time.Now()
	stop()
	// A renewal lasts a third of the ttl at most. Under load the tick can
	// start one just as stop is called, which then waits all of it: allow a
	// second third for that, far below a renewal bounded by go-redis's
	// own timeouts (seconds), which this test is about.
	if took := time.Since(start); took > 2*ttl/3 {
		t.Errorf("stop took %v with a renewal hanging: want at most two thirds of the ttl (%v)", took, 2*ttl/3)
	}
	srv.Continue()
}

// A key that holds the holder's own token (an earlier Acquire that ran on
// Redis but whose answer was lost) is the holder's: Acquire takes it and
// extends it to a whole ttl. Another holder's token still refuses it.
func TestAcquireTakesTheHoldersOwnKey(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	l := lease.WithToken(rdb, "certmail:test:own", "tok-1", time.Minute)
	if err := rdb.Set(ctx, l.Key(), "tok-1", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Acquire(ctx); err != nil || !ok {
		t.Fatalf("Acquire with the key holding the holder's own token = %v, %v; want the lease", ok, err)
	}
	if ttl := rdb.PTTL(ctx, l.Key()).Val(); ttl <= 50*time.Second {
		t.Errorf("after Acquire the lease has %v left, want about a minute", ttl)
	}
	other := lease.WithToken(rdb, l.Key(), "tok-2", time.Minute)
	if ok, err := other.Acquire(ctx); err != nil || ok {
		t.Errorf("another holder's Acquire = %v, %v; want refused", ok, err)
	}
	if got := rdb.Get(ctx, l.Key()).Val(); got != "tok-1" {
		t.Errorf("key holds %q after another holder's Acquire, want tok-1", got)
	}
}
