package api

import (
	"cmp"
	"errors"
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of AuthFailureLimit.
const (
	// DefaultAuthFailureBurst is how many failed authentications a client
	// address may make in a row.
	DefaultAuthFailureBurst = 10
	// DefaultAuthFailureEvery is how often one more is allowed after that:
	// 10 a minute.
	DefaultAuthFailureEvery = 6 * time.Second
	// DefaultAuthFailureClients bounds the table of addresses.
	DefaultAuthFailureClients = 10000
)

// AuthFailureLimit limits the failed authentications (a token that is not
// valid) of each client address. An address over the limit gets 429 with
// Retry-After on every route that needs a token, whatever it sends, until
// the limit lets one more attempt through. Zero values take the defaults.
type AuthFailureLimit struct {
	Burst int
	Every time.Duration
	// Clients bounds how many addresses are tracked (a few hundred bytes
	// each); beyond it, new addresses share one limit.
	Clients int
}

// WithDefaults returns l with zero values replaced by the defaults.
func (l AuthFailureLimit) WithDefaults() AuthFailureLimit {
	l.Burst = cmp.Or(l.Burst, DefaultAuthFailureBurst)
	l.Every = cmp.Or(l.Every, DefaultAuthFailureEvery)
	l.Clients = cmp.Or(l.Clients, DefaultAuthFailureClients)
	return l
}

// Validate reports a limit that cannot work.
func (l AuthFailureLimit) Validate() error {
	if l.Burst < 1 || l.Every <= 0 || l.Clients < 1 {
		return errors.New("auth failure limit: burst, interval and table size must be positive")
	}
	return nil
}

// failureLimiter is the table of AuthFailureLimit: a token bucket per
// client address, spent by failures only. Addresses whose bucket is full
// again are dropped when the table fills up; while it stays full, new
// addresses share the overflow bucket, so the table never grows past its
// bound whatever the number of addresses that fail.
type failureLimiter struct {
	every   rate.Limit
	burst   int
	max     int
	mu      sync.Mutex
	clients map[netip.Prefix]*rate.Limiter
	full    *rate.Limiter // shared by the addresses the table has no room for
}

func newFailureLimiter(l AuthFailureLimit) *failureLimiter {
	every := rate.Every(l.Every)
	return &failureLimiter{every: every, burst: l.Burst, max: l.Clients,
		clients: map[netip.Prefix]*rate.Limiter{}, full: rate.NewLimiter(every, l.Burst)}
}

// retryAfter returns how long the address must wait before its next
// attempt, 0 when it may try now.
func (f *failureLimiter) retryAfter(addr netip.Prefix, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	lim := f.clients[addr]
	if lim == nil {
		if len(f.clients) < f.max {
			return 0 // unknown and the table has room: never failed
		}
		lim = f.full
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(f.every) * float64(time.Second))
}

// fail spends one attempt of the address.
func (f *failureLimiter) fail(addr netip.Prefix, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	lim := f.clients[addr]
	if lim == nil {
		if len(f.clients) >= f.max {
			f.sweep(now)
		}
		if len(f.clients) >= f.max {
			lim = f.full
		} else {
			lim = rate.NewLimiter(f.every, f.burst)
			f.clients[addr] = lim
		}
	}
	lim.AllowN(now, 1)
}

// sweep drops the addresses whose bucket is full again: forgetting them
// changes nothing.
func (f *failureLimiter) sweep(now time.Time) {
	for addr, lim := range f.clients {
		if lim.TokensAt(now) >= float64(f.burst) {
			delete(f.clients, addr)
		}
	}
}

// size is how many addresses the table holds.
func (f *failureLimiter) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.clients)
}

// clientPrefix is the address a request's failures count against: the peer
// address of its connection (behind a proxy, the proxy's), an IPv6 client by
// its /64, the block one host usually has.
func clientPrefix(r *http.Request) netip.Prefix {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{} // not an IP (a test's pipe): one shared entry
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits) // cannot fail: bits fits the address
	return p
}

// retryAfterSeconds is d in whole seconds, rounded up, at least 1: the
// value of a Retry-After header.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
