package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/tasks"
)

// childOptions configure this binary re-executed as a baseline program.
type childOptions struct {
	mode              string // plain, guarded, noop or bridge
	redisAddr         string
	baseURL           string
	apiKey            string
	queues            string
	concurrency       int
	taskCheckInterval time.Duration // 0: asynq's default
	listen            string        // bridge
}

func (c *childOptions) flags() {
	flag.StringVar(&c.mode, "child", "", "run as a baseline program instead: plain, guarded, noop or bridge (the driver does this itself)")
	flag.StringVar(&c.redisAddr, "child-redis", "", "baseline: Redis address")
	flag.StringVar(&c.baseURL, "child-base-url", "", "plain, guarded: the CertCentral base URL")
	flag.StringVar(&c.apiKey, "child-api-key", "", "plain, guarded: the API key")
	flag.StringVar(&c.queues, "child-queues", "default=1", "plain, guarded, noop: weighted queues")
	flag.IntVar(&c.concurrency, "child-concurrency", 20, "plain, guarded, noop: handlers at once")
	flag.DurationVar(&c.taskCheckInterval, "child-task-check-interval", 0, "plain, guarded, noop: asynq's TaskCheckInterval (0: asynq's default)")
	flag.StringVar(&c.listen, "child-listen", "", "bridge: listen address")
}

func (c childOptions) args() []string {
	return []string{"-child", c.mode, "-child-redis", c.redisAddr, "-child-base-url", c.baseURL, "-child-api-key", c.apiKey,
		"-child-queues", c.queues, "-child-concurrency", strconv.Itoa(c.concurrency),
		"-child-task-check-interval", c.taskCheckInterval.String(), "-child-listen", c.listen}
}

// runChild runs a baseline program until ctx is done (SIGTERM).
func runChild(ctx context.Context, c childOptions) error {
	switch c.mode {
	case "plain":
		return runServer(ctx, c, plainHandler(c.baseURL, c.apiKey))
	case "guarded":
		rc := redis.NewClient(&redis.Options{Addr: c.redisAddr})
		defer rc.Close()
		return runServer(ctx, c, guardedHandler(rc, plainHandler(c.baseURL, c.apiKey)))
	case "noop":
		return runServer(ctx, c, asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	case "bridge":
		return runBridge(ctx, c)
	}
	return fmt.Errorf("unknown child mode %q", c.mode)
}

// runServer is an asynq server as a hand-written service would run one.
func runServer(ctx context.Context, c childOptions, h asynq.Handler) error {
	qs, err := queues.Parse(c.queues)
	if err != nil {
		return err
	}
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: c.redisAddr}, asynq.Config{
		Concurrency: c.concurrency, Queues: qs, LogLevel: asynq.WarnLevel, TaskCheckInterval: c.taskCheckInterval,
	})
	if err := srv.Start(h); err != nil {
		return err
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// plainHandler is what a careful engineer writes without certmail: decode
// a resend-dcv payload, build DigiCert's body, PUT it with net/http (a pool
// as large as certmail's client keeps), and fail on anything but a 2xx.
func plainHandler(baseURL, apiKey string) asynq.Handler {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, MaxIdleConns: 32, MaxIdleConnsPerHost: 32,
		IdleConnTimeout: 90 * time.Second}}
	type approval struct {
		Domain      string `json:"domain"`
		Email       string `json:"email"`
		EmailDomain string `json:"email_domain,omitempty"`
	}
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p struct {
			OrderID   int64      `json:"order_id"`
			Approvals []approval `json:"domain_approval_emails"`
			Locale    string     `json:"locale"`
		}
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("decode payload: %w: %w", err, asynq.SkipRetry)
		}
		body, err := json.Marshal(struct {
			Approvals []approval `json:"domain_approval_emails,omitempty"`
			Locale    string     `json:"locale,omitempty"`
		}{p.Approvals, p.Locale})
		if err != nil {
			return err
		}
		url := baseURL + "/order/certificate/" + strconv.FormatInt(p.OrderID, 10) + "/resend-emails"
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("X-DC-DEVKEY", apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("DigiCert answered %d", resp.StatusCode)
		}
		return nil
	})
}

// guardedHandler is plain with the least a hand-written handler needs for
// one of certmail's guarantees, a duplicate guard: one Redis round trip
// before the call (EXISTS: was this task's call already made?) and one after
// a 2xx (SET with a day's expiry), each a plain command on a pooled go-redis
// client. It makes as many round trips of its own as `certmail worker`
// does, with none of the worker's other work (limiter, auth gate, result,
// outcome log line, metrics): what two round trips cost on their own.
func guardedHandler(rc *redis.Client, plain asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		key := "bench:delivered:" + t.ResultWriter().TaskID()
		n, err := rc.Exists(ctx, key).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if err := plain.ProcessTask(ctx, t); err != nil {
			return err
		}
		return rc.Set(ctx, key, "1", 24*time.Hour).Err()
	})
}

// runBridge is the smallest HTTP front of asynq.Client: bridgeHandler on
// c.listen.
func runBridge(ctx context.Context, c childOptions) error {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: c.redisAddr})
	defer client.Close()
	mux := bridgeHandler(client)
	srv := &http.Server{Addr: c.listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// bridgeHandler enqueues the JSON body of POST /v1/tasks/{type} as is, with
// the options certmail's constructors give (tasks.DefaultOptions), and
// answers 202 with the task's id.
func bridgeHandler(client *asynq.Client) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /v1/tasks/{type}", func(w http.ResponseWriter, r *http.Request) {
		var payload map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&payload); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b, err := json.Marshal(payload)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		info, err := client.EnqueueContext(r.Context(), asynq.NewTask(r.PathValue("type"), b), tasks.DefaultOptions()...)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": info.ID, "type": info.Type, "queue": info.Queue, "state": "pending"})
	})
	return mux
}
