package worker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/queues"
)

// leaseSweep dead-letters the tasks asynq's recoverer archives by itself.
// When a worker dies (SIGKILL, out of memory, its node lost) during a
// task's last delivery, the recoverer of another worker archives the task
// once its lease has expired, with the last error "asynq: task lease
// expired", and certmail's error handler never sees it. Every worker looks
// at the tasks archived in its queues since its last look, by their score
// in asynq's archive, and writes the dead letter of each such task that
// has none: not one the error handler wrote (deadletter.MarkerKey), nor a
// parked one; and of several workers, one (deadletter.AppendOnce).
type leaseSweep struct {
	rdb       redis.UniversalClient
	inspector *asynq.Inspector
	errs      *errorHandler // writes the entry, the ERROR line and the metrics
	queues    []string
	interval  time.Duration
	throttle  *logging.Throttle // its failed looks, repeated while Redis is away; nil for none

	// from is, per queue, the archive score (Unix seconds) from which the
	// next look reads, less skewMargin.
	from map[string]int64
	// judged are, per queue, the tasks read since from-skewMargin, with
	// their score: each is looked up once.
	judged map[string]map[string]int64
}

// Bounds of the lease sweep.
const (
	// sweepLookback is how far back a worker's first look reads: the tasks
	// a worker's recoverer archived just before the worker stopped.
	sweepLookback = 10 * time.Minute
	// skewMargin is read again before from at each look: asynq scores an
	// archived task with the clock of the worker that archives it. asynq's
	// recoverer allows as much.
	skewMargin = 30 * time.Second
	// sweepPage is how many archived tasks one read fetches, up to asynq's
	// cap on an archive.
	sweepPage, maxArchive = 1000, 10_000
)

func newLeaseSweep(rdb redis.UniversalClient, errs *errorHandler, queues []string, interval time.Duration) *leaseSweep {
	return &leaseSweep{rdb: rdb, inspector: asynq.NewInspectorFromRedisClient(rdb), errs: errs, queues: queues,
		interval: interval, from: map[string]int64{}, judged: map[string]map[string]int64{}}
}

// run looks every interval until ctx is done.
func (s *leaseSweep) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.once(ctx, time.Now()); err != nil && ctx.Err() == nil {
				s.throttle.Log(s.errs.log, zapcore.WarnLevel, "could not look for tasks archived after a lost lease; will try again", zap.Error(err))
			}
		}
	}
}

// once looks at each queue's tasks archived since the last look.
func (s *leaseSweep) once(ctx context.Context, now time.Time) error {
	var errs []error
	for _, q := range s.queues {
		if err := s.queue(ctx, q, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// queue looks at queue q's tasks archived since the last look (less
// skewMargin). On an error, the next look reads them again.
func (s *leaseSweep) queue(ctx context.Context, q string, now time.Time) error {
	from, ok := s.from[q]
	if !ok {
		from = now.Add(-sweepLookback).Unix()
	}
	lo := from - int64(skewMargin/time.Second)
	var archived []redis.Z
	for offset := 0; offset < maxArchive; offset += sweepPage {
		page, err := s.rdb.ZRangeByScoreWithScores(ctx, queues.AsynqKey(q, "archived"), &redis.ZRangeBy{
			Min: strconv.FormatInt(lo, 10), Max: "+inf", Offset: int64(offset), Count: sweepPage}).Result()
		if err != nil {
			return err
		}
		archived = append(archived, page...)
		if len(page) < sweepPage {
			break
		}
	}
	judged := s.judged[q]
	if judged == nil {
		judged = map[string]int64{}
		s.judged[q] = judged
	}
	for id, score := range judged {
		if score < lo {
			delete(judged, id)
		}
	}
	type task struct {
		id     string
		score  int64
		marked *redis.IntCmd
		parked *redis.FloatCmd
	}
	var fresh []task
	pipe := s.rdb.Pipeline()
	for _, z := range archived {
		id, _ := z.Member.(string)
		if _, ok := judged[id]; ok || id == "" {
			continue
		}
		fresh = append(fresh, task{id: id, score: int64(z.Score),
			marked: pipe.Exists(ctx, deadletter.MarkerKey(q, id)),
			parked: pipe.ZScore(ctx, deadletter.ParkedKey, deadletter.Parked{Queue: q, ID: id}.Member())})
	}
	if len(fresh) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	for _, t := range fresh {
		if err := t.marked.Err(); err != nil {
			return err
		}
		if err := t.parked.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		// Dead-lettered already, or parked (the unparker moves it out).
		if t.marked.Val() == 0 && errors.Is(t.parked.Err(), redis.Nil) {
			if err := s.judge(ctx, q, t.id, t.score); err != nil {
				return err
			}
		}
		judged[t.id] = t.score
	}
	s.from[q] = now.Unix()
	return nil
}

// judge dead-letters the archived task id of queue q if asynq's recoverer
// archived it: its last error is asynq's lease expiry, recorded when it was
// archived (an operator who archives a task from the dashboard leaves its
// last error and time as they were).
func (s *leaseSweep) judge(ctx context.Context, q, id string, score int64) error {
	info, err := s.inspector.GetTaskInfo(q, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil // deleted meanwhile
	case err != nil:
		return err
	case info.State != asynq.TaskStateArchived || info.LastErr != asynq.ErrLeaseExpired.Error() || info.LastFailedAt.Unix() != score:
		return nil
	}
	deliveredAt, err := s.rdb.Get(ctx, deliveredKey(id)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return s.errs.leaseExpired(ctx, info, deliveredAt)
}
