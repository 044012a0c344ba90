// Package worker consumes certmail's tasks from Redis and performs them
// against DigiCert CertCentral: one handler per task type behind an asynq
// ServeMux, retries with backoff for transient failures, a pause per account
// when DigiCert rejects the API key (ended by a probe, which first reads a
// key file again: keyfile.go), duplicate and stale-update guards (confirmed
// on Redis's replicas, when asked, before a delivery ends, waiting for
// them a bounded time: replicas.go), and
// the records of what cannot be delivered, written through package
// deadletter: the dead-letter stream (also for the tasks asynq archives
// after a worker died, which its lease sweep finds), and the parked set its
// unparker empties. A cancel through asynq, as the worker's stop, starts no
// new DigiCert call but lets the one in flight finish (cancel.go). Every
// outcome is logged and counted; see README "Retries" for
// the retry schedule and call budget. The worker imports nothing of the
// producer side (ops, api, scheduler), only the shared public package tasks
// and the shared records: it meets producers and operators only in Redis.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/buildinfo"
	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/queuestats"
	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/tasks"
)

// Config configures a worker. Zero values take the defaults noted.
type Config struct {
	Redis    *redisconn.Conn // required; the worker does not close its client
	Accounts account.Set     // required; every account has its key

	Concurrency       int            // handlers running at once; default 20
	Queues            map[string]int // weighted queues; default queues.Default
	MaxRetry          int            // the worker's cap on a task's retries; 0 means 12, negative means none
	ShutdownTimeout   time.Duration  // time in-flight deliveries and their guard writes get on shutdown; default 30s
	AdminAddr         string         // /healthz, /readyz, /metrics; "" for none
	DeadLetterMaxLen  int64          // approximate cap of certmail:deadletter; default 100000, never negative
	GuardRetention    time.Duration  // how long duplicate guards and applied sequences live; default 7 days
	AuthProbeInterval time.Duration  // pause between probes of a rejected key; default 1m, within MinAuthProbeInterval and MaxAuthProbeInterval
	RateLimitPause    time.Duration  // wait after a DigiCert 429; default 30s, within MinRateLimitPause and MaxRateLimitPause
	// GuardReplicas is how many replicas must acknowledge the round trip
	// after a DigiCert 2xx (the duplicate guard; for a set-emails, the
	// applied sequence) before the delivery ends, and the round trip
	// before a call (with it the task's dequeue) before the call is made,
	// WAIT sent with each (replicas.go); 0 means DefaultGuardReplicas (1 under Sentinel, none
	// otherwise), negative means none; at most MaxGuardReplicas. Under
	// Sentinel it must be the number of the master's replicas for an
	// orderly failover to lose none of these writes (replicas.go).
	GuardReplicas int
	// GuardWaitBound is how long a write fewer replicas than GuardReplicas
	// acknowledged is tried again before its delivery ends without them;
	// 0 means GuardReplicasWaitBound. Not a setting: tests shorten it.
	GuardWaitBound time.Duration
	// GuardProbeInterval is how often a worker short of replicas sends a
	// WAIT of its own to end the shortage; 0 means
	// ShortReplicasProbeInterval. Not a setting: tests shorten it.
	GuardProbeInterval time.Duration
	// TaskCheckInterval is how often asynq looks for a task while every
	// queue was found empty (it does not wait while tasks come); default
	// DefaultTaskCheckInterval, within MinTaskCheckInterval and
	// MaxTaskCheckInterval.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often tasks due for a retry or a
	// scheduled run are moved to their queue; default asynq's 5s.
	DelayedTaskCheckInterval time.Duration
	// Profiling serves net/http/pprof's profiles under /debug/pprof/ on
	// AdminAddr too; off by default.
	Profiling bool
	// RateLimitCheckInterval is how often the worker records in Redis the
	// windows it enforces per account, and compares them with those other
	// workers recorded (ratelimits.go); default
	// DefaultRateLimitCheckInterval.
	RateLimitCheckInterval time.Duration

	// Client tunes the DigiCert client (timeouts, in-call retries); its
	// BaseURL, APIKey, UserAgent, Limiter and Observer are set per account.
	Client digicert.Config

	// AfterDelivery, when set, runs after a successful DigiCert call and the
	// write of its duplicate guard (of a set-emails: with its applied sequence),
	// before the task is marked complete: tests
	// use it to stop a worker in exactly that window.
	AfterDelivery func(ctx context.Context, taskID string)

	Logger   *zap.Logger          // required
	Registry *prometheus.Registry // optional; a new one with Go and process collectors otherwise
}

// Default values of Config.
const (
	DefaultConcurrency       = 20
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultGuardRetention    = 7 * 24 * time.Hour
	DefaultAuthProbeInterval = time.Minute
	DefaultRateLimitPause    = 30 * time.Second
	// DefaultTaskCheckInterval keeps the pickup of a task that arrives
	// while the queues are empty under 1.5 times it (asynq sleeps between
	// half and one and a half intervals), at a few Redis commands per second
	// per queue when idle.
	DefaultTaskCheckInterval = 50 * time.Millisecond
)

// Bounds of Config.TaskCheckInterval: below the minimum an idle worker
// polls Redis hundreds of times a second per queue; above the maximum a
// task waits minutes for an idle worker to notice it.
const (
	MinTaskCheckInterval = 10 * time.Millisecond
	MaxTaskCheckInterval = time.Minute
)

// MaxConcurrency is the most deliveries one worker process handles at
// once. DigiCert takes 100 requests per 5 s per key (20 a second) and a
// call lasts at most 20 s, so one key never keeps more than about 400
// calls in flight, however many slots wait for it; every slot costs a warm
// goroutine, started before the worker says it started. A value beyond it
// is a typo, not a deployment: 1 000 000 grew a worker by 0.5 GB a second.
const MaxConcurrency = 1000

// Bounds of Config.RateLimitPause: below the minimum a 429 is answered by
// more requests within DigiCert's own 5-second window; above the maximum
// the pause would be cut to the cool-down's ceiling anyway.
const (
	MinRateLimitPause = time.Second
	MaxRateLimitPause = maxCoolDown
)

// Bounds of Config.AuthProbeInterval: below the minimum a rejected key is
// tried again faster than DigiCert's answer comes back; above the maximum
// an account whose key was fixed stays paused for hours.
const (
	MinAuthProbeInterval = time.Second
	MaxAuthProbeInterval = time.Hour
)

// WithDefaults returns c with zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	c.Concurrency = cmp.Or(c.Concurrency, DefaultConcurrency)
	if len(c.Queues) == 0 {
		c.Queues, _ = queues.Parse(queues.Default) // a constant that parses (queues' own test)
	}
	c.MaxRetry = cmp.Or(c.MaxRetry, tasks.DefaultMaxRetry)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.DeadLetterMaxLen = cmp.Or(c.DeadLetterMaxLen, deadletter.DefaultMaxLen)
	c.GuardRetention = cmp.Or(c.GuardRetention, DefaultGuardRetention)
	c.GuardReplicas = cmp.Or(c.GuardReplicas, DefaultGuardReplicas(c.Redis))
	c.GuardWaitBound = cmp.Or(c.GuardWaitBound, GuardReplicasWaitBound)
	c.GuardProbeInterval = cmp.Or(c.GuardProbeInterval, ShortReplicasProbeInterval)
	c.AuthProbeInterval = cmp.Or(c.AuthProbeInterval, DefaultAuthProbeInterval)
	c.RateLimitPause = cmp.Or(c.RateLimitPause, DefaultRateLimitPause)
	c.TaskCheckInterval = cmp.Or(c.TaskCheckInterval, DefaultTaskCheckInterval)
	c.RateLimitCheckInterval = cmp.Or(c.RateLimitCheckInterval, DefaultRateLimitCheckInterval)
	if c.Registry == nil {
		c.Registry = admin.NewRegistry()
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Redis == nil:
		return errors.New("no Redis configured")
	case len(c.Accounts) == 0:
		return errors.New("no DigiCert account configured")
	case c.Logger == nil:
		return errors.New("no logger")
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return fmt.Errorf("concurrency %d: want %s", c.Concurrency, ranges.Of(1, MaxConcurrency))
	case c.ShutdownTimeout < 0 || c.GuardRetention < 0 || c.RateLimitCheckInterval < 0 || c.GuardProbeInterval < 0:
		return errors.New("durations must not be negative")
	case c.AuthProbeInterval < MinAuthProbeInterval || c.AuthProbeInterval > MaxAuthProbeInterval:
		return fmt.Errorf("auth probe interval %s: want %s", ranges.Duration(c.AuthProbeInterval), ranges.Of(MinAuthProbeInterval, MaxAuthProbeInterval))
	case c.RateLimitPause < MinRateLimitPause || c.RateLimitPause > MaxRateLimitPause:
		return fmt.Errorf("rate-limit pause %s: want %s", ranges.Duration(c.RateLimitPause), ranges.Of(MinRateLimitPause, MaxRateLimitPause))
	case c.GuardReplicas > MaxGuardReplicas:
		return fmt.Errorf("guard replicas %d: want at most %d", c.GuardReplicas, MaxGuardReplicas)
	case c.DeadLetterMaxLen < 0: // go-redis would send no MAXLEN: the stream would grow without bound
		return fmt.Errorf("dead-letter cap %d: must not be negative", c.DeadLetterMaxLen)
	case c.TaskCheckInterval < MinTaskCheckInterval || c.TaskCheckInterval > MaxTaskCheckInterval:
		return fmt.Errorf("task check interval %s: want %s", ranges.Duration(c.TaskCheckInterval), ranges.Of(MinTaskCheckInterval, MaxTaskCheckInterval))
	}
	for q, w := range c.Queues {
		if w < 1 || w > queues.MaxWeight {
			return fmt.Errorf("queue %q weight %d: want a weight from 1 to %d", q, w, queues.MaxWeight)
		}
		if err := queues.CheckServed(q); err != nil {
			return err
		}
	}
	for name, a := range c.Accounts {
		if a.APIKey.Reveal() == "" {
			return fmt.Errorf("account %s: %w", name, account.ErrNoKey)
		}
		if err := (ratelimit.Config{Windows: a.RateLimits}).Validate(); err != nil {
			return fmt.Errorf("account %s: %w", name, err)
		}
	}
	return nil
}

// Worker is a configured worker process.
type Worker struct {
	cfg     Config
	rdb     redis.UniversalClient
	proc    *processor
	errs    *errorHandler
	metrics *metrics
	log     *zap.Logger
	doneLog *zap.Logger // the "task done" lines: all logged at one place, so without a caller
	// throttle holds back the repeats of the lines that loops log each time
	// Redis fails them: asynq's, the unparker's and the lease sweep's.
	throttle *logging.Throttle
	// running are the deliveries running, those asynq cancelled and no
	// longer waits for too: the stop waits for them.
	running deliveries
}

// New builds a worker from cfg (after WithDefaults and Validate).
func New(cfg Config) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rdb := cfg.Redis.Client
	m := newMetrics(cfg.Registry, rdb, cfg.Accounts.Names())
	served := make([]string, 0, len(cfg.Queues))
	for q := range cfg.Queues {
		served = append(served, q)
	}
	stats, err := queuestats.New(queuestats.Config{Redis: rdb, DeadLetterStream: deadletter.Stream, Served: served, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := cfg.Registry.Register(stats); err != nil {
		return nil, fmt.Errorf("register queue metrics: %w", err)
	}
	p := &processor{
		rdb:            rdb,
		accounts:       map[string]*accountRuntime{},
		log:            cfg.Logger,
		metrics:        m,
		retention:      cfg.GuardRetention,
		replicas:       max(cfg.GuardReplicas, 0),
		replicaBound:   cfg.GuardWaitBound,
		behindGap:      handBackGap(cfg.retryCheckInterval(), cfg.TaskCheckInterval),
		guard:          replicaGuard{gauge: m.replicasShort},
		rateLimitPause: cfg.RateLimitPause,
		afterDelivery:  cfg.AfterDelivery,
	}
	p.stopped, p.stopCalls = context.WithCancel(context.Background())
	p.abandoned, p.abandon = context.WithCancel(context.Background())
	for name, a := range cfg.Accounts {
		cc := cfg.Client
		cc.BaseURL = a.BaseURL
		cc.APIKey = a.APIKey.Reveal()
		cc.UserAgent = buildinfo.UserAgent()
		cc.Observer = observer{m: m, account: name}
		waits := m.limiterWaits.WithLabelValues(name)
		// A call's attempts end within its MaxElapsed; Timeout covers the
		// work between the admission and the call's start.
		call := cc.WithDefaults()
		limiter := ratelimit.NewLimiter(rdb, ratelimit.Config{Account: name, Windows: a.RateLimits,
			InFlight: max(ratelimit.DefaultInFlight, call.MaxElapsed+call.Timeout),
			OnWait:   func(d time.Duration) { waits.Observe(d.Seconds()) }})
		cc.Limiter = stopLimiter{Limiter: limiter, p: p}
		client, err := digicert.New(cc)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", name, err)
		}
		rt := &accountRuntime{name: name, client: client, limiter: limiter,
			gate: newAuthGate(rdb, name, cfg.AuthProbeInterval)}
		if p.replicas > 0 {
			rt.gate.replicated = p.runWaited
		}
		if a.KeyFile != "" {
			rt.keyFile = &keyFile{account: name, path: a.KeyFile, client: client, log: cfg.Logger, key: a.APIKey}
		}
		p.accounts[name] = rt
	}
	return &Worker{
		cfg:  cfg,
		rdb:  rdb,
		proc: p,
		errs: &errorHandler{rdb: rdb, log: cfg.Logger, metrics: m, maxLen: cfg.DeadLetterMaxLen, isFailure: IsFailure,
			maxRetry: cfg.retryCap(), parked: make(chan struct{}, 1)},
		metrics:  m,
		log:      cfg.Logger,
		doneLog:  cfg.Logger.WithOptions(zap.WithCaller(false)),
		throttle: logging.NewThrottle(0, nil),
	}, nil
}

// retryCap is the most retries the worker gives any task: MaxRetry, 0 when
// negative. A task's own MaxRetry applies when lower.
func (c Config) retryCap() int { return max(c.MaxRetry, 0) }

// handlers returns the handler of each task type: the one table that
// Handler builds its mux and its set of known types from. Every type of
// tasks.Types() has an entry (TestHandlersCoverTypes).
func (p *processor) handlers() map[string]asynq.HandlerFunc {
	return map[string]asynq.HandlerFunc{
		tasks.TypeSetEmails:       p.handleSetEmails,
		tasks.TypeResendDCV:       p.handleResendDCV,
		tasks.TypeSendCert:        p.handleSendCert,
		tasks.TypeResendDomainDCV: p.handleResendDomainDCV,
	}
}

// Handler returns the task handler: an asynq ServeMux with one handler per
// task type, wrapped in the logging and metrics middleware. Task types the
// worker has no handler for are dead-lettered rather than retried. Each
// delivery runs on its detached context (cancel.go): asynq's cancel holds
// back its next DigiCert call but does not cut the one in flight.
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.Use(w.observe)
	table := w.proc.handlers()
	for typ, h := range table {
		mux.HandleFunc(typ, h)
	}
	maxRetry := w.cfg.retryCap()
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if _, known := table[t.Type()]; !known {
			return permanent("unknown_type", 0, fmt.Errorf("task type %.64q: %w", t.Type(), tasks.ErrUnknownType))
		}
		defer w.running.begin(taskID(ctx))()
		ctx, cancel := detach(ctx, w.proc.abandoned)
		defer cancel()
		err := mux.ProcessTask(ctx, t)
		if err != nil && cancelled(ctx) && w.proc.abandoned.Err() == nil {
			w.cancelledEnded(ctx, t, err)
		}
		if retried, _ := asynq.GetRetryCount(ctx); retried >= maxRetry && IsFailure(err) {
			// The worker's cap is lower than the task's own: stop here.
			return exhausted(err)
		}
		return err
	})
}

// cancelledEnded logs the end of a delivery asynq cancelled, err being
// how it ended: asynq reported the cancel to the error handler already,
// and reports nothing of this end. A success is logged as any other
// ("task done"); a delivery the worker's stop gave up on is not (asynq
// cancels those too, once it has handed them back).
func (w *Worker) cancelledEnded(ctx context.Context, t *asynq.Task, err error) {
	te := &taskError{code: "internal", err: err}
	errors.As(err, &te)
	queue, _ := asynq.GetQueueName(ctx)
	w.log.Info("cancelled delivery ended", append([]zap.Field{zap.String("task_id", taskID(ctx)),
		zap.String("task_type", deadletter.Clip(t.Type(), maxLabelLength)), zap.String("queue", queue),
		zap.String("error_code", te.code), zap.Int("http_status", te.status), zap.String("error", te.Error())},
		subject(t.Payload())...)...)
}

// doneFields is the most fields a "task done" line has: nine, three ids and
// the order status.
const doneFields = 13

// observe is the middleware that counts deliveries in flight and logs each
// success (failures are logged once, by the error handler).
func (w *Worker) observe(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		rep := &report{}
		ctx = context.WithValue(ctx, reportKey{}, rep)
		typ := w.metrics.taskType(t.Type())
		inFlight := w.metrics.inFlight.WithLabelValues(typ)
		inFlight.Inc()
		start := time.Now()
		err := next.ProcessTask(ctx, t)
		elapsed := time.Since(start)
		inFlight.Dec()
		w.metrics.taskDuration.WithLabelValues(typ).Observe(elapsed.Seconds())
		if err == nil {
			w.metrics.tasks.WithLabelValues(typ, rep.outcome).Inc()
			id := taskID(ctx)
			retried, _ := asynq.GetRetryCount(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			// One allocation: room for the ids and the order status too.
			fields := append(make([]zap.Field, 0, doneFields), zap.String("task_id", id), zap.String("task_type", t.Type()),
				zap.String("queue", queue), zap.String("account", rep.account), zap.String("outcome", rep.outcome),
				zap.Int("http_status", rep.httpStatus), zap.Int("attempt", retried+1),
				zap.Int("digicert_calls", rep.calls), zap.Duration("duration", elapsed))
			fields = idFields(fields, rep.orderID, rep.certID, rep.domainID)
			if rep.orderStatus != "" {
				fields = append(fields, zap.String("order_status", rep.orderStatus))
			}
			w.doneLog.Info("task done", fields...)
		}
		return err
	})
}

// Run serves the admin endpoints, waits for Redis, warns of a master with
// fewer replicas than GuardReplicas or a Redis that refuses WAIT, starting
// short of replicas then, and of one with more (warnFewReplicas), and of queues whose
// tasks wait and that it does not serve (warnUnserved), then processes tasks
// until ctx is done; then it stops fetching, gives the DigiCert calls in
// flight the shutdown timeout to finish and hands the rest back to their
// queues: a delivery starts no new call once the worker is stopping.
// While it waits for Redis, /healthz answers 200 (the process is alive: a
// liveness probe must not restart it) and /readyz 503; /readyz answers 200
// once tasks are processed and Redis answers, and 503 again from the
// moment it stops fetching (the cause logged: "stopping"). started, when not nil, is
// called with the admin address once the worker is processing. A ctx done
// while Redis is awaited ends Run without an error.
func (w *Worker) Run(ctx context.Context, started func(adminAddr net.Addr)) (runErr error) {
	var processing, stopping atomic.Bool
	ready := func(ctx context.Context) error {
		switch {
		case stopping.Load():
			return errStopping
		case !processing.Load():
			return errWaiting
		}
		return w.rdb.Ping(ctx).Err()
	}
	var opts []admin.Option
	if w.cfg.Profiling {
		opts = append(opts, admin.WithProfiling())
	}
	adm, err := admin.Start(w.cfg.AdminAddr, ready, w.cfg.Registry, w.log, opts...)
	if err != nil {
		return err
	}
	stopped := false // the admin server, by the end of a normal run
	defer func() {
		if !stopped {
			runErr = errors.Join(runErr, adm.Stop(5*time.Second))
		}
	}()
	adminAddr := adm.Addr()
	if err := w.cfg.Redis.Wait(ctx, w.log.With(zap.String("admin_addr", addrString(adminAddr)))); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w.cfg.Redis.CheckEviction(ctx, w.log, evictionRisk)
	w.warnFewReplicas(ctx)
	w.warnUnserved(ctx)
	defer w.cfg.Redis.WatchOutages(w.log)()
	srv := w.newServer()
	warm := newWarmPool(w.cfg.Concurrency, w.log)
	defer warm.stop()
	if err := srv.Start(warm.wrap(w.Handler())); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	processing.Store(true)
	w.log.Info("worker started", zap.String("redis", w.cfg.Redis.Target),
		zap.Int("concurrency", w.cfg.Concurrency), zap.Any("queues", w.cfg.Queues),
		zap.Strings("accounts", w.cfg.Accounts.Names()), zap.String("admin_addr", addrString(adminAddr)),
		zap.Int("guard_replicas", w.proc.replicas),
		zap.Bool("profiling", w.cfg.Profiling && adminAddr != nil), zap.String("version", buildinfo.Version))
	if started != nil {
		started(adminAddr)
	}

	// Last: the lines held back are counted once the loops have stopped.
	defer w.throttle.Flush(w.log)
	defer w.background(ctx)()

	select {
	case <-ctx.Done():
	case <-adm.Done():
	}
	stopping.Store(true)
	w.shutdown(srv)
	stopped = true
	err = adm.Stop(5 * time.Second) // and why it ended, if it did by itself
	w.log.Info("worker stopped")
	return err
}

// newServer is the asynq server that runs the worker's deliveries.
func (w *Worker) newServer() *asynq.Server {
	return asynq.NewServer(w.cfg.Redis.Opt, asynq.Config{
		Concurrency:       w.cfg.Concurrency,
		Queues:            w.cfg.Queues,
		RetryDelayFunc:    retryDelayFunc,
		IsFailure:         IsFailure,
		ErrorHandler:      w.errs,
		Logger:            asynqLogger{s: w.log.Sugar().Named("asynq"), throttle: w.throttle},
		LogLevel:          asynq.WarnLevel,
		ShutdownTimeout:   w.cfg.ShutdownTimeout,
		TaskCheckInterval: w.cfg.TaskCheckInterval,

		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
	})
}

// shutdown stops srv: no new deliveries or DigiCert calls, calls in flight
// get the shutdown timeout (those of deliveries asynq cancelled, which it
// no longer waits for, too), and the writes of deliveries asynq gave up on
// get what is left of it. asynq's own last writes (its server state, the
// janitor's) wait for go-redis's timeouts and retries when Redis stalls,
// a minute or more: the worker waits for them only until the deadline and
// a grace, and then names, one ERROR line each, the deliveries still
// running, whose outcome it could not record.
func (w *Worker) shutdown(srv *asynq.Server) {
	w.proc.stopping.Store(true) // deliveries start no new DigiCert call
	w.proc.stopCalls()          // and calls waiting for a slot for their first request send none
	w.log.Info("shutting down: no new deliveries or DigiCert calls; calls in flight get the shutdown timeout",
		zap.Duration("shutdown_timeout", w.cfg.ShutdownTimeout))
	deadline := time.Now().Add(w.cfg.ShutdownTimeout)
	asynqDone := make(chan struct{})
	go func() {
		defer close(asynqDone)
		srv.Shutdown()
	}()
	closedBy(asynqDone, deadline)
	// Deliveries asynq no longer waits for (cancelled: their call in
	// flight finishes) get the rest of the shutdown timeout.
	w.running.wait(deadline)
	// Deliveries whose DigiCert call succeeded while Redis was away may
	// still be writing their duplicate guard, some of them no longer
	// waited for by asynq (their lease ended): they get the rest of the
	// shutdown timeout.
	w.proc.pending.wait(deadline, abandonGrace)
	asynqStopped := closedBy(asynqDone, time.Now().Add(abandonGrace))
	// The calls still running are cut, once asynq has handed their tasks
	// back, as asynq's own give-up cut those of the deliveries it waited for;
	// each is named, whatever kept it (a call past the timeout, a cancelled
	// delivery's call, Redis not answering).
	left := w.running.running()
	w.proc.abandon()
	if !asynqStopped {
		w.log.Error("asynq did not stop within the shutdown timeout (Redis does not answer its last writes); the worker stops without it",
			zap.Duration("shutdown_timeout", w.cfg.ShutdownTimeout))
	}
	for _, id := range left {
		w.log.Error("the worker stopped before this delivery ended: its outcome is not recorded; "+
			"if its DigiCert call succeeded, a redelivery would email again", zap.String("task_id", id))
	}
}

// closedBy waits for done until deadline and reports whether it closed.
func closedBy(done <-chan struct{}, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

// background starts the worker's loops beside asynq's server: the
// unparker and the lease sweep, which keep going until the returned stop is
// called (once asynq has stopped, so that they see its last failures), and
// the rate-limit settings check and, when the worker asks replicas to
// acknowledge its guards, the probe that ends a shortage of them
// (probeReplicas), which end with ctx. stop waits for all of them.
func (w *Worker) background(ctx context.Context) (stop func()) {
	loopsCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	checkCtx, stopCheck := context.WithCancel(ctx)
	var loops sync.WaitGroup
	u := &unparker{rdb: w.rdb, log: w.log, throttle: w.throttle, interval: w.unparkInterval(), wake: w.errs.parked, lost: w.errs.lostParked}
	loops.Go(func() { u.run(loopsCtx) })
	sweep := newLeaseSweep(w.rdb, w.errs, slices.Sorted(maps.Keys(w.cfg.Queues)), w.unparkInterval())
	sweep.throttle = w.throttle
	loops.Go(func() { sweep.run(loopsCtx) })
	loops.Go(func() { newRateLimitCheck(w.proc.accounts, w.cfg.RateLimitCheckInterval, w.log).run(checkCtx) })
	if w.proc.replicas > 0 {
		loops.Go(func() { w.proc.probeReplicas(checkCtx, w.cfg.GuardProbeInterval) })
	}
	return func() {
		stopCheck()
		stopLoops()
		loops.Wait()
	}
}

// abandonGrace is how long a stopping worker waits, past its shutdown
// timeout, for the writes it gave up on to log so.
const abandonGrace = time.Second

// evictionRisk is what a worker gets wrong when Redis evicts its keys.
const evictionRisk redisconn.EvictionRisk = "an evicted duplicate guard lets a redelivered task email again; " +
	"an evicted order lock or applied sequence lets two set-emails of an order run at once or an older address list win; " +
	"evicted limiter windows or cool-down let the workers exceed DigiCert's rate limits (429s, the key blocked for everyone)"

// /readyz's causes while the worker does not process tasks: errWaiting
// before it starts (it is still waiting for Redis), errStopping once it
// stops fetching, until it ends (Redis may be fine).
var (
	errWaiting  = errors.New("waiting for Redis")
	errStopping = errors.New("stopping")
)

// unparkInterval is how often parked tasks are looked for besides the looks
// after this worker's own parks, and tasks archived after a lost lease: as
// often as asynq looks for tasks due for a retry.
func (w *Worker) unparkInterval() time.Duration { return w.cfg.retryCheckInterval() }

// retryCheckInterval is how often asynq moves the tasks due for a retry
// or a scheduled run to their queue.
func (c Config) retryCheckInterval() time.Duration {
	if d := c.DelayedTaskCheckInterval; d > 0 {
		return d
	}
	return 5 * time.Second // asynq's default DelayedTaskCheckInterval
}

// asynqLogger routes asynq's own log lines through zap, each cut to
// maxAsynqLine bytes: asynq names a task by its id, which a raw producer
// may make as long as it likes. asynq's Fatal is logged as an error: only
// main may end the process. Its warnings and errors go through the
// worker's throttle: while Redis is away, each of asynq's loops fails again
// every few seconds, and a line per failure would bury everything else.
type asynqLogger struct {
	s        *zap.SugaredLogger
	throttle *logging.Throttle
}

// maxAsynqLine is the most bytes of one asynq log line kept.
const maxAsynqLine = 1024

// asynqLine is the line asynq logs with args, cut to maxAsynqLine.
func asynqLine(args []any) string { return deadletter.Clip(fmt.Sprint(args...), maxAsynqLine) }

func (l asynqLogger) Debug(args ...any) { l.s.Debug(asynqLine(args)) }
func (l asynqLogger) Info(args ...any)  { l.s.Info(asynqLine(args)) }

// Warn demotes asynq's "Retry exhausted" line to debug: the error handler
// has logged the dead letter once, at ERROR, with its reason.
func (l asynqLogger) Warn(args ...any) {
	msg := asynqLine(args)
	if strings.HasPrefix(msg, "Retry exhausted for task") {
		l.s.Debug(msg)
		return
	}
	l.log(zapcore.WarnLevel, []any{msg})
}
func (l asynqLogger) Error(args ...any) { l.log(zapcore.ErrorLevel, args) }
func (l asynqLogger) Fatal(args ...any) { l.log(zapcore.ErrorLevel, args) }

// log writes a line unless the same message (but for its addresses, counts
// and ids) was written within the throttle's period; the next one written
// says how many were held back.
func (l asynqLogger) log(level zapcore.Level, args []any) {
	msg := asynqLine(args)
	ok, n := l.throttle.Allow(logging.Key(level, msg))
	switch {
	case !ok:
	case n > 0:
		l.s.Logw(level, msg, "suppressed", n)
	default:
		l.s.Log(level, msg)
	}
}

// addrString is a listen address for logs; "none" without an admin server.
func addrString(a net.Addr) string {
	if a == nil {
		return "none"
	}
	return a.String()
}
