package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Parking keeps the promise that a wait (a 429, the limiter, a paused
// account, a busy order) never costs a task its retries, on the one delivery
// where asynq cannot keep it: once a task has used all its retries, asynq
// archives it whatever error its handler returns, a wait included. So a
// task that meets a wait on its last delivery is parked: the error handler
// notes it in parkedKey, with the time its wait is over, instead of
// dead-lettering it; asynq archives it; and every worker's unparker moves
// each parked task whose time has come from the archive back to pending.
// Its retry count is unchanged, so its next failure, not its next wait,
// dead-letters it.
const parkedKey = keyPrefix + "parked" // zset: parkedTask JSON → unix ms when due

// parkedTask names a parked task.
type parkedTask struct {
	Queue string `json:"queue"`
	ID    string `json:"id"`
}

func (p parkedTask) member() string {
	b, _ := json.Marshal(p) // two strings: cannot fail
	return string(b)
}

// park notes that the task is to be moved back to pending at due.
func park(ctx context.Context, rdb redis.UniversalClient, p parkedTask, due time.Time) error {
	return rdb.ZAdd(ctx, parkedKey, redis.Z{Score: float64(due.UnixMilli()), Member: p.member()}).Err()
}

// ParkedUntil tells whether the task is parked and when its wait is over.
// The task is then in asynq's archive but is not dead-lettered.
func ParkedUntil(ctx context.Context, rdb redis.UniversalClient, queue, id string) (time.Time, bool, error) {
	ms, err := rdb.ZScore(ctx, parkedKey, parkedTask{Queue: queue, ID: id}.member()).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, err
	}
	return time.UnixMilli(int64(ms)), true, nil
}

// claimDueScript removes and returns up to ARGV[2] parked tasks due by
// ARGV[1], each followed by its due time: removal is the claim, so that of
// several workers one moves each.
var claimDueScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZREM', KEYS[1], due[i]) end
return due
`)

// archivingGrace is how long after its due time a parked task still found
// active is taken to be waiting for asynq to archive it, rather than run by
// an operator meanwhile.
const archivingGrace = 30 * time.Second

// unparker moves due parked tasks back to pending.
type unparker struct {
	rdb       redis.UniversalClient
	inspector *asynq.Inspector
	log       *zap.Logger
}

// run checks every interval until ctx is done.
func (u *unparker) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
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
// batches: tasks parked again are left for the next tick.
func (u *unparker) once(ctx context.Context, now time.Time) error {
	const batch, batches = 200, 5
	for range batches {
		due, err := claimDueScript.Run(ctx, u.rdb, []string{parkedKey}, strconv.FormatInt(now.UnixMilli(), 10), batch).StringSlice()
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(due); i += 2 {
			var p parkedTask
			if err := json.Unmarshal([]byte(due[i]), &p); err != nil {
				u.log.Error("dropping an unreadable parked-task entry", zap.String("entry", due[i]), zap.Error(err))
				continue
			}
			ms, _ := strconv.ParseFloat(due[i+1], 64)
			u.move(ctx, p, time.UnixMilli(int64(ms)), now)
		}
		if len(due) < 2*batch {
			return nil
		}
	}
	return nil
}

// move puts one claimed task, due at due, back to pending if it is still
// archived. A task still active soon after its due time (asynq archives it
// just after the error handler parked it) is parked again for a moment, as
// is one that Redis could not be asked about (both keep their due time, so
// the next tick looks again); one an operator deleted or ran meanwhile is
// left alone.
func (u *unparker) move(ctx context.Context, p parkedTask, due, now time.Time) {
	fields := []zap.Field{zap.String("task_id", p.ID), zap.String("queue", p.Queue)}
	again := func(cause error) {
		if err := park(ctx, u.rdb, p, due); err != nil {
			u.log.Error("parked task stays in the archive: run it from the dashboard or the CLI",
				append(fields, zap.NamedError("cause", cause), zap.Error(err))...)
		}
	}
	info, err := u.inspector.GetTaskInfo(p.Queue, p.ID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		u.log.Warn("parked task no longer exists (deleted from the archive)", fields...)
		return
	case err != nil:
		again(err)
		return
	}
	switch info.State {
	case asynq.TaskStateArchived:
		if err := u.inspector.RunTask(p.Queue, p.ID); err != nil {
			again(err)
			return
		}
		u.log.Info("parked task back in its queue", fields...)
	case asynq.TaskStateActive:
		if now.Sub(due) < archivingGrace {
			again(nil)
			return
		}
		fallthrough
	default:
		u.log.Info("parked task left as it is: no longer archived", append(fields, zap.String("state", info.State.String()))...)
	}
}
