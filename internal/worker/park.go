package worker

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
)

// claimLease is how long a claimed parked task is left to the worker that
// claimed it.
const claimLease = 30 * time.Second

// unparker moves due parked tasks (deadletter.ParkedKey) back to pending.
type unparker struct {
	rdb       redis.UniversalClient
	inspector *asynq.Inspector
	log       *zap.Logger
	interval  time.Duration // between looks
}

// run looks every interval until ctx is done.
func (u *unparker) run(ctx context.Context) {
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := u.once(ctx, time.Now()); err != nil && ctx.Err() == nil {
				u.log.Warn("could not move parked tasks back to their queues; will try again", zap.Error(err))
			}
		}
	}
}

// once moves the tasks due by now, a batch at a time and at most a few
// batches; the rest wait for the next look.
func (u *unparker) once(ctx context.Context, now time.Time) error {
	const batch, batches = 200, 5
	claimEnd := now.Add(claimLease)
	for range batches {
		if ctx.Err() != nil {
			return nil
		}
		due, err := deadletter.ClaimDue(ctx, u.rdb, now, claimEnd, batch)
		if err != nil {
			return err
		}
		for _, m := range due {
			u.move(ctx, m, claimEnd)
		}
		if len(due) < batch {
			return nil
		}
	}
	return nil
}

// move handles one claimed entry: a task still archived goes back to
// pending; one still active (asynq archives it just after the error handler
// parked it, or later after a lost lease; or an operator ran it) is looked
// at again next time; one deleted, or in any other state, needs nothing
// more. Errors leave the entry to be claimed again when the claim ends.
func (u *unparker) move(ctx context.Context, entry string, claimEnd time.Time) {
	p, err := deadletter.ParseParked(entry)
	if err != nil {
		u.log.Error("dropping an unreadable parked-task entry", zap.String("entry", entry), zap.Error(err))
		u.settle(ctx, entry, claimEnd, time.Time{})
		return
	}
	fields := []zap.Field{zap.String("task_id", p.ID), zap.String("queue", p.Queue)}
	info, err := u.inspector.GetTaskInfo(p.Queue, p.ID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		u.log.Warn("parked task no longer exists (deleted from the archive)", fields...)
		u.settle(ctx, entry, claimEnd, time.Time{})
		return
	case err != nil:
		u.log.Warn("could not look up a parked task; will try again", append(fields, zap.Error(err))...)
		return
	}
	switch info.State {
	case asynq.TaskStateArchived:
		if err := u.inspector.RunTask(p.Queue, p.ID); err != nil {
			u.log.Warn("could not move a parked task back to its queue; will try again", append(fields, zap.Error(err))...)
			return
		}
		u.log.Info("parked task back in its queue", fields...)
		u.settle(ctx, entry, claimEnd, time.Time{})
	case asynq.TaskStateActive:
		u.settle(ctx, entry, claimEnd, time.Now().Add(u.interval))
	default:
		u.log.Info("parked task left as it is: no longer archived", append(fields, zap.String("state", info.State.String()))...)
		u.settle(ctx, entry, claimEnd, time.Time{})
	}
}

// settle removes the claimed entry (next zero) or makes it due at next,
// unless an error handler changed it meanwhile.
func (u *unparker) settle(ctx context.Context, entry string, claimEnd, next time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := deadletter.Settle(ctx, u.rdb, entry, claimEnd, next); err != nil {
		u.log.Warn("could not update a parked-task entry; it is looked at again when its claim ends",
			zap.String("entry", entry), zap.Error(err))
	}
}
