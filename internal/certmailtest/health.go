package certmailtest

import (
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
)

// HealthWhileWaiting checks a process (a worker, a scheduler) whose Run was
// started against a Redis that does not answer, started and done being
// Run's callback and result: its admin server, found from the first
// "waiting for Redis" line with admin_addr, answers /healthz 200 and
// /readyz 503, and started has not been called. relaunch then starts Redis:
// started must come with the admin server's address, and /readyz answer
// 200. It returns the admin server's base URL.
func HealthWhileWaiting(t *testing.T, logs *observer.ObservedLogs, started <-chan net.Addr, done <-chan error, relaunch func()) string {
	t.Helper()
	var addr string
	WaitFor(t, 10*time.Second, func() bool {
		for _, e := range logs.FilterMessage("waiting for Redis").All() {
			if a, ok := e.ContextMap()["admin_addr"].(string); ok {
				addr = a
				return true
			}
		}
		return false
	}, func() string { return "no \"waiting for Redis\" line with admin_addr" })
	admin := "http://" + addr
	if got := getStatus(admin + "/healthz"); got != http.StatusOK {
		t.Errorf("/healthz while waiting for Redis: %d, want 200", got)
	}
	if got := getStatus(admin + "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz while waiting for Redis: %d, want 503", got)
	}
	select {
	case <-started:
		t.Fatal("started was called before Redis answered")
	default:
	}
	relaunch()
	select {
	case a := <-started:
		if "http://"+a.String() != admin {
			t.Errorf("started with %v; the admin server is at %s", a, admin)
		}
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not started within 30s of Redis answering")
	}
	if got := getStatus(admin + "/readyz"); got != http.StatusOK {
		t.Errorf("/readyz once started: %d, want 200", got)
	}
	return admin
}

// getStatus is the status of a GET of url; 0 when no answer came.
func getStatus(url string) int {
	res, err := http.Get(url)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}
