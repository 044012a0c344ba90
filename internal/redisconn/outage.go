package redisconn

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/logging"
)

// WatchOutages logs, through log, when Redis stops answering the Conn's
// go-redis client and when it answers again, so that an outage has a first
// and a last line whatever the loops that met it log meanwhile:
//
//	WARN "Redis is not answering; certmail keeps trying"  a failed command's error
//	INFO "Redis is answering again"                       down_for, failed_commands
//
// A command counts as failed when Redis did not answer it (a refused or
// broken connection, a read timeout, no connection free in time) or
// answered that it cannot serve (LOADING, MASTERDOWN); any answer, an error
// reply included, counts as answered. A command cut short by its caller's
// context, or by the client's closing, says nothing either way. asynq's own
// clients (built from Opt) are not watched.
//
// A Redis that comes and goes gets at most one WARN line per
// logging.ThrottlePeriod: an outage that starts sooner is logged once it
// has lasted until then (its INFO line follows), and one that ends before
// is counted in the next line's other_outages.
//
// The lines time an outage by the commands of the Conn's client, so a
// process watches it when its loops use the client every few seconds: the
// worker (its unparker) and the scheduler (its leader's rounds), not the
// API, whose enqueues go through asynq's client. Call it once Redis
// answered (after Wait), so that the wait is not an outage. stop ends the
// logging; with several watchers of one Conn, the first one still watching
// logs.
func (c *Conn) WatchOutages(log *zap.Logger) (stop func()) {
	c.watchOnce.Do(func() {
		c.watch = &outageWatch{target: c.Target, now: time.Now, period: logging.ThrottlePeriod}
		c.Client.AddHook(c.watch)
	})
	return c.watch.start(log)
}

// outageWatch is WatchOutages' go-redis hook.
type outageWatch struct {
	target string
	now    func() time.Time
	period time.Duration // at most one WARN line per period

	down atomic.Bool // a command failed and none was answered since: the only state a success reads

	mu         sync.Mutex
	logs       []*zap.Logger // the watchers' loggers; the first one logs, none: silent
	since      time.Time     // when the outage began
	failed     int           // commands failed in it
	logged     bool          // its WARN line was written
	lastWarn   time.Time     // when the last WARN line was written
	unreported int           // outages ended without a line since the last line
}

func (o *outageWatch) start(log *zap.Logger) func() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.logs = append(o.logs, log)
	var once sync.Once
	return func() {
		once.Do(func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			for i, l := range o.logs {
				if l == log {
					o.logs = append(o.logs[:i], o.logs[i+1:]...)
					break
				}
			}
		})
	}
}

func (o *outageWatch) DialHook(next redis.DialHook) redis.DialHook { return next }

func (o *outageWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		o.observe(err)
		return err
	}
}

func (o *outageWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		o.observe(err)
		return err
	}
}

// observe takes in one command's outcome.
func (o *outageWatch) observe(err error) {
	switch answer(err) {
	case answered:
		if o.down.Load() {
			o.answered()
		}
	case unanswered:
		o.failure(err)
	}
}

func (o *outageWatch) failure(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if !o.down.Load() {
		o.down.Store(true)
		o.since, o.failed, o.logged = now, 0, false
	}
	o.failed++
	if o.logged || len(o.logs) == 0 || (!o.lastWarn.IsZero() && now.Sub(o.lastWarn) < o.period) {
		return
	}
	o.logged, o.lastWarn = true, now
	fields := []zap.Field{zap.String("redis", o.target), zap.Error(err)}
	if d := now.Sub(o.since); d > 0 {
		fields = append(fields, zap.Duration("down_for", d.Round(time.Millisecond)))
	}
	fields = o.appendUnreported(fields)
	o.logs[0].Warn("Redis is not answering; certmail keeps trying", fields...)
}

func (o *outageWatch) answered() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down.Load() {
		return // another command's answer came first
	}
	o.down.Store(false)
	if !o.logged || len(o.logs) == 0 {
		o.unreported++
		return
	}
	fields := []zap.Field{zap.String("redis", o.target),
		zap.Duration("down_for", o.now().Sub(o.since).Round(time.Millisecond)), zap.Int("failed_commands", o.failed)}
	o.logs[0].Info("Redis is answering again", o.appendUnreported(fields)...)
}

// appendUnreported adds the outages ended without a line since the last
// line, and starts counting again.
func (o *outageWatch) appendUnreported(fields []zap.Field) []zap.Field {
	if o.unreported > 0 {
		fields = append(fields, zap.Int("other_outages", o.unreported))
		o.unreported = 0
	}
	return fields
}

type outcome int

const (
	undecided  outcome = iota // cut short by the caller: says nothing of Redis
	answered                  // Redis answered, an error reply included
	unanswered                // Redis did not answer, or cannot serve
)

// answer says what err, a command's error, tells of Redis.
func answer(err error) outcome {
	var reply redis.Error
	var opErr *net.OpError
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		return answered
	case errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed):
		return undecided
	case errors.As(err, &opErr):
		// Before DeadlineExceeded: a dial's timeout matches it too, and
		// is Redis not answering, not a caller giving up.
		return unanswered
	case errors.Is(err, context.DeadlineExceeded):
		return undecided
	case errors.As(err, &reply):
		if redis.HasErrorPrefix(err, "LOADING") || redis.HasErrorPrefix(err, "MASTERDOWN") {
			return unanswered
		}
		return answered
	}
	return unanswered // io.EOF, a pool timeout, a refused dial
}
