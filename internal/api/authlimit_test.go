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
	addr := func(i int) failureKey {
		return failureKey{prefix: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.%d/32", i>>16&255, i>>8&255, i&255))}
	}
	// Many more addresses than the table holds, each failing twice: the
	// table keeps the last 100 to fail.
	for i := range 5000 {
		f.fail(addr(i), now)
		f.fail(addr(i), now)
	}
	if n := f.size(); n != 100 {
		t.Fatalf("table holds %d addresses, want its bound 100", n)
	}
	for _, i := range []int{4900, 4999} {
		if wait := f.retryAfter(addr(i), now); wait <= 0 || wait > time.Minute {
			t.Errorf("address %d after two failures: wait %v, want up to a minute", i, wait)
		}
	}
	// Whatever the others did, an address is refused only for its own
	// failures: one that never failed, or was forgotten, may try.
	for _, i := range []int{0, 4899, 99999} {
		if wait := f.retryAfter(addr(i), now); wait != 0 {
			t.Errorf("address %d waits %v without failures on record", i, wait)
		}
	}
	// An address that keeps failing stays; the oldest failure is forgotten.
	f.fail(addr(4900), now)
	for i := range 99 {
		f.fail(addr(10000+i), now)
	}
	if f.retryAfter(addr(4900), now) == 0 {
		t.Error("address 4900 failed again and was forgotten")
	}
	if f.retryAfter(addr(4901), now) != 0 {
		t.Error("address 4901, the oldest failure, is still refused")
	}
	if n := f.size(); n != 100 {
		t.Errorf("table holds %d addresses, want 100", n)
	}
	// A bucket full again lets its address try, as if it were forgotten.
	if wait := f.retryAfter(addr(4900), now.Add(10*time.Minute)); wait != 0 {
		t.Errorf("address 4900 waits %v ten minutes later", wait)
	}
}

// TestFailureLimiterCountsEntries checks that the bound counts entries: an
// address whose browsers and other clients both fail takes two, so the
// table holds no more buckets than Clients however failures are keyed.
func TestFailureLimiterCountsEntries(t *testing.T) {
	t.Parallel()
	f := newFailureLimiter(AuthFailureLimit{Burst: 1, Every: time.Hour, Clients: 3})
	now := time.Now()
	a := netip.MustParsePrefix("192.0.2.1/32")
	b := netip.MustParsePrefix("192.0.2.2/32")
	f.fail(failureKey{prefix: a}, now)
	f.fail(failureKey{prefix: a, browser: true}, now)
	if n := f.size(); n != 2 {
		t.Fatalf("one address failing as a browser and not: %d entries, want 2", n)
	}
	f.fail(failureKey{prefix: b}, now)
	f.fail(failureKey{prefix: b, browser: true}, now)
	if n := f.size(); n != 3 {
		t.Errorf("table holds %d entries, want its bound 3", n)
	}
	if f.retryAfter(failureKey{prefix: a}, now) != 0 {
		t.Error("the oldest entry (address a, not a browser) is still refused")
	}
	for _, k := range []failureKey{{prefix: a, browser: true}, {prefix: b}, {prefix: b, browser: true}} {
		if f.retryAfter(k, now) == 0 {
			t.Errorf("%v after its failure may try again", k)
		}
	}
}

// TestFailureKeyOf: a request with Sec-Fetch-Site, whatever its value,
// is a browser's; one without, from the same address, is not.
func TestFailureKeyOf(t *testing.T) {
	t.Parallel()
	addr := netip.MustParsePrefix("192.0.2.7/32")
	for _, tc := range []struct {
		site    []string
		browser bool
	}{
		{nil, false},
		{[]string{"same-origin"}, true},
		{[]string{"none"}, true},
		{[]string{"cross-site"}, true},
		{[]string{""}, true},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "192.0.2.7:5555"
		if tc.site != nil {
			r.Header["Sec-Fetch-Site"] = tc.site
		}
		if got, want := failureKeyOf(r), (failureKey{prefix: addr, browser: tc.browser}); got != want {
			t.Errorf("Sec-Fetch-Site %q: key %v, want %v", tc.site, got, want)
		}
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
