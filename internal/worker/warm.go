package worker

import (
	"context"
	"fmt"
	"runtime/debug"

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
	done chan warmResult
}

type warmResult struct {
	err      error
	panicked bool
	panicVal any
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

// run runs one delivery. A panic is logged here, with the stack where it
// happened, and carried back to asynq's goroutine, where asynq recovers it
// as it recovers any handler's panic.
func (p *warmPool) run(j warmJob) (res warmResult) {
	defer func() {
		if x := recover(); x != nil {
			id, _ := asynq.GetTaskID(j.ctx)
			p.log.Error("delivery panicked", zap.String("task_id", id),
				zap.String("panic", deadletter.Clip(fmt.Sprint(x), maxReasonMessage)),
				zap.String("stack", deadletter.Clip(string(debug.Stack()), maxPanicStack)))
			res = warmResult{panicked: true, panicVal: x}
		}
	}()
	return warmResult{err: j.h.ProcessTask(j.ctx, j.task)}
}

// wrap returns h run on the pool's goroutines.
func (p *warmPool) wrap(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		j := warmJob{ctx: ctx, task: t, h: h, done: make(chan warmResult, 1)}
		select {
		case p.jobs <- j:
		default:
			return h.ProcessTask(ctx, t)
		}
		res := <-j.done
		if res.panicked {
			panic(res.panicVal)
		}
		return res.err
	})
}

// stop ends the goroutines, each after the delivery it runs, if any.
func (p *warmPool) stop() { close(p.quit) }
