package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/hibiken/asynqmon"

	"github.com/certmail/certmail/internal/redisconn"
)

// newDashboard returns the asynq dashboard on conn's Redis, mounted at
// DashboardPath.
func newDashboard(conn *redisconn.Conn, readOnly bool) *asynqmon.HTTPHandler {
	return asynqmon.New(asynqmon.Options{
		RootPath:         DashboardPath,
		RedisConnOpt:     conn.Opt,
		ReadOnly:         readOnly,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(formatPayload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(formatPayload),
	})
}

// securityHeaders forbids framing every answer (the dashboard's pages above
// all: no other site may show them under a click-jacking overlay) and
// content sniffing.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// crossOrigin refuses, 403, every request but GET, HEAD and OPTIONS that a
// browser sends from another origin (net/http.CrossOriginProtection: by
// Sec-Fetch-Site, or Origin against Host for older browsers). Browsers
// resend cached basic-auth credentials with a form post from any page, so
// without this any site an operator visits could run or delete tasks
// through the dashboard. It guards the whole API: bearer tokens are never
// sent by a browser on its own, but with --insecure-no-auth a form post
// could requeue a dead letter. Clients that are not browsers send neither
// header and pass.
func (s *Server) crossOrigin(next http.Handler) http.Handler {
	c := http.NewCrossOriginProtection()
	c.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, Problem{Status: http.StatusForbidden,
			Detail: "cross-origin request refused: a page of another site may not change anything here"}, nil)
	}))
	return c.Handler(next)
}

// serveDashboard serves the dashboard as the request's role may see it:
// read-only for readers, as configured for operators.
func (s *Server) serveDashboard(w http.ResponseWriter, r *http.Request) {
	if info := infoOf(r.Context()); info != nil && info.role == RoleOperator {
		s.dashboard.ServeHTTP(w, r)
		return
	}
	s.dashboardRO.ServeHTTP(w, r)
}

// formatPayload shows a task's payload or result in the dashboard: JSON
// indented by two spaces, anything else as text (invalid UTF-8 replaced).
func formatPayload(_ string, b []byte) string {
	var buf bytes.Buffer
	if json.Valid(b) {
		if err := json.Indent(&buf, b, "", "  "); err == nil {
			return buf.String()
		}
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
