package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/taskresult"
)

// notesOf returns how many schedule ids each map of s.notes holds.
func notesOf(s *Scheduler) string {
	return fmt.Sprintf("skippedTo %d, outstandingAt %d, pending %d",
		len(s.notes.skippedTo), len(s.notes.outstandingAt), len(s.notes.pending))
}

// TestNotesPrunedOnDelete: the leader's notes of skipped ticks and of
// outstanding or pending tasks are dropped with the schedules deleted
// through the API, so that they follow the schedules that exist however
// many come and go while one replica leads.
func TestNotesPrunedOnDelete(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	st := e.store()
	no := false
	const n = 20
	for i := range n {
		if _, err := st.Add(ctx, schedule.Schedule{ID: fmt.Sprintf("v%d", i), Cron: "@every 1s", Type: "resend-dcv",
			Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Add(ctx, schedule.Schedule{ID: "sk", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no}); err != nil {
		t.Fatal(err)
	}
	last := time.Now().Unix() - 100 // ticks skipped since
	if err := e.redis.Client().HSet(ctx, stateKey("sk"), "since", last-10, "last_tick", last, "runs", 1).Err(); err != nil {
		t.Fatal(err)
	}
	s, _ := e.leader(t, Config{Lease: time.Minute, CatchUp: 10 * time.Second})
	s.renewedAt = time.Now()
	waitFor(t, 10*time.Second, "every task awaited", func() bool {
		s.round(ctx)
		return len(s.awaiting) == n
	})
	for _, a := range s.awaiting { // a look at each task, without waiting
		a.next = time.Time{}
	}
	clear(s.due)
	s.round(ctx)
	if len(s.notes.skippedTo) != 1 || len(s.notes.outstandingAt) != n || len(s.notes.pending) != n {
		t.Fatalf("before the deletes: %s; want 1, %d, %d", notesOf(s), n, n)
	}
	for i := range n {
		if err := st.Delete(ctx, fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Delete(ctx, "sk"); err != nil {
		t.Fatal(err)
	}
	s.refreshedAt = time.Time{}
	s.round(ctx)
	if got := notesOf(s); got != notesOf(&Scheduler{}) {
		t.Errorf("after the deletes: %s; want none", got)
	}
}

// TestNotesDroppedWhenEnded: a schedule that ends (here at its max_runs,
// with ticks skipped before) leaves no notes behind.
func TestNotesDroppedWhenEnded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	no := false
	if _, err := e.store().Add(ctx, schedule.Schedule{ID: "mr", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1}`), UntilValidated: &no, MaxRuns: 12}); err != nil {
		t.Fatal(err)
	}
	last := time.Now().Unix() - 100
	if err := e.redis.Client().HSet(ctx, stateKey("mr"), "since", last-10, "last_tick", last, "runs", 10).Err(); err != nil {
		t.Fatal(err)
	}
	s, logs := e.leader(t, Config{Lease: time.Minute, CatchUp: 10 * time.Second})
	s.renewedAt = time.Now()
	waitFor(t, 10*time.Second, "mr ends", func() bool {
		s.refreshedAt = time.Time{}
		s.round(ctx)
		state, err := e.store().State(ctx, "mr")
		return err == nil && state.Ended
	})
	if logs.FilterMessageSnippet("ticks skipped").Len() != 1 {
		t.Fatal("no skipped ticks reported: nothing was noted")
	}
	if got := notesOf(s); got != notesOf(&Scheduler{}) {
		t.Errorf("after mr ended: %s; want none", got)
	}
}

// TestNotesDroppedWhenValidated: an until_validated schedule that ends
// because its last tick's task found the order validated leaves no notes
// behind, though the leader noted that task while it was outstanding.
func TestNotesDroppedWhenValidated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.fakeWorker(func(int, *asynq.Task) (*taskresult.Result, error) {
		return &taskresult.Result{Outcome: taskresult.NotPending, OrderStatus: "issued"}, nil
	}, time.Second) // outstanding for a second: the leader notes it meanwhile
	if _, err := e.store().Add(ctx, schedule.Schedule{ID: "uv", Cron: "@every 1s", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
		t.Fatal(err)
	}
	s, _ := e.leader(t, Config{Lease: time.Minute})
	noted := false
	waitFor(t, 20*time.Second, "uv ends", func() bool {
		s.renewedAt = time.Now()
		s.round(ctx)
		if _, ok := s.notes.outstandingAt["uv"]; ok {
			noted = true
		}
		state, err := e.store().State(ctx, "uv")
		return err == nil && state.Ended && state.EndedReason == schedule.EndedValidated
	})
	if !noted {
		t.Fatal("the leader never noted the outstanding task: nothing to drop")
	}
	if got := notesOf(s); got != notesOf(&Scheduler{}) {
		t.Errorf("after uv ended: %s; want none", got)
	}
}
