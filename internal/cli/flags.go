package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
	"github.com/certmail/certmail/internal/worker"
)

// Bounds of the settings that no package bounds itself. Each is far from
// any value a deployment needs: a value beyond it is a typo, or cannot work.
const (
	// maxMaxRetry: retries back off to 4 h each, so 100 of them keep a
	// failing task out of the dead letters for more than two weeks.
	maxMaxRetry = 100
	// minShutdownTimeout: under a second, in-flight work is cut at once (a
	// delivery handed back while DigiCert acts on it is sent again);
	// maxShutdownTimeout: a DigiCert call lasts 20 s at most, a request a
	// few seconds, and an orchestrator kills a process long before an hour.
	minShutdownTimeout = time.Second
	maxShutdownTimeout = time.Hour
	// maxDeadLetterMaxLen: an entry holds up to 8 KiB of payload and 2 KiB
	// of error text, so 10 million of them could fill any Redis.
	maxDeadLetterMaxLen = 10_000_000
	// maxResultRetention: results live in Redis's memory; a month covers
	// any look at a task's outcome (the delivered markers live 7 days).
	maxResultRetention = 30 * 24 * time.Hour
	// minScheduleMinInterval: the scheduler fires at whole seconds, so a
	// shorter floor refuses nothing more than one second does.
	// schedule.MaxEvery, the longest interval a schedule may have, bounds
	// it above: a floor beyond it refuses every schedule.
	minScheduleMinInterval = time.Second
	// maxScheduleMax: the leader reads the state of every schedule again
	// after each change, and the dashboard and schedule list show them all.
	maxScheduleMax = 100_000
)

// mustBePositive refuses a setting of zero or less as a usage error naming
// it. At the command line a zero is not the package's default (the flag
// shows the default): taken as one, it would quietly mean something else
// than it says.
func mustBePositive[T int64 | time.Duration](setting string, v T) error {
	if v <= 0 {
		return usagef("%s: %v must be positive", setting, v)
	}
	return nil
}

// inRange refuses a setting outside lo to hi as a usage error naming it
// and the range, worded as every range is (ranges.Of): a value beyond the
// bounds documented for it cannot work, or would not be honoured.
func inRange[T ranges.Bounded](setting string, v, lo, hi T) error {
	if v < lo || v > hi {
		return usagef("%s: %s: want %s", setting, ranges.Value(v), ranges.Of(lo, hi))
	}
	return nil
}

// notEmpty refuses a setting given but empty, where empty has no meaning
// of its own: unset, it takes its default; set empty, it most likely came
// from a template or a variable that was not filled in.
func notEmpty(setting, v, example string) error {
	if strings.TrimSpace(v) == "" {
		return usagef("%s: empty; give %s, or unset it for the default", setting, example)
	}
	return nil
}

// checkListenAddr refuses an address nothing can listen on as a usage
// error naming its setting; an empty one is left to the command (none, or
// its default).
func checkListenAddr(setting, addr string) error {
	if addr == "" {
		return nil
	}
	if err := admin.CheckAddr(addr); err != nil {
		return usagef("%s: %v", setting, err)
	}
	return nil
}

// RedisFlags select the Redis server.
type RedisFlags struct {
	RedisURL string `name:"redis-url" env:"REDIS_URL" default:"${redis_url}" help:"Redis: redis://, rediss:// or redis-sentinel://." group:"Redis"`
}

// open opens the Redis of f, and sends go-redis's own messages to the
// command's logger from then on (Env.logRedisTo). A database the server
// does not have is refused here, before the command starts anything
// (redisconn.Conn.CheckDatabase), and so, for a one-shot command, is a
// user or password Redis refuses, or a password it asks for and the URL
// does not give (redisconn.Conn.CheckAccess), with what to check; a Redis
// that is down is left to the command, which waits for it or fails as it
// does, and so is a refused password to a service, which waits for it as
// for a Redis that is down. A one-shot command's clients give up on each
// Redis command within redisconn.OneShotCommandBound
// (redisconn.OpenOneShot).
func (f RedisFlags) open(env *Env) (*redisconn.Conn, error) {
	openURL, check := redisconn.Open, (*redisconn.Conn).CheckDatabase
	if env.oneShot {
		openURL, check = redisconn.OpenOneShot, (*redisconn.Conn).CheckAccess
	}
	c, err := openURL(f.RedisURL)
	if err != nil {
		return nil, usageError{err}
	}
	env.logRedisTo(env.log)
	env.redisConn = c
	if err := check(c, env.Ctx); err != nil {
		if redisconn.AuthRefused(err) {
			err = fmt.Errorf("%s: %w%s", env.setting("REDIS_URL"), err, env.advice(err))
		}
		return nil, errors.Join(usageError{err}, c.Client.Close())
	}
	return c, nil
}

// LogFlags configure the process logger.
type LogFlags struct {
	LogLevel  string `name:"log-level" env:"CERTMAIL_LOG_LEVEL" default:"${log_level}" enum:"debug,info,warn,error" help:"Log level (debug, info, warn, error)." group:"Logging"`
	LogFormat string `name:"log-format" env:"CERTMAIL_LOG_FORMAT" default:"${log_format}" enum:"json,console" help:"Log format (json, console)." group:"Logging"`
}

// logger builds the process logger on env.Stderr; go-redis's own messages
// go to it too once the command opens Redis (RedisFlags.open).
func (f LogFlags) logger(env *Env) (*zap.Logger, error) {
	l, err := logging.New(f.LogLevel, f.LogFormat, env.Stderr)
	if err != nil {
		return nil, usageError{err}
	}
	env.log = l
	return l, nil
}

// AccountFlags describe the DigiCert accounts.
type AccountFlags struct {
	APIKey       string `name:"digicert-api-key" env:"DIGICERT_API_KEY" help:"API key of the account \"default\" (prefer the _FILE form)." group:"DigiCert"`
	APIKeyFile   string `name:"digicert-api-key-file" env:"DIGICERT_API_KEY_FILE" type:"file" help:"File holding the API key of the account \"default\"." group:"DigiCert"`
	BaseURL      string `name:"digicert-base-url" env:"DIGICERT_BASE_URL" default:"${digicert_base_url}" help:"CertCentral base URL (EU: https://certcentral.digicert.eu/services/v2)." group:"DigiCert"`
	AccountsFile string `name:"digicert-accounts-file" env:"DIGICERT_ACCOUNTS_FILE" type:"file" help:"YAML file of named accounts (name, base_url, api_key_file, rate_limits)." group:"DigiCert"`
	RateLimits   string `name:"digicert-rate-limits" env:"DIGICERT_RATE_LIMITS" default:"${digicert_rate_limits}" help:"Request windows per API key, shared by all workers (LIMIT/PERIOD,..., LIMIT ${window_limit_range}, PERIOD ${window_period_range}; empty is refused, unset for the default)." group:"DigiCert"`
}

func (f AccountFlags) load(needKeys bool) (account.Set, error) {
	if err := notEmpty("DIGICERT_BASE_URL", f.BaseURL, "a CertCentral base URL such as "+account.DefaultBaseURL+" (US) or "+account.EUBaseURL+" (EU)"); err != nil {
		return nil, err
	}
	set, err := account.Load(account.Default{
		APIKey: f.APIKey, APIKeyFile: f.APIKeyFile, BaseURL: f.BaseURL, RateLimits: f.RateLimits,
	}, f.AccountsFile, needKeys)
	if err != nil {
		return nil, usageError{err}
	}
	return set, nil
}

// QueueFlags name the queues the workers serve. The commands that run a
// worker, enqueue or manage schedules read them, so that a task or schedule
// for any other queue is refused where it enters.
type QueueFlags struct {
	Queues string `name:"queues" env:"CERTMAIL_QUEUES" default:"${queues}" help:"Queues the workers serve, with weights (${queue_weight_range}); a task or schedule for another queue is refused." group:"Tasks"`
}

// PollFlags are the settings of a process that runs a worker.
type PollFlags struct {
	// Not an int with a default: nil when neither the flag nor the
	// variable is set, so that the worker picks the default for its Redis.
	GuardReplicas     *int          `name:"guard-replicas" env:"CERTMAIL_GUARD_REPLICAS" help:"Replicas that must acknowledge the duplicate guard written after DigiCert's 2xx before a delivery ends, and the round trip before a call before it is made (WAIT, ${guard_replicas_timeout} per try, tried again for ${guard_replicas_bound} at most; after that, and from the start when the master has fewer, deliveries end without waiting for replicas until enough acknowledge again), so that a failover cannot lose it or hand the task out again during the call (${guard_replicas_range}; default: 1 under redis-sentinel://, 0 otherwise; under Sentinel, set it to the number of the master's replicas)." group:"Redis"`
	TaskCheckInterval time.Duration `name:"task-check-interval" env:"CERTMAIL_TASK_CHECK_INTERVAL" default:"${task_check_interval}" help:"How often a worker whose queues are empty looks for new tasks (the longest a task waits to be picked up is about 1.5 times this; ${task_check_interval_range})." group:"Tasks"`
}

// check refuses an interval or a number of replicas outside the worker's
// bounds.
func (f PollFlags) check() error {
	if f.GuardReplicas != nil {
		if err := inRange("CERTMAIL_GUARD_REPLICAS", *f.GuardReplicas, 0, worker.MaxGuardReplicas); err != nil {
			return err
		}
	}
	return inRange("CERTMAIL_TASK_CHECK_INTERVAL", f.TaskCheckInterval, worker.MinTaskCheckInterval, worker.MaxTaskCheckInterval)
}

// guardReplicas is CERTMAIL_GUARD_REPLICAS as worker.Config takes it: 0
// (the default for the Redis: worker.DefaultGuardReplicas) when unset,
// negative (none) for 0.
func (f PollFlags) guardReplicas() int {
	switch {
	case f.GuardReplicas == nil:
		return 0
	case *f.GuardReplicas == 0:
		return -1
	}
	return *f.GuardReplicas
}

// parseQueues reads CERTMAIL_QUEUES ("critical=6,default=3,bulk=1") as a
// usage error.
func (f QueueFlags) parseQueues() (map[string]int, error) {
	qs, err := queues.Parse(f.Queues)
	if err != nil {
		return nil, usagef("CERTMAIL_QUEUES: %v", err)
	}
	return qs, nil
}

// queueNames returns the names of CERTMAIL_QUEUES, sorted.
func (f QueueFlags) queueNames() ([]string, error) {
	qs, err := f.parseQueues()
	if err != nil {
		return nil, err
	}
	return queues.Names(qs), nil
}

// PurgeQueueFlags name the queues whose dead letters dlq purge deletes:
// CERTMAIL_QUEUES as the workers read it, or names alone, since weights
// mean nothing to a purge.
type PurgeQueueFlags struct {
	Queues string `name:"queues" env:"CERTMAIL_QUEUES" default:"${queues}" help:"Queues whose dead letters to delete: names (bulk,default), or the workers' list with weights (${queue_weight_range}), which are checked and then ignored." group:"Tasks"`
}

// queueNames returns the names of the queues to purge, sorted.
func (f PurgeQueueFlags) queueNames() ([]string, error) {
	names, err := queues.ParseNames(f.Queues)
	if err != nil {
		return nil, usagef("CERTMAIL_QUEUES: %v", err)
	}
	return names, nil
}

// ScheduleRuleFlags are the rules schedules are judged by.
type ScheduleRuleFlags struct {
	MinInterval time.Duration `name:"schedule-min-interval" env:"CERTMAIL_SCHEDULE_MIN_INTERVAL" default:"${schedule_min_interval}" help:"Shortest time allowed between two ticks of a schedule (${schedule_min_interval_range}, the longest interval a schedule may have)." group:"Schedules"`
}

// check reports a floor that cannot work, as a usage error.
func (f ScheduleRuleFlags) check() error {
	return inRange("CERTMAIL_SCHEDULE_MIN_INTERVAL", f.MinInterval, minScheduleMinInterval, schedule.MaxEvery)
}

// ScheduleCapFlags bound the schedules of a command that adds them: the
// API, dev and schedule add.
type ScheduleCapFlags struct {
	MaxSchedules int `name:"schedule-max" env:"CERTMAIL_SCHEDULE_MAX" default:"${schedule_max}" help:"Most schedules added through the API or the CLI kept at once; beyond it the one that ended first is deleted, and with too few ended a new one is refused (the schedules file's are not counted; ${schedule_max_range})." group:"Schedules"`
}

// checkMax reports a bound that cannot work, as a usage error.
func (f ScheduleCapFlags) checkMax() error {
	return inRange("CERTMAIL_SCHEDULE_MAX", f.MaxSchedules, 1, maxScheduleMax)
}

// ProducerFlags are the settings of a process that puts tasks and
// schedules in Redis: the API and the scheduler.
type ProducerFlags struct {
	RedisFlags
	AccountFlags
	LogFlags
	NewTaskFlags
	ScheduleRuleFlags
}

// producer is what such a process works with, each piece closed by close.
type producer struct {
	log   *zap.Logger
	conn  *redisconn.Conn
	ops   *ops.Service
	store *schedule.Store
}

// producer checks the flags and opens the process's logger, Redis
// connection, ops service and schedule store, which keeps at most
// maxSchedules API schedules (0: the default; only the API adds any).
func (f ProducerFlags) producer(env *Env, maxSchedules int) (*producer, error) {
	if err := f.NewTaskFlags.check(); err != nil {
		return nil, err
	}
	if err := f.ScheduleRuleFlags.check(); err != nil {
		return nil, err
	}
	log, err := f.logger(env)
	if err != nil {
		return nil, err
	}
	accounts, err := f.load(false)
	if err != nil {
		return nil, err
	}
	opts, err := f.opsOptions(accounts, log)
	if err != nil {
		return nil, err
	}
	p := &producer{log: log}
	if p.conn, err = f.open(env); err != nil {
		return nil, err
	}
	if p.store, err = f.scheduleStore(p.conn, opts.Rules, maxSchedules, log); err != nil {
		return nil, errors.Join(err, p.conn.Client.Close())
	}
	opts.Redis = p.conn
	if p.ops, err = ops.New(opts); err != nil {
		return nil, errors.Join(usageError{err}, p.conn.Client.Close())
	}
	return p, nil
}

// close closes the ops service and the connection, and flushes the log.
func (p *producer) close() error {
	err := errors.Join(p.ops.Close(), p.conn.Client.Close())
	_ = p.log.Sync() // nothing is left to tell if stderr is gone
	return err
}

// NewTaskFlags are what a command that enqueues gives its tasks.
type NewTaskFlags struct {
	QueueFlags
	MaxRetry  int           `name:"max-retry" env:"CERTMAIL_MAX_RETRY" default:"${max_retry}" help:"Retries given to new tasks before they are dead-lettered (${max_retry_range}; 0: none)." group:"Tasks"`
	Retention time.Duration `name:"result-retention" env:"CERTMAIL_RESULT_RETENTION" default:"${result_retention}" help:"How long the result of a completed task is kept (${result_retention_range}: the scheduler reads its ticks' results)." group:"Tasks"`
}

// check reports a setting that cannot work, as a usage error.
func (f NewTaskFlags) check() error {
	if err := inRange("CERTMAIL_MAX_RETRY", f.MaxRetry, 0, maxMaxRetry); err != nil {
		return err
	}
	// The minimum is refused by every process that reads it, as they share
	// one environment: the scheduler's own ticks need it.
	if err := inRange("CERTMAIL_RESULT_RETENTION", f.Retention, scheduler.MinResultRetention, maxResultRetention); err != nil {
		return err
	}
	_, err := f.parseQueues()
	return err
}

// opsOptions are the ops.Config of these flags for accounts, reporting to
// log what listings skip (nil: nowhere).
func (f NewTaskFlags) opsOptions(accounts account.Set, log *zap.Logger) (ops.Config, error) {
	rules, err := f.rules(accounts)
	if err != nil {
		return ops.Config{}, err
	}
	return ops.Config{Rules: rules, MaxRetry: maxRetryConfig(f.MaxRetry), Retention: f.Retention, Logger: log}, nil
}

// rules are the enqueue.Rules of the queues flag for accounts.
func (f QueueFlags) rules(accounts account.Set) (enqueue.Rules, error) {
	names, err := f.queueNames()
	if err != nil {
		return enqueue.Rules{}, err
	}
	return enqueue.Rules{Accounts: accounts.Names(), Queues: names}, nil
}

// scheduleStore returns the schedule store on conn, judging schedules by
// rules and the minimum interval of f.
func (f ScheduleRuleFlags) scheduleStore(conn *redisconn.Conn, rules enqueue.Rules, maxSchedules int, log *zap.Logger) (*schedule.Store, error) {
	st, err := schedule.NewStore(schedule.Config{Redis: conn.Client, Rules: schedule.Rules{Enqueue: rules, MinInterval: f.MinInterval, MaxSchedules: maxSchedules},
		Logger: log})
	if err != nil {
		return nil, usageError{err}
	}
	return st, nil
}
