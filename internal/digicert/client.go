// Package digicert is certmail's client for the DigiCert CertCentral Services
// API. It performs the email operations certmail offers (replace an order's
// additional emails, resend an order's or a domain's DCV emails, email an
// issued certificate) and reads an order's validation status, retries
// transient failures within a stated budget, and turns every failure into a
// typed error that Classify sorts into the one retry decision the rest of
// certmail relies on.
//
// The API key travels only in the X-DC-DEVKEY header: it never appears in an
// error, in a formatted Client or Config, or in a recorded response body.
// SetAPIKey replaces it while calls run, for a key read again from its file.
package digicert

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/certmail/certmail/internal/digicert/baseurl"
)

// DefaultBaseURL is the CertCentral Services API of DigiCert's US instance.
const DefaultBaseURL = "https://www.digicert.com/services/v2"

// Endpoint names, used in metrics labels and errors.
const (
	EndpointAdditionalEmails = "additional-emails" // PUT /order/certificate/{id}/additional-emails
	EndpointResendEmails     = "resend-emails"     // PUT /order/certificate/{id}/resend-emails
	EndpointSendEmail        = "sendemail"         // PUT /certificate/{id}/sendemail
	EndpointDomainDCVEmails  = "domain-dcv-emails" // PUT /domain/{id}/dcv/emails
	EndpointOrderValidation  = "order-validation"  // GET /order/certificate/{id}/validation
)

// Endpoints returns the name of every endpoint the client calls, so that a
// caller can create each endpoint's metric series before its first request.
func Endpoints() []string {
	return []string{EndpointAdditionalEmails, EndpointResendEmails, EndpointSendEmail,
		EndpointDomainDCVEmails, EndpointOrderValidation}
}

const (
	defaultUserAgent = "certmail/dev"
	// DefaultTimeout bounds one HTTP attempt unless Config says otherwise
	// (DIGICERT_TIMEOUT).
	DefaultTimeout     = 10 * time.Second
	defaultMaxAttempts = 4
	// DefaultMaxElapsed is the budget of one call, its attempts and waits
	// included, unless Config says otherwise. Each attempt's timeout comes
	// out of it: a Timeout longer than it has no effect.
	DefaultMaxElapsed = 20 * time.Second
	// MinTimeout is the shortest per-attempt Timeout certmail's settings
	// accept: the tenth of the call's budget (Headroom) a PUT is given to
	// start in. DigiCert may take a second or more to answer a sendemail,
	// and an attempt cut while it acts is retried: its emails go out twice.
	MinTimeout            = DefaultMaxElapsed / 10
	defaultInitialBackoff = 500 * time.Millisecond

	backoffMultiplier     = 2
	backoffJitter         = 0.5      // each wait is the nominal one ±50%
	maxResponseBody       = 64 << 10 // read at most this much of an answer not decoded
	maxDecodedBody        = 1 << 20  // an answer that is decoded: an order of 250 domains fits many times over
	headerAPIKey          = "X-DC-DEVKEY"
	contentTypeJSON       = "application/json"
	redactedPlaceholder   = "[redacted]"
	maxUserAgentLength    = 256
	dialTimeout           = 5 * time.Second
	tlsHandshakeTimeout   = 5 * time.Second
	idleConnTimeout       = 90 * time.Second
	maxIdleConnsPerHost   = 32
	expectContinueTimeout = time.Second
)

// Limiter is consulted before every HTTP attempt (the shared rate limiter plugs
// in here). Acquire blocks until a request may be sent or ctx is done; the
// client calls release once the attempt has ended (answer or not), so that a
// limiter can count the request from before it left until after it arrived.
type Limiter interface {
	Acquire(ctx context.Context) (release func(), err error)
}

// Observer receives one call per HTTP attempt (metrics plug in here). status is
// 0 when no response arrived. It is called on the calling goroutine and should
// return quickly.
type Observer interface {
	ObserveRequest(endpoint string, status int, d time.Duration)
}

// Config configures a Client. The zero value of every field but APIKey means
// its default.
type Config struct {
	// BaseURL is the API root, default DefaultBaseURL; a trailing slash is
	// tolerated. It must be an absolute http or https URL without credentials,
	// query or fragment.
	BaseURL string
	// APIKey is required; it is sent as X-DC-DEVKEY and nowhere else. It must
	// be printable ASCII without spaces. Client.SetAPIKey replaces it.
	APIKey string
	// HTTPClient sends the requests, default a client of this package with
	// dial and TLS handshake timeouts (never http.DefaultClient). The Client
	// works on a copy that does not follow redirects: a redirect would carry
	// the key to wherever it points, so a 3xx answer is returned as an error.
	HTTPClient *http.Client
	// UserAgent is sent with every request, default "certmail/dev".
	UserAgent string
	// Timeout bounds one HTTP attempt, reading the answer included; default 10s.
	Timeout time.Duration
	// MaxAttempts bounds the HTTP attempts of one call, default 4 (1 = no retry).
	MaxAttempts int
	// MaxElapsed bounds one call, waits and attempts included, default 20s.
	// A call also never runs past its context's deadline. A first attempt,
	// and a retry of a PUT, is only started when, after its wait, a tenth of
	// MaxElapsed (at most Timeout) is left before the earlier of the two: an
	// attempt cut short may still take effect at DigiCert while the call
	// reports a failure, and a resent email would then go out twice. A first
	// attempt not sent for that reason sends nothing and is a wait
	// (ClassRateLimited, ErrorCode "deadline_near"). A read (OrderValidation)
	// has no effect to repeat, so its retries may start as long as any
	// budget is left.
	MaxElapsed time.Duration
	// InitialBackoff is the first wait between attempts, default 500ms; later
	// waits double, and each is jittered by ±50%.
	InitialBackoff time.Duration
	// Limiter, when set, is waited on before every HTTP attempt.
	Limiter Limiter
	// Observer, when set, is told about every HTTP attempt.
	Observer Observer
}

// String describes the configuration without the API key.
func (c Config) String() string {
	key := ""
	if c.APIKey != "" {
		key = redactedPlaceholder
	}
	return fmt.Sprintf("digicert.Config{BaseURL:%q APIKey:%s UserAgent:%q Timeout:%s MaxAttempts:%d MaxElapsed:%s InitialBackoff:%s Limiter:%t Observer:%t}",
		c.BaseURL, key, c.UserAgent, c.Timeout, c.MaxAttempts, c.MaxElapsed, c.InitialBackoff, c.Limiter != nil, c.Observer != nil)
}

// Format prints String for every verb, so that no verb (%v, %+v, %#v, %s, %d...)
// can print the API key.
func (c Config) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, c.String())
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.BaseURL = cmp.Or(c.BaseURL, DefaultBaseURL)
	c.UserAgent = cmp.Or(c.UserAgent, defaultUserAgent)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, defaultMaxAttempts)
	c.MaxElapsed = cmp.Or(c.MaxElapsed, DefaultMaxElapsed)
	c.InitialBackoff = cmp.Or(c.InitialBackoff, defaultInitialBackoff)
	return c
}

// Validate reports the first invalid setting. Messages never quote the key,
// nor the password, query or fragment of the base URL (baseurl.Check).
func (c Config) Validate() error {
	if c.APIKey == "" {
		return errors.New("api key is required")
	}
	if !isToken(c.APIKey) {
		return errNotToken
	}
	if _, err := parseBaseURL(c.BaseURL); err != nil {
		return err
	}
	if len(c.UserAgent) > maxUserAgentLength || !isHeaderText(c.UserAgent) {
		return errors.New("user agent must be printable ASCII of at most 256 characters")
	}
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("timeout %s is negative", c.Timeout)
	case c.MaxAttempts < 0:
		return fmt.Errorf("max attempts %d is negative", c.MaxAttempts)
	case c.MaxElapsed < 0:
		return fmt.Errorf("max elapsed %s is negative", c.MaxElapsed)
	case c.InitialBackoff < 0:
		return fmt.Errorf("initial backoff %s is negative", c.InitialBackoff)
	}
	return nil
}

// parseBaseURL checks a base URL (baseurl.Check) and returns it without
// trailing slashes.
func parseBaseURL(raw string) (string, error) {
	if err := baseurl.Check(raw); err != nil {
		return "", fmt.Errorf("base URL: %w", err)
	}
	u, _ := url.Parse(raw) // parses: baseurl.Check parsed it
	return strings.TrimRight(u.String(), "/"), nil
}

// errNotToken refuses an API key that cannot travel in a header as it is.
var errNotToken = errors.New("api key must be printable ASCII without spaces")

// isToken reports whether s is non-empty printable ASCII without spaces.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return s != ""
}

// isHeaderText reports whether s is printable ASCII (spaces allowed).
func isHeaderText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Client calls CertCentral. It is safe for concurrent use, SetAPIKey
// included.
type Client struct {
	baseURL        string
	http           *http.Client
	timeout        time.Duration
	maxAttempts    int
	maxElapsed     time.Duration
	initialBackoff time.Duration
	limiter        Limiter
	observer       Observer
	// creds are the key's headers and redactor, replaced whole by
	// SetAPIKey; each attempt loads them once. A pointer, so that String's
	// value receiver copies no atomic.
	creds *atomic.Pointer[credentials]
	// copyHeaders gives each request a copy of the headers: set when
	// another client's transport sends them, in case it changes them.
	copyHeaders bool
}

// credentials are what a request carries of the API key and what cleans it
// from what comes back.
type credentials struct {
	key string
	// headers are every request's headers, without and with a body. With
	// this package's transport, which only reads a request (as a
	// RoundTripper must), every request carries them as they are.
	headers, bodyHeaders http.Header
	// redact removes the key, and the one before it, from answers and
	// errors.
	redact redactor
}

// withKey returns cr with key in place of its key; the redactor removes
// both.
func (cr *credentials) withKey(key string) *credentials {
	next := &credentials{key: key, headers: cr.headers.Clone(), bodyHeaders: cr.bodyHeaders.Clone(),
		redact: newRedactor(key, cr.key)}
	next.headers.Set(headerAPIKey, key)
	next.bodyHeaders.Set(headerAPIKey, key)
	return next
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new digicert client: %w", err)
	}
	base, err := parseBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("new digicert client: %w", err)
	}
	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	} else {
		hc.Transport = newTransport()
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	headers := http.Header{}
	headers.Set(headerAPIKey, cfg.APIKey)
	headers.Set("Accept", contentTypeJSON)
	headers.Set("User-Agent", cfg.UserAgent)
	bodyHeaders := headers.Clone()
	bodyHeaders.Set("Content-Type", contentTypeJSON)
	creds := &atomic.Pointer[credentials]{}
	creds.Store(&credentials{key: cfg.APIKey, headers: headers, bodyHeaders: bodyHeaders, redact: newRedactor(cfg.APIKey)})
	return &Client{
		baseURL:        base,
		http:           &hc,
		creds:          creds,
		copyHeaders:    cfg.HTTPClient != nil,
		timeout:        cfg.Timeout,
		maxAttempts:    cfg.MaxAttempts,
		maxElapsed:     cfg.MaxElapsed,
		initialBackoff: cfg.InitialBackoff,
		limiter:        cfg.Limiter,
		observer:       cfg.Observer,
	}, nil
}

// Headroom is the least of a call's deadline (its context's, or MaxElapsed)
// that must be left for its first attempt to start: a tenth of MaxElapsed, at
// most Timeout; 2s with the defaults. A call with less left sends nothing and
// returns a wait (ErrorCode "deadline_near"), so a caller whose deadline is
// nearer than Headroom when it begins can never call.
func (c *Client) Headroom() time.Duration {
	return min(c.timeout, c.maxElapsed/10)
}

// newTransport returns the default transport: its own connection pool with
// bounded dial and handshake times (the per-attempt Timeout bounds the rest).
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          maxIdleConnsPerHost,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ExpectContinueTimeout: expectContinueTimeout,
	}
}

// String describes the client without the API key. String and Format have
// value receivers, unlike the other methods, so that printing a dereferenced
// Client cannot print the key either.
func (c Client) String() string {
	return fmt.Sprintf("digicert.Client{BaseURL:%q MaxAttempts:%d MaxElapsed:%s Timeout:%s}",
		c.baseURL, c.maxAttempts, c.maxElapsed, c.timeout)
}

// Format prints String for every verb, so that no verb can print the API key.
func (c Client) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, c.String())
}

// SetAPIKey makes key the API key of every attempt that starts from now on;
// attempts under way keep theirs. It is safe to call while calls run. A key
// that is not printable ASCII without spaces is refused, and the key in use
// kept; the error does not quote the key. Errors and answers have the key
// and the one it replaced removed.
func (c *Client) SetAPIKey(key string) error {
	if !isToken(key) {
		return errNotToken
	}
	for {
		cur := c.creds.Load()
		if cur.key == key {
			return nil
		}
		if c.creds.CompareAndSwap(cur, cur.withKey(key)) {
			return nil
		}
	}
}

// CloseIdleConnections closes the idle connections of the client's transport.
func (c *Client) CloseIdleConnections() {
	c.http.CloseIdleConnections()
}

// Result describes a successful call.
type Result struct {
	Status   int           // the 2xx status DigiCert answered (204 normally)
	Attempts int           // HTTP attempts made, the successful one included
	Duration time.Duration // the whole call, waits included
}

// SetAdditionalEmails replaces the additional notification emails of an order:
// PUT /order/certificate/{orderID}/additional-emails with body sent as is.
func (c *Client) SetAdditionalEmails(ctx context.Context, orderID int64, body []byte) (Result, error) {
	return c.put(ctx, EndpointAdditionalEmails, orderID, "/order/certificate/"+strconv.FormatInt(orderID, 10)+"/additional-emails", body)
}

// ResendDCVEmails resends the domain-control-validation emails of an order:
// PUT /order/certificate/{orderID}/resend-emails with body sent as is.
// A retry after a timeout may send the emails twice. CertCentral accepts it
// for DV orders only; see ResendDomainDCVEmails for OV and EV orders.
func (c *Client) ResendDCVEmails(ctx context.Context, orderID int64, body []byte) (Result, error) {
	return c.put(ctx, EndpointResendEmails, orderID, "/order/certificate/"+strconv.FormatInt(orderID, 10)+"/resend-emails", body)
}

// SendCertificateEmail emails a copy of an issued certificate:
// PUT /certificate/{certificateID}/sendemail with body sent as is.
// A retry after a timeout may send the email twice.
func (c *Client) SendCertificateEmail(ctx context.Context, certificateID int64, body []byte) (Result, error) {
	return c.put(ctx, EndpointSendEmail, certificateID, "/certificate/"+strconv.FormatInt(certificateID, 10)+"/sendemail", body)
}

// ResendDomainDCVEmails resends the domain-control-validation emails of one
// domain (of an OV or EV order, or submitted for pre-validation):
// PUT /domain/{domainID}/dcv/emails with body sent as is. A retry after a
// timeout may send the emails twice.
func (c *Client) ResendDomainDCVEmails(ctx context.Context, domainID int64, body []byte) (Result, error) {
	return c.put(ctx, EndpointDomainDCVEmails, domainID, "/domain/"+strconv.FormatInt(domainID, 10)+"/dcv/emails", body)
}

// OrderValidation reads an order's validation status:
// GET /order/certificate/{orderID}/validation. It counts against the
// Limiter and is reported to the Observer like every other call; an answer
// that is not the JSON object expected (or is over 1 MiB) is an error
// wrapping ErrBadAnswer, and so is one without order_status as a string or,
// for a pending order, without dns_name_validations as a list. No text of
// the answer it returns holds the API key (see decodeOrderValidation).
func (c *Client) OrderValidation(ctx context.Context, orderID int64) (OrderValidation, Result, error) {
	var v OrderValidation
	res, err := c.do(ctx, call{
		method:   http.MethodGet,
		endpoint: EndpointOrderValidation,
		id:       orderID,
		path:     "/order/certificate/" + strconv.FormatInt(orderID, 10) + "/validation",
		read:     true,
		decode: func(body []byte, redact redactor) (err error) {
			v, err = decodeOrderValidation(body, redact)
			return err
		},
	})
	if err != nil {
		return OrderValidation{}, res, err
	}
	return v, res, nil
}

// put sends one of the PUT operations.
func (c *Client) put(ctx context.Context, endpoint string, id int64, path string, body []byte) (Result, error) {
	return c.do(ctx, call{method: http.MethodPut, endpoint: endpoint, id: id, path: path, body: body})
}

// call describes one call for do.
type call struct {
	method   string
	endpoint string
	id       int64
	path     string
	body     []byte // sent as is; nil for none (a GET)
	// read marks a call without effect at DigiCert: an attempt the call's
	// deadline may cut short is harmless, so retries need no headroom.
	read bool
	// decode, when set, reads the body of a 2xx answer (at most 1 MiB),
	// running the text it keeps through redact, the attempt's; an answer it
	// cannot read, or a longer one, is an error wrapping ErrBadAnswer,
	// retried like a transient failure.
	decode func(body []byte, redact redactor) error
}

// do is the path shared by every call: it sends cl until an attempt succeeds
// (a 2xx that cl.decode, if any, could read), fails for a reason other than
// a transient one, or the budget (MaxAttempts, MaxElapsed, ctx) is spent.
func (c *Client) do(ctx context.Context, cl call) (Result, error) {
	start := time.Now()
	endpoint := cl.endpoint
	if cl.id <= 0 {
		return Result{}, fmt.Errorf("digicert %s: %w: id %d is not positive", endpoint, ErrInvalidRequest, cl.id)
	}
	if (cl.body != nil || cl.method != http.MethodGet) && !json.Valid(cl.body) {
		return Result{}, fmt.Errorf("digicert %s: %w: body is not JSON", endpoint, ErrInvalidRequest)
	}

	// callCtx carries the call's budget; ctx alone tells the caller's wishes.
	callCtx, cancel := context.WithTimeout(ctx, c.maxElapsed)
	defer cancel()
	deadline, _ := callCtx.Deadline()
	// headroom is what an attempt needs left of the call's deadline to be
	// worth sending, however much of the budget the caller's deadline
	// leaves. A retry of a read, which an early end cannot harm, needs none.
	headroom := c.Headroom()
	retryHeadroom := headroom
	if cl.read {
		retryHeadroom = 0
	}
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.initialBackoff),
		backoff.WithMultiplier(backoffMultiplier),
		backoff.WithRandomizationFactor(backoffJitter),
		backoff.WithMaxInterval(max(c.maxElapsed, c.initialBackoff)),
		backoff.WithMaxElapsedTime(c.maxElapsed),
	)

	attempts := 0
	var lastErr error
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, &RequestError{Endpoint: endpoint, Attempts: attempts, Err: err}
		}
		need := headroom // a first attempt without it is a wait
		if attempts > 0 {
			need = retryHeadroom
		}
		release, err := c.admit(ctx, callCtx, endpoint, need, attempts, lastErr)
		if err != nil {
			return Result{}, err
		}
		attempts++
		status, err := c.attempt(callCtx, cl, attempts)
		release()
		if err == nil {
			return Result{Status: status, Attempts: attempts, Duration: time.Since(start)}, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The caller gave up: say so, not what the interrupted attempt saw.
			return Result{}, &RequestError{Endpoint: endpoint, Attempts: attempts, Err: ctxErr}
		}
		lastErr = err
		if Classify(err) != ClassTransient || attempts >= c.maxAttempts {
			return Result{}, err
		}
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			return Result{}, err
		}
		if time.Until(deadline)-wait < retryHeadroom {
			return Result{}, err // the next attempt could not start, or not finish, in time
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-callCtx.Done():
			timer.Stop()
			if ctxErr := ctx.Err(); ctxErr != nil {
				return Result{}, &RequestError{Endpoint: endpoint, Attempts: attempts, Err: ctxErr}
			}
			return Result{}, err
		}
	}
}

// admit checks that at least need of callCtx's budget is left for an
// attempt of a call that has made attempts so far (lastErr the last one's
// error), then waits for the limiter, if there is one, and checks again;
// release ends the attempt's admission.
func (c *Client) admit(ctx, callCtx context.Context, endpoint string, need time.Duration, attempts int, lastErr error) (release func(), err error) {
	deadline, _ := callCtx.Deadline()
	if left := time.Until(deadline); left < need { // the caller's deadline is too near
		return nil, c.notSent(ctx, endpoint, attempts, lastErr, deadlineNear{left: left, need: need})
	}
	if c.limiter == nil {
		return func() {}, nil
	}
	rel, err := c.limiter.Acquire(callCtx)
	if err != nil {
		return nil, c.limiterError(ctx, callCtx, endpoint, attempts, lastErr, err)
	}
	if time.Until(deadline) < need { // the limiter used up the budget
		rel()
		return nil, c.limiterError(ctx, callCtx, endpoint, attempts, lastErr, nil)
	}
	return rel, nil
}

// notSent is the error of a call whose next attempt is not sent for why: the
// caller's own end if it came, else DigiCert's last answer if an attempt
// was made, else why (nothing was sent: a wait, not a failure).
func (c *Client) notSent(ctx context.Context, endpoint string, attempts int, lastErr, why error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &RequestError{Endpoint: endpoint, Attempts: attempts, Err: ctxErr}
	}
	if lastErr != nil {
		return lastErr
	}
	return &RequestError{Endpoint: endpoint, Attempts: attempts, Err: why}
}

// limiterError turns a failed Limiter.Acquire (err) or a wait that left too
// little of the budget (err nil) into the error of the call.
func (c *Client) limiterError(ctx, callCtx context.Context, endpoint string, attempts int, lastErr, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &RequestError{Endpoint: endpoint, Attempts: attempts, Err: ctxErr}
	}
	if lastErr != nil {
		// The budget cannot fit another attempt: what DigiCert said last is
		// the more useful error.
		return lastErr
	}
	if err == nil || callCtx.Err() != nil {
		// Nothing was sent and the wait is over: a wait, not a failure.
		return &RequestError{Endpoint: endpoint, Attempts: attempts, Err: fmt.Errorf("%w: %w", errLimiter, budgetSpent{})}
	}
	return &RequestError{Endpoint: endpoint, Attempts: attempts, Err: fmt.Errorf("%w: %w", errLimiter, c.creds.Load().redact.err(err))}
}

// attempt sends one request and reads its answer. It returns the status of a
// 2xx answer (decoded by cl.decode, if any), an *APIError for any other
// answer, or a *RequestError when no answer (or not all of a body to decode)
// arrived.
func (c *Client) attempt(ctx context.Context, cl call, attempt int) (int, error) {
	endpoint := cl.endpoint
	cr := c.creds.Load() // the key of this attempt, from its request to its errors
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, c.baseURL+cl.path, body)
	if err != nil {
		return 0, fmt.Errorf("digicert %s: %w: %w", endpoint, ErrInvalidRequest, cr.redact.err(err))
	}
	req.Header = cr.headers
	if cl.body != nil {
		req.Header = cr.bodyHeaders
	}
	if c.copyHeaders {
		req.Header = req.Header.Clone()
	}

	began := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.observe(endpoint, 0, time.Since(began))
		return 0, &RequestError{Endpoint: endpoint, Attempts: attempt, Err: cr.redact.err(err)}
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	if ok && cl.decode != nil {
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxDecodedBody+1))
		_ = resp.Body.Close()
		c.observe(endpoint, resp.StatusCode, time.Since(began))
		switch {
		case err != nil: // the answer broke off: as if none arrived
			return 0, &RequestError{Endpoint: endpoint, Attempts: attempt, Err: cr.redact.err(err)}
		case len(data) > maxDecodedBody:
			return 0, fmt.Errorf("digicert %s: %w: longer than %d bytes", endpoint, ErrBadAnswer, maxDecodedBody)
		}
		if err := cl.decode(data, cr.redact); err != nil {
			return 0, fmt.Errorf("digicert %s: %w: %w", endpoint, ErrBadAnswer, cr.redact.err(err))
		}
		return resp.StatusCode, nil
	}
	// The status decides; the body is best effort, read up to a bound so the
	// connection can be reused, then closed.
	var data []byte
	if resp.Body != http.NoBody { // a 204 has none: no buffer to allocate
		data, _ = io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	}
	_ = resp.Body.Close()
	c.observe(endpoint, resp.StatusCode, time.Since(began))
	if ok {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, newAPIError(endpoint, resp.StatusCode, data, attempt, cr.redact)
}

// observe reports one attempt to the Observer, if any.
func (c *Client) observe(endpoint string, status int, d time.Duration) {
	if c.observer != nil {
		c.observer.ObserveRequest(endpoint, status, d)
	}
}
