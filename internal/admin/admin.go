// Package admin serves the operational endpoints every certmail process
// exposes: /healthz (the process is up), /readyz (its dependencies answer)
// and /metrics (Prometheus), and, when asked, net/http/pprof's profiles
// under /debug/pprof/. It also builds every HTTP server certmail runs
// (NewServer), so that each one has the same timeouts, header limit and cap
// on open connections.
package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/logging"
)

// DefaultAddr is CERTMAIL_ADMIN_ADDR's default for the worker and the
// scheduler.
const DefaultAddr = ":9090"

// Defaults of Limits: what every certmail HTTP server allows a connection.
const (
	// DefaultReadHeaderTimeout is the time a client has to send the request
	// line and headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout is the time a client has to send a whole request,
	// body included (a 1 MiB body at 35 KB/s).
	DefaultReadTimeout = 30 * time.Second
	// DefaultHandlerTimeout is the deadline of a request's context: a handler
	// waiting on Redis gives up and answers before the write deadline.
	DefaultHandlerTimeout = 20 * time.Second
	// DefaultWriteTimeout is the time from the end of the request headers to
	// the end of the answer.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxHeaderBytes bounds the request line and headers (16 KiB;
	// net/http reads 4 KiB more before it answers 431, and on a keep-alive
	// connection up to 4 KiB more again, read ahead while the connection
	// waited for its next request). certmail's own clients send well under
	// 1 KiB; the room is for a browser on the dashboard, which sends the
	// cookies other applications set on the same host name (nginx and
	// Apache refuse a header line over 8 KiB by default, so such a browser
	// has trouble elsewhere first). Go parses
	// each header line into a map as it arrives, at up to fifteen times its
	// size: a connection that sends 20 KB of short lines and stalls holds
	// about 0.3 MB until ReadHeaderTimeout (at 64 KiB it held 0.7 to 1.3 MB).
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxConns is the most connections a server keeps open at once
	// unless its Limits say otherwise: the fake CertCentral's, which three
	// workers of make bench at 50 deliveries each reach at once (the API
	// has its own, api.MaxConns). 256 connections stalled in their headers
	// hold about 80 MB.
	DefaultMaxConns = 256
	// AdminMaxConns is the cap of an admin server (Start: a worker's or a
	// scheduler's /healthz, /readyz, /metrics), whose clients are probes, a
	// Prometheus or two and an operator: 64 hold about 20 MB at most, well
	// within the scheduler's 128 MiB in deploy/.
	AdminMaxConns = 64
)

// Limits bound the connections of an HTTP server. Zero values take the
// defaults above; tests shorten them.
type Limits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// HandlerTimeout is the deadline of each request's context; it must be
	// shorter than WriteTimeout, so that the answer can still be written.
	HandlerTimeout time.Duration
	WriteTimeout   time.Duration
	IdleTimeout    time.Duration
	MaxHeaderBytes int
	// MaxConns is the most connections open at once; see NewServer.
	MaxConns int
	// Refused, when set, is called for each connection closed as it opened
	// because MaxConns were open and none was idle (a metric's Inc).
	Refused func()
}

// WithDefaults returns l with zero values replaced by the defaults.
func (l Limits) WithDefaults() Limits {
	l.ReadHeaderTimeout = cmp.Or(l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	l.ReadTimeout = cmp.Or(l.ReadTimeout, DefaultReadTimeout)
	l.HandlerTimeout = cmp.Or(l.HandlerTimeout, DefaultHandlerTimeout)
	l.WriteTimeout = cmp.Or(l.WriteTimeout, DefaultWriteTimeout)
	l.IdleTimeout = cmp.Or(l.IdleTimeout, DefaultIdleTimeout)
	l.MaxHeaderBytes = cmp.Or(l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	l.MaxConns = cmp.Or(l.MaxConns, DefaultMaxConns)
	return l
}

// Validate reports the first limit that cannot work (after WithDefaults).
func (l Limits) Validate() error {
	switch {
	case l.ReadHeaderTimeout < 0 || l.ReadTimeout < 0 || l.HandlerTimeout < 0 || l.WriteTimeout < 0 || l.IdleTimeout < 0:
		return errors.New("HTTP timeouts must not be negative")
	case l.MaxHeaderBytes < 0:
		return errors.New("HTTP header limit must not be negative")
	case l.MaxConns < 0:
		return errors.New("HTTP connection cap must not be negative")
	case l.HandlerTimeout >= l.WriteTimeout:
		return fmt.Errorf("HTTP handler timeout %v must be shorter than the write timeout %v", l.HandlerTimeout, l.WriteTimeout)
	}
	return nil
}

// NewServer returns a server for h with l's limits (zero values take the
// defaults): every certmail HTTP server is built here. Each request's
// context ends after l.HandlerTimeout.
//
// The server keeps at most l.MaxConns connections open, on whatever
// listener it serves: past the cap, a new connection takes the place of an
// idle keep-alive one, and is closed at once when none is idle. Headers are
// bounded per request, bodies by the API's budget, and this bounds how many
// requests hold them, so no client, authenticated or not, can take the
// process past its memory limit by opening connections.
//
// net/http's own messages (a handler's panic, a superfluous WriteHeader, a
// failed Accept) are lines of the logger "http" of log, throttled
// (logging.HTTPErrorLog), not plain text on stderr; a nil log drops them.
// Serve and Background.Stop write the count of those held back when the
// server stops; whoever stops a server otherwise calls
// logging.FlushHTTPErrorLog(srv.ErrorLog).
func NewServer(h http.Handler, l Limits, log *zap.Logger) *http.Server {
	l = l.WithDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	conns := &connCap{max: l.MaxConns, refused: l.Refused, open: map[net.Conn]struct{}{}, idle: map[net.Conn]struct{}{}}
	return &http.Server{
		ErrorLog:  logging.HTTPErrorLog(log.Named("http"), nil),
		ConnState: conns.track,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), l.HandlerTimeout)
			defer cancel()
			h.ServeHTTP(w, r.WithContext(ctx))
		}),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// connCap keeps count of a server's open connections, through its
// ConnState hook, and closes those over the cap. It closes rather than
// waits (as netutil.LimitListener's Accept does): a connection held back
// in the listen queue would wait for a slot behind every stalled one, with
// a liveness probe among them, and could never take the place of an idle
// keep-alive connection, which a client holding its pool open keeps for
// IdleTimeout. Closed, the client sees its error at once and can try again.
type connCap struct {
	max     int
	refused func() // told of each connection closed for want of an idle one; may be nil
	mu      sync.Mutex
	open    map[net.Conn]struct{} // the connections counted
	idle    map[net.Conn]struct{} // those of open between two requests
}

// track is the server's ConnState hook. A connection over the cap is
// closed here, before the server reads anything from it; the server then
// ends it as it ends any connection whose peer went away.
func (c *connCap) track(conn net.Conn, state http.ConnState) {
	var closing net.Conn
	c.mu.Lock()
	switch state {
	case http.StateNew:
		if len(c.open) >= c.max {
			closing = c.anyIdle()
			if closing == nil {
				closing = conn // none to replace: conn goes
				break
			}
			delete(c.open, closing)
			delete(c.idle, closing)
		}
		c.open[conn] = struct{}{}
	case http.StateIdle:
		if _, ok := c.open[conn]; ok {
			c.idle[conn] = struct{}{}
		}
	case http.StateActive:
		delete(c.idle, conn)
	case http.StateClosed, http.StateHijacked:
		delete(c.open, conn)
		delete(c.idle, conn)
	}
	c.mu.Unlock()
	if closing == conn && c.refused != nil {
		c.refused() // before the close, which the client sees: it finds the refusal counted
	}
	if closing != nil {
		_ = closing.Close()
	}
}

// anyIdle returns one idle connection, nil when none is; c.mu is held.
func (c *connCap) anyIdle() net.Conn {
	for conn := range c.idle {
		return conn
	}
	return nil
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, ready for a component's own series.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Router is where Routes registers its handlers (an *http.ServeMux, or a
// table that also records what each route needs).
type Router interface {
	Handle(pattern string, h http.Handler)
}

// ReadyTimeout is the deadline of ready on each /readyz request: a Redis
// that does not answer within it makes the answer 503.
const ReadyTimeout = 2 * time.Second

// Routes adds /healthz, /readyz and /metrics to mux. ready is called with
// the deadline ReadyTimeout on every /readyz request, and must end by then
// (certmail's go-redis clients honour it); when it fails, the answer says
// only "not ready" and log gets the cause, which may name hosts and ports:
// a cause repeated (but for its addresses, ports and counts) is logged at
// most once per logging.ThrottlePeriod, with the number of probes held
// back since, so that a probe every few seconds through an outage does not
// write a line each time.
func Routes(mux Router, ready func(context.Context) error, g prometheus.Gatherer, log *zap.Logger) {
	throttle := logging.NewThrottle(0, nil)
	mux.Handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	}))
	mux.Handle("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(ctx); err != nil {
			if ok, n := throttle.Allow(logging.Key(zapcore.WarnLevel, err.Error())); ok {
				fields := []zap.Field{zap.Error(err)}
				if n > 0 {
					fields = append(fields, zap.Int("suppressed", n))
				}
				log.Warn("not ready", fields...)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready")
			return
		}
		fmt.Fprintln(w, "ready")
	}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
}

// hostLabel is one label of a DNS name.
var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// CheckAddr reports why addr cannot be a TCP listen address: it must be
// host:port, the host empty, an IP address or a DNS name, the port a number
// up to 65535 (0 or empty: any free one) or a service name. It looks up
// nothing beyond the local services database: a host name that does not
// resolve, or a port in use, fails only when listening.
func CheckAddr(addr string) error {
	msg := fmt.Sprintf("%.64q is not a listen address", addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New(msg + ": want host:port, such as :8080 or 127.0.0.1:8080")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return errors.New(msg + ": the port must be a number from 0 to 65535")
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	ok := len(name) > 0 && len(name) <= 253
	for label := range strings.SplitSeq(name, ".") {
		ok = ok && hostLabel.MatchString(label)
	}
	if !ok {
		return errors.New(msg + ": the host must be empty, an IP address or a host name")
	}
	return nil
}

// listen listens on addr; its error names addr and why, once.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError // "listen tcp <addr>: bind: address already in use"
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// Shutdown says how Serve stops once its context is done.
type Shutdown struct {
	// Timeout is the time the requests in flight get to answer. Past it
	// their connections are closed, and Serve fails saying how many were
	// cut off.
	Timeout time.Duration
	// CancelBefore is how long before Timeout runs out the contexts of the
	// requests still running are cancelled, with the cause ErrStopping, so
	// that they give up what they wait for and answer before their
	// connections are closed: the time a handler needs to answer once
	// cancelled. The requests get a second to finish on their own first
	// (half of Timeout when it is under 2 s), whatever CancelBefore says; 0
	// cancels them at the timeout.
	CancelBefore time.Duration
	// Cancelled, when set, is called with the number of requests still
	// running when their contexts are cancelled before the timeout (never
	// with 0).
	Cancelled func(running int)
}

// ErrStopping is the cause (context.Cause) of the context of a request that
// Serve cancelled because its server is shutting down.
var ErrStopping = errors.New("the server is shutting down")

// Serve serves srv (built by NewServer) on addr until ctx is done, then
// shuts down as sd says: it stops accepting connections, waits for the
// requests in flight, cancels those still running sd.CancelBefore before
// sd.Timeout, and closes the connections of any still running at
// sd.Timeout. started, when not nil, receives the bound address (useful
// with port 0). Serve sets srv.BaseContext and wraps srv.Handler to count
// and cancel the requests. When it returns, the count of net/http's
// messages held back is written (logging.FlushHTTPErrorLog).
func Serve(ctx context.Context, addr string, srv *http.Server, sd Shutdown, started func(net.Addr)) error {
	ln, err := listen(addr)
	if err != nil {
		return err
	}
	defer logging.FlushHTTPErrorLog(srv.ErrorLog) // the repeats held back, counted as it stops
	reqs := track(srv)
	defer reqs.cancel(ErrStopping) // no request outlives Serve
	if started != nil {
		started(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	if err := reqs.shutdown(srv, sd); err != nil {
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return fmt.Errorf("shutdown %s: %w", addr, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", addr, err)
	}
	return nil
}

// requests counts the requests a server is handling; cancel ends the
// contexts of all of them, each request's context being a child of ctx.
type requests struct {
	running atomic.Int64
	ctx     context.Context
	cancel  context.CancelCauseFunc
}

// track makes every request of srv counted by the requests it returns, and
// its context a child of theirs.
func track(srv *http.Server) *requests {
	r := &requests{}
	r.ctx, r.cancel = context.WithCancelCause(context.Background())
	srv.BaseContext = func(net.Listener) context.Context { return r.ctx }
	h := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.running.Add(1)
		defer r.running.Add(-1)
		h.ServeHTTP(w, req)
	})
	return r
}

// shutdown shuts srv down as sd says. Its error, when the timeout ran out,
// says how many requests were still running; their connections are closed.
func (r *requests) shutdown(srv *http.Server, sd Shutdown) error {
	ctx, cancel := context.WithTimeout(context.Background(), sd.Timeout)
	defer cancel()
	stopping := time.AfterFunc(sd.cancelAt(), func() {
		if n := r.running.Load(); n > 0 && sd.Cancelled != nil {
			sd.Cancelled(int(n))
		}
		r.cancel(ErrStopping)
	})
	defer stopping.Stop()
	err := srv.Shutdown(ctx)
	if err == nil {
		return nil
	}
	n := r.running.Load()
	r.cancel(ErrStopping)
	_ = srv.Close()
	return fmt.Errorf("%s still running after the shutdown timeout (%v), closed without an answer: %w", requestCount(n), sd.Timeout, err)
}

// cancelAt is how long after the shutdown begins the requests still
// running are cancelled: CancelBefore before the timeout, but not before a
// second (half the timeout, under 2 s) in which a request that is not stuck
// ends on its own.
func (sd Shutdown) cancelAt() time.Duration {
	return max(sd.Timeout-sd.CancelBefore, min(sd.Timeout/2, time.Second))
}

// requestCount is "1 request" or "n requests".
func requestCount(n int64) string {
	if n == 1 {
		return "1 request"
	}
	return fmt.Sprintf("%d requests", n)
}

// Background is the admin server of a process whose main work is elsewhere
// (a worker, a scheduler): started by Start, stopped by Stop. A nil
// *Background (no address configured) is valid and does nothing.
type Background struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{} // closed when serving ended
	err  error         // why serving ended, when not by Stop
}

// Option adds to what Start serves.
type Option func(Router)

// WithProfiling adds net/http/pprof's handlers under /debug/pprof/: CPU,
// heap, goroutine and other profiles of the process, for whoever reaches
// the address. A CPU profile must be shorter than the server's handler
// timeout (DefaultHandlerTimeout): ask for ?seconds=10, say. The command
// line is not served (/debug/pprof/cmdline is 404): it holds whatever
// secret was given as a flag.
func WithProfiling() Option {
	return func(mux Router) {
		mux.Handle("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
		mux.Handle("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		mux.Handle("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
		mux.Handle("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	}
}

// Start serves /healthz, /readyz (ready) and /metrics (g) on addr in the
// background, with the default Limits but at most AdminMaxConns
// connections, and what opts add; log receives why /readyz failed and
// net/http's own messages. An
// empty addr means no admin server: Start returns nil, nil.
func Start(addr string, ready func(context.Context) error, g prometheus.Gatherer, log *zap.Logger, opts ...Option) (*Background, error) {
	if addr == "" {
		return nil, nil
	}
	mux := http.NewServeMux()
	Routes(mux, ready, g, log)
	for _, o := range opts {
		o(mux)
	}
	ln, err := listen(addr)
	if err != nil {
		return nil, err
	}
	b := &Background{srv: NewServer(mux, Limits{MaxConns: AdminMaxConns}, log), addr: ln.Addr(), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			b.err = fmt.Errorf("serve %s: %w", addr, err)
		}
	}()
	return b, nil
}

// Addr is the bound address (nil without a server).
func (b *Background) Addr() net.Addr {
	if b == nil {
		return nil
	}
	return b.addr
}

// Done is closed when the server stopped serving by itself (Err says why);
// nil, so never ready, without a server.
func (b *Background) Done() <-chan struct{} {
	if b == nil {
		return nil
	}
	return b.done
}

// Err is why serving ended, once Done is closed.
func (b *Background) Err() error {
	if b == nil {
		return nil
	}
	<-b.done
	return b.err
}

// Stop gives open requests grace to finish, then closes the server and
// writes the count of net/http's messages held back
// (logging.FlushHTTPErrorLog).
func (b *Background) Stop(grace time.Duration) error {
	if b == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := b.srv.Shutdown(ctx)
	<-b.done
	logging.FlushHTTPErrorLog(b.srv.ErrorLog)
	if err != nil {
		return errors.Join(fmt.Errorf("shutdown %s: %w", b.addr, err), b.err)
	}
	return b.err
}
