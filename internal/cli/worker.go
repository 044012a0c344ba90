package cli

import (
	"errors"
	"time"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/internal/worker"
)

// WorkerCmd consumes tasks and calls DigiCert.
type WorkerCmd struct {
	RedisFlags
	AccountFlags
	LogFlags
	QueueFlags
	PollFlags
	Concurrency       int           `env:"CERTMAIL_CONCURRENCY" default:"${concurrency}" help:"Deliveries handled at once by this process (${concurrency_range})."`
	MaxRetry          int           `name:"max-retry" env:"CERTMAIL_MAX_RETRY" default:"${max_retry}" help:"Retries before a task is dead-lettered (the lower of this and the task's own; ${max_retry_range})."`
	AdminAddr         string        `name:"admin-addr" env:"CERTMAIL_ADMIN_ADDR" default:"${admin_addr}" help:"Address of /healthz, /readyz and /metrics (empty: none)."`
	ShutdownTimeout   time.Duration `name:"shutdown-timeout" env:"CERTMAIL_SHUTDOWN_TIMEOUT" default:"${worker_shutdown_timeout}" help:"Time in-flight deliveries get to finish on SIGTERM; the rest go back to the queue (${shutdown_timeout_range})."`
	DeadLetterMaxLen  int64         `name:"deadletter-maxlen" env:"CERTMAIL_DEADLETTER_MAXLEN" default:"${deadletter_maxlen}" help:"Approximate cap of the certmail:deadletter stream (${deadletter_maxlen_range})."`
	AuthProbeInterval time.Duration `name:"auth-probe-interval" env:"CERTMAIL_AUTH_PROBE_INTERVAL" default:"${auth_probe_interval}" help:"While DigiCert rejects an account's key, how often one delivery tries again (${auth_probe_interval_range})."`
	RateLimitPause    time.Duration `name:"rate-limit-pause" env:"CERTMAIL_RATE_LIMIT_PAUSE" default:"${rate_limit_pause}" help:"Wait after a DigiCert 429 before a task is tried again, doubled by repeated 429s up to ${max_rate_limit_pause} (${rate_limit_pause_range})."`
	DigiCertTimeout   time.Duration `name:"digicert-timeout" env:"DIGICERT_TIMEOUT" default:"${digicert_timeout}" help:"Timeout of one HTTP request to DigiCert (${digicert_timeout_range}, the budget of one call)."`
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
	if err := c.check(); err != nil {
		return worker.Config{}, err
	}
	if err := c.checkTimeout(); err != nil {
		return worker.Config{}, err
	}
	for _, err := range []error{ // the first, in one line
		inRange("CERTMAIL_CONCURRENCY", c.Concurrency, 1, worker.MaxConcurrency),
		inRange("CERTMAIL_MAX_RETRY", c.MaxRetry, 0, maxMaxRetry),
		inRange("CERTMAIL_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, minShutdownTimeout, maxShutdownTimeout),
		inRange("CERTMAIL_DEADLETTER_MAXLEN", c.DeadLetterMaxLen, 1, maxDeadLetterMaxLen),
		inRange("CERTMAIL_AUTH_PROBE_INTERVAL", c.AuthProbeInterval, worker.MinAuthProbeInterval, worker.MaxAuthProbeInterval),
		inRange("CERTMAIL_RATE_LIMIT_PAUSE", c.RateLimitPause, worker.MinRateLimitPause, worker.MaxRateLimitPause),
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
		GuardReplicas:     c.guardReplicas(),
		Client:            digicert.Config{Timeout: c.DigiCertTimeout},
		Logger:            log,
	}, nil
}

// checkTimeout refuses a DIGICERT_TIMEOUT outside digicert.MinTimeout to
// the budget of one call: a shorter attempt may be cut while DigiCert acts
// on it, and retried, and each attempt's timeout comes out of the call's
// budget, so a longer one would change nothing.
func (c *WorkerCmd) checkTimeout() error {
	if d := c.DigiCertTimeout; d < digicert.MinTimeout || d > digicert.DefaultMaxElapsed {
		return usagef("DIGICERT_TIMEOUT: %s: want %s: at least what a call to DigiCert is given to start in, at most the budget of one call",
			ranges.Duration(d), ranges.Of(digicert.MinTimeout, digicert.DefaultMaxElapsed))
	}
	return nil
}

// maxRetryConfig maps the flag (0 = no retries) onto worker.Config (0 = default).
func maxRetryConfig(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
