// Package ops performs the producer and operator actions on certmail's
// queues in Redis, for the HTTP API and the command line alike: enqueue a
// validated task (with an optional idempotency key), look a task up by id,
// and list, show, requeue and delete dead-lettered tasks.
//
// A dead-lettered task lives in two places: asynq's archive of its queue
// (where the dashboard shows it and from where it can run again) and an
// entry of the Redis stream certmail:deadletter (package deadletter, written
// by the worker, which keeps the error code and HTTP status). The
// dead-letter methods keep both in step.
package ops

import (
	"errors"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/tasks"
)

// ErrNotFound is wrapped by the errors of lookups that find nothing: an
// unknown task id, a task id without dead letter.
var ErrNotFound = errors.New("not found")

// ErrIdempotencyConflict is returned by Enqueue when an idempotency key is
// used again for a request that differs from the first.
var ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")

// ErrInvalidArgument is wrapped by the errors of DeadLetters for a limit out
// of range or a cursor that is not a stream entry id.
var ErrInvalidArgument = errors.New("invalid argument")

// DefaultIdempotencyTTL is how long an idempotency key is remembered unless
// Options says otherwise.
const DefaultIdempotencyTTL = 24 * time.Hour

// Options configure a Service. Zero values take the defaults noted.
type Options struct {
	// Rules are the configured accounts and served queues every request is
	// checked against (enqueue.Check); their zero value takes their
	// defaults.
	Rules enqueue.Rules
	// MaxRetry is the retries given to new tasks; 0 means
	// tasks.DefaultMaxRetry, a negative value none.
	MaxRetry int
	// Retention is how long the result of a completed task is kept; 0 means
	// tasks.DefaultRetention (CERTMAIL_RESULT_RETENTION).
	Retention time.Duration
	// IdempotencyTTL is how long an idempotency key is remembered; 0 means
	// DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// Logger reports what is skipped rather than failing a whole listing (a
	// malformed dead-letter entry); nil logs nothing.
	Logger *zap.Logger
}

func (o Options) withDefaults() Options {
	o.Rules = o.Rules.WithDefaults()
	switch {
	case o.MaxRetry == 0:
		o.MaxRetry = tasks.DefaultMaxRetry
	case o.MaxRetry < 0:
		o.MaxRetry = 0
	}
	if o.Retention <= 0 {
		o.Retention = tasks.DefaultRetention
	}
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Service performs producer and operator actions on certmail's queues in Redis.
// Its methods are safe for concurrent use.
type Service struct {
	opts      Options
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
}

// New returns a Service on conn. It does not take ownership of conn: Close
// closes only the asynq client and inspector the Service opened.
func New(conn *redisconn.Conn, opts Options) *Service {
	return &Service{
		opts:      opts.withDefaults(),
		rdb:       conn.Client,
		client:    asynq.NewClient(conn.Opt),
		inspector: asynq.NewInspector(conn.Opt),
	}
}

// MaxRetry returns the retries the Service gives new tasks.
func (s *Service) MaxRetry() int { return s.opts.MaxRetry }

// Close closes the Service's asynq client and inspector.
func (s *Service) Close() error {
	return errors.Join(s.client.Close(), s.inspector.Close())
}
