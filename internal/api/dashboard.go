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
