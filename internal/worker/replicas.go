package worker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

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
// That covers the orderly failover (clients move to the new master within
// a second or two, and the old master rejoins it as a replica within
// seconds). A replica that is gone for longer (a group of one master and
// one replica whose master died) must not stop deliveries: once a write
// gave up waiting, the worker is short of replicas (replicaGuard), and
// until a WAIT acknowledges enough of them again its deliveries send WAIT
// with a short timeout (ShortReplicasTimeout) and end without retrying a
// shortfall. Their guards are then on the master only: a failover before
// a replica copies one could email again. Both scripts (afterScript,
// afterOrderScript) are safe to run again: the result and the guard are
// set to the same values, the applied sequence is set only when not older,
// the lock and the sending record are deleted only while they still hold
// this delivery's, and the limiter's restamp moves the same member to now.

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
	// long enough for an orderly failover (clients on the new master
	// within a second or two, the old master its replica within seconds),
	// short enough that a replica that is gone holds a worker slot only
	// that long.
	GuardReplicasWaitBound = 10 * time.Second
	// ShortReplicasTimeout is how long WAIT waits while the worker is
	// short of replicas: a replica in sync acknowledges within it, and a
	// delivery is barely slowed when none does. Never 0: WAIT's 0 waits
	// forever.
	ShortReplicasTimeout = 20 * time.Millisecond
)

// DefaultGuardReplicas is Config.GuardReplicas' default for conn: 1 under
// Sentinel (redis-sentinel://), whose failover is what loses unreplicated
// writes; 0 otherwise (a standalone Redis has no replica to wait for).
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
// *notReplicatedError when too few did. A WAIT that enough replicas
// acknowledged ends the worker's shortage of replicas.
func (p *processor) runAfter(ctx context.Context, s *script, cmd []any) error {
	if p.replicas <= 0 {
		return s.run(ctx, p.rdb, cmd).Err()
	}
	timeout := p.guard.waitTimeout()
	c, acked := p.pipeWait(ctx, cmd, timeout)
	if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		if err := s.Load(ctx, p.rdb).Err(); err != nil {
			return c.Err()
		}
		c, acked = p.pipeWait(ctx, cmd, timeout)
	}
	if err := c.Err(); err != nil {
		return err
	}
	n, err := acked.Int64()
	if err != nil {
		return fmt.Errorf("WAIT: %w", err)
	}
	if n < int64(p.replicas) {
		return &notReplicatedError{asked: int64(p.replicas), acked: n, timeout: timeout}
	}
	p.guard.acknowledged(p.log, p.replicas)
	return nil
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
// waited GuardReplicasWaitBound for them in vain, and no WAIT acknowledged
// enough since (certmail_guard_replicas_short). Its zero value is not
// short; gauge may be nil.
type replicaGuard struct {
	short atomic.Bool
	gauge prometheus.Gauge
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

// fallShort makes the worker short of replicas, with one WARN when it was
// not yet.
func (g *replicaGuard) fallShort(log *zap.Logger, nr *notReplicatedError, waited time.Duration) {
	if !g.short.CompareAndSwap(false, true) {
		return
	}
	g.set(1)
	log.Warn("too few Redis replicas acknowledge the duplicate guards: deliveries now end without waiting for them, "+
		"their guards on the master only (a failover before a replica copies one could email again), until enough acknowledge again",
		zap.Int64("replicas_asked", nr.asked), zap.Int64("replicas_acknowledged", nr.acked), zap.Duration("waited", waited))
}

// acknowledged ends a shortage of replicas, with one INFO, when there is
// one: a WAIT acknowledged enough.
func (g *replicaGuard) acknowledged(log *zap.Logger, asked int) {
	if !g.short.CompareAndSwap(true, false) {
		return
	}
	g.set(0)
	log.Info("enough Redis replicas acknowledge the duplicate guards again: deliveries wait for them again",
		zap.Int("replicas_asked", asked))
}

func (g *replicaGuard) set(v float64) {
	if g.gauge != nil {
		g.gauge.Set(v)
	}
}

// warnFewReplicas logs one WARN when Redis's master reports fewer
// connected replicas than the worker asks to acknowledge its writes after
// a DigiCert 2xx: the deliveries then running wait for them up to
// GuardWaitBound, and the next ones end without them until enough
// acknowledge.
func (w *Worker) warnFewReplicas(ctx context.Context) {
	asked := w.proc.replicas
	if asked <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
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
		w.log.Warn("Redis's master has fewer replicas connected than CERTMAIL_GUARD_REPLICAS asks: a delivery will wait, up to wait_bound, "+
			"for enough to acknowledge its duplicate guard, then deliveries end without them until enough do; "+
			"for a Redis without replicas, set CERTMAIL_GUARD_REPLICAS=0",
			zap.String("redis", w.cfg.Redis.Target), zap.Int("guard_replicas", asked), zap.Int("connected_replicas", connected),
			zap.Duration("wait_bound", w.cfg.GuardWaitBound))
	}
}

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
