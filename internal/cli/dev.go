package cli

import (
	"context"
	"errors"
	"time"

	"github.com/certmail/certmail/internal/dev"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/redisconn"
)

// DevCmd runs the whole product in one process for a local demo.
type DevCmd struct {
	// No env tag: a shell set up for the CLI has REDIS_URL, and dev's worker
	// would process that Redis's tasks against the fake DigiCert. redisconn's
	// errors say REDIS_URL: errors-name has them say --redis-url (asGiven).
	RedisURL  string `name:"redis-url" errors-name:"REDIS_URL" help:"Use this Redis instead of the embedded in-memory one; its queued tasks are then processed against the fake DigiCert, and it gets no demo unless --demo (REDIS_URL is not read)." group:"Redis"`
	RedisAddr string `name:"redis-addr" help:"Listen address of the embedded Redis (default: a free loopback port)." group:"Redis"`
	HTTPAddr  string `name:"http-addr" env:"CERTMAIL_HTTP_ADDR" default:"${dev_http_addr}" help:"Listen address of the API and the dashboard."`
	AdminAddr string `name:"admin-addr" env:"CERTMAIL_ADMIN_ADDR" default:"${dev_admin_addr}" help:"Listen address of the worker's /healthz, /readyz and /metrics (empty: none)."`
	Tokens    string `name:"api-tokens" env:"CERTMAIL_API_TOKENS" help:"API tokens, comma separated, each optionally followed by a space and its role (default: one operator token generated and printed at start)."`
	APIHostFlags
	NoDemo bool `name:"no-demo" xor:"demo" help:"Do not enqueue the demo tasks and schedule (the banner announces none)."`
	Demo   bool `name:"demo" xor:"demo" help:"Enqueue the demo tasks and schedule into the Redis --redis-url names too, where other workers may take them to a real DigiCert and the schedule outlives dev (the embedded Redis always gets them, unless --no-demo)."`
	QueueFlags
	PollFlags
	// Not ScheduleRuleFlags: nil when neither the flag nor the variable is
	// set, so that dev can tell its demo default from a value set.
	MinInterval *time.Duration `name:"schedule-min-interval" env:"CERTMAIL_SCHEDULE_MIN_INTERVAL" help:"Shortest time allowed between two ticks of a schedule (${schedule_min_interval_range}; default: ${schedule_min_interval}, lowered to the demo schedule's interval while the demo runs). A value set holds: the demo schedule then fires no more often than it." group:"Schedules"`
	ScheduleCapFlags
	LogLevel  string `name:"log-level" env:"CERTMAIL_LOG_LEVEL" default:"${log_level}" enum:"debug,info,warn,error" help:"Log level (debug, info, warn, error)." group:"Logging"`
	LogFormat string `name:"log-format" env:"CERTMAIL_LOG_FORMAT" default:"${dev_log_format}" enum:"json,console" help:"Log format (json, console)." group:"Logging"`
}

// Run serves the demo until SIGINT/SIGTERM.
func (c *DevCmd) Run(env *Env) error {
	log, err := logging.New(c.LogLevel, c.LogFormat, env.Stderr)
	if err != nil {
		return usageError{err}
	}
	qs, err := c.parseQueues()
	if err != nil {
		return err
	}
	if err := c.checkMax(); err != nil {
		return err
	}
	var minInterval time.Duration // 0: dev's default
	if c.MinInterval != nil {
		minInterval = *c.MinInterval
		if err := (ScheduleRuleFlags{MinInterval: minInterval}).check(); err != nil {
			return err
		}
	}
	if err := c.check(); err != nil {
		return err
	}
	if err := notEmpty("CERTMAIL_HTTP_ADDR", c.HTTPAddr, "host:port such as 127.0.0.1:8080"); err != nil {
		return err
	}
	if err := checkListenAddr("CERTMAIL_HTTP_ADDR", c.HTTPAddr); err != nil {
		return err
	}
	if err := checkListenAddr("CERTMAIL_ADMIN_ADDR", c.AdminAddr); err != nil {
		return err
	}
	tokens, err := parseTokenList(c.Tokens)
	if err != nil {
		return usagef("CERTMAIL_API_TOKENS %v", err)
	}
	hosts, err := c.hosts()
	if err != nil {
		return err
	}
	env.logRedisTo(log) // dev opens its Redis itself
	if err := checkRedis(env.Ctx, c.RedisURL); err != nil {
		return err
	}
	// asynqmon's handlers call the standard library's log.Printf.
	defer logging.RedirectStdLog(log.Named("stdlog"), nil)()
	return dev.Run(env.Ctx, dev.Config{
		RedisURL:  c.RedisURL,
		RedisAddr: c.RedisAddr,
		HTTPAddr:  c.HTTPAddr,
		AdminAddr: c.AdminAddr,
		NoAdmin:   c.AdminAddr == "", // given empty: the default is the flag's
		Tokens:    tokens,
		APIHosts:  hosts,
		NoDemo:    c.NoDemo,
		Demo:      c.Demo,
		Queues:    qs,

		ScheduleMinInterval: minInterval,
		MaxSchedules:        c.MaxSchedules,
		TaskCheckInterval:   c.TaskCheckInterval,
		GuardReplicas:       c.guardReplicas(),
		Stdout:              env.Stdout,
		Logger:              log,
	}, nil)
}

// checkRedis refuses, before dev starts anything, a --redis-url that Open
// refuses or whose database the server does not have, as every command
// that opens Redis does (RedisFlags.open); "" is the embedded Redis. dev's
// components then open their own connections.
func checkRedis(ctx context.Context, rawURL string) error {
	if rawURL == "" {
		return nil
	}
	conn, err := redisconn.Open(rawURL)
	if err != nil {
		return usageError{err}
	}
	if err := conn.CheckDatabase(ctx); err != nil {
		return errors.Join(usageError{err}, conn.Client.Close())
	}
	return conn.Client.Close()
}
