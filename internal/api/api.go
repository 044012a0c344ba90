// Package api is certmail's HTTP API, served by `certmail api`.
//
// Producers (and operators) enqueue tasks with POST /v1/tasks/{type}; every
// role looks tasks up with GET /v1/tasks/{id}; readers and operators read
// the dead letters (/v1/dead-letters) and the periodic tasks (/v1/schedules,
// a schedule.Store read by `certmail scheduler`), and operators also requeue
// and delete dead letters and add and delete schedules. The asynq dashboard
// is mounted at /monitoring/ (read-only for readers, who do not see the
// Redis server's INFO), and /healthz, /readyz and /metrics serve
// probes and Prometheus. Every error is an RFC 9457
// application/problem+json document (to the dashboard's own page, its
// detail as text), written by one function (writeProblem); a path with an
// empty, . or .. segment is no route (404), not redirected, nor is one
// under /monitoring/ with such a segment once decoded. The exception
// is what net/http answers itself before any handler runs, as text/plain:
// 431 to a request line and headers over the limit (admin.NewServer), 400,
// 501 or 505 to a request it cannot parse, 417 to an Expect other than
// 100-continue.
// The routes, parameters and bodies are described by the OpenAPI 3.1 document
// served at /v1/openapi.json (the file openapi.json of this package).
//
// Everything under /v1 except the OpenAPI document needs
// "Authorization: Bearer <token>"; the dashboard takes the same tokens as the
// password of HTTP basic auth. Each token has a role (producer, reader,
// operator) and each route, in one table, says which roles may use it; the
// decision is made on the route the mux picks for the request. Every answer
// of those routes, refusals included, says Cache-Control: no-store, but the
// dashboard's page and script files, and so does the 404 or 405 problem
// to a request no route takes. An
// Idempotency-Key is the token's own. Given Config.Hosts, the API answers,
// on every route, only requests addressed to those host names or to one a
// page of another site cannot rebind to it (an IP address, localhost, a
// name without dots), and refuses the others before any token is looked at. What the
// routes do lives elsewhere and is given through Config: queue operations
// (enqueue, task status, dead letters) in an ops.Service, which validates
// with internal/enqueue, and schedules in a schedule.Store; this package
// only translates HTTP. It never builds the worker or the DigiCert client.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/buildinfo"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/tasks"
)

// Defaults of Config.
const (
	// DefaultAddr is CERTMAIL_HTTP_ADDR's default.
	DefaultAddr = ":8080"
	// DefaultShutdownTimeout is the time in-flight requests get to finish
	// once Run's context is done.
	// It is shorter than a handler's 20 s on purpose: the requests still
	// running DefaultStopReserve before it are stopped, not waited for.
	DefaultShutdownTimeout = 15 * time.Second
	// DefaultStopReserve is how long before the shutdown timeout runs out
	// the requests still running are cancelled, to answer 503 with
	// Retry-After before their connections are closed. Once cancelled, a
	// request waiting on a stalled Redis still waits for the Redis command
	// in flight, which the cancel does not cut (up to 5 s, go-redis's dial
	// timeout, for a new connection's handshake; 5 s, its read timeout, for
	// a read), then an enqueue with an Idempotency-Key settles or releases its key
	// (ops.DefaultCleanupTimeout, 5 s), and a second is left to write the
	// answer. Under DefaultShutdownTimeout, the requests in flight get 4 s
	// to finish on their own: a request that Redis answers takes
	// milliseconds. A shutdown timeout under 12 s leaves a stopped request
	// less, and it may be cut.
	DefaultStopReserve = 11 * time.Second
)

// MaxBodyBytes is the largest request body accepted (1 MiB); a larger one is
// answered 413.
const MaxBodyBytes = 1 << 20

// MaxBodiesInFlight bounds the request bodies held at once (32 MiB): a body
// is counted as it arrives, at the buffer it is read into (32 KiB at first,
// doubled as it fills, up to its declared length), until its answer is
// written. A request that needs more room waits for it, at most BodyWait in
// all, then is answered 503: a burst of large bodies slows down rather than
// taking the process past its memory limit, and a body that is not being
// sent holds only its first buffer.
const MaxBodiesInFlight = 32 << 20

// MaxBodiesPerToken bounds the bodies held at once for the requests of one
// token (8 MiB, a quarter of MaxBodiesInFlight), waited for in the same way,
// so that one producer cannot take the room of the others. Without
// authentication only MaxBodiesInFlight applies.
const MaxBodiesPerToken = MaxBodiesInFlight / 4

// BodyWait is how long a request waits in all for room under
// MaxBodiesInFlight and MaxBodiesPerToken, from its first wait.
const BodyWait = 5 * time.Second

// MaxConns is the most connections the API keeps open at once (see
// admin.NewServer: past it a new connection replaces an idle keep-alive
// one, or is closed). A connection stalled in its headers holds up to
// about 0.3 MB until its ReadHeaderTimeout: 128 of them took the API from
// 25 to 65 MB, which with MaxBodiesInFlight's bodies keeps it well within
// the 192 MiB that deploy/ gives it. make bench's 50 clients take 50; idle
// keep-alive connections of producers' pools give way to new ones.
const MaxConns = 128

// DashboardPath is where the asynq dashboard is mounted.
const DashboardPath = "/monitoring"

// Config configures a Server. Zero values take the defaults noted.
type Config struct {
	// Ops performs every queue operation (required). The Server does not
	// close it.
	Ops *ops.Service
	// Redis is the connection /readyz pings and the dashboard reads
	// (required). The Server does not close its client.
	Redis *redisconn.Conn
	// Schedules keeps the schedules of /v1/schedules and judges those added
	// (required).
	Schedules *schedule.Store

	// Tokens are the accepted bearer tokens (and dashboard passwords) with
	// their roles. At least one is required unless InsecureNoAuth is set;
	// each is MinTokenLen to 4096 printable ASCII characters without spaces,
	// and none is a placeholder shipped in deploy/.
	Tokens []Token
	// InsecureNoAuth serves /v1 and the dashboard to anyone, as an
	// operator. It cannot be combined with Tokens, so that a configured
	// token is never ignored.
	InsecureNoAuth bool
	// Hosts are the host names the API answers besides those a page cannot
	// rebind to it (IP addresses, localhost, *.localhost, names without
	// dots): each a name (api.example.com) or *. and a name (any name under
	// it), at most MaxHosts (ParseHosts reads and checks them). Given, a
	// request addressed to any other host is refused (403) on every route,
	// open ones included, before its token is looked at, so that a page
	// rebound to the API's address (DNS rebinding) can neither read the
	// open routes nor spend its address's failure budget. Empty: any host is
	// answered, but without authentication only the rebind-safe ones, on
	// the routes that need a token.
	Hosts []string
	// DashboardReadOnly lets dashboard users look but not change anything
	// (no deleting, running, archiving or pausing), and refuses the /v1
	// routes that change dead letters and schedules to every token, so that
	// what the dashboard forbids cannot be done through the API instead.
	DashboardReadOnly bool

	// Addr is the listen address of Run; default DefaultAddr.
	Addr string
	// ShutdownTimeout is the time in-flight requests get to finish once
	// Run's context is done; default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// StopReserve is how long before ShutdownTimeout runs out the requests
	// still running are cancelled, after a second at least (see
	// admin.Shutdown); default DefaultStopReserve.
	StopReserve time.Duration
	// Limits bound the connections Run accepts; zero values take admin's
	// defaults, but MaxConns for Limits.MaxConns.
	Limits admin.Limits
	// AuthFailures limits failed authentications per client address, the
	// requests browsers mark with Sec-Fetch-Site counted apart from the
	// others.
	AuthFailures AuthFailureLimit

	// Logger receives one line per request (required).
	Logger *zap.Logger
	// Registry receives the API's metrics and is what /metrics serves;
	// default admin.NewRegistry() (Go and process collectors included).
	Registry *prometheus.Registry
}

// WithDefaults returns c with zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.StopReserve = cmp.Or(c.StopReserve, DefaultStopReserve)
	if c.Registry == nil {
		c.Registry = admin.NewRegistry()
	}
	c.Limits.MaxConns = cmp.Or(c.Limits.MaxConns, MaxConns)
	c.Limits = c.Limits.WithDefaults()
	c.AuthFailures = c.AuthFailures.WithDefaults()
	return c
}

// Validate reports the first setting that cannot work. Token errors name the
// token's position, never the token.
func (c Config) Validate() error {
	switch {
	case c.Ops == nil:
		return errors.New("no queue operations service")
	case c.Redis == nil:
		return errors.New("no Redis configured")
	case c.Schedules == nil:
		return errors.New("no schedule store")
	case c.Logger == nil:
		return errors.New("no logger")
	case c.ShutdownTimeout < 0 || c.StopReserve < 0:
		return errors.New("shutdown timeout and stop reserve must not be negative")
	case len(c.Tokens) == 0 && !c.InsecureNoAuth:
		return errors.New("no API token configured (set CERTMAIL_API_TOKENS or CERTMAIL_API_TOKENS_FILE, or pass --insecure-no-auth)")
	case len(c.Tokens) > 0 && c.InsecureNoAuth:
		return errors.New("API tokens are configured and --insecure-no-auth is given: drop one of them")
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if err := c.AuthFailures.Validate(); err != nil {
		return err
	}
	if err := checkHosts(c.Hosts); err != nil {
		return err
	}
	seen := map[string]int{}
	for i, t := range c.Tokens {
		if err := checkSecret(t.Secret.Reveal()); err != nil {
			return fmt.Errorf("API token %d: %w", i+1, err)
		}
		if t.Role != "" && !validRole(t.Role) {
			return fmt.Errorf("API token %d: unknown role; want one of %s", i+1, roleNames())
		}
		if j, dup := seen[t.Secret.Reveal()]; dup {
			return fmt.Errorf("API tokens %d and %d are the same token: give each token once, with one role", j+1, i+1)
		}
		seen[t.Secret.Reveal()] = i
	}
	return nil
}

// Server is the HTTP API. It implements http.Handler; Run serves it.
type Server struct {
	cfg       Config
	ops       *ops.Service
	log       *zap.Logger
	reqLog    *zap.Logger // the request lines: all logged at one place, so without a caller
	tokens    tokenSet
	hosts     *hostList // nil: every host answered (answersHost)
	failures  *failureLimiter
	mux       *http.ServeMux
	patterns  []string          // every pattern registered on mux, in order
	access    map[string]access // what each pattern asks of a request
	schedules *schedule.Store
	// dashboard is asynqmon as configured, for operators; dashboardRO is
	// its read-only twin, for readers (the same when DashboardReadOnly).
	dashboard   *asynqmon.HTTPHandler
	dashboardRO *asynqmon.HTTPHandler
	// dashboardRoutes match a request's path against the routes of
	// asynqmon's JSON API, for the Allow header of a 405 (asynqmon's own
	// has none).
	dashboardRoutes *dashboardRouter
	metrics         *metrics
	handler         http.Handler
	// bodies counts the bytes of the request bodies held
	// (MaxBodiesInFlight, MaxBodiesPerToken).
	bodies *bodyBudget
}

// New builds a Server from cfg (after WithDefaults and Validate) and
// registers its metrics with cfg.Registry. Close releases the dashboard's
// Redis connections.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		ops:       cfg.Ops,
		log:       cfg.Logger,
		reqLog:    cfg.Logger.WithOptions(zap.WithCaller(false)),
		tokens:    newTokenSet(cfg.Tokens),
		hosts:     newHostList(cfg.Hosts),
		failures:  newFailureLimiter(cfg.AuthFailures),
		mux:       http.NewServeMux(),
		access:    map[string]access{},
		metrics:   m,
		schedules: cfg.Schedules,
		bodies:    newBodyBudget(len(cfg.Tokens)),
	}
	if s.cfg.Limits.Refused == nil {
		s.cfg.Limits.Refused = m.connsRefused.Inc
	}
	s.dashboard = newDashboard(cfg.Redis, cfg.DashboardReadOnly)
	s.dashboardRO = newDashboard(cfg.Redis, true)
	s.dashboardRoutes = newDashboardRouter()
	s.routes()
	s.handler = s.observe(securityHeaders(s.crossOrigin(s.authenticate(s.problemsForUnmatched(s.mux)))))
	return s, nil
}

// routes registers every route with what it needs: the one table that
// authentication reads. The OpenAPI document describes each route (a test
// holds the two together, TestAccessTable the accesses).
func (s *Server) routes() {
	s.handle("POST /v1/tasks/{type}", accessEnqueue, http.HandlerFunc(s.enqueue))
	s.handle("GET /v1/tasks/{id}", accessTask, http.HandlerFunc(s.task))
	s.handle("GET /v1/dead-letters", accessRead, http.HandlerFunc(s.deadLetters))
	s.handle("POST /v1/dead-letters/{id}/requeue", accessManage, s.noQuery(s.requeue))
	s.handle("DELETE /v1/dead-letters/{id}", accessManage, s.noQuery(s.deleteDeadLetter))
	s.handle("GET /v1/schedules", accessRead, s.noQuery(s.listSchedules))
	s.handle("POST /v1/schedules", accessManage, s.noQuery(s.addSchedule))
	s.handle("GET /v1/schedules/{id}", accessRead, s.noQuery(s.getSchedule))
	s.handle("DELETE /v1/schedules/{id}", accessManage, s.noQuery(s.deleteSchedule))
	// The document, the dashboard (asynqmon reads its own query), the
	// probes and the metrics act on no data: a parameter a probe or a
	// scraper is configured to send is let through.
	s.handle("GET /v1/openapi.json", accessOpen, http.HandlerFunc(s.openAPI))
	s.handle(DashboardPath+"/", accessDashboard, http.HandlerFunc(s.serveDashboard))
	admin.Routes(openRoutes{s}, s.ready, s.cfg.Registry, s.log)
}

// handle registers h for pattern, asking a of every request.
func (s *Server) handle(pattern string, a access, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.patterns = append(s.patterns, pattern)
	s.access[pattern] = a
}

// noQuery serves a route of /v1 that takes no query parameter: a request
// that carries one is answered 400 before h runs, as the routes that take
// some refuse the others, since acting as if it were absent would do what
// the client did not ask (a DELETE with dry_run=true deletes).
func (s *Server) noQuery(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			if _, errs := queryParams(r.URL.RawQuery); len(errs) > 0 {
				s.writeProblem(w, r, validationProblem(errs), nil)
				return
			}
		}
		h(w, r)
	})
}

// openRoutes registers admin's probes and metrics as open routes.
type openRoutes struct{ s *Server }

func (o openRoutes) Handle(pattern string, h http.Handler) { o.s.handle(pattern, accessOpen, h) }

// ready is /readyz: Redis answers a PING.
func (s *Server) ready(ctx context.Context) error {
	if err := s.cfg.Redis.Client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", s.cfg.Redis.Target, err)
	}
	return nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// Close releases the dashboards' Redis clients and inspectors. It does not
// close Config.Ops or Config.Redis.
func (s *Server) Close() error {
	var errs []error
	for _, d := range []*asynqmon.HTTPHandler{s.dashboard, s.dashboardRO} {
		if err := d.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close dashboard: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Run serves the API on Config.Addr until ctx is done, then gives in-flight
// requests Config.ShutdownTimeout to finish: those still running
// Config.StopReserve before its end are cancelled and answer 503 with
// Retry-After, as when Redis fails, and Run returns nil once every request
// has its answer. A request still running at the timeout has its
// connection closed, and Run's error says how many were. started, when not nil, is called
// with the bound address (useful with port 0) once the API accepts
// connections. Beside serving, it reads Redis's eviction policy once Redis
// answers (redisconn.Conn.CheckEviction), at start or after an outage the
// API started in: the idempotency keys it writes expire, so a policy other
// than noeviction gets one ERROR line. A Redis that answers that it has no
// such database (a *redisconn.DatabaseError) stops the API with that
// error, as ctx's end does: no request could succeed. It warns at start when
// authentication is off, and when the queues it enqueues into
// (CERTMAIL_QUEUES) leave out tasks.DefaultQueue, where every enqueue that
// names no queue would go.
func (s *Server) Run(ctx context.Context, started func(net.Addr)) error {
	if s.cfg.InsecureNoAuth {
		s.log.Warn("authentication is off (--insecure-no-auth): anyone who can reach the API can enqueue tasks, manage dead letters and use the dashboard")
	}
	if served := s.cfg.Ops.Queues(); !slices.Contains(served, tasks.DefaultQueue) {
		s.log.Warn("CERTMAIL_QUEUES does not serve the default queue: every enqueue that names no queue is refused (400)",
			zap.String("default_queue", tasks.DefaultQueue), zap.Strings("queues", served))
	}
	serveCtx, stopServing := context.WithCancelCause(ctx)
	defer stopServing(nil)
	checkCtx, stopCheck := context.WithCancel(ctx)
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		// Wait's lines would repeat what /readyz and every request say.
		err := s.cfg.Redis.Wait(checkCtx, zap.NewNop())
		var dbErr *redisconn.DatabaseError
		switch {
		case err == nil:
			s.cfg.Redis.CheckEviction(checkCtx, s.log, evictionRisk)
		case errors.As(err, &dbErr):
			stopServing(dbErr) // no request could succeed
		}
	}()
	defer func() { stopCheck(); <-checked }()
	var served bool
	logged := make(chan struct{})
	stopLog := context.AfterFunc(serveCtx, func() {
		defer close(logged)
		s.log.Info("api shutting down", zap.Duration("shutdown_timeout", s.cfg.ShutdownTimeout))
	})
	defer func() {
		if !stopLog() { // the line is being written: Run's caller may close the log once Run returns
			<-logged
		}
	}()
	err := admin.Serve(serveCtx, s.cfg.Addr, admin.NewServer(s, s.cfg.Limits, s.log), s.shutdown(), func(a net.Addr) {
		served = true
		s.log.Info("api started", zap.Stringer("addr", a), zap.String("redis", s.cfg.Redis.Target),
			zap.Int("tokens", len(s.cfg.Tokens)), zap.Bool("read_only", s.cfg.DashboardReadOnly),
			zap.String("version", buildinfo.Version))
		if started != nil {
			started(a)
		}
	})
	if served { // not when it could not listen: the error says why
		s.log.Info("api stopped")
	}
	var dbErr *redisconn.DatabaseError
	if errors.As(context.Cause(serveCtx), &dbErr) && ctx.Err() == nil {
		return errors.Join(dbErr, err)
	}
	return err
}

// shutdown is how Run stops: the requests in flight get
// Config.ShutdownTimeout, and those still running Config.StopReserve
// before its end are cancelled, with one WARN line.
func (s *Server) shutdown() admin.Shutdown {
	return admin.Shutdown{Timeout: s.cfg.ShutdownTimeout, CancelBefore: s.cfg.StopReserve, Cancelled: func(n int) {
		s.log.Warn("requests still running near the shutdown timeout are stopped: they answer 503",
			zap.Int("running", n), zap.Duration("shutdown_timeout", s.cfg.ShutdownTimeout))
	}}
}

// evictionRisk is what the API gets wrong when Redis evicts its keys.
const evictionRisk redisconn.EvictionRisk = "an evicted idempotency key lets a request retried with the same Idempotency-Key enqueue a second task"
