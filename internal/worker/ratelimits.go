package worker

import (
	"context"
	"time"

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
}

func newRateLimitCheck(accounts map[string]*accountRuntime, interval time.Duration, log *zap.Logger) *rateLimitCheck {
	c := &rateLimitCheck{interval: interval, log: log, reported: map[string]map[string]bool{}}
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
// announcement fails (Redis away, which the deliveries report) keeps what
// it reported until the next check.
func (c *rateLimitCheck) check(ctx context.Context) {
	for _, a := range c.accounts {
		actx, cancel := context.WithTimeout(ctx, c.interval)
		others, err := a.limiter.Announce(actx, rateLimitCheckKeep*c.interval)
		cancel()
		if err != nil {
			continue
		}
		c.compare(a.name, a.limiter.Settings(), others)
	}
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
