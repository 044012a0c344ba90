package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/lease"
)

// Redis keys certmail's workers keep besides asynq's own (all under
// "certmail:"; see README "Redis keys"; the dead-letter stream and the
// parked set are package deadletter's):
//
//	certmail:account:{name}:paused       auth pause in force, expires when the next probe is due
//	certmail:account:{name}:auth_broken  the key was rejected; deleted when a probe succeeds
//	certmail:account:{name}:probe        held by the one delivery allowed to probe
//	certmail:delivered:{task_id}         the task's DigiCert call succeeded (duplicate guard)
//	certmail:first_seen:{task_id}        when a set-emails without a sequence was first processed
//	certmail:order:{account}:{order_id}:applied   sequence of the last set-emails applied
//	certmail:order:{account}:{order_id}:lock      one set-emails per order at a time
const keyPrefix = "certmail:"

func pausedKey(acct string) string      { return keyPrefix + "account:" + acct + ":paused" }
func brokenKey(acct string) string      { return keyPrefix + "account:" + acct + ":auth_broken" }
func probeKey(acct string) string       { return keyPrefix + "account:" + acct + ":probe" }
func deliveredKey(taskID string) string { return keyPrefix + "delivered:" + taskID }
func firstSeenKey(taskID string) string { return keyPrefix + "first_seen:" + taskID }
func orderKey(acct string, orderID int64, what string) string {
	return keyPrefix + "order:" + acct + ":" + strconv.FormatInt(orderID, 10) + ":" + what
}

// gateScript decides whether a delivery may call DigiCert: done (3) when
// the task's duplicate guard (KEYS[4], when given) says its call already
// succeeded; wait ms (0, ms) while the account's auth pause is in force or
// another delivery probes; probe (2): this delivery is the one that tries
// the key again; otherwise go (1). One round trip answers both questions a
// delivery asks before its call.
var gateScript = redis.NewScript(`
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then return {3, 0} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then return {0, ttl} end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, 0} end
  local p = redis.call('PTTL', KEYS[3])
  if p < 0 then p = 1000 end
  return {0, p}
end
return {1, 0}
`)

type gateVerdict int

const (
	gateWait gateVerdict = iota
	gateGo
	gateProbe
	gateDone // the duplicate guard is set: the call already succeeded
)

// authGate keeps one account's auth pause in Redis, shared by all workers.
type authGate struct {
	rdb      redis.UniversalClient
	account  string
	interval time.Duration // pause between probes
}

// check asks whether a delivery may call DigiCert now; guardKey, when not
// empty, is the task's duplicate guard, checked first.
func (g *authGate) check(ctx context.Context, guardKey string) (gateVerdict, time.Duration, error) {
	keys := []string{pausedKey(g.account), brokenKey(g.account), probeKey(g.account)}
	if guardKey != "" {
		keys = append(keys, guardKey)
	}
	res, err := gateScript.Run(ctx, g.rdb, keys, randomToken(), g.interval.Milliseconds()).Int64Slice()
	if err != nil {
		return gateGo, 0, fmt.Errorf("auth gate: %w", err)
	}
	return gateVerdict(res[0]), time.Duration(res[1]) * time.Millisecond, nil
}

// pause records a rejected key; first reports whether this starts the pause
// (the account was working until now), which is when an ERROR is logged.
var pauseScript = redis.NewScript(`
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('DEL', KEYS[3])
if redis.call('SET', KEYS[2], ARGV[2], 'NX') then return 1 end
return 0
`)

func (g *authGate) pause(ctx context.Context) (first bool, err error) {
	n, err := pauseScript.Run(ctx, g.rdb,
		[]string{pausedKey(g.account), brokenKey(g.account), probeKey(g.account)},
		g.interval.Milliseconds(), time.Now().UTC().Format(time.RFC3339)).Int()
	if err != nil {
		return false, fmt.Errorf("pause account: %w", err)
	}
	return n == 1, nil
}

// resume ends a pause after a successful probe; resumed reports whether a
// pause was in fact ended (so that one INFO line says so).
func (g *authGate) resume(ctx context.Context) (resumed bool, err error) {
	n, err := g.rdb.Del(ctx, brokenKey(g.account), probeKey(g.account), pausedKey(g.account)).Result()
	if err != nil {
		return false, fmt.Errorf("resume account: %w", err)
	}
	return n > 0, nil
}

// orderLockTTL is the lease of an order lock (a lease.Lease: short, and
// renewed every third of it while held, so that the lock of a worker that
// died frees itself within orderLockTTL). It serialises the set-emails of
// one order across workers.
const orderLockTTL = 15 * time.Second

var errLockBusy = errors.New("order lock busy")

// orderBusyWait is how long a set-emails whose order is locked waits before
// it is tried again (plus jitter); the lock is held for one DigiCert call.
const orderBusyWait = time.Second

// tryLockOrder takes the order's lock and keeps it renewed, or returns
// errLockBusy at once when another delivery holds it. unlock stops the
// renewals and releases the lock if it is still this delivery's.
func tryLockOrder(ctx context.Context, rdb redis.UniversalClient, key string) (unlock func(context.Context), err error) {
	l := lease.New(rdb, key, orderLockTTL)
	ok, err := l.Acquire(ctx)
	switch {
	case err != nil:
		return nil, fmt.Errorf("lock order: %w", err)
	case !ok:
		return nil, errLockBusy
	}
	stop := l.KeepAlive()
	return func(ctx context.Context) {
		stop()
		_, _ = l.Release(ctx) // a lock not released expires within orderLockTTL
	}, nil
}

// setApplied records seq as the order's last applied set-emails, unless a
// newer one is already recorded. Sequences are compared as the decimal
// strings they are stored as (non-negative, without leading zeros): Lua's
// numbers are doubles, which cannot tell nanosecond sequences less than
// 256 ns apart, so a newer list would not have been recorded as applied.
var setAppliedScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or '0'
local new = ARGV[1]
if #new > #cur or (#new == #cur and new > cur) then redis.call('SET', KEYS[1], new, 'PX', ARGV[2]) end
return 0
`)

// firstSeenScript stamps a task with the time it was first processed, once,
// and returns the stamp.
var firstSeenScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
`)

// firstSeenTTL outlives a task's retries (about a day by default) many times over.
const firstSeenTTL = 7 * 24 * time.Hour

// firstSeen is the sequence of a set-emails task that carries none: the
// time, in nanoseconds, its first delivery started, the same on every retry.
func firstSeen(ctx context.Context, rdb redis.UniversalClient, taskID string) (int64, error) {
	seq, err := firstSeenScript.Run(ctx, rdb, []string{firstSeenKey(taskID)}, time.Now().UnixNano(), firstSeenTTL.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("first-seen stamp: %w", err)
	}
	return seq, nil
}

func randomToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
