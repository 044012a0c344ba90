package api

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestFailureLimiterBounded(t *testing.T) {
	t.Parallel()
	f := newFailureLimiter(AuthFailureLimit{Burst: 2, Every: time.Minute, Clients: 100})
	now := time.Now()
	addr := func(i int) netip.Prefix {
		return netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.%d/32", i>>16&255, i>>8&255, i&255))
	}
	// Many more addresses than the table holds, each failing once.
	for i := range 5000 {
		f.fail(addr(i), now)
	}
	if n := f.size(); n != 100 {
		t.Fatalf("table holds %d addresses, want its bound 100", n)
	}
	// The overflow bucket took the other 4900 failures: new addresses wait.
	if wait := f.retryAfter(addr(99999), now); wait <= 0 {
		t.Errorf("an address beyond the table may try at once while the overflow bucket is spent")
	}
	// An address in the table failed once of two: it may try again.
	if wait := f.retryAfter(addr(0), now); wait != 0 {
		t.Errorf("address 0 waits %v after one failure of two", wait)
	}
	f.fail(addr(0), now)
	if wait := f.retryAfter(addr(0), now); wait <= 0 || wait > time.Minute {
		t.Errorf("address 0 after two failures: wait %v, want up to a minute", wait)
	}
	// Once their buckets are full again, the addresses are forgotten to make
	// room for new ones.
	later := now.Add(10 * time.Minute)
	f.fail(addr(200000), later)
	if n := f.size(); n != 1 {
		t.Errorf("after the sweep the table holds %d addresses, want 1", n)
	}
	if wait := f.retryAfter(addr(99999), later); wait != 0 {
		t.Errorf("a new address waits %v once the table has room", wait)
	}
}

func TestClientPrefix(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"192.0.2.7:5555":                     "192.0.2.7/32",
		"[::ffff:192.0.2.7]:5555":            "192.0.2.7/32",
		"[2001:db8:1:2:aaaa:bbbb:cccc:1]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::9]:80":          "2001:db8:1:2::/64",
		"pipe":                               "invalid Prefix",
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		if got := clientPrefix(r).String(); got != want {
			t.Errorf("clientPrefix(%q) = %s, want %s", remote, got, want)
		}
	}
}
