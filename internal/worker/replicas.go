package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/redisconn"
)

// The round trip after a DigiCert 2xx (the duplicate guard; for a
// set-emails, the applied sequence) is what keeps a redelivery from
// emailing again. A master that answers it may still lose it: in an
// orderly Sentinel failover the old master takes writes for about a second
// after its replica was promoted, and drops them when it becomes a replica
// itself, while the dequeue that leased the task (written earlier) has
// replicated. So, when Config.GuardReplicas asks for it, the round trip
// also sends WAIT, in the same pipeline, and a write fewer replicas
// acknowledged than asked is not done: persist runs it again, for at most
// GuardReplicasWaitBound, until a master with enough replicas holds it.
// That covers an orderly failover only when Config.GuardReplicas is the
// number of the master's replicas: the replicas that were not promoted
// still replicate from the old master until the sentinels see the
// promotion (they ask for INFO once a second) and make them the new
// master's replicas, acknowledging its writes meanwhile, and drop those
// writes when they resync from the new master, their offset past its
// own. So WAIT must count the promoted replica too, which acknowledges
// nothing of the old master's once promoted (TestDrillTwoReplicasFailover:
// in a group of two, asking one, 55 to 66 tasks of each run were called
// twice; asking both, none). The promoted master then has one replica
// fewer than asked until Sentinel makes the old master its replica, about
// 15 s after the promotion in the failover drills, so the deliveries
// then running wait the whole bound and the worker falls short until it
// rejoins. A replica that is gone for longer (an old master that died and
// was not restarted) must not stop deliveries: once a write
// gave up waiting, the worker is short of replicas (replicaGuard), and
// until a WAIT acknowledges enough of them again its deliveries send WAIT
// with a short timeout (ShortReplicasTimeout) and end without retrying a
// shortfall. Their guards are then on the master only: a failover before
// a replica copies one could email again. While short, a goroutine of the
// worker's Run (probeReplicas) sends such a WAIT every
// ShortReplicasProbeInterval, so that an idle worker ends the shortage
// too. A worker whose master has fewer replicas connected at start than
// it asks starts short. A WAIT that Redis refuses (an ACL user without
// +wait, a proxy that does not know it) makes the worker short as well:
// the script has run, so the guard is on the master and the delivery
// ends; each delivery still sends WAIT (it costs only the refused
// command, in the same round trip), so that the first one Redis accepts
// again, and enough replicas acknowledge, ends the shortage. Both scripts (afterScript,
// afterOrderScript) are safe to run again: the result and the guard are
// set to the same values, the applied sequence is set only when not older,
// the lock and the sending record are deleted only while they still hold
// this delivery's, and the limiter's restamp moves the same member to now.
//
// The dequeue itself is lost the same way: asynq leased the task on the
// old master, and on the new one it is still pending, so that a worker
// there can take it while the first one's DigiCert call is in flight, or
// before its guard lands, and call DigiCert a second time. So, when
// Config.GuardReplicas asks for replicas, the round trip before a call
// sends WAIT too, in the same pipeline (authGate.replicated). The script
// writes on every path that leads to a call (the set-emails' lock and
// sending record; for the other types the wait mark, whatever the limiter
// does), and replication keeps order, so a replica that acknowledged it
// holds the dequeue, written earlier. When too few did, the delivery makes
// no call (beforeCall): it hands the task back (replicas_behind, a wait
// that uses no retry), giving back its limiter admission and its order's
// lock and sending record; on a master a failover has replaced, that hand-
// back is lost with the dequeue, and the task, pending on the new master,
// is delivered from there. This is bounded as the wait after the call is:
// once such round trips have gone unacknowledged for GuardReplicasWaitBound
// (since a WAIT last acknowledged enough, each within handBackGap of the
// last: a lone shortfall long ago does not count), the worker is short of
// replicas, and while it is short a shortfall before a call holds nothing
// back. A task's own hand-backs count the same way, whichever workers
// made them (taskBehind), so that a lone task passed from worker to
// worker goes ahead after about the bound too. Only a pause longer than
// handBackGap restarts that count: a WAIT acknowledged restarts the
// worker's, not the task's, so a task whose own round trips go on
// unacknowledged while other deliveries' are acknowledged goes ahead once
// its hand-backs have lasted the bound. That is the bound's meaning: no
// task is held back much longer than it. The task's count reads Redis's
// clock (TIME): a forward step of it, on the master or in a failover to
// a replica whose clock is ahead, adds its size to a running count, and
// may let one call go ahead at its first shortfall, the worker then short
// of replicas as above. A delivery handed back while it held the
// account's probe leaves the probe key to expire: the next probe comes an
// interval later.

// Bounds and timing of Config.GuardReplicas.
const (
	// MaxGuardReplicas is the most replicas a worker may ask to
	// acknowledge: WAIT waits for the slowest of them, and a deployment has
	// one to three; a larger number is a typo that no Redis satisfies.
	MaxGuardReplicas = 5
	// GuardReplicasTimeout is how long one WAIT waits for the replicas,
	// well within go-redis's read timeout (5 s): a replica in sync
	// acknowledges within milliseconds, and a write not acknowledged by
	// then is tried again (persistBackOff).
	GuardReplicasTimeout = time.Second
	// GuardReplicasWaitBound is how long a write fewer replicas
	// acknowledged is tried again before its delivery ends without them:
	// long enough for an orderly failover's clients to move to the new
	// master (a second or two), short enough that a replica that is gone
	// (the old master, until Sentinel makes it the new master's replica,
	// some 15 s) holds a worker slot only that long.
	GuardReplicasWaitBound = 10 * time.Second
	// ShortReplicasTimeout is how long WAIT waits while the worker is
	// short of replicas: a replica in sync acknowledges within it, and a
	// delivery is barely slowed when none does. Never 0: WAIT's 0 waits
	// forever.
	ShortReplicasTimeout = 20 * time.Millisecond
	// ShortReplicasProbeInterval is how often a worker short of replicas
	// sends a WAIT of its own (probeReplicas), so that it ends the
	// shortage without a delivery: the alert on
	// certmail_guard_replicas_short stops within about this much of the
	// replicas' return.
	ShortReplicasProbeInterval = 10 * time.Second
)

// DefaultGuardReplicas is Config.GuardReplicas' default for conn: 1 under
// Sentinel (redis-sentinel://), whose failover is what loses unreplicated
// writes; 0 otherwise (a standalone Redis has no replica to wait for).
// One is right for a group of one replica only: a group of more must ask
// all of them, a number the URL does not tell (warnFewReplicas warns of a
// master with more).
func DefaultGuardReplicas(conn *redisconn.Conn) int {
	if conn == nil {
		return 0
	}
	if _, ok := conn.Opt.(asynq.RedisFailoverClientOpt); ok {
		return 1
	}
	return 0
}

// notReplicatedError is a round trip after a call that the master ran but
// that fewer replicas than asked acknowledged within timeout: a failover
// may still lose it.
type notReplicatedError struct {
	asked, acked int64
	timeout      time.Duration
}

func (e *notReplicatedError) Error() string {
	return fmt.Sprintf("written on the master, but %d of the %d replicas asked acknowledged it within %s",
		e.acked, e.asked, e.timeout)
}

// runAfter sends cmd, a command of s, the round trip after a call: alone
// when the worker asks no replica to acknowledge it, else with WAIT in
// the same pipeline (one round trip still), returning a
// *notReplicatedError when too few did (runWaited).
func (p *processor) runAfter(ctx context.Context, s *script, cmd []any) error {
	if p.replicas <= 0 {
		return s.run(ctx, p.rdb, cmd).Err()
	}
	c, err := p.runWaited(ctx, s, cmd)
	if err == nil {
		err = c.Err()
	}
	return err
}

// runWaited sends cmd, a command of s, with WAIT in the same pipeline, and
// returns cmd's reply, with a *notReplicatedError when too few replicas
// acknowledged it, or an error when WAIT's own reply is missing. A WAIT
// that enough replicas acknowledged ends the worker's shortage of
// replicas; one that Redis refuses makes the worker short
// (replicaGuard.refused) and counts as no shortfall: the script ran, what
// it wrote is on the master. The worker must ask replicas (p.replicas > 0).
func (p *processor) runWaited(ctx context.Context, s *script, cmd []any) (*redis.Cmd, error) {
	timeout := p.guard.waitTimeout()
	c, acked := p.pipeWait(ctx, cmd, timeout)
	// A NOSCRIPT (Redis lost its scripts: a restart, a failover) leaves the
	// pipeline's WAIT sent for nothing, and the second pipeline sends
	// another: whether Redis has the script is known only from this reply,
	// and asking before would cost every guard a round trip for what
	// happens once per lost script cache.
	if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		if err := s.Load(ctx, p.rdb).Err(); err != nil {
			return c, nil
		}
		c, acked = p.pipeWait(ctx, cmd, timeout)
	}
	if c.Err() != nil {
		return c, nil
	}
	n, err := acked.Int64()
	switch {
	case isErrorReply(err):
		p.guard.refused(p.log, p.replicas, err)
		return c, nil
	case err != nil:
		return c, fmt.Errorf("WAIT: %w", err)
	case n < int64(p.replicas):
		return c, &notReplicatedError{asked: int64(p.replicas), acked: n, timeout: timeout}
	}
	p.guard.acknowledged(p.log, p.replicas)
	return c, nil
}

// unconfirmedError is a round trip before a call that Redis answered but
// that err says is not confirmed on the replicas asked: too few
// acknowledged it (a *notReplicatedError), or WAIT's reply is missing.
type unconfirmedError struct{ err error }

func (e *unconfirmedError) Error() string {
	return "the round trip before the call is not confirmed on the replicas: " + e.err.Error()
}

func (e *unconfirmedError) Unwrap() error { return e.err }

// codeReplicasBehind is the code of a delivery handed back before its
// call because too few replicas acknowledged its dequeue.
const codeReplicasBehind = "replicas_behind"

// replicasBehindWait is how long a task handed back with
// codeReplicasBehind waits (plus jitter) before it is delivered again,
// after the second its WAIT already waited.
const replicasBehindWait = time.Second

// handBackGap is how long a task handed back with codeReplicasBehind can
// take to come again, at most: its WAIT's timeout, its wait with jitter,
// asynq's move of due tasks (every retryCheck), and the sleep of an idle
// worker's slots before they look for a task again (asynq: half of
// taskCheck plus up to one more), with a second to spare.
func handBackGap(retryCheck, taskCheck time.Duration) time.Duration {
	return GuardReplicasTimeout + replicasBehindWait*5/4 + retryCheck + taskCheck*3/2 + time.Second
}

// beforeCall decides, after the round trip before a call (verdict, err),
// whether the delivery goes on: nil when it may (no error; a verdict that
// makes no call; a shortfall of replicas while the worker is short of
// them, or one that has lasted p.replicaBound, which makes the worker
// short: the worker's shortfalls, or the task's own hand-backs, which
// other workers may have made), else the delivery's end. A round trip not confirmed on the
// replicas hands the task back without a call and without using a retry
// (codeReplicasBehind): the master may be one a failover has just
// replaced, and lose the dequeue, so that the task is pending again where
// the workers go next and another delivery could call DigiCert while this
// one's call is in flight. Any other error is Redis's (a transient end).
func (p *processor) beforeCall(ctx context.Context, d *delivery, verdict gateVerdict, err error) error {
	switch {
	case err == nil:
		return nil
	case !isUnconfirmed(err):
		return transient("redis", 0, RetryDelay(d.attempt-1), err)
	case verdict != gateGo && verdict != gateProbe, p.guard.isShort():
		return nil
	}
	var nr *notReplicatedError
	if errors.As(err, &nr) {
		waited := p.guard.behind(time.Now(), p.behindGap)
		if waited < p.replicaBound {
			waited = max(waited, p.taskBehind(ctx, d.taskID))
		}
		if waited >= p.replicaBound {
			p.guard.fallShort(p.log, nr, waited)
			return nil
		}
	}
	return &taskError{code: codeReplicasBehind, class: classWait, retryAfter: jitter(replicasBehindWait),
		err: fmt.Errorf("not sent to DigiCert: %w; a failover could hand the task out again while the call is in flight", err)}
}

// taskBehind records a hand-back of task taskID for too few replicas and
// returns how long its hand-backs have followed one another, each within
// p.behindGap of the last, whichever workers made them: a worker counts
// only its own shortfalls, and a lone task handed back to one worker,
// then another, would take each's count longer to reach the bound. 0
// when Redis does not answer, or answers with an error: the worker's own
// count still applies. A refusal by the ACL (NOPERM: a user not allowed
// scripts; an ACL failure in the script: one not allowed a command it
// runs, such as TIME) would switch the task's count off for every task
// for good, so
// the worker logs the first; other replies (READONLY, OOM, LOADING: a
// failover or memory pressure, likely while replicas are behind) pass,
// as a connection error does.
func (p *processor) taskBehind(ctx context.Context, taskID string) time.Duration {
	ms, err := taskBehindScript.Run(ctx, p.rdb, []string{taskBehindKey(taskID)}, p.behindGap.Milliseconds()).Int64()
	if err != nil {
		if redisconn.ACLRefused(err) {
			p.guard.taskCountFailed(p.log, err)
		}
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// taskBehindScript keeps, in KEYS[1], when a task's hand-backs for too
// few replicas began (whole microseconds on Redis's clock), while each
// follows the last within ARGV[1] ms, and returns how long ago that was,
// in whole ms rounded down, so that the count never exceeds the time that
// passed: readings rounded to the ms would count up to 1 ms early. TIME's
// two parts make an exact double (under 2^53 µs until the year 2255), and
// string.format writes it whole: Lua's own conversion keeps 14 digits.
// A forward step of that clock (on the master, or a replica promoted with
// its clock ahead) adds its size to a running count, which may let one
// call go ahead at its first shortfall, the worker then short of
// replicas; a backward step starts the count again at 0. A start under
// 1e14 is in milliseconds, as workers before this version wrote it (read
// as microseconds it would be in 1970, and count decades at once): during
// a rolling upgrade the two write the same key.
var taskBehindScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('GET', KEYS[1])
local first = v and tonumber(v) or now
if first < 1e14 then first = first * 1000 end
if first > now then first = now end
redis.call('SET', KEYS[1], string.format('%.0f', first), 'PX', ARGV[1])
return math.floor((now - first) / 1000)
`)

// isUnconfirmed reports whether err is an *unconfirmedError. Call it only
// with an error: its target escapes, an allocation a delivery without one
// need not make.
func isUnconfirmed(err error) bool {
	var ue *unconfirmedError
	return errors.As(err, &ue)
}

// isErrorReply reports whether err is Redis's error reply to a command
// (NOPERM, ERR unknown command, …), not a failure to reach Redis.
func isErrorReply(err error) bool {
	if err == nil {
		return false // before re, which escapes: no allocation for a reply
	}
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}

// pipeWait sends cmd and WAIT in one pipeline: WAIT counts the replicas
// that acknowledged every write of its connection so far, cmd's included,
// waiting for them at most timeout.
func (p *processor) pipeWait(ctx context.Context, cmd []any, timeout time.Duration) (c, acked *redis.Cmd) {
	pipe := p.rdb.Pipeline()
	c = pipe.Do(ctx, cmd...)
	acked = pipe.Do(ctx, "wait", p.replicas, timeout.Milliseconds())
	_, _ = pipe.Exec(ctx) // each command's error is its own
	return c, acked
}

// replicaGuard is whether the worker is short of replicas: a write
// waited GuardReplicasWaitBound for them in vain, Redis refused WAIT, or
// the master had too few at start, and no WAIT acknowledged enough since
// (certmail_guard_replicas_short). Its zero value is not short; gauge may
// be nil. mu makes each change of short and its gauge one step, so that
// the two agree whatever the order of concurrent changes.
type replicaGuard struct {
	mu    sync.Mutex
	short atomic.Bool
	gauge prometheus.Gauge
	// refusalWarned is set once a refused WAIT was logged: Redis refuses
	// every delivery's alike, so the worker says it once.
	refusalWarned atomic.Bool
	// taskCountWarned is set once a refusal of taskBehindScript was
	// logged: Redis refuses every task's alike.
	taskCountWarned atomic.Bool
	// behindActive is set while round trips before calls go
	// unacknowledged (behind), from behindSince, the last at behindLast;
	// the times are guarded by mu, and a WAIT acknowledged clears it.
	behindActive atomic.Bool
	behindSince  time.Time
	behindLast   time.Time
}

// isShort reports whether the worker is short of replicas.
func (g *replicaGuard) isShort() bool { return g.short.Load() }

// waitTimeout is how long a WAIT waits for the replicas now.
func (g *replicaGuard) waitTimeout() time.Duration {
	if g.isShort() {
		return ShortReplicasTimeout
	}
	return GuardReplicasTimeout
}

// flip sets short to v and the gauge with it, reporting whether short
// changed.
func (g *replicaGuard) flip(v bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.short.CompareAndSwap(!v, v) {
		return false
	}
	if g.gauge != nil {
		g.gauge.Set(gaugeValue(v))
	}
	return true
}

// gaugeValue is v as a gauge's value: 1 for true, 0 for false.
func gaugeValue(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// fallShort makes the worker short of replicas, with one WARN when it was
// not yet.
func (g *replicaGuard) fallShort(log *zap.Logger, nr *notReplicatedError, waited time.Duration) {
	if !g.flip(true) {
		return
	}
	log.Warn("too few Redis replicas acknowledge the duplicate guards: deliveries now end without waiting for them, "+
		"their guards on the master only (a failover before a replica copies one could email again), until enough acknowledge again",
		zap.Int64("replicas_asked", nr.asked), zap.Int64("replicas_acknowledged", nr.acked), zap.Duration("waited", waited))
}

// refused makes the worker short of replicas because Redis answered WAIT
// with err, an error reply, logging it once for the worker's life.
func (g *replicaGuard) refused(log *zap.Logger, asked int, err error) {
	g.flip(true)
	if g.refusalWarned.CompareAndSwap(false, true) {
		log.Warn(waitRefused, zap.Int("replicas_asked", asked), zap.Error(err))
	}
}

// waitRefused is the WARN of a WAIT Redis refuses, logged once per worker.
const waitRefused = "Redis refuses WAIT, so no replica can be asked to acknowledge the duplicate guards: deliveries end with their guards " +
	"on the master only (a failover before a replica copies one could email again); allow WAIT (an ACL user needs +wait) " +
	"or set CERTMAIL_GUARD_REPLICAS=0"

// taskCountFailed logs err, Redis's refusal of the count of a task's
// hand-backs (taskBehindScript), once for the worker's life, cut to
// maxReplyShown bytes.
func (g *replicaGuard) taskCountFailed(log *zap.Logger, err error) {
	if g.taskCountWarned.CompareAndSwap(false, true) {
		log.Warn(taskCountFailed, zap.String("error", deadletter.Clip(err.Error(), maxReplyShown)))
	}
}

// taskCountFailed is the WARN of a refusal of the count of a task's
// hand-backs, logged once per worker.
const taskCountFailed = "Redis refuses the count of a task's hand-backs for too few replicas: each worker counts only " +
	"its own shortfalls, so a task handed back to one worker, then another, can wait longer than the bound before its call " +
	"goes ahead; allow the worker's Redis user to run scripts (EVALSHA, EVAL) on certmail:* keys"

// maxReplyShown bounds the text of a Redis error reply a log line shows.
const maxReplyShown = 200

// behind records, at now, a round trip before a call that too few
// replicas acknowledged, and returns how long such round trips have
// followed one another: since the first of them after a WAIT last
// acknowledged enough, or after a pause longer than gap without one (a
// task handed back comes again within gap, so a longer pause means the
// shortfall it saw is stale, and a new one starts at 0).
func (g *replicaGuard) behind(now time.Time, gap time.Duration) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.behindActive.Load() || now.Sub(g.behindLast) > gap {
		g.behindSince = now
		g.behindActive.Store(true)
	}
	g.behindLast = now
	return now.Sub(g.behindSince)
}

// acknowledged ends a shortage of replicas, with one INFO, when there is
// one: a WAIT acknowledged enough.
func (g *replicaGuard) acknowledged(log *zap.Logger, asked int) {
	if g.behindActive.Load() {
		g.mu.Lock()
		g.behindActive.Store(false)
		g.mu.Unlock()
	}
	if !g.isShort() || !g.flip(false) {
		return
	}
	log.Info("enough Redis replicas acknowledge the duplicate guards again: deliveries wait for them again",
		zap.Int("replicas_asked", asked))
}

// probeReplicas, while the worker is short of replicas, sends a WAIT of
// its own every interval, ShortReplicasTimeout long, which ends the
// shortage once enough replicas acknowledge it: a worker that gets no
// delivery ends it too. It returns when ctx is done.
func (p *processor) probeReplicas(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if !p.guard.isShort() {
			continue
		}
		// A write first, as a delivery's: WAIT counts the replicas that
		// acknowledged its connection's last write, and a connection
		// without one counts every replica still listed, a stalled one too.
		mark, acked := p.pipeWait(ctx, []any{"incr", waitMarkKey}, ShortReplicasTimeout)
		n, err := acked.Int64()
		if err == nil && mark.Err() == nil && n >= int64(p.replicas) {
			p.guard.acknowledged(p.log, p.replicas)
		}
	}
}

// warnFewReplicas checks, at start, what the worker's WAITs will meet.
// When Redis refuses WAIT (probed with WAIT 0 0, which returns at once),
// it logs so once and the worker starts short of replicas: no guard can
// be confirmed on a replica. When the master reports fewer connected
// replicas than the worker asks, it logs one WARN and the worker starts
// short too, so that its first deliveries do not each wait
// GuardWaitBound for replicas that are not there; probeReplicas ends the
// shortage once enough acknowledge. When it reports more, it logs one
// WARN: an orderly failover can then lose what too few acknowledged.
func (w *Worker) warnFewReplicas(ctx context.Context) {
	asked := w.proc.replicas
	if asked <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := w.rdb.Do(ctx, "wait", 0, 0).Err(); isErrorReply(err) {
		w.proc.guard.refused(w.log.With(zap.String("redis", w.cfg.Redis.Target)), asked, err)
		return
	}
	info, err := w.rdb.Info(ctx, "replication").Result()
	connected, perr := strconv.Atoi(infoValue(info, "connected_slaves"))
	if err == nil && perr != nil {
		err = fmt.Errorf("INFO replication has no connected_slaves: %w", perr)
	}
	switch {
	case err != nil:
		w.log.Warn("could not read how many replicas Redis's master has; after each DigiCert 2xx a delivery waits, up to wait_bound, until enough acknowledge its record",
			zap.String("redis", w.cfg.Redis.Target), zap.Int("guard_replicas", asked), zap.Duration("wait_bound", w.cfg.GuardWaitBound), zap.Error(err))
	case connected < asked:
		w.proc.guard.flip(true)
		w.log.Warn(fewReplicasAtStart,
			zap.String("redis", w.cfg.Redis.Target), zap.Int("guard_replicas", asked), zap.Int("connected_replicas", connected))
	case connected > asked:
		w.log.Warn(moreReplicasAtStart,
			zap.String("redis", w.cfg.Redis.Target), zap.Int("guard_replicas", asked), zap.Int("connected_replicas", connected))
	}
}

// moreReplicasAtStart is the WARN of a master with more replicas
// connected at start than the worker asks: in an orderly failover the
// replicas not promoted acknowledge the old master's writes until the
// sentinels make them the new master's, and then drop them.
const moreReplicasAtStart = "Redis's master has more replicas connected than CERTMAIL_GUARD_REPLICAS asks: in an orderly Sentinel failover " +
	"a replica that was not promoted can acknowledge a dequeue or duplicate guard the old master then loses, and a task can be sent twice; " +
	"set CERTMAIL_GUARD_REPLICAS to the number of replicas"

// fewReplicasAtStart is the WARN of a master with fewer replicas
// connected at start than the worker asks.
const fewReplicasAtStart = "Redis's master has fewer replicas connected than CERTMAIL_GUARD_REPLICAS asks: the worker starts short of replicas, " +
	"its deliveries ending with their duplicate guards on the master only until enough replicas acknowledge a WAIT " +
	"(it tries every 10 s); for a Redis without replicas, set CERTMAIL_GUARD_REPLICAS=0"

// infoValue is the value of name in an INFO answer ("name:value" lines),
// or "".
func infoValue(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), name+":"); ok {
			return v
		}
	}
	return ""
}
