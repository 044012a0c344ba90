package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/worker"
)

const testKey = "test-key-4f1d9a7c2b"

// bundle is what a worker test works with: a real Redis, the fake
// CertCentral, a producer, an inspector, and the worker's log.
type bundle struct {
	redis     *redistest.Server
	fake      *digicerttest.Server
	baseURL   string
	client    *asynq.Client
	inspector *asynq.Inspector
	logs      *syncBuffer
	workerKey string
}

type setupOpts struct {
	fake         digicerttest.Config
	workerKey    string
	configure    func(*worker.Config)
	startWorkers int // default 1; -1 for none
}

func setup(t *testing.T, o setupOpts) *bundle {
	t.Helper()
	if o.fake.APIKeys == nil {
		o.fake.APIKeys = []string{testKey}
	}
	if o.workerKey == "" {
		o.workerKey = testKey
	}
	b := &bundle{redis: redistest.Start(t), logs: &syncBuffer{}}
	b.fake, b.baseURL = digicerttest.NewTestServer(t, o.fake)
	b.client = asynq.NewClient(b.redis.ConnOpt())
	t.Cleanup(func() { b.client.Close() })
	b.inspector = asynq.NewInspector(b.redis.ConnOpt())
	t.Cleanup(func() { b.inspector.Close() })
	n := o.startWorkers // -1: none yet
	if n == 0 {
		n = 1
	}
	b.workerKey = o.workerKey
	for range n {
		b.startWorker(t, o)
	}
	return b
}

// startWorker starts a worker that runs until the test ends.
func (b *bundle) startWorker(t *testing.T, o setupOpts) {
	t.Helper()
	b.startWorkerCtl(t, o)
}

// startWorkerCtl starts a worker and returns a function that stops it
// (gracefully) and waits for it; the test's cleanup stops it otherwise.
func (b *bundle) startWorkerCtl(t *testing.T, o setupOpts) (stop func()) {
	t.Helper()
	if o.workerKey == "" {
		o.workerKey = b.workerKey
	}
	log, err := logging.New("debug", "json", b.logs)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := redisconn.Open(b.redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg := worker.Config{
		Redis: conn,
		Accounts: account.Set{"default": account.Account{
			Name: "default", BaseURL: b.baseURL, APIKey: account.Secret(o.workerKey)}},
		Concurrency:       4,
		ShutdownTimeout:   2 * time.Second,
		AuthProbeInterval: 300 * time.Millisecond,
		RateLimitPause:    300 * time.Millisecond,
		TaskCheckInterval: 50 * time.Millisecond,
		// Retries and waits come back within a tenth of a second.
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		Client:                   digicert.Config{Timeout: 2 * time.Second, InitialBackoff: 10 * time.Millisecond},
		Logger:                   log,
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() { done <- w.Run(ctx, func(_ net.Addr) { close(started) }) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("worker stopped at start: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// enqueue puts a raw task on the default queue with a short retention so
// that its result can be read.
func (b *bundle) enqueue(t *testing.T, typ string, payload string, opts ...asynq.Option) string {
	t.Helper()
	opts = append([]asynq.Option{asynq.Retention(time.Hour), asynq.MaxRetry(3)}, opts...)
	info, err := b.client.Enqueue(asynq.NewTask(typ, []byte(payload)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

// waitState waits until the task reaches state and returns its info.
func (b *bundle) waitState(t *testing.T, id string, state asynq.TaskState, within time.Duration) *asynq.TaskInfo {
	t.Helper()
	var last *asynq.TaskInfo
	waitFor(t, within, func() bool {
		info, err := b.inspector.GetTaskInfo("default", id)
		if err != nil {
			return false
		}
		last = info
		return info.State == state
	}, func() string {
		if last == nil {
			return "task " + id + " not found"
		}
		return "task " + id + " is " + last.State.String() + ", last error: " + last.LastErr
	})
	return last
}

func result(t *testing.T, info *asynq.TaskInfo) worker.Result {
	t.Helper()
	var r worker.Result
	if err := json.Unmarshal(info.Result, &r); err != nil {
		t.Fatalf("task result %q: %v", info.Result, err)
	}
	return r
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", within, describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines returns the worker's log lines decoded, filtered by level and message.
func (b *bundle) logLines(t *testing.T, level, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.logs.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if (level == "" || m["level"] == level) && (msg == "" || m["msg"] == msg) {
			out = append(out, m)
		}
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
