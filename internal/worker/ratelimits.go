package worker

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
)

// DefaultRateLimitCheckInterval is Config.RateLimitCheckInterval's default.
const DefaultRateLimitCheckInterval = time.Minute

// rateLimitCheckKeep is how many check intervals an announcement of another
// worker's rate limits counts for: a worker that stopped is forgotten after
// that, and a hash that nobody refreshes expires.
const rateLimitCheckKeep = 3

// maxSettingLength bounds a setting read from Redis in a log line.
const maxSettingLength = 256

// rateLimitCheck announces each account's windows (ratelimit.Limiter's
// Announce) every interval and reports the workers that enforce other ones
// for the same account: their requests count in other windows, so
// together they may go over DigiCert's limit. Each other setting is logged
// once, at ERROR, when it appears, and once, at INFO, when it is no longer
// announced.
type rateLimitCheck struct {
	accounts []*accountRuntime
	interval time.Duration
	log      *zap.Logger
	reported map[string]map[string]bool // account → the other settings reported
	refused  map[string]bool            // the settings keys whose refusal by Redis was logged
}

func newRateLimitCheck(accounts map[string]*accountRuntime, interval time.Duration, log *zap.Logger) *rateLimitCheck {
	c := &rateLimitCheck{interval: interval, log: log, reported: map[string]map[string]bool{}, refused: map[string]bool{}}
	for _, a := range accounts {
		c.accounts = append(c.accounts, a)
		c.reported[a.name] = map[string]bool{}
	}
	return c
}

// run checks at once, then every interval until ctx is done.
func (c *rateLimitCheck) run(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check announces every account's windows once. An account whose
// announcement fails keeps what it reported until the next check.
func (c *rateLimitCheck) check(ctx context.Context) {
	for _, a := range c.accounts {
		actx, cancel := context.WithTimeout(ctx, c.interval)
		others, err := a.limiter.Announce(actx, rateLimitCheckKeep*c.interval)
		cancel()
		if err != nil {
			c.failed(a, err)
			continue
		}
		c.compare(a.name, a.limiter.Settings(), others)
	}
}

// failed logs err, Redis's refusal of a's announcement, once per settings
// key for the worker's life: another type under the key (a Redis shared
// with other programs) or an ACL that denies it switches the check off for
// the account, and nothing else would say so, the deliveries never reading
// that key. A failure to reach Redis, or a reply that says it serves no
// writes for now (busyReply), is not logged: the deliveries report it.
func (c *rateLimitCheck) failed(a *accountRuntime, err error) {
	key := a.limiter.SettingsKey()
	if !isErrorReply(err) || busyReply(err) || c.refused[key] {
		return
	}
	c.refused[key] = true
	c.log.Warn("Redis refuses the announcement of the worker's rate limits: whether workers of the account enforce other "+
		"limits is not checked (see the README's Rate limits)",
		append([]zap.Field{zap.String("account", deadletter.Clip(a.name, maxLabelLength)),
			zap.String("key", deadletter.Clip(key, maxReplyShown))},
			refusalFields(err, key)...)...)
}

// busyReply reports whether err is a reply by which Redis says it serves
// no writes for now: loading its data, a replica or without its master, a
// script running too long, out of memory.
func busyReply(err error) bool {
	for _, p := range []string{"LOADING", "MASTERDOWN", "READONLY", "BUSY", "OOM"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// compare logs the settings of others not reported yet, and those reported
// that others no longer has.
func (c *rateLimitCheck) compare(account, own string, others []string) {
	reported := c.reported[account]
	seen := make(map[string]bool, len(others))
	for _, o := range others {
		seen[o] = true
		if reported[o] {
			continue
		}
		reported[o] = true
		c.log.Error("workers of one account enforce different rate limits: they count requests apart, and together may exceed DigiCert's limit; "+
			"give every worker the same DIGICERT_RATE_LIMITS (or rate_limits in the accounts file)",
			zap.String("account", account), zap.String("rate_limits", settingLabel(own)),
			zap.String("other_rate_limits", settingLabel(o)))
	}
	for o := range reported {
		if !seen[o] {
			delete(reported, o)
			c.log.Info("no worker of the account enforces the other rate limits any more",
				zap.String("account", account), zap.String("rate_limits", settingLabel(own)),
				zap.String("other_rate_limits", settingLabel(o)))
		}
	}
}

// settingLabel is a setting for a log line: "none" for no windows, and
// clipped.
func settingLabel(s string) string {
	if s == "" {
		return "none"
	}
	return deadletter.Clip(s, maxSettingLength)
}
