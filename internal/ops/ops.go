// Package ops performs the producer and operator actions on certmail's
// queues in Redis, for the HTTP API, the command line and the scheduler
// alike: enqueue a task that enqueue.Check accepts (with an optional
// idempotency key, held as a lease, or a task id of the producer's), look a
// task up by id, and list, show, requeue and delete dead-lettered tasks.
// Every task has its id before it is sent to Redis, so that an enqueue
// whose answer was lost names the task it may have stored (EnqueueError).
//
// A dead-lettered task lives in two places: asynq's archive of its queue
// (where the dashboard shows it and from where it can run again) and an
// entry of the Redis stream certmail:deadletter (package deadletter, written
// by the worker, which keeps the error code and HTTP status). The
// dead-letter methods keep both in step: a purge deletes the entries of the
// queues it purges, and no others.
package ops

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/queues"
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
// of range or a cursor that is not a stream entry id, and matched by the
// *UnknownQueuesError of a purge that names a queue asynq has never known.
var ErrInvalidArgument = errors.New("invalid argument")

// DefaultIdempotencyTTL is how long an idempotency key is remembered unless
// Config says otherwise.
const DefaultIdempotencyTTL = 24 * time.Hour

// DefaultCleanupTimeout is the most time an Enqueue takes, unless Config
// says otherwise, to settle or release its idempotency key after a failed
// claim or enqueue: a few round trips, with room for a Redis that answers
// slowly.
const DefaultCleanupTimeout = 5 * time.Second

// Config configures a Service. Zero values take the defaults noted.
type Config struct {
	// Redis is where the queues are (required); the Service does not close
	// its client.
	Redis *redisconn.Conn
	// Rules are the configured accounts and served queues every request is
	// checked against (enqueue.Check); their zero value takes their
	// defaults.
	Rules enqueue.Rules
	// MaxRetry is the retries given to new tasks, and the workers' cap
	// (CERTMAIL_MAX_RETRY) by which a task's MaxRetry is shown; 0 means
	// tasks.DefaultMaxRetry, a negative value none.
	MaxRetry int
	// Retention is how long the result of a completed task is kept; 0 means
	// tasks.DefaultRetention (CERTMAIL_RESULT_RETENTION).
	Retention time.Duration
	// IdempotencyTTL is how long an idempotency key is remembered; 0 means
	// DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// PurgeQueues are the queues whose dead letters CheckPurge and Purge
	// delete (dlq purge); empty means Rules.Queues. Unlike the served
	// queues, they may include queues.Reserved: a raw producer's queue of
	// that name has dead letters too.
	PurgeQueues []string
	// CleanupTimeout is the most time an Enqueue with an idempotency key
	// takes to settle or release the key after its claim or enqueue failed,
	// kept out of the deadline of the Enqueue's context; 0 means
	// DefaultCleanupTimeout.
	CleanupTimeout time.Duration
	// Logger reports what is skipped rather than failing a whole listing (a
	// malformed dead-letter entry); nil logs nothing.
	Logger *zap.Logger
	// NewTaskID makes the id of a task whose request names none (every
	// request of the API and the command line); nil means uuid.NewString.
	// Tests set it to know an id before Enqueue uses it.
	NewTaskID func() string
}

// WithDefaults returns c with zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	c.Rules = c.Rules.WithDefaults()
	if len(c.PurgeQueues) == 0 {
		c.PurgeQueues = c.Rules.Queues
	}
	c.PurgeQueues = slices.Sorted(slices.Values(c.PurgeQueues))
	c.MaxRetry = cmp.Or(c.MaxRetry, tasks.DefaultMaxRetry)
	c.Retention = cmp.Or(c.Retention, tasks.DefaultRetention)
	c.IdempotencyTTL = cmp.Or(c.IdempotencyTTL, DefaultIdempotencyTTL)
	c.CleanupTimeout = cmp.Or(c.CleanupTimeout, DefaultCleanupTimeout)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.NewTaskID == nil {
		c.NewTaskID = uuid.NewString
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Redis == nil:
		return errors.New("no Redis configured")
	case c.Retention < 0 || c.IdempotencyTTL < 0 || c.CleanupTimeout < 0:
		return errors.New("durations must not be negative")
	}
	if err := c.Rules.Validate(); err != nil { // the queues served
		return err
	}
	for _, q := range c.PurgeQueues {
		if !tasks.ValidQueueName(q) {
			return fmt.Errorf("queue %.64q to purge: a name is %s", q, queues.NameRule)
		}
	}
	return nil
}

// Service performs producer and operator actions on certmail's queues in Redis.
// Its methods are safe for concurrent use.
type Service struct {
	opts      Config
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
}

// New returns a Service configured by cfg (after WithDefaults and Validate).
// Close closes only the asynq client and inspector the Service opens, not
// cfg.Redis.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{
		opts:      cfg,
		rdb:       cfg.Redis.Client,
		client:    asynq.NewClient(cfg.Redis.Opt),
		inspector: asynq.NewInspector(cfg.Redis.Opt),
	}, nil
}

// Queues returns the queues the Service enqueues into (Rules.Queues), sorted.
func (s *Service) Queues() []string { return slices.Clone(s.opts.Rules.Queues) }

// MaxRetry returns the retries the Service gives new tasks.
func (s *Service) MaxRetry() int { return max(s.opts.MaxRetry, 0) }

// Close closes the Service's asynq client and inspector.
func (s *Service) Close() error {
	return errors.Join(s.client.Close(), s.inspector.Close())
}
