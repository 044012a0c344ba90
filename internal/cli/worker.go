package cli

import (
	"errors"
	"time"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/worker"
)

// WorkerCmd consumes tasks and calls DigiCert.
type WorkerCmd struct {
	RedisFlags
	AccountFlags
	LogFlags
	QueueFlags
	PollFlags
	Concurrency       int           `env:"CERTMAIL_CONCURRENCY" default:"${concurrency}" help:"Deliveries handled at once by this process."`
	MaxRetry          int           `name:"max-retry" env:"CERTMAIL_MAX_RETRY" default:"${max_retry}" help:"Retries before a task is dead-lettered (the lower of this and the task's own)."`
	AdminAddr         string        `name:"admin-addr" env:"CERTMAIL_ADMIN_ADDR" default:"${admin_addr}" help:"Address of /healthz, /readyz and /metrics (empty: none)."`
	ShutdownTimeout   time.Duration `name:"shutdown-timeout" env:"CERTMAIL_SHUTDOWN_TIMEOUT" default:"${worker_shutdown_timeout}" help:"Time in-flight deliveries get to finish on SIGTERM; the rest go back to the queue."`
	DeadLetterMaxLen  int64         `name:"deadletter-maxlen" env:"CERTMAIL_DEADLETTER_MAXLEN" default:"${deadletter_maxlen}" help:"Approximate cap of the certmail:deadletter stream."`
	AuthProbeInterval time.Duration `name:"auth-probe-interval" env:"CERTMAIL_AUTH_PROBE_INTERVAL" default:"${auth_probe_interval}" help:"While DigiCert rejects an account's key, how often one delivery tries again."`
	RateLimitPause    time.Duration `name:"rate-limit-pause" env:"CERTMAIL_RATE_LIMIT_PAUSE" default:"${rate_limit_pause}" help:"Wait after a DigiCert 429 before a task is tried again."`
	DigiCertTimeout   time.Duration `name:"digicert-timeout" env:"DIGICERT_TIMEOUT" default:"${digicert_timeout}" help:"Timeout of one HTTP request to DigiCert (at most ${digicert_max_elapsed}, the budget of one call)."`
	Pprof             bool          `name:"pprof" env:"CERTMAIL_PPROF" help:"Serve net/http/pprof's profiles under /debug/pprof/ on the admin address (never on the API's)."`
}

// Run starts the worker and blocks until SIGTERM/SIGINT.
func (c *WorkerCmd) Run(env *Env) (err error) {
	cfg, err := c.config(env)
	if err != nil {
		return err
	}
	if cfg.Redis, err = c.open(env); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cfg.Redis.Client.Close()) }()
	w, err := worker.New(cfg)
	if err != nil {
		return usageError{err}
	}
	return w.Run(env.Ctx, nil)
}

func (c *WorkerCmd) config(env *Env) (worker.Config, error) {
	log, err := c.logger(env)
	if err != nil {
		return worker.Config{}, err
	}
	queues, err := c.parseQueues()
	if err != nil {
		return worker.Config{}, err
	}
	if c.Concurrency < 1 {
		return worker.Config{}, usagef("CERTMAIL_CONCURRENCY: %d must be at least 1", c.Concurrency)
	}
	if c.MaxRetry < 0 {
		return worker.Config{}, usagef("CERTMAIL_MAX_RETRY: %d must not be negative", c.MaxRetry)
	}
	if err := c.check(); err != nil {
		return worker.Config{}, err
	}
	if c.DigiCertTimeout > digicert.DefaultMaxElapsed {
		// Each attempt's timeout comes out of the call's budget: a longer
		// one would change nothing.
		return worker.Config{}, usagef("DIGICERT_TIMEOUT: %v must be at most %v, the budget of one DigiCert call",
			duration(c.DigiCertTimeout), duration(digicert.DefaultMaxElapsed))
	}
	for _, err := range []error{ // the first, in one line
		mustBePositive("CERTMAIL_SHUTDOWN_TIMEOUT", c.ShutdownTimeout),
		mustBePositive("CERTMAIL_DEADLETTER_MAXLEN", c.DeadLetterMaxLen),
		mustBePositive("CERTMAIL_AUTH_PROBE_INTERVAL", c.AuthProbeInterval),
		mustBePositive("CERTMAIL_RATE_LIMIT_PAUSE", c.RateLimitPause),
		mustBePositive("DIGICERT_TIMEOUT", c.DigiCertTimeout),
		checkListenAddr("CERTMAIL_ADMIN_ADDR", c.AdminAddr),
	} {
		if err != nil {
			return worker.Config{}, err
		}
	}
	accounts, err := c.load(true)
	if err != nil {
		return worker.Config{}, err
	}
	return worker.Config{
		Accounts:          accounts,
		Concurrency:       c.Concurrency,
		Queues:            queues,
		MaxRetry:          maxRetryConfig(c.MaxRetry),
		ShutdownTimeout:   c.ShutdownTimeout,
		AdminAddr:         c.AdminAddr,
		Profiling:         c.Pprof,
		DeadLetterMaxLen:  c.DeadLetterMaxLen,
		AuthProbeInterval: c.AuthProbeInterval,
		RateLimitPause:    c.RateLimitPause,
		TaskCheckInterval: c.TaskCheckInterval,
		Client:            digicert.Config{Timeout: c.DigiCertTimeout},
		Logger:            log,
	}, nil
}

// maxRetryConfig maps the flag (0 = no retries) onto worker.Config (0 = default).
func maxRetryConfig(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
