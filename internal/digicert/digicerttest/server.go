// Package digicerttest is a fake DigiCert CertCentral Services API for tests
// and demos. It serves the operations certmail performs under /services/v2
// (a PUT per task type and GET /order/certificate/{id}/validation), checks keys,
// rate limits, routes and bodies the way CertCentral does (a key can be
// restricted to View Only: Config.ViewOnlyKeys), answers with
// CertCentral's error codes, keeps the effects (stored emails, sent DCV and
// certificate emails) for tests to inspect, within bounds that hold a
// long-running demo's memory (MaxSendsPerID, MaxIDs, MaxRecordedBody,
// Config.RecordLimit), and can misbehave on demand
// (latency, CDN errors, resets, hangs, scripted answers). It models the
// validation of orders (DV, OV, EV; per domain: id, name scope, approval
// scope, method, status), answering the validation read with every member
// of CertCentral's documented example, and can approve domains and issue
// orders, by hand (ApproveDomain, SetOrderStatus) or by a scripted rule
// (Config.ApproveAfter). Nothing is ever emailed.
package digicerttest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DefaultAddr is where `certmail fake-digicert` listens unless told
// otherwise.
const DefaultAddr = "127.0.0.1:8443"

const (
	basePath     = "/services/v2"
	headerAPIKey = "X-DC-DEVKEY"
	// DefaultBlockFor is Config.BlockFor's default.
	DefaultBlockFor = 10 * time.Second
	maxRequestBody  = 1 << 20
)

// Bounds on what the fake keeps, so that a long-running demo server
// (`certmail fake-digicert`, `certmail dev`) holds a bounded amount of
// memory whatever it is sent. Config.RecordLimit bounds the number of
// records.
const (
	// MaxRecordedBody is how much of a request's body its record keeps
	// (Request.Body); Request.BodySize tells the size received. Every body
	// certmail sends in the tests is far smaller.
	MaxRecordedBody = 16 << 10
	// MaxSendsPerID is how many entries the effect logs (DCVSends,
	// CertSends, DomainDCVSends) keep per id: the newest.
	MaxSendsPerID = 100
	// MaxIDs is how many ids each effect log, the additional emails, the
	// resends counted for ApproveAfter and the orders learned from requests
	// keep: those written most recently. An id written before the last
	// MaxIDs others is forgotten, as if it had never been written.
	MaxIDs = 1000
)

// Window is one rolling rate-limit window: at most Limit requests per key in
// any Period.
type Window struct {
	Limit  int
	Period time.Duration
}

// Config configures a Server. The zero value accepts no key.
type Config struct {
	// APIKeys are the valid keys; a request with another key or none is
	// answered 403 access_denied|access_denied_invalid_key.
	APIKeys []string
	// ViewOnlyKeys are valid keys restricted to View Only, as a CertCentral
	// account can restrict a key: they read (GET) as APIKeys do, and every
	// PUT they send to a known route is answered 403
	// access_denied|missing_permission. A key listed in both is View Only:
	// the restriction wins.
	ViewOnlyKeys []string
	// AnyIDExists makes every positive order, certificate and domain id
	// exist (demo mode).
	AnyIDExists bool
	// Missing lists order, certificate and domain ids that do not exist even
	// with AnyIDExists (a demo's way to show a 404).
	Missing []int64
	// ApproveAfter, when positive, approves a domain validated by email
	// once that many DCV resends reached it (through its order or its own
	// endpoint), as if its owner had answered the last one; an order whose
	// domains are all approved is issued. Resends leave a domain validated
	// otherwise (a DNS or HTTP token) pending: it gets no email to answer.
	// 0 never approves by itself.
	ApproveAfter int
	// RateLimits are rolling windows counted per valid key (DigiCert: 100/5s
	// and 1000/3m); none means unlimited. Windows with a limit or period that
	// is not positive are ignored.
	RateLimits []Window
	// BlockFor is how long a key that went over a window stays blocked (every
	// request answered 429 request_limit_exceeded); default 10s.
	BlockFor time.Duration
	// Clock tells the time for windows, blocks and records; default
	// time.Now. It is called with the server's lock held, so it must not call
	// the Server.
	Clock func() time.Time
	// RecordLimit, when positive, keeps only the last RecordLimit requests in
	// Requests (a long-running demo server would grow without bound
	// otherwise); RequestCount and StatusCount still count them all.
	RecordLimit int
}

// String describes the configuration without the keys.
func (c Config) String() string {
	return fmt.Sprintf("digicerttest.Config{APIKeys:%d keys ViewOnlyKeys:%d keys AnyIDExists:%t RateLimits:%v BlockFor:%s}",
		len(c.APIKeys), len(c.ViewOnlyKeys), c.AnyIDExists, c.RateLimits, c.BlockFor)
}

// Format prints String for every verb, so that no verb prints a key.
func (c Config) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, c.String())
}

// Faults make the server misbehave; see SetFaults.
type Faults struct {
	// Latency is added before answering.
	Latency time.Duration
	// ErrorRate is the share of requests answered 502 or 503 with an HTML
	// body, as the CDN in front of CertCentral does.
	ErrorRate float64
	// ResetRate is the share of requests whose connection is reset without
	// an answer.
	ResetRate float64
	// HangRate is the share of requests never answered until the client
	// gives up (or the Server is closed).
	HangRate float64
}

// failure is an answer scripted by FailNext or FailPath.
type failure struct {
	path        string // the request path it answers; any when empty
	remaining   int
	status      int
	body        string
	contentType string
}

// usage is the rate-limit state of one key.
type usage struct {
	times        []time.Time // accepted requests within the longest window
	blockedUntil time.Time
}

// Server is the fake CertCentral; it implements http.Handler and is safe for
// concurrent use.
type Server struct {
	clock       func() time.Time
	recordLimit int
	done        chan struct{}
	closeOnce   sync.Once
	inFlight    atomic.Int64 // requests whose handling has not returned

	mu           sync.Mutex
	keys         map[string]bool
	viewOnly     map[string]bool // View Only keys
	anyID        bool
	missing      map[int64]bool
	windows      []Window
	blockFor     time.Duration
	faults       Faults
	failNext     []failure
	orders       map[int64]bool
	certificates map[int64]bool
	approveAfter int
	models       map[int64]*Order // orders whose validation is modelled, by id
	domainOrder  map[int64]int64  // domain id → its modelled order's id, 0 for a domain on its own
	learned      *idMap[struct{}] // the models made by requests rather than set by hand, bounded
	requests     []*record
	gen          uint64 // incremented by Reset
	total        int
	statuses     map[int]int
	usage        map[string]*usage
	additional   *idMap[[]string]
	dcvSends     *idMap[[]DCVSend]
	certSends    *idMap[[]CertSend]
	domainSends  *idMap[[]DomainDCVSend]
	resends      *idMap[int] // DCV resends that reached each domain
}

// New returns a fake configured by cfg. Orders and certificates are added
// with AddOrder and AddCertificate unless cfg.AnyIDExists.
func New(cfg Config) *Server {
	s := &Server{
		clock:        cfg.Clock,
		recordLimit:  cfg.RecordLimit,
		done:         make(chan struct{}),
		anyID:        cfg.AnyIDExists,
		missing:      map[int64]bool{},
		blockFor:     cfg.BlockFor,
		orders:       map[int64]bool{},
		certificates: map[int64]bool{},
		approveAfter: cfg.ApproveAfter,
		models:       map[int64]*Order{},
		domainOrder:  map[int64]int64{},
		learned:      newIDMap[struct{}](MaxIDs),
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.blockFor <= 0 {
		s.blockFor = DefaultBlockFor
	}
	for _, id := range cfg.Missing {
		s.missing[id] = true
	}
	s.setAPIKeys(cfg.APIKeys)
	s.setViewOnlyKeys(cfg.ViewOnlyKeys)
	s.setRateLimits(cfg.RateLimits)
	s.resetState()
	return s
}

// NewTestServer starts an HTTP server around New(cfg), closed when the test
// ends, and returns the fake and its base URL (ending in /services/v2).
func NewTestServer(tb testing.TB, cfg Config) (*Server, string) {
	tb.Helper()
	s := New(cfg)
	ts := httptest.NewServer(s)
	tb.Cleanup(func() {
		s.Close() // release hanging requests first, or ts.Close would wait for them
		ts.Close()
	})
	return s, ts.URL + basePath
}

// String describes the server without its keys.
func (s *Server) String() string {
	return fmt.Sprintf("digicerttest.Server{requests:%d}", s.RequestCount())
}

// Format prints String for every verb, so that no verb prints a key.
func (s *Server) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, s.String())
}

// Close resets the connections of requests held by Latency or HangRate and
// makes later ones fail at once the same way. The Server still answers
// everything else; closing the HTTP server stays the caller's job.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
}

// AddOrder makes orders known (set-emails and resend-dcv act on orders).
func (s *Server) AddOrder(ids ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.orders[id] = true
	}
}

// AddCertificate makes issued certificates known (send-cert acts on certificates).
func (s *Server) AddCertificate(ids ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.certificates[id] = true
	}
}

// SetAPIKeys replaces the valid keys, e.g. once a revoked key was fixed.
func (s *Server) SetAPIKeys(keys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setAPIKeys(keys)
}

// setAPIKeys needs s.mu held (or s unshared).
func (s *Server) setAPIKeys(keys []string) {
	s.keys = keySet(keys)
}

// SetViewOnlyKeys replaces the View Only keys (Config.ViewOnlyKeys), e.g. to
// lift the restriction of a key: SetViewOnlyKeys() and SetAPIKeys with it.
func (s *Server) SetViewOnlyKeys(keys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setViewOnlyKeys(keys)
}

// setViewOnlyKeys needs s.mu held (or s unshared).
func (s *Server) setViewOnlyKeys(keys []string) {
	s.viewOnly = keySet(keys)
}

// keySet returns the keys but "" as a set.
func keySet(keys []string) map[string]bool {
	set := make(map[string]bool, len(keys))
	for _, k := range keys {
		if k != "" {
			set[k] = true
		}
	}
	return set
}

// SetRateLimits replaces the rate-limit windows; requests already counted
// and current blocks are kept.
func (s *Server) SetRateLimits(windows ...Window) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setRateLimits(windows)
}

// setRateLimits keeps the valid windows; it needs s.mu held (or s unshared).
func (s *Server) setRateLimits(windows []Window) {
	s.windows = nil
	for _, w := range windows {
		if w.Limit > 0 && w.Period > 0 {
			s.windows = append(s.windows, w)
		}
	}
}

// SetFaults replaces the faults; requests already past the fault stage are
// not affected.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// FailNext makes the next n requests, to any endpoint and whatever their key,
// answer status with body and contentType (none when empty) before anything
// else but recording. Calls queue up: FailNext(2, 503, ...) then
// FailNext(1, 429, ...) answers 503, 503, 429. A call with n below 1 or a
// status outside 200-999 (which net/http cannot send as a final answer) is
// ignored.
func (s *Server) FailNext(n int, status int, body, contentType string) {
	s.FailPath("", n, status, body, contentType)
}

// FailPath is FailNext for the requests to one path only, such as
// "/services/v2/order/certificate/1004/resend-emails": requests to other
// paths pass it by, so concurrent traffic cannot take its answers. Among
// the scripted answers that apply to a request, the earliest scripted is
// used. An empty path is FailNext.
func (s *Server) FailPath(path string, n int, status int, body, contentType string) {
	if n <= 0 || status < 200 || status > 999 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = append(s.failNext, failure{path: path, remaining: n, status: status, body: body, contentType: contentType})
}

// Reset forgets recorded requests and counts, effects (the resends counted
// for ApproveAfter too), rate-limit usage and blocks, and pending FailNext
// answers. Keys, windows, faults and known orders (with their validation
// state as it is now), certificates and domains are kept.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetState()
}

// resetState needs s.mu held (or s unshared).
func (s *Server) resetState() {
	s.gen++
	s.failNext = nil
	s.requests = nil
	s.total = 0
	s.statuses = map[int]int{}
	s.usage = map[string]*usage{}
	s.additional = newIDMap[[]string](MaxIDs)
	s.dcvSends = newIDMap[[]DCVSend](MaxIDs)
	s.certSends = newIDMap[[]CertSend](MaxIDs)
	s.domainSends = newIDMap[[]DomainDCVSend](MaxIDs)
	s.resends = newIDMap[int](MaxIDs)
}

// answer is a response decided by the handler.
type answer struct {
	status      int
	body        []byte
	contentType string
	allow       string // the Allow header of a 405
}

// ServeHTTP handles one request. The order of checks is CertCentral's, with
// the test hooks first: recording, FailNext, faults, key, rate limits, route and
// method, id, a View Only key's PUT, body, existence, effect.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	rec, scripted, faults := s.receive(r, body)
	if scripted != nil {
		s.respond(w, rec, *scripted)
		return
	}
	if !s.applyFaults(w, r, rec, faults) {
		return
	}
	s.respond(w, rec, s.process(r, rec, body, readErr))
}

// receive records the request and takes the scripted answer and faults that
// apply to it.
func (s *Server) receive(r *http.Request, body []byte) (*record, *answer, Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := r.Header.Get(headerAPIKey)
	rec := &record{gen: s.gen, Request: Request{
		Method:   r.Method,
		Path:     r.URL.Path,
		Header:   r.Header.Clone(),
		Body:     slices.Clone(body[:min(len(body), MaxRecordedBody)]), // not a slice of body: that would keep all of it
		BodySize: len(body),
		At:       s.clock(),
		KeyValid: key != "" && (s.keys[key] || s.viewOnly[key]),
		ViewOnly: key != "" && s.viewOnly[key],
	}}
	s.requests = append(s.requests, rec)
	if s.recordLimit > 0 && len(s.requests) >= 2*s.recordLimit { // compact now and then, not on every request
		s.requests = append(s.requests[:0:0], s.requests[len(s.requests)-s.recordLimit:]...)
	}
	s.total++
	s.statuses[0]++ // moved to the answered status by respond
	for i := range s.failNext {
		f := &s.failNext[i]
		if f.path != "" && f.path != r.URL.Path {
			continue
		}
		scripted := &answer{status: f.status, body: []byte(f.body), contentType: f.contentType}
		if f.remaining--; f.remaining == 0 {
			s.failNext = append(s.failNext[:i:i], s.failNext[i+1:]...)
		}
		return rec, scripted, s.faults
	}
	return rec, nil, s.faults
}

// respond records the status, then writes the answer (in that order, so that
// a client that got the answer finds the status recorded).
func (s *Server) respond(w http.ResponseWriter, rec *record, a answer) {
	s.setStatus(rec, a.status)
	if a.contentType == "" {
		w.Header()["Content-Type"] = nil // no type and no sniffing
	} else {
		w.Header().Set("Content-Type", a.contentType)
	}
	if a.allow != "" {
		w.Header().Set("Allow", a.allow)
	}
	if len(a.body) > 0 && a.status != http.StatusNoContent && a.status != http.StatusNotModified {
		w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
	}
	w.WriteHeader(a.status)
	if len(a.body) > 0 {
		_, _ = w.Write(a.body)
	}
}

// setStatus records the status answered to rec.
func (s *Server) setStatus(rec *record, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec.gen == s.gen && rec.Status != status {
		s.statuses[rec.Status]--
		s.statuses[status]++
	}
	rec.Status = status
}

// applyFaults plays the faults; it reports whether the request goes on.
func (s *Server) applyFaults(w http.ResponseWriter, r *http.Request, rec *record, f Faults) bool {
	if f.Latency > 0 {
		timer := time.NewTimer(f.Latency)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return false // the client is gone: nobody to answer
		case <-s.done:
			s.reset(w, rec)
			return false
		}
	}
	switch {
	case chance(f.ResetRate):
		s.reset(w, rec)
		return false
	case chance(f.HangRate):
		select {
		case <-r.Context().Done():
		case <-s.done:
			s.reset(w, rec)
		}
		return false
	case chance(f.ErrorRate):
		status := http.StatusBadGateway
		if rand.IntN(2) == 1 {
			status = http.StatusServiceUnavailable
		}
		s.respond(w, rec, cdnError(status))
		return false
	}
	return true
}

// chance reports true with probability p.
func chance(p float64) bool {
	return p > 0 && rand.Float64() < p
}

// reset closes the connection without an answer, with a TCP reset where it
// can. A server that cannot hand over the connection (HTTP/2) answers a CDN
// 502 instead, the nearest failure it can produce.
func (s *Server) reset(w http.ResponseWriter, rec *record) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.respond(w, rec, cdnError(http.StatusBadGateway))
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// cdnError is the HTML page the CDN in front of CertCentral answers.
func cdnError(status int) answer {
	text := http.StatusText(status)
	page := fmt.Sprintf("<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1></center>\r\n</body>\r\n</html>\r\n",
		status, text, status, text)
	return answer{status: status, body: []byte(page), contentType: "text/html"}
}

// process runs CertCentral's own checks and applies the effect.
func (s *Server) process(r *http.Request, rec *record, body []byte, readErr error) answer {
	if !rec.KeyValid {
		return apiError(http.StatusForbidden, "access_denied|access_denied_invalid_key", "The API key is invalid or has been revoked.")
	}
	if !s.admit(r.Header.Get(headerAPIKey)) {
		return apiError(http.StatusTooManyRequests, "request_limit_exceeded", "Service unavailable, please limit request volume.")
	}
	rt, idText, ok := parseRoute(rec.Path)
	if !ok {
		return apiError(http.StatusNotFound, "not_found|route", "The requested route was not found.")
	}
	if r.Method != rt.method() {
		a := apiError(http.StatusMethodNotAllowed, "method_not_allowed", "Method "+r.Method+" is not allowed on this route.")
		a.allow = rt.method()
		return a
	}
	id, ok := parseID(idText)
	if !ok {
		return apiError(http.StatusNotFound, "not_found|route", "The requested route was not found.")
	}
	if rec.ViewOnly && r.Method != http.MethodGet {
		return missingPermission()
	}
	if readErr != nil {
		var tooBig *http.MaxBytesError
		if errors.As(readErr, &tooBig) {
			return apiError(http.StatusRequestEntityTooLarge, "request_too_large", "The request body is too large.")
		}
		return apiError(http.StatusBadRequest, "bad_request_format", "The request body could not be read.")
	}
	return s.apply(rt, id, body)
}

// apply checks the body of a request to route rt and applies its effect.
// A route parseRoute knows but apply does not is a fault of the fake: it
// answers 500 fake_unhandled_route rather than read the body as another
// route's.
func (s *Server) apply(rt route, id int64, body []byte) answer {
	switch rt {
	case routeValidation:
		return s.validation(id)
	case routeDomainEmails:
		send, errs := parseDomainEmails(body)
		if len(errs) > 0 {
			return errorsAnswer(http.StatusBadRequest, errs)
		}
		send.DomainID = id
		return s.resendDomainEmails(send)
	case routeAdditionalEmails:
		emails, errs := parseAdditionalEmails(body)
		if len(errs) > 0 {
			return errorsAnswer(http.StatusBadRequest, errs)
		}
		return s.setAdditionalEmails(id, emails)
	case routeResendEmails:
		send, errs := parseResendEmails(body)
		if len(errs) > 0 {
			return errorsAnswer(http.StatusBadRequest, errs)
		}
		send.OrderID = id
		return s.resendEmails(send)
	case routeSendEmail:
		send, errs := parseSendEmail(body)
		if len(errs) > 0 {
			return errorsAnswer(http.StatusBadRequest, errs)
		}
		send.CertificateID = id
		return s.sendEmail(send)
	}
	return apiError(http.StatusInternalServerError, codeUnhandledRoute,
		fmt.Sprintf("The fake matches route %d but does not apply it: add a case to Server.apply.", rt))
}

// codeUnhandledRoute is the error code of apply's answer to a route it has
// no case for.
const codeUnhandledRoute = "fake_unhandled_route"

// admit counts a request of a valid key against the windows and reports
// whether it may go on; going over a window blocks the key for BlockFor.
func (s *Server) admit(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.windows) == 0 {
		return true
	}
	now := s.clock()
	u := s.usage[key]
	if u == nil {
		u = &usage{}
		s.usage[key] = u
	}
	if now.Before(u.blockedUntil) {
		return false
	}
	var longest time.Duration
	for _, w := range s.windows {
		longest = max(longest, w.Period)
	}
	kept := u.times[:0]
	for _, t := range u.times {
		if now.Sub(t) < longest {
			kept = append(kept, t)
		}
	}
	u.times = kept
	for _, w := range s.windows {
		n := 0
		for _, t := range u.times {
			if now.Sub(t) < w.Period {
				n++
			}
		}
		if n >= w.Limit {
			u.blockedUntil = now.Add(s.blockFor)
			return false
		}
	}
	u.times = append(u.times, now)
	return true
}

// route is one of the operations served.
type route int

const (
	routeAdditionalEmails route = iota + 1
	routeResendEmails
	routeSendEmail
	routeDomainEmails
	routeValidation
	routeEnd // one past the last route: keep it last
)

// method returns the one method a route takes.
func (rt route) method() string {
	if rt == routeValidation {
		return http.MethodGet
	}
	return http.MethodPut
}

// parseRoute matches a path against the routes and returns the text of its
// id segment.
func parseRoute(path string) (route, string, bool) {
	rest, ok := strings.CutPrefix(path, basePath+"/")
	if !ok {
		return 0, "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 4 && parts[0] == "order" && parts[1] == "certificate" && parts[3] == "additional-emails":
		return routeAdditionalEmails, parts[2], true
	case len(parts) == 4 && parts[0] == "order" && parts[1] == "certificate" && parts[3] == "resend-emails":
		return routeResendEmails, parts[2], true
	case len(parts) == 3 && parts[0] == "certificate" && parts[2] == "sendemail":
		return routeSendEmail, parts[1], true
	case len(parts) == 4 && parts[0] == "domain" && parts[2] == "dcv" && parts[3] == "emails":
		return routeDomainEmails, parts[1], true
	case len(parts) == 4 && parts[0] == "order" && parts[1] == "certificate" && parts[3] == "validation":
		return routeValidation, parts[2], true
	}
	return 0, "", false
}

// parseID reads an id segment: digits only, fitting an int64.
func parseID(text string) (int64, bool) {
	if text == "" {
		return 0, false
	}
	for i := 0; i < len(text); i++ {
		if text[i] < '0' || text[i] > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(text, 10, 64)
	return id, err == nil
}

// orderExists needs s.mu held.
func (s *Server) orderExists(id int64) bool {
	return id > 0 && (s.anyID || s.orders[id] || s.models[id] != nil) && !s.missing[id]
}

// certificateExists needs s.mu held.
func (s *Server) certificateExists(id int64) bool {
	return id > 0 && (s.anyID || s.certificates[id]) && !s.missing[id]
}

// setAdditionalEmails replaces an order's additional emails.
func (s *Server) setAdditionalEmails(orderID int64, emails []string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.orderExists(orderID) {
		return orderNotFound()
	}
	s.additional.put(orderID, emails)
	return answer{status: http.StatusNoContent}
}

// resendEmails records a DCV resend of an order; CertCentral takes it for DV
// orders only.
func (s *Server) resendEmails(send DCVSend) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.orderExists(send.OrderID) {
		return orderNotFound()
	}
	if m := s.models[send.OrderID]; m != nil && m.Type != OrderDV {
		return notDVOrder()
	}
	send.At = s.clock()
	appendLog(s.dcvSends, send.OrderID, send)
	s.countOrderResend(send.OrderID)
	return answer{status: http.StatusNoContent}
}

// sendEmail records a certificate sent by email.
func (s *Server) sendEmail(send CertSend) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.certificateExists(send.CertificateID) {
		return apiError(http.StatusNotFound, "not_found|certificate", "Certificate not found.")
	}
	send.At = s.clock()
	appendLog(s.certSends, send.CertificateID, send)
	return answer{status: http.StatusNoContent}
}

// missingPermission is the answer to a View Only key's PUT. DigiCert
// documents the status and code (403 access_denied|missing_permission);
// [assumption] the rest is the fake's: the message's wording, and where the
// check sits among the others, once the route, the method and the id are
// known and before the body and the id's existence are looked at, so that a
// View Only key's PUT of a bad body or an unknown order is refused for the
// permission too, and one to an unknown route or with the wrong method is
// answered as any key's.
func missingPermission() answer {
	return apiError(http.StatusForbidden, "access_denied|missing_permission",
		"The API key is View Only: it does not have permission to make changes.")
}

// orderNotFound is the answer for an unknown order.
func orderNotFound() answer {
	return apiError(http.StatusNotFound, "not_found|order", "Order not found.")
}
