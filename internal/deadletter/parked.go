package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
// delivery instead of dead-lettering it; asynq archives it; and every
// worker's unparker moves each parked task whose time has come from the
// archive back to pending. Its retry count is unchanged, so its next
// failure, not its next wait, dead-letters it.
const ParkedKey = "certmail:parked"

// Parked names a parked task.
type Parked struct {
	Queue string `json:"queue"`
	ID    string `json:"id"`
}

// Member is p as a member of ParkedKey.
func (p Parked) Member() string {
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
// The task is then in asynq's archive but is not dead-lettered.
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

// ClaimDue claims up to n parked tasks due by now until claimEnd and returns
// their members: each stays in ParkedKey, due at claimEnd, until the
// claimer settles it, so that a claimer that dies meanwhile only delays it.
func ClaimDue(ctx context.Context, rdb redis.UniversalClient, now, claimEnd time.Time, n int) ([]string, error) {
	due, err := claimDueScript.Run(ctx, rdb, []string{ParkedKey}, now.UnixMilli(), claimEnd.UnixMilli(), n).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim parked tasks: %w", err)
	}
	return due, nil
}

// Settle removes the claimed member (next zero) or makes it due at next,
// unless it no longer holds the claim ending at claimEnd: an error handler
// that parked or dead-lettered the task meanwhile wins.
func Settle(ctx context.Context, rdb redis.UniversalClient, member string, claimEnd, next time.Time) error {
	to := ""
	if !next.IsZero() {
		to = strconv.FormatInt(next.UnixMilli(), 10)
	}
	if err := settleScript.Run(ctx, rdb, []string{ParkedKey}, member, claimEnd.UnixMilli(), to).Err(); err != nil {
		return fmt.Errorf("settle parked entry: %w", err)
	}
	return nil
}
