package api

import (
	"net/http"
	"slices"
)

// Patterns returns every pattern the server registered, for the test that
// holds the routes and the OpenAPI document together.
func (s *Server) Patterns() []string { return slices.Clone(s.patterns) }

// Guards returns what each registered pattern needs: "open", "bearer" or
// "basic".
func (s *Server) Guards() map[string]string {
	names := map[guard]string{open: "open", bearer: "bearer", basic: "basic"}
	out := map[string]string{}
	for p, g := range s.guards {
		out[p] = names[g]
	}
	return out
}

// Route returns the pattern the server's mux picks for r, "" when none.
func (s *Server) Route(r *http.Request) string {
	_, pattern := s.mux.Handler(r)
	return pattern
}

// FormatPayload is the dashboard's payload and result formatter.
var FormatPayload = formatPayload
