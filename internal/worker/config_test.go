package worker_test

import (
	"maps"
	"testing"
	"time"

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
