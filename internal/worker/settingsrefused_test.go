package worker_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/worker"
)

// An announcement of the worker's rate limits that Redis refuses (another
// type under the settings hash, on a Redis shared with other programs, or
// an ACL that denies it) switches the mixed-limits check off for the
// account, and the deliveries never read that key: one WARN line per
// worker says so, naming the key, however many checks fail.
func TestRefusedRateLimitSettingsAreReported(t *testing.T) {
	t.Parallel()
	const key = "certmail:ratelimit:{default}:settings"
	for _, c := range []struct {
		name, reply, advice string
		refuse              func(ctx context.Context, rdb *redis.Client) error
		refused             func(t *testing.T, rdb *redis.Client) int // how many commands Redis refused so
	}{
		{"another type", "WRONGTYPE", "another type",
			func(ctx context.Context, rdb *redis.Client) error {
				return rdb.Set(ctx, key, "another program's", 0).Err()
			},
			wrongTypeReplies},
		{"ACL", "", "An ACL user for certmail",
			func(ctx context.Context, rdb *redis.Client) error {
				return rdb.Do(ctx, "ACL", "SETUSER", "default", "-hgetall").Err()
			},
			aclRefusals},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{startWorkers: -1})
			rdb := b.redis.Client()
			if err := c.refuse(context.Background(), rdb); err != nil {
				t.Fatal(err)
			}
			b.startWorker(t, setupOpts{configure: func(cfg *worker.Config) { cfg.RateLimitCheckInterval = 50 * time.Millisecond }})
			// Four refused checks at least: each counts in Redis's error stats.
			waitFor(t, 10*time.Second, func() bool { return c.refused(t, rdb) >= 4 },
				func() string { return fmt.Sprintf("%d commands refused", c.refused(t, rdb)) })
			const msg = "Redis refuses the announcement of the worker's rate limits: whether workers of the account enforce other " +
				"limits is not checked (see the README's Rate limits)"
			warns := b.logs.Lines("warn", msg)
			if len(warns) != 1 {
				t.Fatalf("%d WARN lines after four refused checks, want 1", len(warns))
			}
			l := warns[0]
			if l["account"] != "default" || l["key"] != key || !strings.Contains(fmt.Sprint(l["error"]), c.reply) ||
				!strings.Contains(fmt.Sprint(l["advice"]), c.advice) {
				t.Errorf("WARN line %v: want account default, key %s, Redis's %q and advice with %q", l, key, c.reply, c.advice)
			}
		})
	}
}

// wrongTypeReplies is how many WRONGTYPE replies Redis gave (INFO
// errorstats).
func wrongTypeReplies(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "errorstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`errorstat_WRONGTYPE:count=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// aclRefusals is how many commands Redis's ACL refused (ACL LOG, whose
// entries count their repeats).
func aclRefusals(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	entries, err := rdb.ACLLog(context.Background(), 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		n += int(e.Count)
	}
	return n
}
