package ratelimit

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A window's key is named after its limit and period, so two limiters of
// one account with other windows (a rollout that changes
// DIGICERT_RATE_LIMITS, or accounts files that differ) count in other keys,
// and together admit the sum of their limits. Renaming the keys would split
// the workers of two versions the same way during the upgrade, so the
// mismatch is made visible instead: each limiter announces its windows in
// the account's settings hash, certmail:ratelimit:{<account>}:settings
// (one field per setting, as ParseWindows reads it; its value the last
// announcement, on Redis's clock), and learns the settings others announced.

// MaxOtherSettings bounds how many other settings one Announce returns.
const MaxOtherSettings = 16

// settingsLua records ARGV[1] in the settings hash KEYS[1] now, removes the
// fields not announced within ARGV[2] ms (or holding no time), lets the
// hash expire ARGV[2] ms after this announcement, and returns the other
// fields, at most ARGV[3].
const settingsLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep, most = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], now)
local others = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local seen = tonumber(all[i + 1])
  if not seen or now - seen > keep then
    redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= ARGV[1] and #others < most then
    others[#others + 1] = all[i]
  end
end
redis.call('PEXPIRE', KEYS[1], keep)
return others
`

var settingsScript = redis.NewScript(settingsLua)

// settingsString is windows as ParseWindows reads them, in one order
// whatever the order they were given in (by period, then limit), so that
// limiters that count in the same keys announce the same setting; "" for
// none.
func settingsString(windows []Window) string {
	ws := slices.Clone(windows)
	slices.SortFunc(ws, func(a, b Window) int {
		return cmp.Or(cmp.Compare(a.Period, b.Period), cmp.Compare(a.Limit, b.Limit))
	})
	ws = slices.Compact(ws)
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.String()
	}
	return strings.Join(parts, ",")
}

// Settings is the windows l enforces as ParseWindows reads them, ordered
// by period ("100/5s,1000/3m"); "" when it enforces none.
func (l *Limiter) Settings() string { return l.settings }

// SettingsKey is the account's settings hash.
func (l *Limiter) SettingsKey() string { return l.prefix + "settings" }

// Announce records that l enforces its windows now, in the account's
// settings hash, and returns the other settings announced within keep, at
// most MaxOtherSettings: limiters of the account that count in other
// windows. Announcements older than keep are removed, and the hash expires
// keep after the last one, so call it more often than keep.
func (l *Limiter) Announce(ctx context.Context, keep time.Duration) ([]string, error) {
	others, err := settingsScript.Run(ctx, l.rdb, []string{l.SettingsKey()},
		l.settings, keep.Milliseconds(), MaxOtherSettings).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("rate limit settings: %w", err)
	}
	return others, nil
}
