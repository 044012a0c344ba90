package worker

import (
	"context"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/queues"
)

// maxUnservedListed bounds the queues the start line about unserved queues
// names; the others are counted.
const maxUnservedListed = 10

// maxQueuesLooked bounds the queue names read from asynq's set of queues at
// start, and so the round trip that counts their tasks: a producer can
// create queues without limit, and the check must not hold up the start.
const maxQueuesLooked = 1000

// warnUnserved logs one WARN line when queues asynq knows hold tasks that
// wait for a worker (pending, scheduled or retry) and this worker does not
// serve them: a mistyped CERTMAIL_QUEUES ("defualt=3") would otherwise
// start without a word while the tasks of default wait. Queues without
// such tasks are not named: splitting the queues between workers is
// legitimate, and asynq never forgets a queue once used. The line cannot
// tell a queue another worker serves from a mistype, and says so. When
// Redis does not answer within the check's few seconds, nothing is
// logged: the outage's own lines say so.
func (w *Worker) warnUnserved(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	names, more, err := unservedWithTasks(ctx, w.rdb, w.cfg.Queues)
	if err != nil {
		w.log.Debug("could not look for queues with tasks this worker does not serve", zap.Error(err))
		return
	}
	if len(names) == 0 {
		return
	}
	w.log.Warn("queues hold tasks that wait for a worker, and this worker does not serve them: "+
		"another worker must serve them, or CERTMAIL_QUEUES is mistyped",
		zap.Strings("unserved_queues", names), zap.Int("more_unserved_queues", more),
		zap.Strings("queues", queues.Names(w.cfg.Queues)))
}

// unservedWithTasks returns, sorted, the first maxUnservedListed queues of
// asynq's set (at most maxQueuesLooked of it read) that are not in served
// and hold pending, scheduled or retry tasks, and how many more such
// queues there are among those read.
func unservedWithTasks(ctx context.Context, rdb redis.UniversalClient, served map[string]int) (names []string, more int, err error) {
	known, err := knownQueues(ctx, rdb)
	if err != nil {
		return nil, 0, err
	}
	var others []string
	for _, q := range known {
		if _, ok := served[q]; !ok {
			others = append(others, q)
		}
	}
	if len(others) == 0 {
		return nil, 0, nil
	}
	pipe := rdb.Pipeline()
	counts := make([][]*redis.IntCmd, len(others))
	for i, q := range others {
		counts[i] = []*redis.IntCmd{
			pipe.LLen(ctx, queues.AsynqKey(q, "pending")),
			pipe.ZCard(ctx, queues.AsynqKey(q, "scheduled")),
			pipe.ZCard(ctx, queues.AsynqKey(q, "retry")),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, err
	}
	var waiting []string // active tasks are not counted: a worker that serves the queue runs them
	for i, q := range others {
		if slices.ContainsFunc(counts[i], func(c *redis.IntCmd) bool { return c.Val() > 0 }) {
			waiting = append(waiting, q)
		}
	}
	n := min(len(waiting), maxUnservedListed)
	names = waiting[:n]
	for i, q := range names {
		// A raw producer's queue name may be of any length; certmail's are at most maxQueueNameShown.
		if len(q) > maxQueueNameShown {
			cut := maxQueueNameShown
			for cut > 0 && !utf8.RuneStart(q[cut]) { // whole characters only
				cut--
			}
			names[i] = q[:cut] + "…"
		}
	}
	return names, len(waiting) - n, nil
}

// maxQueueNameShown bounds each queue name the line shows: the longest
// name certmail's entry points accept.
const maxQueueNameShown = 63

// knownQueues reads at most maxQueuesLooked names of asynq's set of
// queues, sorted.
func knownQueues(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	var names []string
	var cursor uint64
	for {
		page, next, err := rdb.SScan(ctx, queues.AsynqQueuesKey, cursor, "", 100).Result()
		if err != nil {
			return nil, err
		}
		names = append(names, page...)
		cursor = next
		if cursor == 0 || len(names) >= maxQueuesLooked {
			break
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	return names[:min(len(names), maxQueuesLooked)], nil
}
