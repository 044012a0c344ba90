package api

import (
	"cmp"
	"container/list"
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
// valid) of each client address, counted apart for the requests of browsers
// and for those of other clients (see failureKey). A client over the limit
// gets 429 with Retry-After on every route that needs a token, whatever it
// sends, until the limit lets one more attempt through. Zero values take the
// defaults.
type AuthFailureLimit struct {
	Burst int
	Every time.Duration
	// Clients bounds how many entries are tracked (a few hundred bytes
	// each; an address whose browsers and other clients both failed takes
	// two); beyond it, a new entry's failure makes the table forget the
	// entry whose last failure is the oldest.
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
// failureKey, spent by failures only, the entries kept in the order of
// their last failure. When the table is full, a new entry's failure takes
// the place of the entry whose last failure is the oldest: the table never
// holds more entries than its bound, whatever the number of clients that
// fail, and a client is only ever refused for failures of its own key (a
// client with a valid token that never failed always gets through).
type failureLimiter struct {
	every   rate.Limit
	burst   int
	max     int
	mu      sync.Mutex
	clients map[failureKey]*list.Element // of *failingClient
	order   list.List                    // most recent failure first
}

// failingClient is an entry of the table and its bucket.
type failingClient struct {
	key failureKey
	lim *rate.Limiter
}

func newFailureLimiter(l AuthFailureLimit) *failureLimiter {
	return &failureLimiter{every: rate.Every(l.Every), burst: l.Burst, max: l.Clients,
		clients: map[failureKey]*list.Element{}}
}

// retryAfter returns how long the client of key must wait before its next
// attempt, 0 when it may try now.
func (f *failureLimiter) retryAfter(key failureKey, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.clients[key]
	if e == nil {
		return 0 // no failure on record
	}
	tokens := e.Value.(*failingClient).lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(f.every) * float64(time.Second))
}

// fail spends one attempt of the client of key, making room for it when it
// is new and the table is full.
func (f *failureLimiter) fail(key failureKey, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.clients[key]
	switch {
	case e != nil:
		f.order.MoveToFront(e)
	case len(f.clients) < f.max:
		e = f.order.PushFront(&failingClient{key: key, lim: rate.NewLimiter(f.every, f.burst)})
		f.clients[key] = e
	default: // reuse the entry of the oldest failure
		e = f.order.Back()
		c := e.Value.(*failingClient)
		delete(f.clients, c.key)
		*c = failingClient{key: key, lim: rate.NewLimiter(f.every, f.burst)}
		f.clients[key] = e
		f.order.MoveToFront(e)
	}
	e.Value.(*failingClient).lim.AllowN(now, 1)
}

// size is how many entries the table holds.
func (f *failureLimiter) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.clients)
}

// failureKey is what a request's failed authentications count against: its
// client address, and whether a browser marked the request as its own
// (failureKeyOf). A browser's failures count apart so that one that keeps
// sending a wrong token or dashboard password does not lock out the services
// at the same address (behind a proxy, every client of the proxy). Browsers
// mark only requests to https URLs and loopback addresses, so this does not
// cover a page rebound to the API's address by DNS rebinding: that works
// only over plain HTTP (over HTTPS the certificate does not name the page's
// host), where the page's wrong tokens count with the other clients'. A
// guesser that marks its requests as a browser's gains one second budget of
// the same size, no more.
type failureKey struct {
	prefix  netip.Prefix
	browser bool
}

// failureKeyOf is the failureKey of r. A request is a browser's when it
// carries Sec-Fetch-Site, which a page can neither set nor remove and other
// clients never send. Browsers since 2023 send it with every request to an
// https URL or a loopback address; their requests to a plain http URL with
// a host name, and those of older browsers, count with the other clients'.
func failureKeyOf(r *http.Request) failureKey {
	return failureKey{prefix: clientPrefix(r), browser: len(r.Header.Values("Sec-Fetch-Site")) > 0}
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
