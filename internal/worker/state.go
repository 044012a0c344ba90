package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/ratelimit"
)

// Redis keys certmail's workers keep besides asynq's own (all under
// "certmail:"; see README "Redis keys"; the dead-letter stream and the
// parked set are package deadletter's):
//
//	certmail:account:{name}:paused       auth pause in force, expires when the next probe is due
//	certmail:account:{name}:auth_broken  the key was rejected; deleted when a probe succeeds
//	certmail:account:{name}:probe        held by the one delivery allowed to probe
//	certmail:delivered:{task_id}         the task's DigiCert call succeeded (duplicate guard; for set-emails, read when its sequence equals the applied one)
//	certmail:first_seen:{task_id}        when a set-emails without a sequence was first processed (Redis's clock)
//	certmail:order:{account}:{order_id}:applied   sequence of the last set-emails applied
//	certmail:order:{account}:{order_id}:sending   sequence of the newest set-emails sent and not yet recorded applied (or taken back: releaseOrder)
//	certmail:order:{account}:{order_id}:lock      one set-emails per order at a time
//	certmail:replicas_behind:{task_id}   when a task's hand-backs for too few replicas began (µs, Redis's clock), while they follow one another (taskBehind)
//	certmail:wait_mark                   a counter every call's round trip before it increments when replicas are asked (beforeScript), and the probe of a worker short of them (probeReplicas)
//
// {task_id} is the id's deadletter.BoundedID: the id itself, as the worker
// dead-letters a task whose id is longer before it writes any of these.
const keyPrefix = "certmail:"

func pausedKey(acct string) string { return keyPrefix + "account:" + acct + ":paused" }
func brokenKey(acct string) string { return keyPrefix + "account:" + acct + ":auth_broken" }
func probeKey(acct string) string  { return keyPrefix + "account:" + acct + ":probe" }
func deliveredKey(taskID string) string {
	return keyPrefix + "delivered:" + deadletter.BoundedID(taskID)
}
func firstSeenKey(taskID string) string {
	return keyPrefix + "first_seen:" + deadletter.BoundedID(taskID)
}

// waitMarkKey is the counter beforeScript increments, when asked, so that
// the round trip before a call always writes: WAIT counts the replicas
// that acknowledged its connection's last write.
const waitMarkKey = keyPrefix + "wait_mark"

// taskBehindKey is the key taskBehind keeps a task's hand-backs in.
func taskBehindKey(taskID string) string { return keyPrefix + "replicas_behind:" + taskID }

func orderKey(acct string, orderID int64, what string) string {
	return keyPrefix + "order:" + acct + ":" + strconv.FormatInt(orderID, 10) + ":" + what
}

// gateLua defines gate(k, token, ms), the account's auth gate on KEYS[k]
// (pause), KEYS[k+1] (auth_broken) and KEYS[k+2] (probe): {0, ms} wait while
// the pause is in force or another delivery probes; {2, 0} probe, this
// delivery tries the key again (it holds the probe key, token, for ms);
// otherwise {1, 0} go. An account neither paused nor broken, the usual
// case, costs one EXISTS.
const gateLua = `
local function gate(k, token, ms)
  if redis.call('EXISTS', KEYS[k], KEYS[k + 1]) == 0 then return {1, 0} end
  local ttl = redis.call('PTTL', KEYS[k])
  if ttl > 0 then return {0, ttl} end
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    if redis.call('SET', KEYS[k + 2], token, 'NX', 'PX', ms) then return {2, 0} end
    local p = redis.call('PTTL', KEYS[k + 2])
    if p < 0 then p = 1000 end
    return {0, p}
  end
  return {1, 0}
end
`

// beforeScript is the one round trip before a DigiCert call: the task's
// duplicate guard, the account's auth gate and the shared limiter's
// admission. Returns {verdict, wait ms, admission}: admission 0 when the
// limiter admitted ARGV[5], the ms to wait for a slot, or -1 when not asked
// (the call does not go ahead, or no limiter keys were given). When the
// call goes ahead and ARGV[4] is '1' (the worker asks replicas to
// acknowledge the round trip: authGate.replicated), it increments KEYS[5]:
// a write whatever the limiter does, so that the WAIT after it covers the
// task's dequeue, written earlier.
//
//	KEYS[1]     the task's duplicate guard, checked when ARGV[1] is '1'
//	KEYS[2..4]  the account's pause, auth_broken and probe keys (gate)
//	ARGV[2..3]  a probe token and the probe interval (ms)
//	KEYS[5]     the wait mark, incremented when ARGV[4] is '1'
//	KEYS[6..]   the limiter's cool-down and windows, ARGV[5..] its member, windows and in-flight bound (ratelimit.Lua)
var beforeScript = newScript(ratelimit.Lua + gateLua + `
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return {3, 0, -1} end
local g = gate(2, ARGV[2], ARGV[3])
if g[1] == 0 then return {0, g[2], -1} end
if ARGV[4] == '1' then redis.call('INCR', KEYS[5]) end
if #KEYS < 6 then return {g[1], g[2], -1} end
return {g[1], g[2], admit(6, 5)}
`)

// seqLua defines older(a, b): whether sequence a is older than b, both
// the decimal strings sequences are stored as (non-negative, without
// leading zeros). Lua's numbers are doubles, which cannot tell nanosecond
// sequences less than 256 ns apart: a newer list would be taken for one
// already applied.
const seqLua = `
local function older(a, b) return #a < #b or (#a == #b and a < b) end
`

// beforeOrderScript is the one round trip before a set-emails' DigiCert
// call: the order lock, the applied and sending sequences' compare, the
// auth gate and the limiter's admission. Returns {verdict, wait ms,
// admission} as beforeScript, with the verdicts gateBusy, gateSuperseded
// and gateApplied. Only when the call goes ahead (go, probe) does it take
// the lock (as lease.Acquire takes it) and record the task's sequence as
// the order's sending one (it is not older than the one recorded there);
// it then also returns what the record held before (empty for none) and its
// lifetime left (ms), which releaseOrderScript may put back.
//
// The sending record outlives the lock: a worker that loses Redis after
// DigiCert's 2xx writes the applied sequence when Redis answers again,
// however long after its lock expired, and until then the record keeps any
// older set-emails from being sent. The task's own sequence there does not
// stop it (a redelivery after a failed call or a crash sends its list again).
//
// A sequence equal to the applied one is gateApplied only when the task's
// duplicate guard is set (afterOrderScript writes it with the applied
// sequence): this task's list was applied. Another task with the same
// sequence is a second update of the order and goes on as a newer one
// would: of two lists at one sequence, the one delivered later wins. The
// guard costs one EXISTS, read in that tie only.
//
//	KEYS[1]     the order's lock; ARGV[1] this delivery's token, ARGV[2] the lease (ms)
//	KEYS[2]     the order's applied sequence; ARGV[3] the task's sequence
//	KEYS[3]     the order's sending sequence; ARGV[6] its lifetime (ms)
//	KEYS[4]     the task's duplicate guard, read when ARGV[3] equals the applied sequence
//	KEYS[5..7]  the auth gate's keys; ARGV[4..5] a probe token and the probe interval (ms)
//	KEYS[8..]   the limiter's, ARGV[7..] its member, windows and in-flight bound (ratelimit.Lua)
var beforeOrderScript = newScript(ratelimit.Lua + gateLua + seqLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then return {4, 0, -1} end
local cur, seq = redis.call('GET', KEYS[2]) or '0', ARGV[3]
if older(seq, cur) then return {5, 0, -1} end
if seq == cur and redis.call('EXISTS', KEYS[4]) == 1 then return {6, 0, -1} end
local prev = redis.call('GET', KEYS[3]) or ''
if older(seq, prev == '' and '0' or prev) then return {5, 0, -1} end
local g = gate(5, ARGV[4], ARGV[5])
if g[1] == 0 then return {0, g[2], -1} end
local left = 0
if prev ~= '' and prev ~= seq then left = redis.call('PTTL', KEYS[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], seq, 'PX', ARGV[6])
local admission = -1
if #KEYS >= 8 then admission = admit(8, 7) end
return {g[1], g[2], admission, prev, left}
`)

// afterScript is the one round trip after a DigiCert 2xx: the task's
// result, its duplicate guard and the limiter's restamp.
//
//	KEYS[1]  the task's hash in asynq; ARGV[1] its result, written unless ''
//	KEYS[2]  the duplicate guard; ARGV[2] its value (the time), ARGV[3] its lifetime (ms)
//	KEYS[3..] the limiter's, ARGV[4..] its member (none when ''), windows and in-flight bound (ratelimit.Lua)
var afterScript = newScript(ratelimit.Lua + `
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[1]) end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' then restamp(3, 4) end
return 0
`)

// afterOrderScript is the one round trip after a set-emails' DigiCert 2xx:
// the task's result, its duplicate guard (as afterScript writes the other
// types', with the same lifetime as the applied sequence: beforeOrderScript
// reads it to tell this task's redelivery from another task with the same
// sequence), the order's applied sequence (unless a newer one is recorded
// already; an equal one lives on from now, as long as the guard), the end
// of the sending record it turns into (unless a newer set-emails was sent
// since), the release of the order's lock and the limiter's restamp.
//
//	KEYS[1]  the task's hash in asynq; ARGV[1] its result
//	KEYS[2]  the order's applied sequence; ARGV[2] the task's sequence, ARGV[3] its lifetime and the guard's (ms)
//	KEYS[3]  the order's lock, deleted if it still holds ARGV[4] (as lease.Release does)
//	KEYS[4]  the order's sending sequence, deleted unless newer than ARGV[2]
//	KEYS[5]  the task's duplicate guard; ARGV[5] its value (the time)
//	KEYS[6..] the limiter's, ARGV[6..] its member (none when ''), windows and in-flight bound (ratelimit.Lua)
var afterOrderScript = newScript(ratelimit.Lua + seqLua + `
redis.call('HSET', KEYS[1], 'result', ARGV[1])
redis.call('SET', KEYS[5], ARGV[5], 'PX', ARGV[3])
if not older(ARGV[2], redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
local sending = redis.call('GET', KEYS[4])
if sending and not older(ARGV[2], sending) then redis.call('DEL', KEYS[4]) end
if ARGV[6] ~= '' then restamp(6, 6) end
return 0
`)

// releaseOrderScript ends a set-emails' hold on its order when no 2xx was
// recorded: the lock, deleted if it still holds ARGV[1] (as lease.Release
// does). Only then, and only while the sending record still holds ARGV[2],
// does it put back what the record held before this delivery's round trip
// (ARGV[3], for ARGV[4] ms), or delete it if it held nothing; an empty
// ARGV[2] keeps the record. A delivery whose lock expired leaves the record
// alone: another delivery may have taken the lock and sent since.
//
//	KEYS[1]  the order's lock; ARGV[1] this delivery's token
//	KEYS[2]  the order's sending sequence; ARGV[2] the task's sequence, or empty
//	ARGV[3]  the record's value before (empty for none), ARGV[4] its lifetime left (ms)
var releaseOrderScript = newScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '' or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 1 end
if ARGV[3] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
return 1
`)

// script is a Lua script whose EVALSHA the worker builds in one slice, as
// go-redis's Do sends it: "evalsha", the hash, the number of keys, the
// keys, the arguments. go-redis's Script.Run would copy keys and arguments
// into a slice of its own and box every key on every call; here the keys
// and arguments that do not change (an account's, the limiter's) come
// boxed once.
type script struct {
	*redis.Script
	hash any // boxed once
}

func newScript(src string) *script {
	s := redis.NewScript(src)
	return &script{Script: s, hash: s.Hash()}
}

// limiterRoom is the room a command is made with for the limiter's keys
// and arguments (ratelimit.Ticket's), which come after the script's own:
// enough for its cool-down and four windows, so that a command is built
// in one allocation.
const limiterRoom = 16

// command starts a command of s with room for n keys and arguments of its
// own, and the limiter's.
func (s *script) command(n int) []any {
	return append(make([]any, 0, 3+n+limiterRoom), "evalsha", s.hash, 0)
}

// keysEnd records in cmd that its keys end here: the arguments follow.
func keysEnd(cmd []any) { cmd[2] = len(cmd) - 3 }

// run sends cmd, loading the script into Redis first when Redis does not
// have it (after a restart or a SCRIPT FLUSH), as Script.Run does.
func (s *script) run(ctx context.Context, rdb redis.UniversalClient, cmd []any) *redis.Cmd {
	c := rdb.Do(ctx, cmd...)
	if !redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		return c
	}
	if err := s.Load(ctx, rdb).Err(); err != nil {
		return c
	}
	return rdb.Do(ctx, cmd...)
}

type gateVerdict int

const (
	gateWait gateVerdict = iota
	gateGo
	gateProbe
	gateDone       // the duplicate guard is set: the call already succeeded
	gateBusy       // another set-emails of the order holds its lock
	gateSuperseded // a newer set-emails of the order was applied, or sent and not yet recorded
	gateApplied    // this set-emails' list was applied already: its sequence is the applied one, and its guard is set
)

// authGate keeps one account's auth pause in Redis, shared by all workers.
type authGate struct {
	rdb      redis.UniversalClient
	account  string
	interval time.Duration // pause between probes
	keys     [3]string     // the account's pause, auth_broken and probe keys
	// boxed are keys and the interval (ms) as a command's elements.
	boxed [4]any
	// replicated, when set (the worker asks replicas to acknowledge its
	// writes), sends the round trip before a call with WAIT
	// (processor.runWaited): a failover must not hand the task out again
	// while the call is in flight (replicas.go).
	replicated func(ctx context.Context, s *script, cmd []any) (*redis.Cmd, error)
}

func newAuthGate(rdb redis.UniversalClient, account string, interval time.Duration) *authGate {
	g := &authGate{rdb: rdb, account: account, interval: interval,
		keys: [3]string{pausedKey(account), brokenKey(account), probeKey(account)}}
	g.boxed = [4]any{g.keys[0], g.keys[1], g.keys[2], interval.Milliseconds()}
	return g
}

// check asks whether a delivery may call DigiCert now; guardKey, when not
// empty, is the task's duplicate guard, checked first. ticket, when not nil,
// is admitted by the shared limiter in the same round trip if the call may
// go ahead and a slot is free (else Acquire waits for one as usual).
func (g *authGate) check(ctx context.Context, guardKey string, ticket *ratelimit.Ticket) (gateVerdict, time.Duration, error) {
	var guard, checked any = guardKey, "1"
	if guardKey == "" {
		guard, checked = g.boxed[0], "0" // any key: not read
	}
	var mark any = "0"
	if g.replicated != nil {
		mark = "1"
	}
	cmd := append(beforeScript.command(9), guard, g.boxed[0], g.boxed[1], g.boxed[2], waitMarkKey)
	return g.run(ctx, beforeScript, cmd, ticket, checked, randomToken(), g.boxed[3], mark)
}

// orderKeys are the keys of one order's set-emails.
type orderKeys struct {
	lock    *lease.Lease // one call at a time
	applied string       // the sequence of the last list DigiCert accepted
	sending string       // the sequence of the newest list sent, until recorded applied (or taken back: releaseOrder)
}

func newOrderKeys(rdb redis.UniversalClient, acct string, orderID int64) orderKeys {
	return orderKeys{lock: lease.New(rdb, orderKey(acct, orderID, "lock"), orderLockTTL),
		applied: orderKey(acct, orderID, "applied"), sending: orderKey(acct, orderID, "sending")}
}

// sendingBefore is what an order's sending record held before a
// set-emails' round trip recorded the task's sequence there, read in that
// round trip when the call went ahead.
type sendingBefore struct {
	seq string        // "" for none
	ttl time.Duration // its lifetime left then; 0 when seq is "" or the task's own
	at  time.Time     // when the round trip answered (the ttl's start, at the latest)
}

// left is how long the record's earlier value would still live now: the
// value and its lifetime left, or "" when there was none or it has expired.
func (b sendingBefore) left() (string, time.Duration) {
	left := b.ttl - time.Since(b.at)
	if b.seq == "" || left < time.Millisecond {
		return "", 0
	}
	return b.seq, left
}

// checkOrder asks whether a set-emails of sequence seq may call DigiCert
// now: its order's lock (taken for the lock's holder when the call goes
// ahead), its applied and sending sequences (seq recorded as sending, for
// ttl, when the call goes ahead: before says what the record held), with
// guardKey, the task's duplicate guard, telling its own applied list from
// another's at the same sequence, then as check.
func (g *authGate) checkOrder(ctx context.Context, k orderKeys, guardKey string, seq int64, ttl time.Duration, ticket *ratelimit.Ticket) (gateVerdict, time.Duration, sendingBefore, error) {
	cmd := append(beforeOrderScript.command(13), k.lock.Key(), k.applied, k.sending, guardKey, g.boxed[0], g.boxed[1], g.boxed[2])
	res, err := g.runSlice(ctx, beforeOrderScript, cmd, ticket, k.lock.Token(), orderLockTTL.Milliseconds(),
		strconv.FormatInt(seq, 10), randomToken(), g.boxed[3], ttl.Milliseconds())
	if res == nil {
		return gateGo, 0, sendingBefore{}, err
	}
	verdict, wait := gateReply(res)
	var before sendingBefore
	if len(res) == 5 {
		before.seq, _ = res[3].(string)
		before.at = time.Now()
		switch left, _ := res[4].(int64); {
		case left > 0:
			before.ttl = time.Duration(left) * time.Millisecond
		case left == -1: // a record without an expiry, which certmail never writes: keep it as long as its own
			before.ttl = ttl
		}
	}
	return verdict, wait, before, err
}

// run runs a before-call script: cmd holds its own keys, the ticket's keys
// and arguments follow the script's own, args, in each part.
func (g *authGate) run(ctx context.Context, s *script, cmd []any, ticket *ratelimit.Ticket, args ...any) (gateVerdict, time.Duration, error) {
	res, err := g.runSlice(ctx, s, cmd, ticket, args...)
	if res == nil {
		return gateGo, 0, err
	}
	verdict, wait := gateReply(res)
	return verdict, wait, err
}

// runSlice is run returning the script's whole reply, whose first three
// elements are the verdict, the wait (ms) and the admission; nil with the
// error when the script did not answer. With g.replicated, a reply comes
// with an *unconfirmedError when the replicas asked did not acknowledge
// the round trip.
func (g *authGate) runSlice(ctx context.Context, s *script, cmd []any, ticket *ratelimit.Ticket, args ...any) ([]any, error) {
	if ticket != nil {
		cmd = ticket.AppendKeys(cmd)
	}
	keysEnd(cmd)
	cmd = append(cmd, args...)
	if ticket != nil {
		cmd = ticket.AppendArgs(cmd)
	}
	c, unconfirmed := g.send(ctx, s, cmd)
	res, err := c.Slice()
	if err == nil && len(res) < 3 {
		err = fmt.Errorf("%d elements in the reply, want at least 3", len(res))
	}
	if err != nil {
		return nil, fmt.Errorf("auth gate: %w", err)
	}
	if admission, ok := res[2].(int64); ok && admission == 0 && ticket != nil {
		ticket.Admitted()
	}
	if unconfirmed != nil {
		return res, &unconfirmedError{err: unconfirmed}
	}
	return res, nil
}

// send sends cmd, a command of s: with WAIT when g.replicated is set, the
// second result then saying why the round trip is not confirmed on the
// replicas asked (nil when it is).
func (g *authGate) send(ctx context.Context, s *script, cmd []any) (*redis.Cmd, error) {
	if g.replicated == nil {
		return s.run(ctx, g.rdb, cmd), nil
	}
	return g.replicated(ctx, s, cmd)
}

// gateReply reads the verdict and the wait of a before-call script's reply.
func gateReply(res []any) (gateVerdict, time.Duration) {
	verdict, _ := res[0].(int64)
	wait, _ := res[1].(int64)
	return gateVerdict(verdict), time.Duration(wait) * time.Millisecond
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
	n, err := pauseScript.Run(ctx, g.rdb, g.keys[:],
		g.interval.Milliseconds(), time.Now().UTC().Format(time.RFC3339)).Int()
	if err != nil {
		return false, fmt.Errorf("pause account: %w", err)
	}
	return n == 1, nil
}

// resume ends a pause after a successful probe; resumed reports whether a
// pause was in fact ended (so that one INFO line says so).
func (g *authGate) resume(ctx context.Context) (resumed bool, err error) {
	n, err := g.rdb.Del(ctx, g.keys[1], g.keys[2], g.keys[0]).Result()
	if err != nil {
		return false, fmt.Errorf("resume account: %w", err)
	}
	return n > 0, nil
}

// orderLockTTL is the lease of an order lock (a lease.Lease, renewed every
// third of it while held, so that the lock of a worker that died frees
// itself within orderLockTTL). It serialises the set-emails of one order
// across workers. It outlasts a whole DigiCert call, the client's budget
// and a quarter of it for the time between the lock and the call and for a
// request still on its way when the call ends: a worker cut off from Redis
// as its call starts renews nothing, and an attempt of that call must not
// reach DigiCert after another worker took the lock and sent a newer list.
const orderLockTTL = digicert.DefaultMaxElapsed + digicert.DefaultMaxElapsed/4

// orderBusyWait is how long a set-emails whose order is locked waits before
// it is tried again (plus jitter); the lock is held for one DigiCert call.
const orderBusyWait = time.Second

// firstSeenScript stamps a task with the time it was first processed, once,
// and returns the stamp: Redis's clock (TIME), in nanoseconds, as a decimal
// string built from TIME's two parts (Lua's doubles would round it), so
// that the clocks of the workers, which may be skewed, do not order raw
// set-emails, as they do not time the limiter.
var firstSeenScript = redis.NewScript(`
local t = redis.call('TIME')
redis.call('SET', KEYS[1], string.format('%d%06d000', tonumber(t[1]), tonumber(t[2])), 'NX', 'PX', ARGV[1])
return redis.call('GET', KEYS[1])
`)

// firstSeen is the sequence of a set-emails task that carries none: the
// time on Redis's clock, in nanoseconds, its first delivery started, the
// same on every delivery for ttl from then (the worker's GuardRetention,
// 7 days by default: many times a task's retries, about a day).
func firstSeen(ctx context.Context, rdb redis.UniversalClient, taskID string, ttl time.Duration) (int64, error) {
	seq, err := firstSeenScript.Run(ctx, rdb, []string{firstSeenKey(taskID)}, ttl.Milliseconds()).Int64()
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
