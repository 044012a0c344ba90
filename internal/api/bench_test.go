//go:build unix

package api_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/logging"
)

// benchBody is the body cmd/certmail-bench sends to POST /v1/tasks/set-emails.
const benchBody = `{"order_id": 4242, "additional_emails": ["bench@example.com"]}`

// BenchmarkEnqueue measures POST /v1/tasks/set-emails through the whole
// middleware chain against a real Redis, logging JSON as `certmail api` does
// (to io.Discard). "handler" calls the Server directly with a reused request
// and a bare ResponseWriter, so that its allocations are the API's own and
// the enqueue's; "http" goes through net/http over loopback, so that the
// server's writing of the headers counts too (with the client's work).
// cpu-ns/op is the CPU time of this process (not Redis's) per request: on a
// shared machine a steadier figure than ns/op.
func BenchmarkEnqueue(b *testing.B) {
	bn := setup(b, setupOpts{configure: func(c *api.Config) {
		log, err := logging.New("info", "json", io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		c.Logger = log
	}})
	body := []byte(benchBody)

	b.Run("handler", func(b *testing.B) {
		req := httptest.NewRequest(http.MethodPost, "/v1/tasks/set-emails", nil)
		req.Header = authJSON()
		rd := bytes.NewReader(body)
		w := &benchWriter{header: http.Header{}}
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			rd.Reset(body)
			req.Body = io.NopCloser(rd)
			req.ContentLength = int64(len(body))
			clear(w.header)
			w.status = 0
			bn.srv.ServeHTTP(w, req)
			if w.status != http.StatusAccepted {
				b.Fatalf("status %d, want 202", w.status)
			}
		}
	})

	b.Run("http", func(b *testing.B) {
		url := bn.url + "/v1/tasks/set-emails"
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			req.Header = authJSON()
			res, err := bn.http.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode != http.StatusAccepted {
				b.Fatalf("status %d, want 202", res.StatusCode)
			}
		}
	})
}

// reportCPU starts counting the process's CPU time; the function it returns
// reports it per operation as cpu-ns/op.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchWriter is the least a ResponseWriter can be: it keeps the status and
// drops the body.
type benchWriter struct {
	header http.Header
	status int
}

func (w *benchWriter) Header() http.Header { return w.header }

func (w *benchWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}
