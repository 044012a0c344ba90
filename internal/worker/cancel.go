package worker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// A delivery's asynq context is cancelled by asynq's cancel (the
// dashboard's Cancel, Inspector.CancelProcessing, or any asynq application
// publishing on the instance's asynq:cancel channel) and by the end of its
// lease. asynq then hands the task back at once (a failure, retried) and
// no longer waits for the handler. A DigiCert call cut then may already
// have acted: its retry would email again, and a set-emails' lock would go
// while DigiCert may still apply the older list. So a delivery runs on its
// detached context instead (detach): asynq's values and deadline, not its
// cancellation. A cancel is treated as the worker's stop is: no new
// DigiCert call starts (holdBack), a wait for a rate-limit slot for a
// call's first request ends (stopLimiter), and a call in flight finishes
// and has its outcome recorded as usual (duplicate guard, applied
// sequence, order lock), so that the retry finds it duplicate or
// superseded. The deadline still ends everything.

// asynqCtxKey carries, on a delivery's detached context, the context
// asynq gave the delivery.
type asynqCtxKey struct{}

// detach returns the context a delivery runs on: ctx's values and deadline
// without ctx's cancellation, carrying ctx (asynqContext), and ended when
// abandoned is (nil: never), which a stopping worker ends at its shutdown
// timeout as asynq once ended the calls it gave up on. The returned cancel
// releases it.
func detach(ctx, abandoned context.Context) (context.Context, context.CancelFunc) {
	run := context.WithValue(context.WithoutCancel(ctx), asynqCtxKey{}, ctx)
	var cancel context.CancelFunc
	if deadline, ok := ctx.Deadline(); ok {
		run, cancel = context.WithDeadline(run, deadline)
	} else {
		run, cancel = context.WithCancel(run)
	}
	if abandoned == nil {
		return run, cancel
	}
	stop := context.AfterFunc(abandoned, cancel)
	return run, func() {
		stop()
		cancel()
	}
}

// asynqContext is the context asynq gave the delivery ctx runs for, nil
// when ctx is no detached delivery's (a processor called directly).
func asynqContext(ctx context.Context) context.Context {
	a, _ := ctx.Value(asynqCtxKey{}).(context.Context)
	return a
}

// cancelled reports whether asynq cancelled the delivery ctx runs for (a
// cancel or the end of its lease; not its deadline).
func cancelled(ctx context.Context) bool {
	a := asynqContext(ctx)
	return a != nil && errors.Is(a.Err(), context.Canceled)
}

// afterCancel calls f once asynq cancels the delivery ctx runs for (not at
// its deadline); the returned stop ends the watch.
func afterCancel(ctx context.Context, f func()) (stop func() bool) {
	a := asynqContext(ctx)
	if a == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(a, func() {
		if errors.Is(a.Err(), context.Canceled) {
			f()
		}
	})
}

// codeCanceled is the code of a delivery asynq cancelled.
const codeCanceled = "canceled"

// errCanceled is the reason of a delivery asynq cancelled, as asynq
// reports it (context.Canceled) to the error handler and as the handler
// returns it when it held a call back.
var errCanceled = errors.New("the delivery was cancelled through asynq (an operator's or another asynq application's cancel): no new DigiCert call was started, and a call in flight was left to finish; " +
	"if it succeeded, the task's retry or a requeue finds it duplicate and sends nothing")

// errNotSentCanceled is the reason of a cancelled delivery whose call had
// begun to wait for a rate-limit slot for its first request.
var errNotSentCanceled = errors.New("not sent to DigiCert: the delivery was cancelled by asynq while its call waited for a rate-limit slot")

// canceledError is the taskError of a delivery asynq cancelled: a failure,
// retried on the usual schedule (whose first delay outlasts a call in
// flight: see README "Retries"), dead-lettered on the last delivery.
func canceledError() *taskError {
	return &taskError{code: codeCanceled, class: classTransient, failure: true, err: errCanceled}
}

// deliveries keeps the deliveries a worker runs, those asynq no longer
// waits for too (cancelled, with a call in flight), so that a stopping
// worker gives them its shutdown timeout and names those left. The zero
// value is ready.
type deliveries struct {
	mu   sync.Mutex
	next uint64
	ids  map[uint64]string
	idle chan struct{} // closed when the last one ends
}

// begin registers the delivery of task id; end unregisters it.
func (r *deliveries) begin(id string) (end func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[uint64]string{}
	}
	if len(r.ids) == 0 {
		r.idle = make(chan struct{})
	}
	r.next++
	key := r.next
	r.ids[key] = id
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.ids, key)
		if len(r.ids) == 0 {
			close(r.idle)
		}
	}
}

// wait waits until no delivery runs or deadline passes, and reports
// whether none runs.
func (r *deliveries) wait(deadline time.Time) bool {
	r.mu.Lock()
	idle, busy := r.idle, len(r.ids) > 0
	r.mu.Unlock()
	if !busy {
		return true
	}
	return closedBy(idle, deadline)
}

// running returns the ids of the tasks whose deliveries run now, sorted.
func (r *deliveries) running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.ids))
	for _, id := range r.ids {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
