package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/api"
)

// hostRequest serves one GET of path addressed to host, from remote, with
// token (none when ""), and returns the answer.
func hostRequest(b *bundle, host, remote, path, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Host = host
	req.RemoteAddr = remote
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	return rec
}

// openPaths are the routes that need no token.
var openPaths = []string{"/healthz", "/readyz", "/metrics", "/v1/openapi.json"}

// TestAPIHosts: given Config.Hosts, the API answers the names listed, the
// names under a wildcard and the rebind-safe hosts (IP addresses,
// localhost, names without dots), whatever the case, port or trailing dot;
// any other Host is refused 403 on every route, open ones included, before
// the token is looked at: wrong tokens sent to such a host (as a page
// rebound to the API's address sends them) spend nothing of the address's
// failure budget, and a valid token from that address still gets through.
func TestAPIHosts(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) {
		c.Hosts = []string{"api.example.com", "*.svc.example"}
	}})
	const remote = "198.51.100.7:40000"
	answered := []string{
		"api.example.com", "api.example.com:8080", "API.Example.COM.", "x.svc.example", "a.b.svc.example:443",
		"127.0.0.1:8080", "[::1]:8080", "10.0.0.7", "localhost:8080", "api.localhost", "certmail-api:8080", "",
	}
	for _, host := range answered {
		for _, path := range append([]string{"/v1/dead-letters"}, openPaths...) {
			if rec := hostRequest(b, host, remote, path, testToken); rec.Code != http.StatusOK {
				t.Errorf("Host %q, %s: %d %.200s, want 200", host, path, rec.Code, rec.Body)
			}
		}
	}
	refused := []string{
		"evil.example", "evil.example:8080", "svc.example", "api.example.com.evil.example", "xapi.example.com",
		"example.com", "127.0.0.1.nip.io", "localhost.evil.example",
	}
	for _, host := range refused {
		for _, path := range append([]string{"/v1/dead-letters", "/monitoring/"}, openPaths...) {
			rec := hostRequest(b, host, remote, path, testToken)
			if rec.Code != http.StatusForbidden || rec.Header().Get("Content-Type") != api.ProblemContentType ||
				!strings.Contains(rec.Body.String(), "CERTMAIL_API_HOSTS") {
				t.Errorf("Host %q, %s: %d %s %.200s, want 403 problem naming CERTMAIL_API_HOSTS", host, path, rec.Code,
					rec.Header().Get("Content-Type"), rec.Body)
			}
		}
	}
	if rec := hostRequest(b, "evil.example", remote, "/v1/dead-letters", ""); rec.Code != http.StatusForbidden ||
		rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Host evil.example, no token: %d, Cache-Control %q; want 403 no-store", rec.Code, rec.Header().Get("Cache-Control"))
	}
	// Ten wrong tokens and more, as a rebound page sends them: each refused
	// for its Host, none counted against the address.
	for i := range 12 {
		token := fmt.Sprintf("wrong-token-from-page-%d", i)
		if rec := hostRequest(b, "rebind.attacker.example:8080", remote, "/v1/dead-letters", token); rec.Code != http.StatusForbidden {
			t.Errorf("wrong token %d to an unlisted host: %d, want 403", i, rec.Code)
		}
	}
	for _, host := range []string{"api.example.com", "127.0.0.1:8080"} {
		if rec := hostRequest(b, host, remote, "/v1/dead-letters", testToken); rec.Code != http.StatusOK {
			t.Errorf("after 12 wrong tokens to an unlisted host, a valid token to %q from the same address: %d %.200s, want 200",
				host, rec.Code, rec.Body)
		}
	}
	metrics := hostRequest(b, "127.0.0.1", remote, "/metrics", "").Body.String()
	want := len(refused)*(2+len(openPaths)) + 1 + 12
	for _, line := range []string{
		fmt.Sprintf(`certmail_api_auth_failures_total{reason="host"} %d`, want),
		`certmail_api_auth_failures_total{reason="invalid"} 0`,
		`certmail_api_auth_failures_total{reason="rate_limited"} 0`,
	} {
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}

// TestAPIHostsUnset: without Config.Hosts the API answers any Host with
// tokens (the open routes without), and a refused host is counted as
// reason host without authentication too.
func TestAPIHostsUnset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range append([]string{"/v1/dead-letters"}, openPaths...) {
		if rec := hostRequest(b, "evil.example:8080", "198.51.100.7:40000", path, testToken); rec.Code != http.StatusOK {
			t.Errorf("no hosts set, Host evil.example, %s: %d, want 200", path, rec.Code)
		}
	}
	open := setup(t, setupOpts{configure: func(c *api.Config) { c.Tokens, c.InsecureNoAuth = nil, true }})
	if rec := hostRequest(open, "evil.example", "198.51.100.7:40000", "/v1/dead-letters", ""); rec.Code != http.StatusForbidden ||
		strings.Contains(rec.Body.String(), "CERTMAIL_API_HOSTS") {
		t.Errorf("no auth, no hosts, Host evil.example: %d %.200s, want 403 naming --insecure-no-auth", rec.Code, rec.Body)
	}
	if m := hostRequest(open, "127.0.0.1", "", "/metrics", "").Body.String(); !strings.Contains(m, `certmail_api_auth_failures_total{reason="host"} 1`) {
		t.Errorf("/metrics does not count the refused host as reason host")
	}
}

// TestAPIHostsInsecureNoAuth: without authentication, Config.Hosts adds its
// names to the rebind-safe hosts the API answers, and then refuses the
// others on every route, open ones included.
func TestAPIHostsInsecureNoAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{configure: func(c *api.Config) {
		c.Tokens, c.InsecureNoAuth, c.Hosts = nil, true, []string{"dev.example.test", "*.apps.example.test"}
	}})
	for _, host := range []string{"dev.example.test:8080", "x.apps.example.test", "localhost:8080", "127.0.0.1", "certmail"} {
		for _, path := range []string{"/v1/dead-letters", "/monitoring/", "/healthz"} {
			if rec := hostRequest(b, host, "", path, ""); rec.Code != http.StatusOK {
				t.Errorf("no auth with hosts, Host %q, %s: %d %.200s, want 200", host, path, rec.Code, rec.Body)
			}
		}
	}
	for _, host := range []string{"evil.example", "apps.example.test", "example.test"} {
		for _, path := range []string{"/v1/dead-letters", "/monitoring/", "/healthz", "/metrics"} {
			if rec := hostRequest(b, host, "", path, ""); rec.Code != http.StatusForbidden {
				t.Errorf("no auth with hosts, Host %q, %s: %d, want 403", host, path, rec.Code)
			}
		}
	}
}

// TestParseHosts: CERTMAIL_API_HOSTS's entries are read in lower case
// without a trailing dot, and what cannot be a host name is refused with
// the entry's position and, but for one too long, the entry itself.
func TestParseHosts(t *testing.T) {
	t.Parallel()
	got, err := api.ParseHosts(" API.example.com , *.Svc.Example.,, 10.0.0.1,[::1],certmail-api,xn--bcher-kva.example,a_b.example ")
	want := []string{"api.example.com", "*.svc.example", "10.0.0.1", "[::1]", "certmail-api", "xn--bcher-kva.example", "a_b.example"}
	if err != nil || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ParseHosts = %q, %v; want %q", got, err, want)
	}
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + ".example"
	for _, tt := range []struct{ list, want string }{
		{"", "no host name"},
		{" , ,", "no host name"},
		{"ok.example,*", `entry 2 "*": a bare * would answer every host name`},
		{"*.", `entry 1 "*.": a bare *`},
		{"*.com", "at least two labels after *."},
		{"a.*.example", "* may only be the first label"},
		{"*a.example", "letters, digits, hyphens"},
		{"https://api.example.com", `entry 1 "https://api.example.com": a host name, not a URL`},
		{"api.example.com:8443", "without a port"},
		{"[::1]:8080", "without a port"},
		{"api.example.com/v1", "without a path"},
		{"api..example.com", "an empty label"},
		{".example.com", "an empty label"},
		{"api example.com", "letters, digits, hyphens"},
		{"bücher.example", "xn-- form"},
		{"api.example.com\n", ""}, // white space around an entry is trimmed: accepted
		{"a\x00.example", `"a\x00.example"`},
		{strings.Repeat("l", 64) + ".example", "a label of 64 bytes, more than 63"},
		{long, ""}, // 251 bytes: accepted
		{strings.Repeat("x.", 127) + "example", "entry 1: 261 bytes, more than 253"},
		{strings.Repeat("h.example,", api.MaxHosts) + "one.more", fmt.Sprintf("more than %d entries", api.MaxHosts)},
	} {
		_, err := api.ParseHosts(tt.list)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ParseHosts(%.40q): %v, want it accepted", tt.list, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ParseHosts(%.40q): %v, want an error with %q", tt.list, err, tt.want)
		case err != nil && len(err.Error()) > 400:
			t.Errorf("ParseHosts(%.40q): an error of %d bytes", tt.list, len(err.Error()))
		}
	}
	if _, err := api.ParseHosts(strings.TrimSuffix(strings.Repeat("h.example,", api.MaxHosts), ",")); err != nil {
		t.Errorf("%d entries: %v, want them accepted", api.MaxHosts, err)
	}
}

// TestConfigHostsChecked: api.New refuses a Config.Hosts that ParseHosts
// would, naming the host by position.
func TestConfigHostsChecked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := api.Config{Ops: b.ops, Redis: b.conn, Schedules: b.schedules, Tokens: []api.Token{{Secret: testToken}},
		Logger: zap.NewNop()}
	for hosts, want := range map[string]string{
		"ok.example,*":       `API host 2 "*": a bare *`,
		"api.example.com:80": `API host 1 "api.example.com:80": a host name without a port`,
	} {
		cfg.Hosts = strings.Split(hosts, ",")
		if _, err := api.New(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Hosts %q: %v, want an error with %q", hosts, err, want)
		}
	}
	cfg.Hosts = make([]string, api.MaxHosts+1)
	if _, err := api.New(cfg); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("%d hosts: %v, want refused", len(cfg.Hosts), err)
	}
}
