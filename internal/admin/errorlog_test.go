package admin_test

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/logging"
)

// TestServerErrorLogIsJSON: net/http's own messages about a server built
// by NewServer (a handler that writes the header twice, one that panics
// after writing) are JSON lines of the logger "http", the panic at ERROR
// and the rest at WARN, a repeat held back, never plain text on stderr.
func TestServerErrorLogIsJSON(t *testing.T) {
	t.Parallel()
	var out certmailtest.Output
	log, err := logging.New("info", "json", &out)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/twice", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.WriteHeader(http.StatusTeapot)
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("half an answer"))
		panic("handler bug " + strings.Repeat("x", 64<<10))
	})
	srv := admin.NewServer(mux, admin.Limits{}, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()
	for _, path := range []string{"/twice", "/twice", "/panic"} {
		if res, err := http.Get(base + path); err == nil {
			_ = res.Body.Close()
		}
	}
	var twice, panics int
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("a line that is not one JSON object: %.300q", line)
		}
		msg, _ := m["msg"].(string)
		switch {
		case strings.Contains(msg, "superfluous response.WriteHeader"):
			twice++
			if m["logger"] != "http" || m["level"] != "warn" {
				t.Errorf("superfluous WriteHeader: %.300q", line)
			}
		case strings.HasPrefix(msg, "http: panic serving"):
			panics++
			if m["logger"] != "http" || m["level"] != "error" || len(msg) > 16<<10 || m["cut_bytes"] == nil {
				t.Errorf("panic: level %v, %d bytes, cut_bytes %v", m["level"], len(msg), m["cut_bytes"])
			}
		}
	}
	if twice != 1 || panics != 1 {
		t.Errorf("%d superfluous WriteHeader lines (want 1, its repeat held back), %d panic lines (want 1):\n%.2000s", twice, panics, out.String())
	}
}
