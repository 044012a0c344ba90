package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

// Many set-emails of one order whose lock is held must not occupy the worker
// slots: they are handed back at once (costing no retry) while other tasks
// run, and once the order is free the newest list is the one applied.
func TestHotOrderDoesNotStarveThePool(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *worker.Config) { c.Concurrency = 2 }})
	b.fake.AddOrder(7, 11, 12, 13, 14, 15, 16, 17, 18)
	// Another delivery of order 7 holds the lock (the key as README
	// "Redis keys" names it) for the whole first half of the test.
	rdb := b.redis.Client()
	lockKey := "certmail:order:default:7:lock"
	if err := rdb.Set(context.Background(), lockKey, "held-by-the-test", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	base := time.Now().UnixNano()
	var hot []string
	for i := range 20 {
		hot = append(hot, b.enqueue(t, "set-emails",
			fmt.Sprintf(`{"order_id": 7, "additional_emails": ["user%d@example.com"], "sequence": %d}`, i, base+int64(i)), asynq.MaxRetry(1)))
	}
	var others []string
	for id := int64(11); id <= 18; id++ {
		others = append(others, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, id)))
	}
	// The lock is still held: waiting for it in place (as the worker did,
	// up to 5 s a delivery) would keep both slots busy for the 20 hot tasks,
	// 50 s, well beyond this.
	for _, id := range others {
		b.waitState(t, id, asynq.TaskStateCompleted, 20*time.Second)
	}
	if emails, _ := b.fake.AdditionalEmails(7); len(emails) != 0 {
		t.Fatalf("order 7 changed while its lock was held: %v", emails)
	}
	if err := rdb.Del(context.Background(), lockKey).Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range hot {
		info := b.waitState(t, id, asynq.TaskStateCompleted, 30*time.Second)
		if info.Retried != 0 {
			t.Errorf("task %s retried %d times for a busy order, want 0", id, info.Retried)
		}
	}
	if emails, _ := b.fake.AdditionalEmails(7); len(emails) != 1 || emails[0] != "user19@example.com" {
		t.Errorf("order 7 ends with %v, want the newest list [user19@example.com]", emails)
	}
}

// Sequences a few nanoseconds apart (as one process stamps them in a burst)
// keep their order: the applied sequence is recorded exactly, so a list
// older than the one applied is superseded.
func TestCloseSequencesKeepTheNewestList(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(5)
	base := time.Now().UnixNano()
	for _, step := range []struct {
		seq     int64
		email   string
		outcome string
	}{
		{base, "first@example.com", taskresult.Delivered},
		{base + 2, "newest@example.com", taskresult.Delivered},
		{base + 1, "older@example.com", taskresult.Superseded},
	} {
		id := b.enqueue(t, "set-emails", fmt.Sprintf(`{"order_id": 5, "additional_emails": [%q], "sequence": %d}`, step.email, step.seq))
		if got := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)).Outcome; got != step.outcome {
			t.Errorf("sequence base+%d: outcome %q, want %q", step.seq-base, got, step.outcome)
		}
	}
	if emails, _ := b.fake.AdditionalEmails(5); len(emails) != 1 || emails[0] != "newest@example.com" {
		t.Errorf("order 5 ends with %v, want [newest@example.com]", emails)
	}
}
