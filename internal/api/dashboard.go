package api

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

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
