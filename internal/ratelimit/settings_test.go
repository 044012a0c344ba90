package ratelimit_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
)

// Two limiters of one account with other windows (a rollout that lowers
// DIGICERT_RATE_LIMITS) count in other keys; each learns of the other's
// setting when it announces its own, and only of a setting announced
// within keep. Limiters with the same windows in another order announce
// the same setting. An announcement older than keep is removed, and the
// hash expires when nobody announces.
func TestAnnounceReportsOtherSettings(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	newLimiter := func(account string, ws ...ratelimit.Window) *ratelimit.Limiter {
		return ratelimit.NewLimiter(rdb, ratelimit.Config{Account: account, Windows: ws})
	}
	fast, slow := ratelimit.Window{Limit: 100, Period: 5 * time.Second}, ratelimit.Window{Limit: 1000, Period: 3 * time.Minute}
	old := newLimiter("default", fast, slow)
	same := newLimiter("default", slow, fast)
	lowered := newLimiter("default", ratelimit.Window{Limit: 80, Period: 5 * time.Second}, slow)
	otherAccount := newLimiter("eu", ratelimit.Window{Limit: 10, Period: time.Second})
	if got := old.Settings(); got != "100/5s,1000/3m" || same.Settings() != got {
		t.Fatalf("settings %q and %q, want both 100/5s,1000/3m", got, same.Settings())
	}
	if ws, err := ratelimit.ParseWindows(lowered.Settings()); err != nil || len(ws) != 2 {
		t.Errorf("ParseWindows(%q) = %v, %v", lowered.Settings(), ws, err)
	}
	if key := old.SettingsKey(); key != "certmail:ratelimit:{default}:settings" {
		t.Errorf("settings key %q", key)
	}

	const keep = time.Minute
	announce := func(l *ratelimit.Limiter, keep time.Duration) []string {
		t.Helper()
		others, err := l.Announce(ctx, keep)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(others)
		return others
	}
	if got := announce(old, keep); len(got) != 0 {
		t.Errorf("the first limiter learns of %v, want none", got)
	}
	if got := announce(same, keep); len(got) != 0 {
		t.Errorf("a limiter with the same windows learns of %v, want none", got)
	}
	if got := announce(otherAccount, keep); len(got) != 0 {
		t.Errorf("another account's limiter learns of %v, want none", got)
	}
	if got := announce(lowered, keep); !slices.Equal(got, []string{"100/5s,1000/3m"}) {
		t.Errorf("the lowered limiter learns of %v, want [100/5s,1000/3m]", got)
	}
	if got := announce(old, keep); !slices.Equal(got, []string{"80/5s,1000/3m"}) {
		t.Errorf("the first limiter learns of %v, want [80/5s,1000/3m]", got)
	}
	if ttl := rdb.PTTL(ctx, old.SettingsKey()).Val(); ttl <= 0 || ttl > keep {
		t.Errorf("the settings hash expires in %v, want within %v", ttl, keep)
	}

	// An announcement older than keep (here one of a worker gone since,
	// at the Unix epoch) is removed by the next one, as a field that holds
	// no time.
	rdb.HSet(ctx, old.SettingsKey(), "50/5s", 0, "garbage", "x")
	if got := announce(old, keep); !slices.Equal(got, []string{"80/5s,1000/3m"}) {
		t.Errorf("the first limiter learns of %v, want [80/5s,1000/3m]", got)
	}
	fields := rdb.HKeys(ctx, old.SettingsKey()).Val()
	slices.Sort(fields)
	if !slices.Equal(fields, []string{"100/5s,1000/3m", "80/5s,1000/3m"}) {
		t.Errorf("fields %v left, want the two announced within keep", fields)
	}
}

// An account's settings hash holds one field per setting announced within
// keep, however many limiters announce, and Announce returns at most
// MaxOtherSettings of them.
func TestAnnounceIsBounded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	var last []string
	for i := range 3 * ratelimit.MaxOtherSettings {
		for range 2 { // two limiters of each setting
			l := ratelimit.NewLimiter(srv.Client(), ratelimit.Config{Account: "default",
				Windows: []ratelimit.Window{{Limit: i + 1, Period: time.Second}}})
			var err error
			if last, err = l.Announce(ctx, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(last) != ratelimit.MaxOtherSettings {
		t.Errorf("Announce returned %d other settings, want %d", len(last), ratelimit.MaxOtherSettings)
	}
	if n := srv.Client().HLen(ctx, "certmail:ratelimit:{default}:settings").Val(); n != 3*ratelimit.MaxOtherSettings {
		t.Errorf("%d fields, want one per setting, %d", n, 3*ratelimit.MaxOtherSettings)
	}
}
