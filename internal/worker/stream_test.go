package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/worker"
)

// The dead-letter stream keeps about CERTMAIL_DEADLETTER_MAXLEN entries,
// the newest. XADD's approximate trimming drops whole nodes of the stream,
// so the Redis server here keeps two entries per node, which makes
// "about" a node at most.
func TestDeadLetterStreamIsCapped(t *testing.T) {
	t.Parallel()
	const maxLen, n = 5, 30
	b := setup(t, setupOpts{
		redis: redistest.Options{Args: []string{"--stream-node-max-entries", "2"}},
		// One delivery at a time: the log's order is the stream's.
		configure: func(c *worker.Config) { c.DeadLetterMaxLen, c.Concurrency = maxLen, 1 },
	})
	var ids []string
	for k := range n {
		ids = append(ids, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d, "colour": "blue"}`, k+1))) // invalid: dead-lettered at once
	}
	for _, id := range ids {
		b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	}
	waitFor(t, 5*time.Second, func() bool { return len(b.logs.Lines("error", "task dead-lettered")) == n },
		func() string { return "not every task was dead-lettered" })
	msgs, err := b.redis.Client().XRange(context.Background(), deadletter.Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < maxLen || len(msgs) > maxLen+2 {
		t.Fatalf("the stream holds %d entries after %d dead letters, want %d to %d", len(msgs), n, maxLen, maxLen+2)
	}
	// The newest are kept: the last task dead-lettered is the last entry.
	last := b.logs.Lines("error", "task dead-lettered")[n-1]["task_id"]
	if got := msgs[len(msgs)-1].Values["task_id"]; got != last {
		t.Errorf("last entry is task %v, want the last dead-lettered, %v", got, last)
	}
}
