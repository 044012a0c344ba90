package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/certmail/certmail/internal/account"
)

// Role is what a token may do. A token given without a role is an operator
// token, as every token was before roles existed.
type Role string

// The roles, from the least to the most trusted.
const (
	// RoleProducer enqueues tasks and reads a task: what a service that
	// hands certmail its work needs.
	RoleProducer Role = "producer"
	// RoleReader reads everything (tasks, dead letters, schedules) and sees
	// the dashboard read-only.
	RoleReader Role = "reader"
	// RoleOperator may do everything: also requeue and delete dead letters,
	// add and delete schedules, and act in the dashboard.
	RoleOperator Role = "operator"
)

// roles lists the roles in the order messages name them.
func roles() []Role { return []Role{RoleProducer, RoleReader, RoleOperator} }

// Token is an accepted API token (a bearer token, or the dashboard's basic
// auth password) and what it may do.
type Token struct {
	// Secret is the token itself: 16 to 4096 printable ASCII characters
	// without spaces. It prints as "[redacted]".
	Secret account.Secret
	// Role is what the token may do; empty means RoleOperator.
	Role Role
}

// MinTokenLen is the length under which a token is refused: shorter ones are
// guessable, or a test value left in place.
const MinTokenLen = 16

// maxTokenLen bounds a token: long enough for any generated secret, short
// enough that hashing one stays cheap.
const maxTokenLen = 4096

// placeholders are the tokens shipped in deploy/ for the operator to replace
// (a test reads deploy/ so that a new one cannot be missed here). A process
// given one refuses to start: the API would otherwise be open to anyone who
// read the repository.
func placeholders() []string {
	return []string{
		"replace-me-with-a-long-random-token", // deploy/compose/secrets/api-tokens
		"replace-with-a-long-random-token",    // deploy/overlays/example/secrets/api-tokens
	}
}

// ParseToken reads one token entry of CERTMAIL_API_TOKENS (comma separated)
// or CERTMAIL_API_TOKENS_FILE (one per line): the token, then optionally
// white space and its role ("producer", "reader" or "operator"); a word after
// the token that starts with # starts a comment. Without a role the token is
// an operator token. The error never holds the token.
func ParseToken(entry string) (Token, error) {
	fields := strings.Fields(entry)
	for i := 1; i < len(fields); i++ {
		if strings.HasPrefix(fields[i], "#") {
			fields = fields[:i]
			break
		}
	}
	var t Token
	switch len(fields) {
	case 0:
		return Token{}, errors.New("empty: want a token, optionally followed by its role")
	case 1:
		t = Token{Secret: account.Secret(fields[0]), Role: RoleOperator}
	case 2:
		t = Token{Secret: account.Secret(fields[0]), Role: Role(fields[1])}
		if !validRole(t.Role) {
			if validRole(Role(fields[0])) {
				return Token{}, errors.New("the role comes after the token: want TOKEN ROLE")
			}
			return Token{}, fmt.Errorf("the word after the token is not a role: want one of %s", roleNames())
		}
	default:
		return Token{}, fmt.Errorf("%d words: want a token, optionally followed by its role (%s); comments start with #", len(fields), roleNames())
	}
	if err := checkSecret(t.Secret.Reveal()); err != nil {
		return Token{}, err
	}
	return t, nil
}

func validRole(r Role) bool {
	for _, v := range roles() {
		if r == v {
			return true
		}
	}
	return false
}

func roleNames() string {
	names := make([]string, 0, 3)
	for _, r := range roles() {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}

// checkSecret reports why a token cannot be accepted, without repeating it.
func checkSecret(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return errors.New("a token is printable ASCII without spaces")
		}
	}
	switch {
	case len(s) < MinTokenLen:
		return fmt.Errorf("the token has %d characters, fewer than %d: generate a long random one (openssl rand -hex 32)", len(s), MinTokenLen)
	case len(s) > maxTokenLen:
		return fmt.Errorf("the token is longer than %d characters", maxTokenLen)
	}
	for _, p := range placeholders() {
		if s == p {
			return errors.New("the token is the placeholder shipped in deploy/: replace it with a long random one (openssl rand -hex 32)")
		}
	}
	return nil
}

// realm names the protection space in WWW-Authenticate.
const realm = `realm="certmail"`

// access is what a route asks of a request, and so which roles may use it.
type access int

const (
	accessOpen      access = iota // probes, metrics, the OpenAPI document: no token
	accessEnqueue                 // enqueue: producers and operators
	accessTask                    // read a task: every role
	accessRead                    // read dead letters and schedules: readers and operators
	accessManage                  // change dead letters and schedules: operators, unless the API is read-only
	accessDashboard               // the dashboard, by basic auth too: readers (read-only) and operators
)

// may reports whether role r may use a route that asks for a.
func (r Role) may(a access) bool {
	switch a {
	case accessOpen, accessTask:
		return true
	case accessEnqueue:
		return r == RoleProducer || r == RoleOperator
	case accessRead, accessDashboard:
		return r == RoleReader || r == RoleOperator
	case accessManage:
		return r == RoleOperator
	}
	return false
}

// accessOf tells what the request needs, from the route the mux picks for
// it (Server.route). A request that matches no route is open: it is
// answered 404 or 405 and no handler runs.
func (s *Server) accessOf(r *http.Request) access {
	pattern := s.route(r)
	if pattern == "" {
		return accessOpen
	}
	a, ok := s.access[pattern]
	if !ok { // every route is registered with its access; never trust a stray one
		return accessManage
	}
	return a
}

// authenticate lets a request through when its route is open, or when it
// carries a valid token whose role may use the route (any request, when
// authentication is off); otherwise it answers 401 (no valid token) or 403
// (a role that may not). Before it looks at the route's needs or at a token
// it refuses (403) a request addressed to a host the API does not answer
// (answersHost): such a request is never counted as a failed
// authentication. The role goes with the request, for the dashboard,
// and the token's position, for its share of the room for request bodies.
// Every answer of a route that needs a token, its refusals (401, 403, 429)
// included, gets Cache-Control: no-store, but the dashboard's page and
// files (see noStore).
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := s.accessOf(r)
		if a != accessOpen && noStore(a, r) {
			w.Header()["Cache-Control"] = []string{"no-store"}
		}
		if !s.answersHost(r, a) {
			s.refuseHost(w, r)
			return
		}
		if a == accessOpen {
			next.ServeHTTP(w, r)
			return
		}
		role, tokenIndex := RoleOperator, -1
		if !s.cfg.InsecureNoAuth {
			client, now := failureKeyOf(r), time.Now()
			if wait := s.failures.retryAfter(client, now); wait > 0 {
				s.metrics.authFailures.WithLabelValues(authRateLimited).Inc()
				w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
				s.writeProblem(w, r, Problem{Status: http.StatusTooManyRequests, Detail: rateLimitedDetail(client)}, nil)
				return
			}
			token := bearerToken(r)
			if _, password, ok := r.BasicAuth(); ok && a == accessDashboard {
				token = password
			}
			var ok bool
			if role, tokenIndex, ok = s.tokens.role(token); !ok {
				reason := authMissing
				if token != "" {
					reason = authInvalid
					s.failures.fail(client, now)
				}
				s.metrics.authFailures.WithLabelValues(reason).Inc()
				s.unauthorized(w, r, a, token != "")
				return
			}
		}
		if info := infoOf(r.Context()); info != nil {
			info.role, info.token = role, tokenIndex+1
		}
		switch {
		case !role.may(a):
			s.metrics.authFailures.WithLabelValues(authForbidden).Inc()
			s.writeProblem(w, r, Problem{Status: http.StatusForbidden, Detail: forbiddenDetail(role)}, nil)
		case a == accessManage && s.cfg.DashboardReadOnly:
			s.metrics.authFailures.WithLabelValues(authForbidden).Inc()
			s.writeProblem(w, r, Problem{Status: http.StatusForbidden,
				Detail: "the API runs read-only (CERTMAIL_DASHBOARD_READONLY): dead letters and schedules cannot be changed through it"}, nil)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// rateLimitedDetail is the detail of the 429 answered to a client over the
// failure limit, which names the budget it used up.
func rateLimitedDetail(k failureKey) string {
	from := "this address"
	if k.browser {
		from = "browsers at this address"
	}
	return "too many failed authentications from " + from + "; try again after Retry-After seconds"
}

// noStore reports whether the answers of r, to a route with access a that
// needs a token, say Cache-Control: no-store. Tasks, payloads, dead letters,
// schedules hold email addresses that no cache, a browser's or a shared
// one, may keep; a refusal holds none but is answered the same way, so that
// the rule has no exception other than the dashboard's page and script
// files (under /monitoring/ but not /monitoring/api/), which hold no data.
func noStore(a access, r *http.Request) bool {
	return a != accessDashboard || strings.HasPrefix(r.URL.Path, dashboardAPIPrefix)
}

// The reasons of certmail_api_auth_failures_total, a fixed set.
const (
	authMissing     = "missing"      // no token at all
	authInvalid     = "invalid"      // a token that is not one of the set
	authForbidden   = "forbidden"    // a valid token whose role may not use the route
	authRateLimited = "rate_limited" // refused unseen: the address failed too often
	authHost        = "host"         // addressed to a host the API does not answer (answersHost)
)

func authFailureReasons() []string {
	return []string{authMissing, authInvalid, authForbidden, authRateLimited, authHost}
}

// unauthorized answers 401 with the challenge of the route's scheme.
func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, a access, presented bool) {
	challenge, detail := "Bearer "+realm, "send Authorization: Bearer <token>"
	if a == accessDashboard {
		challenge, detail = `Basic `+realm+`, charset="UTF-8"`, "log in with any user name and an API token as the password"
	} else if presented {
		challenge += `, error="invalid_token"`
	}
	if presented {
		detail = "the token is not valid"
	}
	w.Header().Set("WWW-Authenticate", challenge)
	s.writeProblem(w, r, Problem{Status: http.StatusUnauthorized, Detail: detail}, nil)
}

func forbiddenDetail(r Role) string {
	switch r {
	case RoleProducer:
		return "a producer token may enqueue tasks and read a task, nothing else"
	case RoleReader:
		return "a reader token may read, not change"
	}
	return "this token's role may not use this route"
}

// tokenSet holds the SHA-256 of each accepted token with its role, so that
// every comparison runs over 32 bytes whatever the lengths involved.
type tokenSet []tokenEntry

type tokenEntry struct {
	sum  [sha256.Size]byte
	role Role
}

func newTokenSet(tokens []Token) tokenSet {
	ts := make(tokenSet, 0, len(tokens))
	for _, t := range tokens {
		ts = append(ts, tokenEntry{sum: sha256.Sum256([]byte(t.Secret.Reveal())), role: t.roleOrDefault()})
	}
	return ts
}

// roleOrDefault is t's role, RoleOperator when it has none.
func (t Token) roleOrDefault() Role {
	if t.Role == "" {
		return RoleOperator
	}
	return t.Role
}

// role returns the role of token and its position in the set when it is
// one of the set. It compares the token's hash with every entry, without
// stopping at a match, so the time taken says nothing about which token
// matched or how much of one did.
func (ts tokenSet) role(token string) (role Role, index int, ok bool) {
	if token == "" {
		return "", -1, false
	}
	sum := sha256.Sum256([]byte(token))
	match := 0
	index = -1
	for i := range ts {
		eq := subtle.ConstantTimeCompare(sum[:], ts[i].sum[:])
		if eq == 1 {
			role, index = ts[i].role, i
		}
		match |= eq
	}
	return role, index, match == 1
}

// idempotencyScope is the scope of the Idempotency-Key of an authenticated
// request: the SHA-256 of its token, in hex, so that two producers' equal
// keys are two keys and one cannot replay another's, and so that the token
// itself never reaches Redis. Without authentication every request shares
// one scope, "".
func (s *Server) idempotencyScope(r *http.Request) string {
	info := infoOf(r.Context())
	if info == nil || info.token == 0 {
		return ""
	}
	return hex.EncodeToString(s.tokens[info.token-1].sum[:])
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
