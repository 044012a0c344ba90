package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"
)

type ctxKey struct{}

func TestWarmPoolRunsDeliveries(t *testing.T) {
	before := goleak.IgnoreCurrent()
	p := newWarmPool(2, zap.NewNop())
	want := errors.New("answer")
	h := p.wrap(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if ctx.Value(ctxKey{}) != "v" || task.Type() != "t" {
			return errors.New("the delivery lost its context or task")
		}
		return want
	}))
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	for range 5 {
		if err := h.ProcessTask(ctx, asynq.NewTask("t", nil)); err != want {
			t.Fatalf("err = %v, want %v", err, want)
		}
	}
	p.stop()
	// After stop, deliveries still run, on the caller's goroutine.
	if err := h.ProcessTask(ctx, asynq.NewTask("t", nil)); err != want {
		t.Fatalf("after stop: err = %v, want %v", err, want)
	}
	goleak.VerifyNone(t, before)
}

// With every warm goroutine busy (a delivery asynq gave up on), the next
// delivery runs at once on the caller's goroutine rather than waiting.
func TestWarmPoolBusyRunsInline(t *testing.T) {
	p := newWarmPool(1, zap.NewNop())
	defer p.stop()
	release, started := make(chan struct{}), make(chan struct{})
	slow := warmJob{ctx: context.Background(), task: asynq.NewTask("slow", nil), done: make(chan warmResult, 1),
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
	if res := <-slow.done; res.err != nil {
		t.Fatal(res.err)
	}
}

// A panic reaches the caller (asynq, which recovers it) with its value, and
// the log has the stack where it happened, which asynq's would not.
func TestWarmPoolPanic(t *testing.T) {
	core, logs := zapobserver.New(zap.ErrorLevel)
	p := newWarmPool(1, zap.New(core))
	defer p.stop()
	h := p.wrap(asynq.HandlerFunc(panickingDelivery))
	// Until the goroutine first waits for work, deliveries run on the
	// caller's: try until one ran on it.
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessage("delivery panicked").Len() == 0 && time.Now().Before(deadline) {
		var got any
		func() {
			defer func() { got = recover() }()
			_ = h.ProcessTask(context.Background(), asynq.NewTask("t", nil))
		}()
		if got != "broken invariant" {
			t.Fatalf("recovered %v, want the delivery's panic value", got)
		}
	}
	lines := logs.FilterMessage("delivery panicked").All()
	if len(lines) != 1 {
		t.Fatalf("%d 'delivery panicked' lines, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["panic"] != "broken invariant" || !strings.Contains(f["stack"].(string), "panickingDelivery") {
		t.Errorf("logged %v, want the panic and a stack through panickingDelivery", f)
	}
	// The goroutine survived the panic and serves the next delivery.
	ok := p.wrap(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	if err := ok.ProcessTask(context.Background(), asynq.NewTask("t", nil)); err != nil {
		t.Fatal(err)
	}
}

func panickingDelivery(context.Context, *asynq.Task) error { panic("broken invariant") }
