package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/queues"
)

// unparker moves parked tasks (deadletter.ParkedKey) out of asynq's archive
// into asynq's retry set, due when their wait is over: asynq's forwarder
// then makes each pending at that time, its retry count unchanged. A task
// must not stay in the archive, where asynq deletes the oldest beyond
// 10 000 tasks per queue (and those older than 90 days) at every archive,
// so the unparker looks just after this worker's error handler parks one
// (wake), and every interval for the entries of other workers.
type unparker struct {
	rdb      redis.UniversalClient
	log      *zap.Logger
	throttle *logging.Throttle // its failed looks, repeated while Redis is away; nil for none
	interval time.Duration     // between looks when nothing is parked
	wake     <-chan struct{}   // this worker's error handler parked a task
	// lost dead-letters a parked task that no longer exists.
	lost func(ctx context.Context, p deadletter.Parked)
}

// Pace of the unparker's looks after a park: asynq archives the task just
// after the error handler returns, so the first look waits archiveDelay,
// and while tasks are still to be archived (asynq has not yet, or a lost
// lease leaves it to asynq's recoverer) the looks space out from there up
// to the interval.
const archiveDelay = 10 * time.Millisecond

// Bounds of one look: entries are read a page at a time, at most
// maxPerLook of them.
const (
	parkedPage = 500
	maxPerLook = 20 * parkedPage
)

// run looks when woken or every interval until ctx is done.
func (u *unparker) run(ctx context.Context) {
	next := time.Now().Add(u.interval)
	timer := time.NewTimer(u.interval)
	defer timer.Stop()
	pace := time.Duration(0) // between looks while tasks are still to be archived
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.wake:
			// Sooner, never later: parks that keep coming do not put the look off.
			if soon := time.Now().Add(archiveDelay); soon.Before(next) {
				next = soon
				timer.Reset(archiveDelay)
			}
			continue
		case <-timer.C:
		}
		waiting, err := u.once(ctx)
		if err != nil && ctx.Err() == nil {
			u.throttle.Log(u.log, zapcore.WarnLevel, "could not move parked tasks out of the archive; will try again", zap.Error(err))
		}
		wait := u.interval
		if waiting > 0 {
			pace = min(max(2*pace, archiveDelay), u.interval)
			wait = pace
		} else {
			pace = 0
		}
		next = time.Now().Add(wait)
		timer.Reset(wait)
	}
}

// once handles the parked entries, a page at a time and at most maxPerLook
// of them, and returns how many are left for asynq to archive.
func (u *unparker) once(ctx context.Context) (waiting int, err error) {
	for offset := 0; offset < maxPerLook; {
		if ctx.Err() != nil {
			return waiting, nil
		}
		page, err := deadletter.ListParked(ctx, u.rdb, offset, parkedPage)
		if err != nil {
			return waiting, err
		}
		kept, w, err := u.movePage(ctx, page)
		waiting += w
		if err != nil {
			return waiting, err
		}
		if len(page) < parkedPage {
			return waiting, nil
		}
		offset += kept
	}
	return waiting, nil
}

// moveScript moves each task ARGV[i] (i = 2, 4, ...) of one queue that asynq
// has archived to its retry set, due at ARGV[i+1] (Unix seconds, asynq's
// score), as asynq's own retry does (state "retry" in the task's hash,
// whose message, retry count and last error are left as they are). It
// returns, for each, "moved" or the state the task is in ("" when it no
// longer exists). A task asynq's inspector trimmed from the archive keeps
// its hash, state "archived": it is moved too.
//
//	KEYS[1]  asynq:{<queue>}:archived
//	KEYS[2]  asynq:{<queue>}:retry
//	ARGV[1]  asynq:{<queue>}:t: (a task's hash is ARGV[1] .. id)
var moveScript = redis.NewScript(`
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'archived' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[i + 1], id)
    redis.call('HSET', key, 'state', 'retry')
    state = 'moved'
  end
  out[#out + 1] = state or ''
end
return out
`)

// movePage moves the tasks of page, one script per queue, removes the
// entries of those no longer waiting for asynq's archive, and returns how
// many entries of page are still in the set and how many of those wait for
// their task to be archived.
func (u *unparker) movePage(ctx context.Context, page []deadletter.ParkedEntry) (kept, waiting int, err error) {
	type item struct {
		entry  deadletter.ParkedEntry
		parked deadletter.Parked
		state  string
	}
	items := make([]item, 0, len(page))
	byQueue := map[string][]int{}
	var drop []deadletter.ParkedEntry
	for _, e := range page {
		p, err := deadletter.ParseParked(e.Member)
		if err != nil || p.Queue == "" || p.ID == "" {
			u.log.Error("dropping an unreadable parked-task entry", zap.String("entry", deadletter.Clip(e.Member, deadletter.MaxText)), zap.Error(err))
			drop = append(drop, e)
			continue
		}
		byQueue[p.Queue] = append(byQueue[p.Queue], len(items))
		items = append(items, item{entry: e, parked: p})
	}
	for q, idx := range byQueue {
		args := make([]any, 0, 1+2*len(idx))
		args = append(args, queues.AsynqTaskKey(q, ""))
		for _, i := range idx {
			// asynq's scores are seconds: rounded up, the task does not come back before its wait is over.
			args = append(args, items[i].parked.ID, (items[i].entry.DueMS+999)/1000)
		}
		states, err := moveScript.Run(ctx, u.rdb, []string{queues.AsynqKey(q, "archived"), queues.AsynqKey(q, "retry")}, args...).StringSlice()
		if err != nil {
			return len(page), 0, fmt.Errorf("move parked tasks of queue %s: %w", q, err)
		}
		for k, i := range idx {
			if k < len(states) {
				items[i].state = states[k]
			}
		}
	}
	for _, it := range items {
		if it.state == "active" {
			// asynq archives it once its error handler returns, or its
			// recoverer does after a lost lease: the next look moves it.
			waiting++
			continue
		}
		drop = append(drop, it.entry)
	}
	removed, err := deadletter.Unpark(ctx, u.rdb, drop)
	if err != nil {
		return len(page), waiting, err
	}
	kept = len(page)
	isRemoved := make(map[string]bool, len(drop))
	for i, e := range drop {
		if removed[i] {
			isRemoved[e.Member] = true
			kept--
		}
	}
	for _, it := range items {
		if it.state == "active" || !isRemoved[it.entry.Member] {
			continue // waiting for asynq; or parked again, or dead-lettered, meanwhile: the newer entry stands
		}
		fields := []zap.Field{zap.String("task_id", it.parked.ID), zap.String("queue", it.parked.Queue)}
		switch it.state {
		case "moved":
			u.log.Info("parked task moved from the archive to retry: asynq runs it when its wait is over",
				append(fields, zap.Time("next_process_at", time.UnixMilli(it.entry.DueMS)))...)
		case "":
			// Of the workers that found it gone, the one whose removal
			// took the entry reports it: once.
			u.lost(ctx, it.parked)
		default:
			u.log.Info("parked task left as it is: no longer archived", append(fields, zap.String("state", it.state))...)
		}
	}
	return kept, waiting, nil
}
