// Package lease is certmail's one Redis lease: a key that one holder sets,
// with a token of its own and an expiry, renews while it works and deletes
// when it is done. Renewal and release are compare-and-set scripts: they act
// only while the key still holds the holder's token, so a holder whose lease
// expired and was taken by another can neither extend nor end the other's.
// Acquire takes a free key (SET NX), or one that holds the holder's own
// token (its earlier Acquire ran on Redis, the answer lost) with the
// renewal's script.
//
// The scheduler's leader lease and the API's idempotency keys are Leases.
// The order lock of set-emails (one DigiCert call per order at a time) is
// one in form: the worker takes and releases it inside its own scripts, in
// the round trips before and after the call (SET PX, compare-and-DEL, as
// Acquire and Release do), and renews it with KeepAlive.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// renewScript extends the lease KEYS[1] to ARGV[2] ms if it holds ARGV[1].
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// releaseScript deletes the lease KEYS[1] if it holds ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Lease is one holder's claim on a key. Its methods are safe for concurrent
// use; it does not close rdb.
type Lease struct {
	rdb   redis.UniversalClient
	key   string
	token string
	ttl   time.Duration
}

// New returns a lease on key for ttl with a random token, not yet acquired.
func New(rdb redis.UniversalClient, key string, ttl time.Duration) *Lease {
	return WithToken(rdb, key, newToken(), ttl)
}

// WithToken returns a lease on key for ttl whose token is token: a value the
// holder stores in the key (an idempotency key's record), compared as it is.
func WithToken(rdb redis.UniversalClient, key, token string, ttl time.Duration) *Lease {
	return &Lease{rdb: rdb, key: key, token: token, ttl: ttl}
}

// newToken returns a random token (32 hex digits).
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Key returns the leased key.
func (l *Lease) Key() string { return l.key }

// Token returns the holder's token: what the key holds while the lease is
// this holder's. Scripts that write only for the holder compare it.
func (l *Lease) Token() string { return l.token }

// Acquire sets the key to the token for the lease's ttl unless the key
// exists; ok reports whether this holder now has the lease. A key that
// holds the token already is this holder's: its lease is extended to a
// whole ttl (as Renew does) and ok is true. That is the case when an
// earlier Acquire timed out on the way back but ran on Redis: without it
// the holder would wait a whole lease for its own key to expire, and
// nobody would hold the lease meanwhile. The SET NX comes first, alone,
// so that taking a free key costs one command, as it always did.
func (l *Lease) Acquire(ctx context.Context) (ok bool, err error) {
	ok, err = l.rdb.SetNX(ctx, l.key, l.token, l.ttl).Result()
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", l.key, err)
	}
	if ok {
		return true, nil
	}
	n, err := renewScript.Run(ctx, l.rdb, []string{l.key}, l.token, l.ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", l.key, err)
	}
	return n == 1, nil
}

// Renew extends the lease to a whole ttl from now if the key still holds
// the token; ok is false when the lease is no longer this holder's.
func (l *Lease) Renew(ctx context.Context) (ok bool, err error) {
	n, err := renewScript.Run(ctx, l.rdb, []string{l.key}, l.token, l.ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("renew lease %s: %w", l.key, err)
	}
	return n == 1, nil
}

// Release deletes the key if it still holds the token; ok reports whether
// it did.
func (l *Lease) Release(ctx context.Context) (ok bool, err error) {
	n, err := releaseScript.Run(ctx, l.rdb, []string{l.key}, l.token).Int64()
	if err != nil {
		return false, fmt.Errorf("release lease %s: %w", l.key, err)
	}
	return n == 1, nil
}

// KeepAlive renews the lease every third of its ttl, each renewal given a
// third of the ttl, until stop is called; stop waits for the renewals to
// end and may be called more than once. A renewal that fails is not
// retried before the next: if Redis stays out of reach, the lease expires,
// which is what frees the lease of a holder that died.
func (l *Lease) KeepAlive() (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				select { // a stop and a tick both ready: the stop wins
				case <-quit:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
				_, _ = l.Renew(ctx) // see above: a lost renewal lets the lease expire
				cancel()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}
