package digicert_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/certmail/certmail/internal/digicert"
)

func apiErr(status int, codes ...string) *digicert.APIError {
	e := &digicert.APIError{Endpoint: digicert.EndpointSendEmail, Status: status, Attempts: 1}
	for _, c := range codes {
		e.Errors = append(e.Errors, digicert.ErrorEntry{Code: c, Message: "m"})
	}
	return e
}

func TestClassifyAndErrorCode(t *testing.T) {
	t.Parallel()
	refused := &url.Error{Op: "Put", URL: "https://example.com/services/v2/certificate/1/sendemail",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	attemptTimeout := &url.Error{Op: "Put", URL: "https://example.com/", Err: context.DeadlineExceeded}
	tests := []struct {
		name  string
		err   error
		class digicert.Class
		code  string
	}{
		{name: "nil", err: nil, class: digicert.ClassNone, code: ""},
		{name: "400 bad format", err: apiErr(400, "bad_request_format"), class: digicert.ClassPermanent, code: "bad_request_format"},
		{name: "400 several codes", err: apiErr(400, "invalid_value:locale", "required_param:emails"), class: digicert.ClassPermanent, code: "invalid_value:locale"},
		{name: "401", err: apiErr(401), class: digicert.ClassAuth, code: "http_401"},
		{name: "401 with a code", err: apiErr(401, "access_denied"), class: digicert.ClassAuth, code: "access_denied"},
		{name: "403 missing permission", err: apiErr(403, "access_denied|missing_permission"), class: digicert.ClassPermanent, code: "access_denied|missing_permission"},
		{name: "403 invalid key", err: apiErr(403, "access_denied|access_denied_invalid_key"), class: digicert.ClassAuth, code: "access_denied|access_denied_invalid_key"},
		{name: "403 invalid key said otherwise", err: apiErr(403, "access_denied|invalid_key"), class: digicert.ClassAuth, code: "access_denied|invalid_key"},
		{name: "403 invalid key after another code", err: apiErr(403, "access_denied|missing_permission", "access_denied|access_denied_invalid_key"), class: digicert.ClassAuth, code: "access_denied|missing_permission"},
		{name: "403 from the WAF", err: apiErr(403), class: digicert.ClassAuth, code: "http_403"},
		{name: "404 order", err: apiErr(404, "not_found|order"), class: digicert.ClassPermanent, code: "not_found|order"},
		{name: "404 route", err: apiErr(404, "not_found|route"), class: digicert.ClassPermanent, code: "not_found|route"},
		{name: "405", err: apiErr(405), class: digicert.ClassPermanent, code: "http_405"},
		{name: "406 with JSON", err: apiErr(406, "invalid_value:emails"), class: digicert.ClassPermanent, code: "invalid_value:emails"},
		{name: "406 without JSON", err: apiErr(406), class: digicert.ClassTransient, code: "http_406"},
		{name: "408", err: apiErr(408), class: digicert.ClassTransient, code: "http_408"},
		{name: "409", err: apiErr(409), class: digicert.ClassPermanent, code: "http_409"},
		{name: "410", err: apiErr(410), class: digicert.ClassPermanent, code: "http_410"},
		{name: "422", err: apiErr(422, "invalid_value:emails"), class: digicert.ClassPermanent, code: "invalid_value:emails"},
		{name: "429", err: apiErr(429, "request_limit_exceeded"), class: digicert.ClassRateLimited, code: "request_limit_exceeded"},
		{name: "429 from the CDN", err: apiErr(429), class: digicert.ClassRateLimited, code: "http_429"},
		{name: "500", err: apiErr(500), class: digicert.ClassTransient, code: "http_500"},
		{name: "502 HTML", err: &digicert.APIError{Status: 502, Body: "<html>Bad Gateway</html>"}, class: digicert.ClassTransient, code: "http_502"},
		{name: "503", err: apiErr(503), class: digicert.ClassTransient, code: "http_503"},
		{name: "503 with a code", err: apiErr(503, "service_unavailable"), class: digicert.ClassTransient, code: "service_unavailable"},
		{name: "504", err: apiErr(504), class: digicert.ClassTransient, code: "http_504"},
		{name: "308 redirect", err: apiErr(308), class: digicert.ClassPermanent, code: "http_308"},
		{name: "code with spaces", err: apiErr(400, "bad thing"), class: digicert.ClassPermanent, code: "bad_thing"},
		{name: "network error", err: &digicert.RequestError{Endpoint: "sendemail", Attempts: 4, Err: refused}, class: digicert.ClassTransient, code: "network"},
		{name: "attempt timeout", err: &digicert.RequestError{Endpoint: "sendemail", Attempts: 4, Err: attemptTimeout}, class: digicert.ClassTransient, code: "timeout"},
		{name: "caller canceled", err: &digicert.RequestError{Endpoint: "sendemail", Attempts: 1, Err: context.Canceled}, class: digicert.ClassTransient, code: "canceled"},
		{name: "bare context.Canceled", err: context.Canceled, class: digicert.ClassTransient, code: "canceled"},
		{name: "bare deadline", err: context.DeadlineExceeded, class: digicert.ClassTransient, code: "timeout"},
		{name: "bare network error", err: refused, class: digicert.ClassTransient, code: "network"},
		{name: "wrapped 404", err: fmt.Errorf("handle set-emails: %w", apiErr(404, "not_found|order")), class: digicert.ClassPermanent, code: "not_found|order"},
		{name: "twice wrapped 429", err: fmt.Errorf("a: %w", fmt.Errorf("b: %w", apiErr(429))), class: digicert.ClassRateLimited, code: "http_429"},
		{name: "wrapped invalid key", err: fmt.Errorf("probe: %w", apiErr(403, "access_denied|access_denied_invalid_key")), class: digicert.ClassAuth, code: "access_denied|access_denied_invalid_key"},
		{name: "wrapped network error", err: fmt.Errorf("worker: %w", &digicert.RequestError{Err: refused}), class: digicert.ClassTransient, code: "network"},
		{name: "wrapped cancel", err: fmt.Errorf("worker: %w", &digicert.RequestError{Err: context.Canceled}), class: digicert.ClassTransient, code: "canceled"},
		{name: "invalid request", err: fmt.Errorf("x: %w", digicert.ErrInvalidRequest), class: digicert.ClassPermanent, code: "invalid_request"},
		{name: "unknown error", err: errors.New("boom"), class: digicert.ClassTransient, code: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := digicert.Classify(tt.err); got != tt.class {
				t.Errorf("Classify = %s, want %s", got, tt.class)
			}
			if got := digicert.ErrorCode(tt.err); got != tt.code {
				t.Errorf("ErrorCode = %q, want %q", got, tt.code)
			}
		})
	}
}

func TestClassify_ConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/services/v2"
	srv.Close() // nothing listens there any more
	c := newClient(t, digicert.Config{BaseURL: base, APIKey: testKey, MaxAttempts: 2, InitialBackoff: 1})
	_, err := c.SendCertificateEmail(t.Context(), certID, []byte(`{}`))
	var reqErr *digicert.RequestError
	if !errors.As(err, &reqErr) || reqErr.Attempts != 2 || reqErr.Timeout() {
		t.Fatalf("error %v, want a *RequestError after 2 attempts", err)
	}
	if digicert.Classify(err) != digicert.ClassTransient || digicert.ErrorCode(err) != "network" {
		t.Errorf("Classify %s, ErrorCode %q; want transient, network", digicert.Classify(err), digicert.ErrorCode(err))
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v does not unwrap to ECONNREFUSED", err)
	}
}

func TestClass_String(t *testing.T) {
	t.Parallel()
	tests := map[digicert.Class]string{
		digicert.ClassNone:        "none",
		digicert.ClassPermanent:   "permanent",
		digicert.ClassTransient:   "transient",
		digicert.ClassRateLimited: "rate_limited",
		digicert.ClassAuth:        "auth",
		digicert.Class(42):        "class(42)",
	}
	for class, want := range tests {
		if got := class.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", int(class), got, want)
		}
	}
}

func TestAPIError_HasCode(t *testing.T) {
	t.Parallel()
	e := apiErr(403, "access_denied|missing_permission", "invalid_value:emails", "not_found")
	tests := []struct {
		code string
		base bool
		full bool
	}{
		{code: "access_denied", base: true},
		{code: "access_denied|missing_permission", full: true},
		{code: "access_denied|access_denied_invalid_key"},
		{code: "invalid_value", base: true},
		{code: "invalid_value:emails", full: true},
		{code: "not_found", base: true, full: true},
		{code: "missing_permission"},
		{code: "access"},
		{code: ""},
	}
	for _, tt := range tests {
		if got := e.HasCode(tt.code); got != tt.base {
			t.Errorf("HasCode(%q) = %t, want %t", tt.code, got, tt.base)
		}
		if got := e.HasFullCode(tt.code); got != tt.full {
			t.Errorf("HasFullCode(%q) = %t, want %t", tt.code, got, tt.full)
		}
	}
}

func TestAPIKeyNeverLeaks(t *testing.T) {
	t.Parallel()
	const key = "Se/cret&Key<42>+XYZ"
	goEscaped, err := json.Marshal("key " + key + " refused")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		status      int
		contentType string
		body        func(key string) string
	}{
		{name: "JSON message", status: 403, contentType: "application/json", body: func(k string) string {
			return `{"errors":[{"code":"access_denied|access_denied_invalid_key","message":"key ` + k + ` is revoked"}]}`
		}},
		{name: "JSON code", status: 400, contentType: "application/json", body: func(k string) string {
			return `{"errors":[{"code":"invalid_value:` + k + `","message":"x"}]}`
		}},
		{name: "Go-escaped JSON", status: 403, contentType: "application/json", body: func(string) string {
			return `{"errors":[{"code":"access_denied","message":` + string(goEscaped) + `}]}`
		}},
		{name: "PHP-escaped JSON", status: 403, contentType: "application/json", body: func(k string) string {
			return `{"errors":[{"code":"access_denied","message":"key ` + strings.ReplaceAll(k, "/", `\/`) + `"}]}`
		}},
		{name: "HTML", status: 502, contentType: "text/html", body: func(k string) string {
			return "<html><body>X-DC-DEVKEY: " + k + "</body></html>"
		}},
		{name: "across the 512-byte cut", status: 500, contentType: "text/plain", body: func(k string) string {
			return strings.Repeat("x", 505) + k + strings.Repeat("y", 100)
		}},
		{name: "lower case in a 401 message", status: 401, contentType: "application/json", body: func(k string) string {
			return `{"errors":[{"code":"access_denied","message":"key ` + strings.ToLower(k) + ` is not valid"}]}`
		}},
		{name: "upper case in HTML", status: 502, contentType: "text/html", body: func(k string) string {
			return "<html><body>X-DC-DEVKEY: " + strings.ToUpper(k) + "</body></html>"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body(r.Header.Get("X-DC-DEVKEY"))))
			}))
			t.Cleanup(echo.Close)
			cfg := digicert.Config{BaseURL: echo.URL, APIKey: key, MaxAttempts: 1}
			c := newClient(t, cfg)
			_, err := c.SendCertificateEmail(t.Context(), certID, []byte(`{}`))
			var apiErr *digicert.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v, want *APIError", err)
			}
			if !strings.Contains(apiErr.Body, "[redacted]") && tt.name != "across the 512-byte cut" {
				t.Errorf("Body %q: the echoed key was not replaced", apiErr.Body)
			}
			outputs := map[string]string{
				"Error()":   err.Error(),
				"%v":        fmt.Sprintf("%v", err),
				"%+v":       fmt.Sprintf("%+v", err),
				"%#v":       fmt.Sprintf("%#v", err),
				"Body":      apiErr.Body,
				"Errors":    fmt.Sprintf("%#v", apiErr.Errors),
				"ErrorCode": digicert.ErrorCode(err),
				"client":    fmt.Sprintf("%v %+v %#v %s %d", c, c, c, c, c),
				"config":    fmt.Sprintf("%v %+v %#v %s %d", cfg, cfg, cfg, cfg, cfg),
			}
			for what, out := range outputs {
				for _, leak := range []string{key, key[:8], strings.ReplaceAll(key, "/", `\/`), `Se/cret\u0026`} {
					if strings.Contains(strings.ToLower(out), strings.ToLower(leak)) {
						t.Errorf("%s holds %q: %s", what, leak, out)
					}
				}
			}
		})
	}
}

// DigiCert may name a recipient in an error; the error travels to logs,
// asynq's last_error and the dead-letter stream, where addresses must not.
func TestEchoedAddressesAreRemoved(t *testing.T) {
	t.Parallel()
	const addr, other = "jill.valentine+certs@Example.COM", "leon@sub.example.org"
	body := `{"errors":[{"code":"invalid_value:additional_emails","message":"` + addr + ` is not allowed; nor is ` + other + `"},` +
		`{"code":"x|` + other + `","message":"see admin@example.com"},` +
		`{"code":"x","message":"@ops: bad recipient ada@example.net"}]}`
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(echo.Close)
	c := newClient(t, digicert.Config{BaseURL: echo.URL, APIKey: "k-" + strings.Repeat("x", 20), MaxAttempts: 1})
	_, err := c.SetAdditionalEmails(t.Context(), 7, []byte(`{"additional_emails":[]}`))
	var apiErr *digicert.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v, want *APIError", err)
	}
	for what, out := range map[string]string{"Error()": err.Error(), "Body": apiErr.Body,
		"Errors": fmt.Sprintf("%#v", apiErr.Errors), "ErrorCode": digicert.ErrorCode(err)} {
		for _, a := range []string{"jill.valentine", "Example.COM", "leon@", "admin@example.com", "ada@"} {
			if strings.Contains(out, a) {
				t.Errorf("%s holds %q: %s", what, a, out)
			}
		}
	}
	if got := apiErr.Errors[0].Message; got != "[email] is not allowed; nor is [email]" {
		t.Errorf("message = %q, want the addresses replaced and the rest kept", got)
	}
	if got := apiErr.Errors[2].Message; got != "@ops: bad recipient [email]" {
		t.Errorf("message = %q, want the address replaced after a leading '@'", got)
	}
	if !apiErr.HasCode("invalid_value") {
		t.Errorf("codes %v: the code without an address must be kept as it is", apiErr.Errors)
	}
}

// TestRequestErrorText: the error says how many attempts the call made when
// it made more than one.
func TestRequestErrorText(t *testing.T) {
	t.Parallel()
	cause := errors.New("connection reset by peer")
	for _, tt := range []struct {
		attempts int
		want     string
	}{
		{0, "digicert sendemail: connection reset by peer"},
		{1, "digicert sendemail: connection reset by peer"},
		{2, "digicert sendemail: connection reset by peer (after 2 attempts)"},
	} {
		if got := (&digicert.RequestError{Endpoint: "sendemail", Attempts: tt.attempts, Err: cause}).Error(); got != tt.want {
			t.Errorf("%d attempts: %q, want %q", tt.attempts, got, tt.want)
		}
	}
}

// TestRedactedErrorsKeepTheirMeaning: an error whose text holds the key
// (here the Limiter's) loses the key but still says whether it was the
// caller's deadline or cancellation.
func TestRedactedErrorsKeepTheirMeaning(t *testing.T) {
	t.Parallel()
	for _, cause := range []error{context.DeadlineExceeded, context.Canceled} {
		t.Run(cause.Error(), func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("a request was sent") }))
			t.Cleanup(srv.Close)
			limiter := limiterFunc(func(context.Context) error { return fmt.Errorf("limiter for key %s: %w", testKey, cause) })
			c := newClient(t, digicert.Config{BaseURL: srv.URL, APIKey: testKey, Limiter: limiter})
			_, err := c.SendCertificateEmail(t.Context(), certID, []byte(`{}`))
			if err == nil || strings.Contains(err.Error(), testKey) {
				t.Fatalf("error %v, want one without the key", err)
			}
			other := context.Canceled
			if cause == context.Canceled {
				other = context.DeadlineExceeded
			}
			if !errors.Is(err, cause) || errors.Is(err, other) {
				t.Errorf("errors.Is(%v, %v) = %t, errors.Is(…, %v) = %t; want true, false", err, cause, errors.Is(err, cause), other, errors.Is(err, other))
			}
			var reqErr *digicert.RequestError
			if !errors.As(err, &reqErr) || reqErr.Timeout() != (cause == context.DeadlineExceeded) {
				t.Errorf("error %v: Timeout() should say whether the cause was a deadline", err)
			}
		})
	}
}
