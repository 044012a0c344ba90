package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// fakeWorker stands in for certmail's worker: it serves the bulk queue and
// completes each task with the result answer returns for it (nil: a
// transient failure retried after an hour; errSkip: dead-lettered).
type fakeWorker struct {
	srv *asynq.Server

	mu      sync.Mutex
	handled []string // task ids, in the order their handling began
	active  atomic.Int32
	overlap atomic.Bool // two tasks were handled at once
}

var errSkip = fmt.Errorf("dead-letter it: %w", asynq.SkipRetry)

func (e *env) fakeWorker(answer func(n int, t *asynq.Task) (*taskresult.Result, error), hold time.Duration) *fakeWorker {
	e.t.Helper()
	w := &fakeWorker{}
	w.srv = asynq.NewServer(e.redis.ConnOpt(), asynq.Config{
		Queues: map[string]int{"bulk": 1}, Concurrency: 4, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 50 * time.Millisecond, DelayedTaskCheckInterval: 100 * time.Millisecond,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
	})
	handler := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if w.active.Add(1) > 1 {
			w.overlap.Store(true)
		}
		defer w.active.Add(-1)
		id, _ := asynq.GetTaskID(ctx)
		w.mu.Lock()
		w.handled = append(w.handled, id)
		n := len(w.handled)
		w.mu.Unlock()
		time.Sleep(hold) // a slow delivery: ticks come meanwhile
		res, err := answer(n, t)
		if err != nil {
			return err
		}
		if res == nil {
			return errors.New("transient failure")
		}
		b, _ := res.Encode()
		_, werr := t.ResultWriter().Write(b)
		return werr
	})
	if err := w.srv.Start(handler); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.srv.Shutdown)
	return w
}

func (w *fakeWorker) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.handled)
}

// ids returns the ids of the tasks handled so far.
func (w *fakeWorker) ids() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.handled...)
}

// allTicks lists the schedule's task ids in any state.
func (e *env) allTicks(id string) []string {
	e.t.Helper()
	keys, err := e.redis.Client().Keys(context.Background(), "asynq:{bulk}:t:sched:"+id+":*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

// TestUntilValidatedEndsTheSchedule: ticks carry only_if_pending, one task
// at a time (a slow one makes the schedule skip ticks rather than pile them
// up), and the first not_pending outcome ends the schedule for good, with
// its reason, the order status and one log line.
func TestUntilValidatedEndsTheSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var payloads sync.Map
	w := e.fakeWorker(func(n int, task *asynq.Task) (*taskresult.Result, error) {
		payloads.Store(n, string(task.Payload()))
		if n < 3 {
			return &taskresult.Result{Outcome: taskresult.Delivered, OrderStatus: "pending"}, nil
		}
		return &taskresult.Result{Outcome: taskresult.NotPending, OrderStatus: "issued"}, nil
	}, 1500*time.Millisecond)
	file := e.writeFile(`schedules:
  - id: remind
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1002, locale: en}
`)
	logs, _ := e.start(Config{File: file})
	st := e.store()
	waitFor(t, 30*time.Second, "the schedule ends", func() bool {
		s, err := st.Get(context.Background(), "remind")
		return err == nil && s.Ended
	})
	s, _ := st.Get(context.Background(), "remind")
	if s.State != schedule.StateEnded || s.EndedReason != schedule.EndedValidated || s.OrderStatus != "issued" || s.EndedAt == nil || s.NextRun != nil || s.Runs != 3 {
		t.Errorf("status %+v", s)
	}
	if w.overlap.Load() {
		t.Error("two ticks' tasks were handled at once")
	}
	for n := 1; n <= 3; n++ {
		p, _ := payloads.Load(n)
		if p != `{"order_id":1002,"locale":"en","only_if_pending":true}` {
			t.Errorf("task %d payload %v, want only_if_pending", n, p)
		}
	}
	// Ticks came every second for over 4.5 s; three tasks ran.
	time.Sleep(2500 * time.Millisecond) // two more tick times: nothing may fire
	if n, ticks := w.count(), len(e.allTicks("remind")); n != 3 || ticks != 3 {
		t.Errorf("%d tasks handled, %d ticks enqueued; want 3 and 3", n, ticks)
	}
	ended := logs.FilterMessage("schedule ended: the order no longer waits for validation by email").All()
	if len(ended) != 1 || ended[0].ContextMap()["order_status"] != "issued" || ended[0].ContextMap()["reason"] != schedule.EndedValidated {
		t.Errorf("end log lines %v, want one with the order status", ended)
	}
}

// TestUntilValidatedAcrossRestart: the outcome arrives while no scheduler
// runs; the next leader ends the schedule without firing another tick.
func TestUntilValidatedAcrossRestart(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile(`schedules:
  - id: restart
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 7}
`)
	_, stop := e.start(Config{File: file})
	waitFor(t, 15*time.Second, "one tick", func() bool { return len(e.allTicks("restart")) == 1 })
	stop()
	w := e.fakeWorker(func(int, *asynq.Task) (*taskresult.Result, error) {
		return &taskresult.Result{Outcome: taskresult.NotPending, OrderStatus: "canceled"}, nil
	}, 0)
	waitFor(t, 15*time.Second, "the task is handled", func() bool { return w.count() == 1 })
	time.Sleep(1500 * time.Millisecond) // tick times pass while no scheduler runs
	e.start(Config{File: file})
	st := e.store()
	waitFor(t, 15*time.Second, "the schedule ends", func() bool {
		s, err := st.Get(context.Background(), "restart")
		return err == nil && s.Ended && s.OrderStatus == "canceled"
	})
	time.Sleep(1500 * time.Millisecond)
	if n := len(e.allTicks("restart")); n != 1 {
		t.Errorf("%d ticks enqueued, want the one before the restart", n)
	}
}

// TestUntilValidatedWaitsForAnOutstandingTask: a leader that took over
// after a crash between enqueueing a tick and recording it (the intent
// names the task) fires nothing while that task waits for a retry.
func TestUntilValidatedWaitsForAnOutstandingTask(t *testing.T) {
	t.Parallel()
	e := setup(t)
	w := e.fakeWorker(func(int, *asynq.Task) (*taskresult.Result, error) { return nil, nil }, 0) // fails, retried in an hour
	task, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 9, OnlyIfPending: true},
		asynq.TaskID("sched:waits:100"), asynq.Queue("bulk"), asynq.MaxRetry(5))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(e.redis.Client()).Enqueue(task); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the task fails once", func() bool { return w.count() == 1 })
	// The crashed leader had named the task but not recorded its tick.
	if err := e.redis.Client().HSet(context.Background(), stateKey("waits"), "since", time.Now().Add(-time.Minute).Unix(),
		"last_task_id", "sched:waits:100").Err(); err != nil {
		t.Fatal(err)
	}
	file := e.writeFile(`schedules:
  - id: waits
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 9}
`)
	e.start(Config{File: file})
	time.Sleep(3 * time.Second) // three tick times
	if ticks := e.allTicks("waits"); len(ticks) != 1 {
		t.Errorf("ticks %v, want only the outstanding one", ticks)
	}
}

// TestUntilValidatedGoesOnAfterOtherEndings: a tick whose task is gone (its
// enqueue never happened, or its result expired), a dead-lettered tick, and
// one whose task completed with an outcome other than not_pending
// (duplicate, as a redelivery after DigiCert's 2xx answers, or none) let the
// next tick fire; none ends the schedule.
func TestUntilValidatedGoesOnAfterOtherEndings(t *testing.T) {
	t.Parallel()
	e := setup(t)
	w := e.fakeWorker(func(n int, _ *asynq.Task) (*taskresult.Result, error) {
		switch n {
		case 1:
			return nil, errSkip
		case 2:
			return &taskresult.Result{Outcome: taskresult.Duplicate}, nil
		case 3:
			return &taskresult.Result{}, nil
		}
		return &taskresult.Result{Outcome: taskresult.Delivered}, nil
	}, 0)
	// A crashed leader named a task it never enqueued.
	if err := e.redis.Client().HSet(context.Background(), stateKey("goes-on"), "since", time.Now().Unix(),
		"last_task_id", "sched:goes-on:1").Err(); err != nil {
		t.Fatal(err)
	}
	file := e.writeFile(`schedules:
  - id: goes-on
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 11}
`)
	logs, stop := e.start(Config{File: file})
	// The first task is dead-lettered, the second completes as a
	// duplicate, the third with no outcome; the next tick fires all the same.
	waitFor(t, 20*time.Second, "four tasks handled", func() bool { return w.count() >= 4 })
	stop()
	// An archived tick's task may also be one an operator archived, which
	// has no dead letter: the line says both.
	if n := logs.FilterMessage("the last tick's task was dead-lettered or archived by an operator; the next tick tries again").Len(); n == 0 {
		t.Errorf("no line for the archived tick's task that names both ways it got there")
	}
	if s, _ := e.store().Get(context.Background(), "goes-on"); s.Ended {
		t.Fatalf("status %+v: ended after a dead-lettered, a duplicate and an empty outcome", s)
	}
	insp := asynq.NewInspectorFromRedisClient(e.redis.Client())
	ids := w.ids()
	if info, err := insp.GetTaskInfo("bulk", ids[0]); err != nil || info.State != asynq.TaskStateArchived {
		t.Fatalf("first task %v, %v; want it dead-lettered", info, err)
	}
	// The last tick's task completes and its result expires (deleted here)
	// while no scheduler runs.
	last, err := e.redis.Client().HGet(context.Background(), stateKey("goes-on"), "last_task_id").Result()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the last task completes", func() bool {
		info, err := insp.GetTaskInfo("bulk", last)
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	if err := insp.DeleteTask("bulk", last); err != nil {
		t.Fatal(err)
	}
	n := w.count()
	e.start(Config{File: file})
	waitFor(t, 20*time.Second, "another task", func() bool { return w.count() > n })
	if s, _ := e.store().Get(context.Background(), "goes-on"); s.Ended {
		t.Errorf("status %+v: ended", s)
	}
}

// TestUntilValidatedFalse: ticks carry the payload as written and fire
// every time, outstanding tasks or not.
func TestUntilValidatedFalse(t *testing.T) {
	t.Parallel()
	e := setup(t)
	file := e.writeFile(`schedules:
  - id: always
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 5}
    until_validated: false
`)
	e.start(Config{File: file})
	waitFor(t, 15*time.Second, "3 pending ticks", func() bool { return len(e.ticks("bulk")["always"]) >= 3 })
	insp := asynq.NewInspectorFromRedisClient(e.redis.Client())
	list, err := insp.ListPendingTasks("bulk")
	if err != nil || len(list) == 0 {
		t.Fatal(list, err)
	}
	for _, ti := range list {
		if string(ti.Payload) != `{"order_id":5}` {
			t.Errorf("payload %s, want the schedule's as written", ti.Payload)
		}
	}
}

// TestOutstandingTaskLooksBackOff: while the last tick's task of an
// until_validated schedule is outstanding, the leader looks at it after
// 0.5 s, then twice as long each time, up to every 30 s, and fires nothing
// meanwhile.
func TestOutstandingTaskLooksBackOff(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	cfg, _ := e.deps(Config{})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: waits, cron: "@every 1s", type: resend-dcv, payload: {order_id: 1}}
  - {id: fired, cron: "@every 1s", type: resend-dcv, payload: {order_id: 2}}
`), testRules)
	if err != nil || len(good) != 2 || len(bad) != 0 {
		t.Fatal(good, bad, err)
	}
	c := good[0]
	const taskID = "sched:waits:100"
	if _, _, err := cfg.Ops.Enqueue(ctx, enqueue.Request{Type: c.Type, Payload: c.Payload, Queue: c.Queue, TaskID: taskID}); err != nil {
		t.Fatal(err)
	}
	state := schedule.State{Since: time.Unix(50, 0), LastTick: time.Unix(100, 0), LastTaskID: taskID}
	now := time.Now()
	var pauses []time.Duration
	for range 9 {
		if out := s.settle(ctx, c, state, now); out != retry {
			t.Fatalf("settle with the task pending = %v, want retry", out)
		}
		next := s.due[c]
		pauses = append(pauses, next.Sub(now))
		// Before the next look is due, nothing is read and nothing fires.
		if out := s.settle(ctx, c, state, next.Add(-time.Millisecond)); out != retry || !s.due[c].Equal(next) {
			t.Fatalf("settle before the next look = %v, due %v; want retry, due %v", out, s.due[c], next)
		}
		now = next
	}
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	want := []time.Duration{sec(0.5), sec(1), sec(2), sec(4), sec(8), sec(16), sec(30), sec(30), sec(30)}
	if !slices.Equal(pauses, want) {
		t.Errorf("pauses between looks %v, want %v", pauses, want)
	}

	// A tick this leader fires: its task is looked at 0.5 s later, then
	// after 1 s more.
	takeLead(t, s)
	if err := s.store.MirrorFile(ctx, s.lease, good); err != nil { // as a round does before firing them
		t.Fatal(err)
	}
	fired := good[1]
	if err := e.redis.Client().HSet(ctx, stateKey(fired.ID), "since", time.Now().Unix()-2).Err(); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if !s.fire(ctx, fired) {
		t.Fatal("the leadership was lost")
	}
	after := time.Now()
	st, err := s.store.State(ctx, fired.ID)
	if err != nil || st.LastTaskID == "" {
		t.Fatalf("state after firing %+v, %v; want its tick's task", st, err)
	}
	first := s.due[fired]
	if first.Before(before.Add(firstLook)) || first.After(after.Add(firstLook)) {
		t.Errorf("first look at the fired tick's task %v after firing, want %v", first.Sub(before), firstLook)
	}
	if out := s.settle(ctx, fired, st, first); out != retry || s.due[fired].Sub(first) != 2*firstLook {
		t.Errorf("settle at the first look = %v, next look %v later; want retry, %v later", out, s.due[fired].Sub(first), 2*firstLook)
	}
}
