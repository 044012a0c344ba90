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

// claimDueScript leases up to ARGV[3] parked tasks due by ARGV[1]: their
// due time moves to the lease's end, ARGV[2], so that of several workers one
// handles each, and the tasks of a worker that dies meanwhile are claimed
// again when the lease ends. An entry is removed only once its task has
// been moved (settleScript).
var claimDueScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], due[i]) end
return due
`)

// settleScript removes entry ARGV[1] (ARGV[3] empty) or moves it to ARGV[3],
// only if it still holds this worker's lease, ARGV[2]: an error handler
// that parked the task again, or dead-lettered it, meanwhile wins.
var settleScript = redis.NewScript(`
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
`)

// claimLease is how long a claimed parked task is left to the worker that
// claimed it.
const claimLease = 30 * time.Second

// unparker moves due parked tasks back to pending.
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
	lease := strconv.FormatInt(now.Add(claimLease).UnixMilli(), 10)
	for range batches {
		if ctx.Err() != nil {
			return nil
		}
		due, err := claimDueScript.Run(ctx, u.rdb, []string{parkedKey}, strconv.FormatInt(now.UnixMilli(), 10), lease, batch).StringSlice()
		if err != nil {
			return err
		}
		for _, m := range due {
			u.move(ctx, m, lease)
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
// more. Errors leave the entry to be claimed again when the lease ends.
func (u *unparker) move(ctx context.Context, entry, lease string) {
	var p parkedTask
	if err := json.Unmarshal([]byte(entry), &p); err != nil {
		u.log.Error("dropping an unreadable parked-task entry", zap.String("entry", entry), zap.Error(err))
		u.settle(ctx, entry, lease, "")
		return
	}
	fields := []zap.Field{zap.String("task_id", p.ID), zap.String("queue", p.Queue)}
	info, err := u.inspector.GetTaskInfo(p.Queue, p.ID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		u.log.Warn("parked task no longer exists (deleted from the archive)", fields...)
		u.settle(ctx, entry, lease, "")
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
		u.settle(ctx, entry, lease, "")
	case asynq.TaskStateActive:
		u.settle(ctx, entry, lease, strconv.FormatInt(time.Now().Add(u.interval).UnixMilli(), 10))
	default:
		u.log.Info("parked task left as it is: no longer archived", append(fields, zap.String("state", info.State.String()))...)
		u.settle(ctx, entry, lease, "")
	}
}

// settle removes the claimed entry (next empty) or moves its due time to
// next, unless an error handler changed it meanwhile.
func (u *unparker) settle(ctx context.Context, entry, lease, next string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := settleScript.Run(ctx, u.rdb, []string{parkedKey}, entry, lease, next).Err(); err != nil {
		u.log.Warn("could not update a parked-task entry; it is looked at again when its claim ends",
			zap.String("entry", entry), zap.Error(err))
	}
}
