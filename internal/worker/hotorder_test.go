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
// older than the one applied is superseded. So do sequences of different
// lengths (a producer's own counter going from 99 to 101): they compare as
// numbers, not as strings, in which "100" would sort before "99".
func TestCloseSequencesKeepTheNewestList(t *testing.T) {
	t.Parallel()
	base := time.Now().UnixNano()
	for _, tc := range []struct {
		name string
		seqs [3]int64 // the first, the newest, then an older one
	}{
		{"a few ns apart", [3]int64{base, base + 2, base + 1}},
		{"across a digit count", [3]int64{99, 101, 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{})
			b.fake.AddOrder(5)
			for i, step := range []struct {
				email   string
				outcome string
			}{
				{"first@example.com", taskresult.Delivered},
				{"newest@example.com", taskresult.Delivered},
				{"older@example.com", taskresult.Superseded},
			} {
				seq := tc.seqs[i]
				id := b.enqueue(t, "set-emails", fmt.Sprintf(`{"order_id": 5, "additional_emails": [%q], "sequence": %d}`, step.email, seq))
				if got := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)).Outcome; got != step.outcome {
					t.Errorf("sequence %d: outcome %q, want %q", seq, got, step.outcome)
				}
			}
			if emails, _ := b.fake.AdditionalEmails(5); len(emails) != 1 || emails[0] != "newest@example.com" {
				t.Errorf("order 5 ends with %v, want [newest@example.com]", emails)
			}
		})
	}
}
