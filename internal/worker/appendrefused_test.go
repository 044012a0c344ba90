package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// A dead letter Redis refuses to append (on a Redis shared with other
// programs: another type under one of the stream's keys, or an ACL that
// denies it) is logged with the key it failed on, which Redis's reply does
// not name, and what to do; the task stays archived.
func TestRefusedDeadLetterNamesTheKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, key, reply, advice string
		refuse                   func(ctx context.Context, rdb *redis.Client) error
	}{
		{"stream of another type", "certmail:deadletter", "WRONGTYPE", "another type",
			func(ctx context.Context, rdb *redis.Client) error {
				return rdb.Set(ctx, "certmail:deadletter", "another program's", 0).Err()
			}},
		{"index of another type", "certmail:deadletter:index", "WRONGTYPE", "another type",
			func(ctx context.Context, rdb *redis.Client) error {
				return rdb.Set(ctx, "certmail:deadletter:index", "another program's", 0).Err()
			}},
		{"ACL", "certmail:deadletter", "", "An ACL user for certmail",
			func(ctx context.Context, rdb *redis.Client) error {
				return rdb.Do(ctx, "ACL", "SETUSER", "default", "-xadd").Err()
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{startWorkers: -1})
			if err := c.refuse(context.Background(), b.redis.Client()); err != nil {
				t.Fatal(err)
			}
			b.startWorker(t, setupOpts{})
			id := b.enqueue(t, "resend-dcv", `{"order_id": 1, "colour": "blue"}`) // invalid: dead-lettered at once
			b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
			const msg = "could not append to the dead-letter stream"
			waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("warn", msg)) == 1 },
				func() string { return fmt.Sprintf("%d WARN lines %q", len(b.logs.Lines("warn", msg)), msg) })
			l := b.logs.Lines("warn", msg)[0]
			errText := fmt.Sprint(l["error"])
			if l["task_id"] != id || l["key"] != c.key || !strings.Contains(errText, c.reply) ||
				!strings.Contains(fmt.Sprint(l["advice"]), c.advice) {
				t.Errorf("WARN line %v: want task %s, key %s, Redis's %q and advice with %q", l, id, c.key, c.reply, c.advice)
			}
			if len(errText) > 200 {
				t.Errorf("error field of %d bytes, want 200 at most", len(errText))
			}
		})
	}
}
