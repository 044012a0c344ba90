package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ParkedKey is the sorted set of parked tasks: Parked JSON → the Unix
// milliseconds at which the task's wait is over.
//
// Parking keeps the promise that a wait (a 429, the limiter, a paused
// account, a busy order) never costs a task its retries, on the one delivery
// where asynq cannot keep it: once a task has used all its retries, asynq
// archives it whatever error its handler returns, a wait included. So the
// worker's error handler parks a task that meets a wait on its last
// delivery instead of dead-lettering it; asynq archives it; and the
// unparker of a worker moves it at once from the archive to asynq's retry
// set, due when the wait is over (asynq deletes archived tasks beyond
// 10 000 per queue: a parked task must not stay there), and removes the
// entry (ListParked, Unpark). Its retry count is unchanged, so its next
// failure, not its next wait, dead-letters it. An entry lives from the park
// until its task is out of the archive, usually milliseconds.
const ParkedKey = "certmail:parked"

// Parked names a parked task.
type Parked struct {
	Queue string `json:"queue"`
	ID    string `json:"id"`
}

// Member is p as a member of ParkedKey, its task id the BoundedID (the
// worker parks no task whose id is longer than that: it dead-letters it).
func (p Parked) Member() string {
	p.ID = BoundedID(p.ID)
	b, _ := json.Marshal(p) // two strings: cannot fail
	return string(b)
}

// ParseParked reads a member of ParkedKey.
func ParseParked(member string) (Parked, error) {
	var p Parked
	if err := json.Unmarshal([]byte(member), &p); err != nil {
		return Parked{}, fmt.Errorf("parked entry: %w", err)
	}
	return p, nil
}

// Park notes that the task p is to be moved back to pending at due.
func Park(ctx context.Context, rdb redis.UniversalClient, p Parked, due time.Time) error {
	return rdb.ZAdd(ctx, ParkedKey, redis.Z{Score: float64(due.UnixMilli()), Member: p.Member()}).Err()
}

// ParkedUntil tells whether the task is parked and when its wait is over.
// The task is then in asynq's archive (or about to be, or just moved out of
// it) but is not dead-lettered.
func ParkedUntil(ctx context.Context, rdb redis.UniversalClient, queue, id string) (time.Time, bool, error) {
	ms, err := rdb.ZScore(ctx, ParkedKey, Parked{Queue: queue, ID: id}.Member()).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, err
	}
	return time.UnixMilli(int64(ms)), true, nil
}

// ParkedEntry is a member of ParkedKey as read back, with its score.
type ParkedEntry struct {
	Member string // a Parked, as Member writes it (ParseParked reads it)
	DueMS  int64  // the Unix milliseconds at which the task's wait is over
}

// ListParked returns at most n entries of ParkedKey from the offset-th,
// the soonest due first.
func ListParked(ctx context.Context, rdb redis.UniversalClient, offset, n int) ([]ParkedEntry, error) {
	zs, err := rdb.ZRangeWithScores(ctx, ParkedKey, int64(offset), int64(offset+n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("read parked tasks: %w", err)
	}
	out := make([]ParkedEntry, 0, len(zs))
	for _, z := range zs {
		m, _ := z.Member.(string) // go-redis reads members as strings
		out = append(out, ParkedEntry{Member: m, DueMS: int64(z.Score)})
	}
	return out, nil
}

// unparkScript removes each member ARGV[i] (i = 1, 3, ...) whose score is
// still ARGV[i+1], and returns 1 or 0 for each: an error handler that
// parked the task again meanwhile (a new due time) wins.
var unparkScript = redis.NewScript(`
local out = {}
for i = 1, #ARGV, 2 do
  local removed = 0
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]) or '-1') == tonumber(ARGV[i + 1]) then
    removed = redis.call('ZREM', KEYS[1], ARGV[i])
  end
  out[#out + 1] = removed
end
return out
`)

// Unpark removes the entries that still hold the due time they were read
// with, in one round trip, and reports which it removed: of several workers
// that handle the same entry, one removes it.
func Unpark(ctx context.Context, rdb redis.UniversalClient, entries []ParkedEntry) ([]bool, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 2*len(entries))
	for _, e := range entries {
		args = append(args, e.Member, e.DueMS)
	}
	res, err := unparkScript.Run(ctx, rdb, []string{ParkedKey}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("remove parked entries: %w", err)
	}
	removed := make([]bool, len(entries))
	for i := range removed {
		removed[i] = i < len(res) && res[i] == 1
	}
	return removed, nil
}
