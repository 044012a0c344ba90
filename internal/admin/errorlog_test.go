package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

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

// TestServerErrorLogPanicsBySite: handlers that panic at three sites, the
// first twice, on a server that then stops, by Serve's context and by
// Background.Stop: each site's panic is logged once with its stack (two
// runtime errors at different sites are two bugs, not a repeat), and the
// repeat held back is counted, at ERROR, when the server stops.
func TestServerErrorLogPanicsBySite(t *testing.T) {
	t.Parallel()
	handlers := map[string]http.HandlerFunc{
		"/a": func(http.ResponseWriter, *http.Request) {
			var s []int
			_ = s[3] // index out of range
		},
		"/b": func(http.ResponseWriter, *http.Request) {
			panic("a panic of its own") // not a runtime error
		},
		"/c": func(http.ResponseWriter, *http.Request) {
			var s []int
			_ = s[7] // index out of range again, at another site
		},
	}
	serve := func(t *testing.T, log *zap.Logger) (base string, stop func()) {
		mux := http.NewServeMux()
		for path, h := range handlers {
			mux.Handle("GET "+path, h)
		}
		ctx, cancel := context.WithCancel(context.Background())
		addrc, done := make(chan net.Addr, 1), make(chan error, 1)
		go func() {
			done <- admin.Serve(ctx, "127.0.0.1:0", admin.NewServer(mux, admin.Limits{}, log), admin.Shutdown{Timeout: time.Second}, func(a net.Addr) { addrc <- a })
		}()
		select {
		case a := <-addrc:
			return "http://" + a.String(), func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}
		case err := <-done:
			cancel()
			t.Fatalf("Serve: %v", err)
		}
		return "", nil
	}
	background := func(t *testing.T, log *zap.Logger) (base string, stop func()) {
		b, err := admin.Start("127.0.0.1:0", func(context.Context) error { return nil }, prometheus.NewRegistry(), log, func(mux admin.Router) {
			for path, h := range handlers {
				mux.Handle("GET "+path, h)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return "http://" + b.Addr().String(), func() {
			if err := b.Stop(time.Second); err != nil {
				t.Errorf("Stop: %v", err)
			}
		}
	}
	for name, start := range map[string]func(*testing.T, *zap.Logger) (string, func()){"Serve": serve, "Background": background} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var out certmailtest.Output
			log, err := logging.New("info", "json", &out)
			if err != nil {
				t.Fatal(err)
			}
			base, stop := start(t, log)
			for _, path := range []string{"/a", "/b", "/c", "/a"} {
				if res, err := http.Get(base + path); err == nil {
					_ = res.Body.Close()
					t.Errorf("GET %s answered %s, want the connection closed by the panic", path, res.Status)
				}
			}
			stop()
			// The values of the panics of /a, /b and /c, and the lines of each.
			values := []string{"index out of range [3]", "a panic of its own", "index out of range [7]"}
			logged := map[string]int{}
			var held []map[string]any
			for _, m := range out.JSONLines(t) {
				msg, _ := m["msg"].(string)
				switch {
				case strings.HasPrefix(msg, "http: panic serving"):
					if m["level"] != "error" || !strings.Contains(msg, "\ngoroutine ") {
						t.Errorf("a panic line at %v or without its stack: %.300q", m["level"], msg)
					}
					for _, v := range values {
						if strings.Contains(msg, v) {
							logged[v]++
						}
					}
				case msg == "repeated lines held back":
					held = append(held, m)
				}
			}
			if logged[values[0]] != 1 || logged[values[1]] != 1 || logged[values[2]] != 1 {
				t.Errorf("panic lines by value %v, want each of the three sites' logged once:\n%.3000s", logged, out.String())
			}
			if len(held) != 1 || held[0]["suppressed"] != 1.0 || held[0]["level"] != "error" ||
				!strings.Contains(fmt.Sprint(held[0]["message"]), "errorlog_test.go:") || !strings.Contains(fmt.Sprint(held[0]["message"]), "index out of range") {
				t.Errorf("want one ERROR line at stop counting the repeat of /a's panic, naming its site; got %v:\n%.3000s", held, out.String())
			}
		})
	}
}
