package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/queues"
)

// A lookup by task id alone (Task, and a dead letter whose entry names no
// queue) must find which queues hold the id, and asynq never forgets a
// queue: any producer can add names to asynq:queues without bound, one with
// each queue it enqueues into. So the queues are read lookupBatch at a time, one command each
// (HGET of the state in the task's hash), in one round trip per batch, and
// asynq's Inspector (two round trips) is asked only about a queue that
// holds the id. 20 000 queue names took a lookup 40 000 round trips and 2 s
// when each queue was asked of the Inspector.

// lookupBatch is how many queues one round trip of a lookup by id reads
// (the README states it, at GET /v1/tasks/{id} and in the promise table:
// TestReadmeStatesLookupBatch holds the two to it).
const lookupBatch = 500

// holder is a queue whose hash for a task id has a state, as holders read it.
type holder struct {
	queue string
	state string // the state in the task's hash
	// listed and parked are read for an archived task only: asynq's
	// archive of queue lists the id; certmail:parked lists the task.
	listed, parked bool
}

// trimmed reports whether the task is what asynq left after it trimmed the
// task from the archive, as trimmedScript reads it.
func (h holder) trimmed() bool {
	return h.state == asynq.TaskStateArchived.String() && !h.listed && !h.parked
}

// asynqStates are the states asynq's Inspector reads from a task's hash.
var asynqStates = []string{"pending", "active", "scheduled", "retry", "archived", "completed", "aggregating"}

// readable reports whether asynq's Inspector can read the task's state.
func (h holder) readable() bool { return slices.Contains(asynqStates, h.state) }

// holders returns those of qs (at most lookupBatch) whose hash for the task
// id has a state, in the order of qs: one round trip, and a second one when
// any of them is archived, to tell a trimmed task from an archived one. A
// hash without a state is not a task (asynq deleted the task, or only a
// result written after its deletion is left).
func (s *Service) holders(ctx context.Context, qs []string, id string) ([]holder, error) {
	pipe := s.rdb.Pipeline()
	states := make([]*redis.StringCmd, len(qs))
	for i, q := range qs {
		states[i] = pipe.HGet(ctx, queues.AsynqTaskKey(q, id), "state")
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, fmt.Errorf("read the task's hashes: %w", err)
	}
	var held []holder
	for i, cmd := range states {
		if cmd.Val() != "" {
			held = append(held, holder{queue: qs[i], state: cmd.Val()})
		}
	}
	if err := s.readArchived(ctx, held, id); err != nil {
		return nil, err
	}
	return held, nil
}

// readArchived sets listed and parked of the archived tasks among held, in
// one round trip when there is any.
func (s *Service) readArchived(ctx context.Context, held []holder, id string) error {
	pipe := s.rdb.Pipeline()
	type reads struct{ listed, parked *redis.FloatCmd }
	archived := map[int]reads{}
	for i, h := range held {
		if h.state == asynq.TaskStateArchived.String() {
			archived[i] = reads{
				listed: pipe.ZScore(ctx, queues.AsynqKey(h.queue, "archived"), id),
				parked: pipe.ZScore(ctx, deadletter.ParkedKey, deadletter.Parked{Queue: h.queue, ID: id}.Member()),
			}
		}
	}
	if len(archived) == 0 {
		return nil
	}
	if err := execPipe(ctx, pipe); err != nil {
		return fmt.Errorf("read asynq's archive: %w", err)
	}
	for i, r := range archived {
		held[i].listed, held[i].parked = r.listed.Err() == nil, r.parked.Err() == nil
	}
	return nil
}

// execPipe runs pipe's commands and returns the first error among them that
// is not redis.Nil (a missing key or field, which each caller reads as
// such); pipe.Exec would return a redis.Nil that comes before an error.
func execPipe(ctx context.Context, pipe redis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	if len(cmds) == 0 {
		return err
	}
	return nil
}
