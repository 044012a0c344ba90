package worker

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"
)

type ctxKey struct{}

// onPool reports whether the calling goroutine is one of a warmPool's.
func onPool() bool {
	buf := make([]byte, 8<<10)
	return bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("(*warmPool).serve"))
}

// untilOnPool calls h until a call runs on the pool (until a goroutine
// first waits for work, calls run on the caller's), and returns that
// call's error.
func untilOnPool(ctx context.Context, t *testing.T, h asynq.Handler, task *asynq.Task, ran *bool) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		*ran = false
		if err := h.ProcessTask(ctx, task); *ran {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no delivery ran on the pool within 5s")
	return nil
}

func TestWarmPoolRunsDeliveries(t *testing.T) {
	before := goleak.IgnoreCurrent()
	p := newWarmPool(2, zap.NewNop())
	want := errors.New("answer")
	var ranOnPool bool
	h := p.wrap(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		ranOnPool = onPool()
		if ctx.Value(ctxKey{}) != "v" || task.Type() != "t" {
			return errors.New("the delivery lost its context or task")
		}
		return want
	}))
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	if err := untilOnPool(ctx, t, h, asynq.NewTask("t", nil), &ranOnPool); err != want {
		t.Fatalf("on the pool: err = %v, want %v", err, want)
	}
	p.stop()
	// After stop, deliveries still run, on the caller's goroutine.
	if err := h.ProcessTask(ctx, asynq.NewTask("t", nil)); err != want || ranOnPool {
		t.Fatalf("after stop: err = %v (on the pool: %v), want %v on the caller's goroutine", err, ranOnPool, want)
	}
	goleak.VerifyNone(t, before)
}

// With every warm goroutine busy (a delivery asynq gave up on), the next
// delivery runs at once on the caller's goroutine rather than waiting.
func TestWarmPoolBusyRunsInline(t *testing.T) {
	t.Parallel()
	p := newWarmPool(1, zap.NewNop())
	defer p.stop()
	release, started := make(chan struct{}), make(chan struct{})
	slow := warmJob{ctx: context.Background(), task: asynq.NewTask("slow", nil), done: make(chan error, 1),
		h: asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
			close(started)
			<-release
			return nil
		})}
	p.jobs <- slow // taken by the pool's one goroutine
	<-started
	done := make(chan error, 1)
	h := p.wrap(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	go func() { done <- h.ProcessTask(context.Background(), asynq.NewTask("fast", nil)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a delivery waited for the busy warm goroutine")
	}
	close(release)
	if err := <-slow.done; err != nil {
		t.Fatal(err)
	}
}

// A panic on the pool fails the delivery with the place it happened, as
// asynq's own recovery would name it, and is logged with its stack; the
// goroutine lives on.
func TestWarmPoolPanic(t *testing.T) {
	t.Parallel()
	core, logs := zapobserver.New(zap.ErrorLevel)
	p := newWarmPool(1, zap.New(core))
	defer p.stop()
	var ranOnPool bool
	h := p.wrap(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		ranOnPool = onPool()
		if !ranOnPool {
			return nil // on the caller's goroutine a panic would be asynq's to recover
		}
		return panickingDelivery(ctx, task)
	}))
	err := untilOnPool(context.Background(), t, h, asynq.NewTask("t", nil), &ranOnPool)
	if err == nil || !strings.HasPrefix(err.Error(), "panic [") || !strings.Contains(err.Error(), "warm_test.go:") ||
		!strings.HasSuffix(err.Error(), "]: broken invariant") {
		t.Fatalf("err = %v, want panic [.../warm_test.go:<line>]: broken invariant", err)
	}
	lines := logs.FilterMessage("delivery panicked").All()
	if len(lines) != 1 {
		t.Fatalf("%d 'delivery panicked' lines, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["panic"] != "broken invariant" || f["task_type"] != "t" || !strings.Contains(f["stack"].(string), "panickingDelivery") {
		t.Errorf("logged %v, want the panic, the task type and a stack through panickingDelivery", f)
	}
	// The goroutine survived the panic: it takes the next job.
	next := warmJob{ctx: context.Background(), task: asynq.NewTask("t", nil), done: make(chan error, 1),
		h: asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })}
	select {
	case p.jobs <- next:
	case <-time.After(5 * time.Second):
		t.Fatal("the pool's goroutine did not take a job after the panic")
	}
	if err := <-next.done; err != nil {
		t.Fatal(err)
	}
}

func panickingDelivery(context.Context, *asynq.Task) error { panic("broken invariant") }
