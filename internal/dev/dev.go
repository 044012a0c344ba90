// Package dev runs the whole of certmail in one process for a newcomer
// (`certmail dev`, run by `make run`): an embedded Redis (miniredis, on the
// wall clock), the fake CertCentral in "any id exists" mode
// approving a domain after a few DCV resends, a worker, a scheduler with a
// demo schedule that ends itself once its order is approved, the HTTP API
// and the dashboard, plus demo tasks in every state. Nothing it runs is fit
// for production: the Redis keeps everything in memory and the fake emails
// nobody. Pointed at another Redis (Config.RedisURL), it loads no demo there
// unless asked (Config.Demo): real workers on that Redis would take the
// demo's tasks to the real DigiCert.
//
// Run is a composition: each component is started by a small function of
// its own under one errgroup, on its own Redis connection, which it closes
// when it stops; the first that fails stops the others.
package dev

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
	"github.com/certmail/certmail/internal/worker"
)

// Defaults of Config.
const (
	DefaultHTTPAddr  = "127.0.0.1:8080"
	DefaultAdminAddr = "127.0.0.1:9090"
	// DefaultLogFormat is the log format of `certmail dev`, for people.
	DefaultLogFormat = "console"
)

// MissingID is the order and certificate id the dev fake does not know: the
// demo's permanently failing task uses it.
const MissingID = 404404

// shutdownTimeout is what in-flight work gets when the stack stops.
const shutdownTimeout = 5 * time.Second

// Config configures the dev stack. Zero values take the defaults noted.
type Config struct {
	// RedisURL, when set, is used instead of the embedded Redis, and the
	// tasks already queued there are processed against the fake: the
	// caller sets it on purpose (certmail dev: --redis-url only, never
	// REDIS_URL from the environment). It gets the demo only with Demo.
	RedisURL string
	// RedisAddr is where the embedded Redis listens; default a free
	// loopback port.
	RedisAddr string
	// HTTPAddr is the API and dashboard address; default DefaultHTTPAddr.
	HTTPAddr string
	// AdminAddr serves the worker's /healthz, /readyz and /metrics; default
	// DefaultAdminAddr, unless NoAdmin.
	AdminAddr string
	// NoAdmin has the worker serve no /healthz, /readyz or /metrics, as an
	// empty admin address does for the worker (CERTMAIL_ADMIN_ADDR given
	// empty); AdminAddr must then be empty.
	NoAdmin bool
	// Tokens are the API tokens; default one operator token generated at
	// start. The first one is printed in the banner.
	Tokens []api.Token
	// APIHosts are the host names the API answers besides the rebind-safe
	// ones (api.Config.Hosts, CERTMAIL_API_HOSTS); default none, any host.
	APIHosts []string
	// NoDemo skips the demo tasks and schedule.
	NoDemo bool
	// Demo loads the demo tasks and schedule into the Redis RedisURL
	// names. That Redis is not the stack's own: real workers on it would
	// deliver the demo's tasks to the real DigiCert, and the demo schedule
	// outlives the stack. So without Demo only the embedded Redis gets the
	// demo. Demo and NoDemo cannot both be set.
	Demo bool
	// DemoEvery is how often the demo schedule fires; default
	// DefaultDemoEvery, raised to a longer ScheduleMinInterval when that is
	// set. Whole seconds. The fake approves the demo order after
	// as many reminders as take about a minute, DemoApproveAfter at least.
	DemoEvery time.Duration
	// Queues are the weighted queues the worker serves and the API, the
	// scheduler and the demo accept (CERTMAIL_QUEUES); default those of
	// queues.Default.
	Queues map[string]int
	// ScheduleMinInterval is the shortest time allowed between two ticks
	// of a schedule (CERTMAIL_SCHEDULE_MIN_INTERVAL). Unset (0), it is
	// schedule.DefaultMinInterval, lowered to DemoEvery while the demo runs
	// so that the demo schedule is accepted. A value set holds, for the
	// demo schedule too: when it is longer than DemoEvery, the demo schedule
	// fires every ScheduleMinInterval, rounded up to whole seconds.
	ScheduleMinInterval time.Duration
	// MaxSchedules is the most schedules the API may hold; default
	// schedule.DefaultMaxSchedules.
	MaxSchedules int
	// TaskCheckInterval is how often the idle worker looks for new tasks;
	// default worker.DefaultTaskCheckInterval.
	TaskCheckInterval time.Duration
	// GuardReplicas is how many replicas of the Redis RedisURL names must
	// acknowledge a delivery's duplicate guard (CERTMAIL_GUARD_REPLICAS),
	// as worker.Config.GuardReplicas: 0 the default for that Redis,
	// negative none. The embedded Redis has no replica: none there.
	GuardReplicas int
	// Stdout receives the banner (URLs, token, curl commands); default none.
	Stdout io.Writer
	// Logger receives the components' logs (required).
	Logger *zap.Logger
}

// WithDefaults returns c with zero values replaced by the defaults, and
// either the minimum interval lowered to the demo schedule's (when it is
// unset) or the demo schedule's raised to it (when it is set).
func (c Config) WithDefaults() Config {
	c.HTTPAddr = cmp.Or(c.HTTPAddr, DefaultHTTPAddr)
	if !c.NoAdmin {
		c.AdminAddr = cmp.Or(c.AdminAddr, DefaultAdminAddr)
	}
	c.DemoEvery = cmp.Or(c.DemoEvery, DefaultDemoEvery)
	switch {
	case c.ScheduleMinInterval == 0:
		c.ScheduleMinInterval = schedule.DefaultMinInterval
		if c.demoOn() && c.DemoEvery > 0 {
			// The demo schedule reminds a fake DigiCert: let it fire as
			// often as it is set to.
			c.ScheduleMinInterval = min(c.ScheduleMinInterval, c.DemoEvery)
		}
	case c.demoOn() && c.ScheduleMinInterval > c.DemoEvery:
		// A floor the user set holds, with the schedules of a real Redis
		// (--redis-url) in mind: the demo schedule keeps to it.
		c.DemoEvery = (c.ScheduleMinInterval + time.Second - 1).Truncate(time.Second)
	}
	if c.Queues == nil {
		c.Queues, _ = queues.Parse(queues.Default) // a constant that parses (queues' own test)
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	return c
}

// demoOn reports whether the stack loads its demo: into the embedded Redis
// unless NoDemo, into an external one (RedisURL) only when Demo asks.
func (c Config) demoOn() bool {
	if c.RedisURL != "" {
		return c.Demo && !c.NoDemo
	}
	return !c.NoDemo
}

// Validate reports the first setting that cannot work: queues.Reserved
// among the queues too, as the worker would, once the stack was up.
func (c Config) Validate() error {
	switch {
	case c.Logger == nil:
		return errors.New("no logger")
	case c.Demo && c.NoDemo:
		return errors.New("demo both asked for (Demo) and refused (NoDemo)")
	case c.NoAdmin && c.AdminAddr != "":
		return fmt.Errorf("admin address %q both given (AdminAddr) and refused (NoAdmin)", c.AdminAddr)
	case c.DemoEvery < time.Second || c.DemoEvery%time.Second != 0:
		return fmt.Errorf("demo schedule every %v: want whole seconds", c.DemoEvery)
	}
	for _, q := range slices.Sorted(maps.Keys(c.Queues)) { // the first in order, whatever the map's
		if err := queues.CheckServed(q); err != nil {
			return err
		}
	}
	return nil
}

// Stack is the running dev stack, as Run reports it once everything serves.
type Stack struct {
	APIURL    string // http://host:port
	AdminURL  string // the worker's admin server; "" without one (Config.NoAdmin)
	RedisURL  string
	Token     string
	Embedded  bool // Redis is the in-memory miniredis
	FakeURL   string
	fake      *digicerttest.Server
	dashboard string
}

// Fake returns the fake CertCentral, for tests that assert its effects.
func (s *Stack) Fake() *digicerttest.Server { return s.fake }

// Run starts every component, prints the banner, enqueues the demo tasks and
// serves until ctx is done; then it stops everything and returns. started,
// when not nil, is called once everything serves.
func Run(ctx context.Context, cfg Config, started func(*Stack)) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	st := &Stack{RedisURL: cfg.RedisURL}
	if len(cfg.Tokens) == 0 {
		cfg.Tokens = []api.Token{{Secret: account.Secret("dev-" + randomHex(16)), Role: api.RoleOperator}}
	}
	st.Token = cfg.Tokens[0].Secret.Reveal()
	var mr *miniredis.Miniredis
	if st.RedisURL == "" {
		var err error
		if mr, err = startMiniredis(cfg.RedisAddr); err != nil {
			return err
		}
		defer mr.Close() // once every component stopped
		st.Embedded, st.RedisURL = true, "redis://"+mr.Addr()+"/0"
	}
	approveAfter := demoApprovals(cfg.DemoEvery)
	fakeLn, accounts, err := newFake(st, approveAfter)
	if err != nil {
		return err
	}
	c := components{cfg: cfg, stack: st, accounts: accounts,
		rules: enqueue.Rules{Accounts: accounts.Names(), Queues: queues.Names(cfg.Queues)}}
	workerUp, apiUp := make(chan net.Addr, 1), make(chan net.Addr, 1)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return named("fake CertCentral", serveFake(ctx, st.fake, fakeLn, cfg.Logger.Named("fake")))
	})
	g.Go(func() error { return named("worker", c.worker(ctx, workerUp)) })
	g.Go(func() error { return named("api", c.api(ctx, apiUp)) })
	g.Go(func() error { return named("scheduler", c.scheduler(ctx)) })
	g.Go(func() error { return named("demo", c.demo(ctx, workerUp, apiUp, approveAfter, started)) })
	return g.Wait()
}

// named says which component an error came from.
func named(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// components start the parts of the stack, each on its own connection.
type components struct {
	cfg      Config
	stack    *Stack
	accounts account.Set
	rules    enqueue.Rules
}

// open returns a connection to the stack's Redis, closed by the caller.
func (c *components) open() (*redisconn.Conn, error) {
	conn, err := redisconn.Open(c.stack.RedisURL)
	if err == nil {
		conn.Embedded = c.stack.Embedded // miniredis has no INFO memory
	}
	return conn, err
}

// producer is what a component that puts tasks and schedules in Redis
// works with, each piece closed by close.
type producer struct {
	log   *zap.Logger
	conn  *redisconn.Conn
	ops   *ops.Service
	store *schedule.Store
}

// producer opens the connection, ops service and schedule store of the
// component name, which logs under its name.
func (c *components) producer(name string) (*producer, error) {
	p := &producer{log: c.cfg.Logger.Named(name)}
	var err error
	if p.conn, err = c.open(); err != nil {
		return nil, err
	}
	p.store, err = schedule.NewStore(schedule.Config{Redis: p.conn.Client,
		Rules: schedule.Rules{Enqueue: c.rules, MinInterval: c.cfg.ScheduleMinInterval, MaxSchedules: c.cfg.MaxSchedules}, Logger: p.log})
	if err == nil {
		p.ops, err = ops.New(ops.Config{Redis: p.conn, Rules: c.rules, Logger: p.log})
	}
	if err != nil {
		return nil, errors.Join(err, p.conn.Client.Close())
	}
	return p, nil
}

// close closes the ops service and the connection.
func (p *producer) close() error {
	return errors.Join(p.ops.Close(), p.conn.Client.Close())
}

// worker runs the worker until ctx is done; up receives its admin address.
func (c *components) worker(ctx context.Context, up chan<- net.Addr) (err error) {
	conn, err := c.open()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, conn.Client.Close()) }()
	replicas := c.cfg.GuardReplicas
	if conn.Embedded {
		if replicas > 0 {
			c.cfg.Logger.Info("the embedded Redis has no replica: --guard-replicas is ignored", zap.Int("guard_replicas", replicas))
		}
		replicas = -1
	}
	w, err := worker.New(worker.Config{Redis: conn, Accounts: c.accounts, AdminAddr: c.cfg.AdminAddr, Queues: c.cfg.Queues,
		TaskCheckInterval: c.cfg.TaskCheckInterval, GuardReplicas: replicas, ShutdownTimeout: shutdownTimeout,
		Logger: c.cfg.Logger.Named("worker")})
	if err != nil {
		return err
	}
	return w.Run(ctx, func(a net.Addr) { up <- a })
}

// api serves the API and the dashboard until ctx is done; up receives its
// address.
func (c *components) api(ctx context.Context, up chan<- net.Addr) (err error) {
	p, err := c.producer("api")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.close()) }()
	srv, err := api.New(api.Config{Ops: p.ops, Redis: p.conn, Schedules: p.store, Tokens: c.cfg.Tokens, Hosts: c.cfg.APIHosts,
		Addr: c.cfg.HTTPAddr, ShutdownTimeout: shutdownTimeout, Logger: p.log})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.Close()) }()
	return srv.Run(ctx, func(a net.Addr) { up <- a })
}

// scheduler runs the scheduler until ctx is done.
func (c *components) scheduler(ctx context.Context) (err error) {
	p, err := c.producer("scheduler")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.close()) }()
	s, err := scheduler.New(scheduler.Config{Redis: p.conn, Ops: p.ops, Store: p.store, Logger: p.log})
	if err != nil {
		return err
	}
	return s.Run(ctx, nil)
}

// demo waits for the worker and the API to serve, prints the banner, tells
// started, and enqueues the demo tasks and schedule when the demo is on
// (Config.demoOn).
func (c *components) demo(ctx context.Context, workerUp, apiUp <-chan net.Addr, approveAfter int, started func(*Stack)) (err error) {
	st := c.stack
	for range 2 {
		select {
		case a := <-workerUp:
			if a != nil { // nil: the worker serves no admin address
				st.AdminURL = "http://" + a.String()
			}
		case a := <-apiUp:
			st.APIURL = "http://" + a.String()
		case <-ctx.Done():
			return nil
		}
	}
	st.dashboard = st.APIURL + api.DashboardPath + "/"
	demo := demoSchedule(c.cfg.DemoEvery)
	announced := &demo
	if !c.cfg.demoOn() {
		announced = nil
	}
	printBanner(c.cfg.Stdout, st, announced, approveAfter)
	if started != nil {
		started(st)
	}
	if announced == nil {
		return nil
	}
	p, err := c.producer("demo")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.close()) }()
	return enqueueDemo(ctx, p.ops, p.store, demo, approveAfter, st.fake, p.log)
}

// newFake builds the stack's fake CertCentral, with a key that never leaves
// the process, and its listener; accounts are the stack's one account on it.
func newFake(st *Stack, approveAfter int) (net.Listener, account.Set, error) {
	key := randomHex(24)
	windows, err := ratelimit.ParseWindows(ratelimit.DefaultWindows)
	if err != nil {
		return nil, nil, err
	}
	var fakeWindows []digicerttest.Window
	for _, w := range windows {
		fakeWindows = append(fakeWindows, digicerttest.Window{Limit: w.Limit, Period: w.Period})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("fake CertCentral: %w", err)
	}
	st.fake = digicerttest.New(digicerttest.Config{APIKeys: []string{key}, AnyIDExists: true,
		Missing: []int64{MissingID}, RateLimits: fakeWindows, RecordLimit: 10000, ApproveAfter: approveAfter})
	st.FakeURL = "http://" + ln.Addr().String() + "/services/v2"
	accounts := account.Set{"default": {Name: "default", BaseURL: st.FakeURL, APIKey: account.Secret(key), RateLimits: windows}}
	return ln, accounts, nil
}

// serveFake serves the fake on ln until ctx is done, then releases any
// request it holds and shuts down, so that Run returns only once the fake's
// connections are closed. log gets net/http's own messages.
func serveFake(ctx context.Context, fake *digicerttest.Server, ln net.Listener, log *zap.Logger) error {
	srv := admin.NewServer(fake, admin.Limits{}, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err // Serve failed before the stack stopped
	case <-ctx.Done():
	}
	fake.Close() // releases any request it holds
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	logging.FlushHTTPErrorLog(srv.ErrorLog)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startMiniredis starts the embedded Redis, closed by the caller once
// everything stopped. Its clock is the wall clock, the fake CertCentral's:
// TIME, which the rate limiter's scripts stamp requests with, tells the time
// of the call, and keys expire as it passes (ClockTTL), as asynq's leases,
// heartbeats and retention need. A clock set by hand now and then would lag
// between two settings, more under load, and the limiter would drop a
// request from a window while the fake still counts it: a 429.
func startMiniredis(addr string) (*miniredis.Miniredis, error) {
	mr := miniredis.NewMiniRedis()
	mr.ClockTTL(true)
	if err := mr.StartAddr(cmp.Or(addr, "127.0.0.1:0")); err != nil {
		return nil, fmt.Errorf("embedded Redis on %s: %w", addr, err)
	}
	return mr, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}
