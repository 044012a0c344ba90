package scheduler

import (
	"context"
	"errors"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/redisconn"
)

// trouble is a failure of something the scheduler tries again at every
// round (every 200 ms), such as a key of another application's or an ACL
// refusal that lasts until someone acts: it is logged at WARN when it
// starts and when its error changes, and at INFO when a try succeeds again,
// never at each try. Errors of a Redis out of reach (redisconn.Unreachable)
// are left to the outage's own lines (redisconn.WatchOutages), which say
// when it starts and ends: they neither start, change nor end a trouble;
// nor does a try cut short as the scheduler stops (context.Canceled).
type trouble struct {
	msg     string // the WARN line's message
	cleared string // the INFO line's message
	// key tells the error last logged from another (logging.Key of its
	// text: addresses, ports and counts aside); "" while none lasts.
	key string
	err error // the error last logged; nil while none lasts
}

// note takes the outcome of a try, err (nil: it succeeded), and logs
// through log, with fields, what it starts, changes or ends.
func (t *trouble) note(log *zap.Logger, err error, fields ...zap.Field) {
	switch {
	case redisconn.Unreachable(err) || errors.Is(err, context.Canceled):
		return
	case err == nil:
		if t.err != nil {
			log.Info(t.cleared, fields...)
		}
		t.key, t.err = "", nil
		return
	}
	key := logging.Key(zapcore.WarnLevel, err.Error())
	if key != t.key {
		log.Warn(t.msg, append(fields, zap.Error(err))...)
	}
	t.key, t.err = key, err
}

// lasting returns the error of the trouble that lasts; nil for none.
func (t *trouble) lasting() error { return t.err }
