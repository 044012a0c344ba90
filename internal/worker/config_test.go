package worker_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/worker"
)

// A worker configured with nothing but its Redis, accounts and logger runs
// with the defaults the README's configuration table and "Redis keys"
// document (duplicate guards and applied sequences kept 7 days).
func TestDefaults(t *testing.T) {
	t.Parallel()
	c := worker.Config{}.WithDefaults()
	if c.Concurrency != 20 || c.MaxRetry != 12 || c.ShutdownTimeout != 30*time.Second || c.DeadLetterMaxLen != 100000 ||
		c.GuardRetention != 7*24*time.Hour || c.AuthProbeInterval != time.Minute || c.RateLimitPause != 30*time.Second ||
		c.TaskCheckInterval != 50*time.Millisecond || c.Registry == nil {
		t.Errorf("defaults %+v", c)
	}
	if want := map[string]int{"critical": 6, "default": 3, "bulk": 1}; !maps.Equal(c.Queues, want) {
		t.Errorf("queues %v, want %v", c.Queues, want)
	}
	// What is set is kept.
	set := worker.Config{Concurrency: 3, MaxRetry: -1, ShutdownTimeout: time.Second, GuardRetention: time.Hour}.WithDefaults()
	if set.Concurrency != 3 || set.MaxRetry != -1 || set.ShutdownTimeout != time.Second || set.GuardRetention != time.Hour {
		t.Errorf("set values not kept: %+v", set)
	}
}

// Validate bounds the rate-limit pause and the auth probe interval by the
// constants the command line checks them against (MinRateLimitPause and
// the rest): a Go caller could pass values the CLI refuses, such as a 1 ns
// pause that answers a 429 with more requests at once. The refusal words
// the range as --help and the CLI do ("1s to 5m", not "1s to 5m0s"). The
// bounds themselves and the defaults are accepted.
func TestPauseBoundsValidated(t *testing.T) {
	t.Parallel()
	base := worker.Config{Redis: &redisconn.Conn{}, Logger: zap.NewNop(),
		Accounts: account.Set{"default": account.Account{Name: "default", APIKey: account.Secret(testKey)}}}.WithDefaults()
	if err := base.Validate(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for _, tt := range []struct {
		name   string // as the error names it
		set    func(*worker.Config, time.Duration)
		lo, hi time.Duration
		words  string // the range as --help and the CLI's refusal state it
	}{
		{"rate-limit pause", func(c *worker.Config, d time.Duration) { c.RateLimitPause = d }, worker.MinRateLimitPause, worker.MaxRateLimitPause, "want 1s to 5m"},
		{"auth probe interval", func(c *worker.Config, d time.Duration) { c.AuthProbeInterval = d }, worker.MinAuthProbeInterval, worker.MaxAuthProbeInterval, "want 1s to 1h"},
		{"task check interval", func(c *worker.Config, d time.Duration) { c.TaskCheckInterval = d }, worker.MinTaskCheckInterval, worker.MaxTaskCheckInterval, "want 10ms to 1m"},
	} {
		for _, d := range []time.Duration{tt.lo, tt.hi} {
			cfg := base
			tt.set(&cfg, d)
			if err := cfg.Validate(); err != nil {
				t.Errorf("%s %v, a bound: %v, want accepted", tt.name, d, err)
			}
		}
		for _, d := range []time.Duration{-time.Second, time.Nanosecond, tt.lo - 1, tt.hi + 1, 100000 * time.Hour} {
			cfg := base
			tt.set(&cfg, d)
			err := cfg.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tt.name+" ") || !strings.HasSuffix(err.Error(), ": "+tt.words) {
				t.Errorf("%s %v: %v, want refused, naming it and ending %q", tt.name, d, err, tt.words)
			}
		}
	}
}
