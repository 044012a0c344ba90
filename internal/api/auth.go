package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
)

// realm names the protection space in WWW-Authenticate.
const realm = `realm="certmail"`

// guard is what a route needs.
type guard int

const (
	open   guard = iota // probes, metrics, the OpenAPI document
	bearer              // the API: Authorization: Bearer <token>
	basic               // the dashboard: basic auth with a token as password (or a bearer token)
)

// guardOf tells what the request needs, from the route the mux picks for it:
// the pattern of the handler that will run, or, when the mux answers with a
// redirect (a cleaned path, a missing trailing slash), of the route the
// redirect leads to. A request that matches no route is open: the mux
// answers 404 or 405 itself and no handler runs.
func (s *Server) guardOf(r *http.Request) guard {
	_, pattern := s.mux.Handler(r)
	if pattern == "" {
		return open
	}
	g, ok := s.guards[pattern]
	if !ok { // every route is registered with its guard; never trust a stray one
		return bearer
	}
	return g
}

// authenticate lets a request through when its route is open,
// authentication is off, or it carries a valid token; otherwise it answers
// 401.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := s.guardOf(r)
		if g == open || s.cfg.InsecureNoAuth {
			next.ServeHTTP(w, r)
			return
		}
		token := bearerToken(r)
		if _, password, ok := r.BasicAuth(); ok && g == basic {
			token = password
		}
		if s.tokens.valid(token) {
			next.ServeHTTP(w, r)
			return
		}
		challenge, detail := "Bearer "+realm, "send Authorization: Bearer <token>"
		if g == basic {
			challenge, detail = `Basic `+realm+`, charset="UTF-8"`, "log in with any user name and an API token as the password"
		} else if token != "" {
			challenge += `, error="invalid_token"`
		}
		if token != "" {
			detail = "the token is not valid"
		}
		w.Header().Set("WWW-Authenticate", challenge)
		s.writeProblem(w, r, Problem{Status: http.StatusUnauthorized, Detail: detail}, nil)
	})
}

// valid reports whether token is one of the set. It compares the token's
// hash with every entry, without stopping at a match, so the time taken says
// nothing about which token matched or how much of one did.
func (ts tokenSet) valid(token string) bool {
	if token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	match := 0
	for i := range ts {
		match |= subtle.ConstantTimeCompare(sum[:], ts[i][:])
	}
	return match == 1
}
