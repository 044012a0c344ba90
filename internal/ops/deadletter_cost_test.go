package ops_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/ops"
)

// fillStream appends n entries of other tasks, as the worker does.
func (b *bundle) fillStream(t *testing.T, n int) {
	t.Helper()
	certmailtest.AppendDeadLetters(t, b.rdb, fmt.Sprint("filler-", n), n, deadletter.DefaultMaxLen)
}

// A show, a requeue, a delete and a requeue of an unknown task id cost the
// same Redis commands in a stream of 100 entries and of 20 000: none reads
// the stream beyond the entries of its task.
func TestDeadLetterOperationsCostDoesNotGrowWithTheStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cost := func(fill int) (all, reads int64) {
		t.Helper()
		b.fillStream(t, fill)
		shown, requeued, deleted := b.archivedIn(t, "default", true), b.archivedIn(t, "default", true), b.archivedIn(t, "default", true)
		for _, id := range []string{shown, requeued, deleted} {
			e := deadletter.Entry{TaskID: id, Type: "set-emails-v2", Queue: "default", ErrorCode: "unknown_type", FailedAt: time.Now()}
			if _, err := deadletter.Append(ctx, b.rdb, e, deadletter.DefaultMaxLen); err != nil {
				t.Fatal(err)
			}
		}
		if n := b.rdb.XLen(ctx, deadletter.Stream).Val(); n < int64(fill) {
			t.Fatalf("stream of %d entries, want at least %d", n, fill)
		}
		b.redis.ResetStats()
		if dl, err := b.svc.DeadLetter(ctx, shown); err != nil || dl.TaskID != shown || !dl.Archived {
			t.Fatalf("DeadLetter = %+v, %v", dl, err)
		}
		if _, err := b.svc.Requeue(ctx, requeued); err != nil {
			t.Fatalf("Requeue: %v", err)
		}
		if d, err := b.svc.DeleteDeadLetter(ctx, deleted); err != nil || d.Task == nil || d.Entries != 1 {
			t.Fatalf("DeleteDeadLetter = %+v, %v", d, err)
		}
		if _, err := b.svc.Requeue(ctx, "no-such-task"); !errors.Is(err, ops.ErrNotFound) {
			t.Fatalf("Requeue of an unknown task: %v, want not found", err)
		}
		for name, n := range b.redis.Commands() {
			switch name {
			case "config|resetstat", "info", "hello": // a new connection says hello
				continue
			case "xrange", "xrevrange":
				reads += n
			}
			all += n
		}
		return all, reads
	}
	cost(0) // asynq loads its scripts, the clients open their connections
	smallAll, smallReads := cost(100)
	bigAll, bigReads := cost(20000)
	if bigAll != smallAll || bigReads != smallReads {
		t.Errorf("in 20 000 entries: %d commands, %d stream reads; in 100: %d, %d; want the same", bigAll, bigReads, smallAll, smallReads)
	}
	t.Logf("show, requeue, delete and an unknown requeue: %d commands, %d stream reads", bigAll, bigReads)
}
