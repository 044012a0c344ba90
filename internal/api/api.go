// Package api is certmail's HTTP API, served by `certmail api`.
//
// Producers enqueue tasks with POST /v1/tasks/{type}; operators look tasks up
// with GET /v1/tasks/{id}, handle dead letters under /v1/dead-letters and
// manage periodic tasks under /v1/schedules (kept in Redis for `certmail
// scheduler`). The asynq dashboard is mounted at /monitoring/, and /healthz, /readyz and
// /metrics serve probes and Prometheus. Every error is an RFC 9457
// application/problem+json document, written by one function (writeProblem).
// The routes, parameters and bodies are described by the OpenAPI 3.1 document
// served at /v1/openapi.json (the file openapi.json of this package).
//
// Everything under /v1 except the OpenAPI document needs
// "Authorization: Bearer <token>"; the dashboard takes the same tokens as the
// password of HTTP basic auth. Queue operations themselves (validation,
// idempotency, Redis) live in internal/ops; this package only translates HTTP.
package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/buildinfo"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/scheduler"
)

// Defaults of Config.
const (
	// DefaultAddr is CERTMAIL_HTTP_ADDR's default.
	DefaultAddr = ":8080"
	// DefaultShutdownTimeout is the time in-flight requests get to finish
	// once Run's context is done.
	DefaultShutdownTimeout = 10 * time.Second
)

// MaxBodyBytes is the largest request body accepted (1 MiB); a larger one is
// answered 413.
const MaxBodyBytes = 1 << 20

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

	// Tokens are the accepted bearer tokens (and dashboard passwords). At
	// least one is required unless InsecureNoAuth is set; each is 1 to 4096
	// printable ASCII characters without spaces.
	Tokens []string
	// InsecureNoAuth serves /v1 and the dashboard to anyone. It cannot be
	// combined with Tokens, so that a configured token is never ignored.
	InsecureNoAuth bool
	// DashboardReadOnly lets dashboard users look but not change anything
	// (no deleting, running, archiving or pausing).
	DashboardReadOnly bool

	// Addr is the listen address of Run; default DefaultAddr.
	Addr string
	// ShutdownTimeout is the time in-flight requests get to finish once
	// Run's context is done; default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Limits bound the connections Run accepts; zero values take admin's
	// defaults.
	Limits admin.Limits

	// Logger receives one line per request (required).
	Logger *zap.Logger
	// Registry receives the API's metrics and is what /metrics serves;
	// default admin.NewRegistry() (Go and process collectors included).
	Registry *prometheus.Registry
}

// maxTokenLen bounds a token: long enough for any generated secret, short
// enough that comparing against every token stays cheap.
const maxTokenLen = 4096

// WithDefaults returns c with zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Registry == nil {
		c.Registry = admin.NewRegistry()
	}
	c.Limits = c.Limits.WithDefaults()
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
	case c.Logger == nil:
		return errors.New("no logger")
	case c.ShutdownTimeout < 0:
		return errors.New("shutdown timeout must not be negative")
	case len(c.Tokens) == 0 && !c.InsecureNoAuth:
		return errors.New("no API token configured (set CERTMAIL_API_TOKENS or CERTMAIL_API_TOKENS_FILE, or pass --insecure-no-auth)")
	case len(c.Tokens) > 0 && c.InsecureNoAuth:
		return errors.New("API tokens are configured and --insecure-no-auth is given: drop one of them")
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	for i, t := range c.Tokens {
		if !validToken(t) {
			return fmt.Errorf("API token %d: want 1 to %d printable ASCII characters without spaces", i+1, maxTokenLen)
		}
	}
	return nil
}

func validToken(t string) bool {
	if t == "" || len(t) > maxTokenLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] > '~' {
			return false
		}
	}
	return true
}

// Server is the HTTP API. It implements http.Handler; Run serves it.
type Server struct {
	cfg       Config
	ops       *ops.Service
	log       *zap.Logger
	tokens    tokenSet
	mux       *http.ServeMux
	patterns  []string         // every pattern registered on mux, in order
	guards    map[string]guard // what each pattern needs
	schedules *scheduler.Store
	dashboard *asynqmon.HTTPHandler
	metrics   *metrics
	handler   http.Handler
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
		cfg:     cfg,
		ops:     cfg.Ops,
		log:     cfg.Logger,
		tokens:  newTokenSet(cfg.Tokens),
		mux:     http.NewServeMux(),
		guards:  map[string]guard{},
		metrics: m,
		// Schedules are validated by the same ops service as tasks.
		schedules: scheduler.NewStore(cfg.Redis.Client, cfg.Ops),
	}
	s.dashboard = asynqmon.New(asynqmon.Options{
		RootPath:         DashboardPath,
		RedisConnOpt:     cfg.Redis.Opt,
		ReadOnly:         cfg.DashboardReadOnly,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(formatPayload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(formatPayload),
	})
	s.routes()
	s.handler = s.observe(s.authenticate(s.problemsForUnmatched(s.mux)))
	return s, nil
}

// routes registers every route with what it needs: the one table that
// authentication reads. The OpenAPI document describes each route (a test
// holds the two together, another the guards).
func (s *Server) routes() {
	s.handle("POST /v1/tasks/{type}", bearer, http.HandlerFunc(s.enqueue))
	s.handle("GET /v1/tasks/{id}", bearer, http.HandlerFunc(s.task))
	s.handle("GET /v1/dead-letters", bearer, http.HandlerFunc(s.deadLetters))
	s.handle("POST /v1/dead-letters/{id}/requeue", bearer, http.HandlerFunc(s.requeue))
	s.handle("DELETE /v1/dead-letters/{id}", bearer, http.HandlerFunc(s.deleteDeadLetter))
	s.handle("GET /v1/schedules", bearer, http.HandlerFunc(s.listSchedules))
	s.handle("POST /v1/schedules", bearer, http.HandlerFunc(s.addSchedule))
	s.handle("GET /v1/schedules/{id}", bearer, http.HandlerFunc(s.getSchedule))
	s.handle("DELETE /v1/schedules/{id}", bearer, http.HandlerFunc(s.deleteSchedule))
	s.handle("GET /v1/openapi.json", open, http.HandlerFunc(s.openAPI))
	s.handle(DashboardPath+"/", basic, s.dashboard)
	admin.Routes(openRoutes{s}, s.ready, s.cfg.Registry, s.log)
}

// handle registers h for pattern, needing g.
func (s *Server) handle(pattern string, g guard, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.patterns = append(s.patterns, pattern)
	s.guards[pattern] = g
}

// openRoutes registers admin's probes and metrics as open routes.
type openRoutes struct{ s *Server }

func (o openRoutes) Handle(pattern string, h http.Handler) { o.s.handle(pattern, open, h) }

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

// Close releases the dashboard's Redis client and inspector. It does not
// close Config.Ops or Config.Redis.
func (s *Server) Close() error {
	if err := s.dashboard.Close(); err != nil {
		return fmt.Errorf("close dashboard: %w", err)
	}
	return nil
}

// Run serves the API on Config.Addr until ctx is done, then gives in-flight
// requests Config.ShutdownTimeout to finish. started, when not nil, is called
// with the bound address (useful with port 0) once the API accepts
// connections.
func (s *Server) Run(ctx context.Context, started func(net.Addr)) error {
	if s.cfg.InsecureNoAuth {
		s.log.Warn("authentication is off (--insecure-no-auth): anyone who can reach the API can enqueue tasks, manage dead letters and use the dashboard")
	}
	err := admin.Serve(ctx, s.cfg.Addr, admin.NewServer(s, s.cfg.Limits), s.cfg.ShutdownTimeout, func(a net.Addr) {
		s.log.Info("api started", zap.Stringer("addr", a), zap.String("redis", s.cfg.Redis.Target),
			zap.Int("tokens", len(s.cfg.Tokens)), zap.Bool("dashboard_read_only", s.cfg.DashboardReadOnly),
			zap.String("version", buildinfo.Version))
		if started != nil {
			started(a)
		}
	})
	s.log.Info("api stopped")
	return err
}

// tokenSet holds the SHA-256 of each accepted token, so that every
// comparison runs over 32 bytes whatever the lengths involved.
type tokenSet [][sha256.Size]byte

func newTokenSet(tokens []string) tokenSet {
	ts := make(tokenSet, 0, len(tokens))
	for _, t := range tokens {
		ts = append(ts, sha256.Sum256([]byte(t)))
	}
	return ts
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header
// (the scheme is case-insensitive), or "" when there is none.
func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
