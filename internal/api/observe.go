package api

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// metrics are the API's Prometheus series.
type metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	// connsRefused counts connections closed at the cap (admin.Limits.Refused).
	connsRefused prometheus.Counter

	// seen holds the series of requests and duration that requests have
	// used, by route and status, so that a request finds its two with one
	// map lookup rather than by hashing its label values twice. It holds
	// no series the vectors do not hold: entries are added on first use.
	mu   sync.RWMutex
	seen map[routeStatus]requestSeries
}

// routeStatus is a route pattern and the status of an answer.
type routeStatus struct {
	route  string
	status int
}

// requestSeries are the series a request of one route and status counts in.
type requestSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// series returns the series of a request of route answered with status.
func (m *metrics) series(route string, status int) requestSeries {
	k := routeStatus{route, status}
	m.mu.RLock()
	rs, ok := m.seen[k]
	m.mu.RUnlock()
	if ok {
		return rs
	}
	rs = requestSeries{
		requests: m.requests.WithLabelValues(route, strconv.Itoa(status)),
		duration: m.duration.WithLabelValues(route),
	}
	m.mu.Lock()
	m.seen[k] = rs
	m.mu.Unlock()
	return rs
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_api_requests_total",
			Help: "HTTP requests answered by the API, by route pattern and status code.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certmail_api_request_duration_seconds",
			Help:    "Time taken to answer HTTP requests, by route pattern.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_api_auth_failures_total",
			Help: "Requests refused by authentication, by reason: missing (no token), invalid (a token that is not valid), forbidden (a role that may not use the route), rate_limited (the address failed too often), host (addressed to a host name the API does not answer).",
		}, []string{"reason"}),
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certmail_api_connections_refused_total",
			Help: "Connections the API closed as they opened: MaxConns (128) were open and none idle to give way.",
		}),
		seen: map[routeStatus]requestSeries{},
	}
	for _, reason := range authFailureReasons() {
		m.authFailures.WithLabelValues(reason) // every reason is exported from the start, at 0
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.authFailures, m.connsRefused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register API metrics: %w", err)
		}
	}
	return m, nil
}

// routeUnmatched labels requests that matched no route, so that arbitrary
// paths never become label values.
const routeUnmatched = "unmatched"

// routeLabel is the route of r in the metrics and the request log: the
// pattern the mux picked for it or, for a request refused before the mux
// ran (by the cross-origin check or authentication), the pattern it would
// have picked, as authentication decided on it. Anything but a registered
// pattern is routeUnmatched, so labels stay within the route table.
func (s *Server) routeLabel(r *http.Request) string {
	pattern := r.Pattern
	if pattern == "" {
		pattern = s.route(r)
	}
	if _, ok := s.access[pattern]; !ok {
		return routeUnmatched
	}
	return pattern
}

// routeReadyz is the readiness probe's route. Its 503 is its answer while
// Redis is out of reach, not a failure of the API: its request line stays
// at INFO, as for a 200, since a probe every few seconds would otherwise
// write an ERROR line each time through an outage; admin.Routes logs the
// cause, throttled.
const routeReadyz = "GET /readyz"

// requestIDHeader carries the request id: taken from the request when it is
// a sensible id, otherwise generated, and always sent back. It is a
// canonical key, set without Header.Set.
const requestIDHeader = "X-Request-Id"

// observe gives each request an id, answers 500 for a handler that panics,
// counts and times the request and logs one line for it: INFO, or ERROR for
// a 5xx answer other than /readyz's 503 (routeReadyz). The line never holds the body, the query or a header other
// than the request id, so no address or token can reach the log, and names
// a method only when it is a standard one (loggedMethod).
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		o := &observed{info: requestInfo{id: requestID(r.Header.Get(requestIDHeader))}, rec: statusRecorder{ResponseWriter: w}}
		info, rec := &o.info, &o.rec
		w.Header()[requestIDHeader] = []string{info.id}
		r = r.WithContext(withInfo(r.Context(), info))
		func() {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v) // net/http's way to abort a response: let it through
				}
				if !rec.wrote {
					s.writeProblem(rec, r, Problem{Status: http.StatusInternalServerError}, fmt.Errorf("panic: %v", v))
				} else {
					info.err = fmt.Errorf("panic after the answer started: %v", v)
				}
			}()
			next.ServeHTTP(rec, r)
		}()
		elapsed := time.Since(start)
		status := rec.status
		if !rec.wrote {
			status = http.StatusOK
		}
		route := s.routeLabel(r)
		series := s.metrics.series(route, status)
		series.requests.Inc()
		series.duration.Observe(elapsed.Seconds())
		level := zapcore.InfoLevel
		if status >= 500 && (route != routeReadyz || status != http.StatusServiceUnavailable) {
			level = zapcore.ErrorLevel
		}
		if ce := s.reqLog.Check(level, "http request"); ce != nil {
			fields := make([]zap.Field, 0, 7) // room for role and error: one allocation
			fields = append(fields,
				zap.String("method", loggedMethod(r.Method)), zap.String("route", route), zap.Int("status", status),
				zap.Duration("duration", elapsed), zap.String("request_id", info.id),
			)
			if info.role != "" {
				fields = append(fields, zap.String("role", string(info.role)))
			}
			if info.err != nil {
				fields = append(fields, zap.Error(info.err))
			}
			ce.Write(fields...)
		}
	})
}

// methodOther is logged for a method that is not one of HTTP's standard
// ones.
const methodOther = "other"

// loggedMethod returns method when it is one of the standard HTTP methods
// (RFC 9110 and PATCH), else methodOther: any token is a method, as long as
// the request's headers may be, and it would be written into the line.
func loggedMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return methodOther
}

// requestID returns given when it is 1 to 64 characters of letters, digits,
// '-', '_' and '.', and a new random id otherwise.
func requestID(given string) string {
	if len(given) > 0 && len(given) <= 64 {
		ok := true
		for i := 0; i < len(given) && ok; i++ {
			c := given[i]
			ok = isAlnum(c) || c == '-' || c == '_' || c == '.'
		}
		if ok {
			return given
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// observed is what observe keeps about a request, in one allocation.
type observed struct {
	info requestInfo
	rec  statusRecorder
}

// statusRecorder remembers the status code of the answer.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote && code >= 200 { // 1xx answers are informational: the real one follows
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets the dashboard and the metrics handler stream.
func (r *statusRecorder) Flush() {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush() // not every writer flushes
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
