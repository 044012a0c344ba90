package ops

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/queues"
)

// A task trimmed from asynq's archive: asynq caps an archive at 10 000
// tasks, and the archive scripts of its inspector (the dashboard's Archive,
// above all its "Archive all") drop the oldest from the archive's sorted set
// without deleting their hashes. What stays is a hash in state "archived"
// that no archive lists: asynq's Run and Delete of it fail with an internal
// error, its janitor never deletes it, and a producer that sends its id
// again is refused as a duplicate. certmail takes such a task as gone from
// the archive (not found), unless it is parked: the worker's unparker moves
// a parked task out of the archive whether or not the archive still lists
// it. DeleteDeadLetter deletes what is left of it.

// ArchiveCap is the size at which asynq trims a queue's archive
// (maxArchiveSize in asynq's internal/rdb): an archive that reaches it is
// cut to ArchiveCap-1 tasks, the oldest dropped.
const ArchiveCap = 10_000

// trimmedScript reads whether the task ARGV[1] is trimmed: its hash KEYS[1] is
// in state archived, the archive KEYS[2] does not list it, and the parked
// set KEYS[3] has no member ARGV[2] for it. With ARGV[3] "1" it deletes
// the hash, and the task's uniqueness lock if the lock is still the task's
// (as asynq's own delete does). Returns 1 for a trimmed task, else 0.
var trimmedScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') ~= 'archived' then return 0 end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then return 0 end
if ARGV[3] == '1' then
  local unique = redis.call('HGET', KEYS[1], 'unique_key')
  if unique and unique ~= '' and redis.call('GET', unique) == ARGV[1] then
    redis.call('DEL', unique)
  end
  redis.call('DEL', KEYS[1])
end
return 1
`)

// trimmed reports whether the task id of queue is trimmed from asynq's
// archive (see trimmedScript), in one round trip; with del, it deletes the
// task's hash then.
func (s *Service) trimmed(ctx context.Context, queue, id string, del bool) (bool, error) {
	flag := "0"
	if del {
		flag = "1"
	}
	keys := []string{queues.AsynqTaskKey(queue, id), queues.AsynqKey(queue, "archived"), deadletter.ParkedKey}
	n, err := trimmedScript.Run(ctx, s.rdb, keys, id, deadletter.Parked{Queue: queue, ID: id}.Member(), flag).Int()
	if err != nil {
		return false, fmt.Errorf("read asynq's archive: %w", err)
	}
	return n == 1, nil
}

// inArchive reports whether asynq's archive of queue lists the task id.
func (s *Service) inArchive(ctx context.Context, queue, id string) (bool, error) {
	err := s.rdb.ZScore(ctx, queues.AsynqKey(queue, "archived"), id).Err()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read asynq's archive: %w", err)
	}
	return true, nil
}
