package scheduler

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
)

// TestConfigDefaults: zero values take the documented defaults, and values
// given are kept.
func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.WithDefaults()
	if c.Lease != 5*time.Second || c.CatchUp != time.Minute || c.ReloadInterval != 2*time.Second || c.Heartbeat != 5*time.Second || c.Registry == nil {
		t.Errorf("defaults: lease %v, catch-up %v, reload %v, heartbeat %v, registry %v", c.Lease, c.CatchUp, c.ReloadInterval, c.Heartbeat, c.Registry)
	}
	given := Config{Lease: 3 * time.Second, CatchUp: time.Second, ReloadInterval: time.Hour, Heartbeat: time.Millisecond}.WithDefaults()
	if given.Lease != 3*time.Second || given.CatchUp != time.Second || given.ReloadInterval != time.Hour || given.Heartbeat != time.Millisecond {
		t.Errorf("given values changed: %+v", given)
	}
}

// TestConfigRefusals: every setting that cannot work is refused by name,
// and the least that can work is accepted.
func TestConfigRefusals(t *testing.T) {
	t.Parallel()
	valid := func() Config {
		return Config{Redis: &redisconn.Conn{}, Ops: &ops.Service{}, Store: &schedule.Store{}, Logger: zap.NewNop(), Lease: time.Second}
	}
	if err := valid().Validate(); err != nil {
		t.Errorf("a lease of 1s, no catch-up, reload or heartbeat: %v, want accepted", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no Redis", func(c *Config) { c.Redis = nil }, "Redis"},
		{"no ops", func(c *Config) { c.Ops = nil }, "queue operations"},
		{"no store", func(c *Config) { c.Store = nil }, "schedule store"},
		{"no logger", func(c *Config) { c.Logger = nil }, "logger"},
		{"short lease", func(c *Config) { c.Lease = time.Second - time.Millisecond }, "lease 999ms"},
		{"negative catch-up", func(c *Config) { c.CatchUp = -time.Second }, "negative"},
		{"negative reload", func(c *Config) { c.ReloadInterval = -time.Second }, "negative"},
		{"negative heartbeat", func(c *Config) { c.Heartbeat = -time.Second }, "negative"},
	} {
		c := valid()
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
