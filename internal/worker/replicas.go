package worker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
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
// acknowledged than asked is not done: persist runs it again until a
// master with enough replicas holds it. Both scripts (afterScript,
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
// that fewer replicas than asked acknowledged within GuardReplicasTimeout:
// a failover may still lose it.
type notReplicatedError struct {
	asked, acked int64
}

func (e *notReplicatedError) Error() string {
	return fmt.Sprintf("written on the master, but %d of the %d replicas asked acknowledged it within %s",
		e.acked, e.asked, GuardReplicasTimeout)
}

// runAfter sends cmd, a command of s, the round trip after a call: alone
// when the worker asks no replica to acknowledge it, else with WAIT in
// the same pipeline (one round trip still), returning a
// *notReplicatedError when too few did.
func (p *processor) runAfter(ctx context.Context, s *script, cmd []any) error {
	if p.replicas <= 0 {
		return s.run(ctx, p.rdb, cmd).Err()
	}
	c, acked := p.pipeWait(ctx, cmd)
	if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		if err := s.Load(ctx, p.rdb).Err(); err != nil {
			return c.Err()
		}
		c, acked = p.pipeWait(ctx, cmd)
	}
	if err := c.Err(); err != nil {
		return err
	}
	n, err := acked.Int64()
	if err != nil {
		return fmt.Errorf("WAIT: %w", err)
	}
	if n < int64(p.replicas) {
		return &notReplicatedError{asked: int64(p.replicas), acked: n}
	}
	return nil
}

// pipeWait sends cmd and WAIT in one pipeline: WAIT counts the replicas
// that acknowledged every write of its connection so far, cmd's included.
func (p *processor) pipeWait(ctx context.Context, cmd []any) (c, acked *redis.Cmd) {
	pipe := p.rdb.Pipeline()
	c = pipe.Do(ctx, cmd...)
	acked = pipe.Do(ctx, "wait", p.replicas, GuardReplicasTimeout.Milliseconds())
	_, _ = pipe.Exec(ctx) // each command's error is its own
	return c, acked
}

// warnFewReplicas logs one WARN when Redis's master reports fewer
// connected replicas than the worker asks to acknowledge its writes after
// a DigiCert 2xx: every such delivery will wait until enough are.
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
		w.log.Warn("could not read how many replicas Redis's master has; deliveries wait after each DigiCert 2xx until enough acknowledge its record",
			zap.String("redis", w.cfg.Redis.Target), zap.Int("guard_replicas", asked), zap.Error(err))
	case connected < asked:
		w.log.Warn("Redis's master has fewer replicas connected than CERTMAIL_GUARD_REPLICAS asks: deliveries will wait after each DigiCert 2xx "+
			"until enough acknowledge its duplicate guard; for a Redis without replicas, set CERTMAIL_GUARD_REPLICAS=0",
			zap.String("redis", w.cfg.Redis.Target), zap.Int("guard_replicas", asked), zap.Int("connected_replicas", connected))
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
