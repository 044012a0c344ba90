package worker

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
)

// warmPool runs deliveries on long-lived goroutines. asynq starts a new
// goroutine for every delivery, and a delivery's calls (net/http, go-redis)
// go deep enough that such a goroutine grows its stack, copying it, several
// times per task: in a profile of a worker draining tasks that was 14 % of
// its CPU. A goroutine kept from one delivery to the next keeps the stack
// it grew.
//
// A delivery that finds no warm goroutine free (there is one per handler
// slot, so only while a delivery asynq gave up on still runs) or comes
// after stop runs on asynq's goroutine, as without the pool.
type warmPool struct {
	jobs chan warmJob
	quit chan struct{}
	log  *zap.Logger
}

type warmJob struct {
	ctx  context.Context
	task *asynq.Task
	h    asynq.Handler
	done chan error
}

// maxPanicStack caps the stack logged with a delivery's panic.
const maxPanicStack = 8 << 10

// newWarmPool starts n goroutines, which end at stop.
func newWarmPool(n int, log *zap.Logger) *warmPool {
	p := &warmPool{jobs: make(chan warmJob), quit: make(chan struct{}), log: log}
	for range n {
		go p.serve()
	}
	return p
}

func (p *warmPool) serve() {
	for {
		select {
		case j := <-p.jobs:
			j.done <- p.run(j)
		case <-p.quit:
			return
		}
	}
}

// run runs one delivery. A panic fails it as asynq fails a handler that
// panics, with "panic [file:line]: value" naming where it happened (asynq,
// recovering it on its own goroutine, would name this file), and is logged
// once, with its stack.
func (p *warmPool) run(j warmJob) (err error) {
	defer func() {
		x := recover()
		if x == nil {
			return
		}
		file, line := panicSite()
		value := deadletter.Clip(fmt.Sprint(x), maxReasonMessage)
		err = fmt.Errorf("panic [%s:%d]: %s", file, line, value)
		p.log.Error("delivery panicked", zap.String("task_id", taskID(j.ctx)), zap.String("task_type", deadletter.Clip(j.task.Type(), maxLabelLength)),
			zap.String("panic", value), zap.String("stack", deadletter.Clip(string(debug.Stack()), maxPanicStack)))
	}()
	return j.h.ProcessTask(j.ctx, j.task)
}

// panicSite is the file and line that panicked, called from a deferred
// function that recovered: the first frame outside the runtime after it.
func panicSite() (string, int) {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)]) // past Callers, panicSite and the deferred function
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			return f.File, f.Line
		}
		if !more {
			return "unknown", 0
		}
	}
}

// wrap returns h run on the pool's goroutines.
func (p *warmPool) wrap(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		j := warmJob{ctx: ctx, task: t, h: h, done: make(chan error, 1)}
		select {
		case p.jobs <- j:
			return <-j.done
		default:
			return h.ProcessTask(ctx, t)
		}
	})
}

// stop ends the goroutines, each after the delivery it runs, if any. It
// does not wait for them: a delivery asynq gave up on (its deadline, the
// shutdown timeout, a cancel) may still be finishing its call or writing
// its duplicate guard, until the worker's own waits for those end
// (deliveries, pendingWrites), and asynq does not wait for its own handler
// goroutines either.
func (p *warmPool) stop() { close(p.quit) }
