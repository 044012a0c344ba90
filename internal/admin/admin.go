// Package admin serves the operational endpoints every certmail process
// exposes: /healthz (the process is up), /readyz (its dependencies answer)
// and /metrics (Prometheus).
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, ready for a component's own series.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Routes adds /healthz, /readyz and /metrics to mux. ready is called with a
// short deadline on every /readyz request.
func Routes(mux *http.ServeMux, ready func(context.Context) error, g prometheus.Gatherer) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
}

// Serve serves h on addr until ctx is done, then shuts down within grace.
// started, when not nil, receives the bound address (useful with port 0).
func Serve(ctx context.Context, addr string, h http.Handler, grace time.Duration, started func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if started != nil {
		started(ln.Addr())
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown %s: %w", addr, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", addr, err)
	}
	return nil
}

// Background is the admin server of a process whose main work is elsewhere
// (a worker, a scheduler): started by Start, stopped by Stop. A nil
// *Background (no address configured) is valid and does nothing.
type Background struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{} // closed when serving ended
	err  error         // why serving ended, when not by Stop
}

// Start serves /healthz, /readyz (ready) and /metrics (g) on addr in the
// background. An empty addr means no admin server: Start returns nil, nil.
func Start(addr string, ready func(context.Context) error, g prometheus.Gatherer) (*Background, error) {
	if addr == "" {
		return nil, nil
	}
	mux := http.NewServeMux()
	Routes(mux, ready, g)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	b := &Background{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr(), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			b.err = fmt.Errorf("serve %s: %w", addr, err)
		}
	}()
	return b, nil
}

// Addr is the bound address (nil without a server).
func (b *Background) Addr() net.Addr {
	if b == nil {
		return nil
	}
	return b.addr
}

// Done is closed when the server stopped serving by itself (Err says why);
// nil, so never ready, without a server.
func (b *Background) Done() <-chan struct{} {
	if b == nil {
		return nil
	}
	return b.done
}

// Err is why serving ended, once Done is closed.
func (b *Background) Err() error {
	if b == nil {
		return nil
	}
	<-b.done
	return b.err
}

// Stop gives open requests grace to finish, then closes the server.
func (b *Background) Stop(grace time.Duration) error {
	if b == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := b.srv.Shutdown(ctx)
	<-b.done
	if err != nil {
		return errors.Join(fmt.Errorf("shutdown %s: %w", b.addr, err), b.err)
	}
	return b.err
}
