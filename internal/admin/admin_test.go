package admin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmail/certmail/internal/admin"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestBackground(t *testing.T) {
	t.Parallel()
	reg := admin.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "certmail_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Inc()
	var mu sync.Mutex
	var readyErr error
	b, err := admin.Start("127.0.0.1:0", func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return readyErr
	}, reg)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + b.Addr().String()
	tests := []struct {
		path   string
		ready  error
		status int
		body   string
	}{
		{"/healthz", nil, 200, "ok"},
		{"/readyz", nil, 200, "ready"},
		{"/readyz", errors.New("redis down"), 503, "not ready: redis down"},
		{"/healthz", errors.New("redis down"), 200, "ok"},
		{"/metrics", nil, 200, "certmail_test_total 1"},
		{"/metrics", nil, 200, "go_goroutines"},
		{"/nothing", nil, 404, ""},
	}
	for _, tt := range tests {
		mu.Lock()
		readyErr = tt.ready
		mu.Unlock()
		status, body := get(t, base+tt.path)
		if status != tt.status || !strings.Contains(body, tt.body) {
			t.Errorf("GET %s (ready error %v) = %d %q, want %d with %q", tt.path, tt.ready, status, body, tt.status, tt.body)
		}
	}
	select {
	case <-b.Done():
		t.Fatal("the server stopped by itself")
	default:
	}
	if err := b.Stop(time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after Stop")
	}
}

func TestBackgroundNone(t *testing.T) {
	t.Parallel()
	b, err := admin.Start("", nil, nil)
	if err != nil || b != nil || b.Addr() != nil || b.Done() != nil || b.Stop(time.Second) != nil {
		t.Errorf("Start(\"\") = %v, %v; want a nil server that does nothing", b, err)
	}
	if _, err := admin.Start("256.0.0.1:1", nil, admin.NewRegistry()); err == nil {
		t.Error("Start on a bad address succeeded")
	}
}
