package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/taskresult"
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
	log       *zap.Logger // every worker of the bundle logs here
	logs      *certmailtest.Logs
	workerKey string

	mu     sync.Mutex
	admins []string // the admin address (/metrics) of each worker started, in order
}

type setupOpts struct {
	redis        redistest.Options
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
	b := &bundle{redis: redistest.Start(t, o.redis)}
	b.log, b.logs = certmailtest.NewLogger(t)
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
	cfg := worker.Config{
		Accounts: account.Set{"default": account.Account{
			Name: "default", BaseURL: b.baseURL, APIKey: account.Secret(o.workerKey)}},
		Concurrency:       4,
		AdminAddr:         "127.0.0.1:0",
		ShutdownTimeout:   2 * time.Second,
		AuthProbeInterval: worker.MinAuthProbeInterval, // the shortest Validate takes
		RateLimitPause:    worker.MinRateLimitPause,
		TaskCheckInterval: 50 * time.Millisecond,
		// Retries and waits come back within a tenth of a second.
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		Client:                   digicert.Config{Timeout: 2 * time.Second, InitialBackoff: 10 * time.Millisecond},
		Logger:                   b.log,
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	w := certmailtest.StartWorker(t, b.redis.URL(), cfg)
	if w.Admin != nil {
		b.mu.Lock()
		b.admins = append(b.admins, w.Admin.String())
		b.mu.Unlock()
	}
	return w.Stop
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

func result(t *testing.T, info *asynq.TaskInfo) taskresult.Result {
	t.Helper()
	var r taskresult.Result
	if err := json.Unmarshal(info.Result, &r); err != nil {
		t.Fatalf("task result %q: %v", info.Result, err)
	}
	return r
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	certmailtest.WaitFor(t, within, cond, describe)
}

// scrape returns the text /metrics serves on the admin address of the i-th
// worker started, as Prometheus reads it.
func (b *bundle) scrape(t *testing.T, i int) string {
	t.Helper()
	b.mu.Lock()
	if i >= len(b.admins) {
		b.mu.Unlock()
		t.Fatalf("worker %d has no admin address (%d known)", i, len(b.admins))
	}
	addr := b.admins[i]
	b.mu.Unlock()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", res.StatusCode, body)
	}
	return string(body)
}

// sum adds up the samples of metric name in a /metrics text whose labels
// include every pair of want (name, value, name, value, ...); found is false
// when no series matches.
func sum(text, name string, want ...string) (total float64, found bool) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (!strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, " ")) {
			continue
		}
		labels := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			for _, pair := range splitLabels(rest[1:end]) {
				k, v, _ := strings.Cut(pair, "=")
				if uq, err := strconv.Unquote(v); err == nil {
					labels[k] = uq
				}
			}
			rest = rest[end+1:]
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if match && err == nil {
			total += v
			found = true
		}
	}
	return total, found
}

// splitLabels splits `a="x",b="y,z"` at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQuote, escaped, start := false, false, 0
	for i, r := range s {
		switch {
		case escaped:
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			inQuote = !inQuote
		case r == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// redisValues returns every key of Redis with every value it holds (string,
// hash fields and values, list, set and sorted-set members, stream fields
// and values), each Redis error failing the test.
func redisValues(t *testing.T, rdb redis.UniversalClient) map[string][]string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var values []string
		switch typ {
		case "string":
			v, err := rdb.Get(ctx, k).Result()
			if err != nil && !errors.Is(err, redis.Nil) { // expired since KEYS
				t.Fatal(err)
			}
			values = []string{v}
		case "hash":
			m, err := rdb.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for f, v := range m {
				values = append(values, f, v)
			}
		case "list":
			values, err = rdb.LRange(ctx, k, 0, -1).Result()
		case "set":
			values, err = rdb.SMembers(ctx, k).Result()
		case "zset":
			values, err = rdb.ZRange(ctx, k, 0, -1).Result()
		case "stream":
			var msgs []redis.XMessage
			msgs, err = rdb.XRange(ctx, k, "-", "+").Result()
			for _, m := range msgs {
				for f, v := range m.Values {
					values = append(values, f, fmt.Sprint(v))
				}
			}
		case "none": // expired since KEYS
		default:
			t.Fatalf("key %s has type %s, which this scan does not read", k, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		out[k] = values
	}
	return out
}

// intVal returns an integer reply, failing the test on a Redis error (a
// bare .Val() would read an error as 0).
func intVal(t *testing.T, cmd *redis.IntCmd) int64 {
	t.Helper()
	n, err := cmd.Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// stopping stops a worker (stop, from startWorkerCtl) in the background and
// returns once it says it is shutting down; the channel closes when stop
// has returned.
func (b *bundle) stopping(t *testing.T, stop func()) <-chan struct{} {
	t.Helper()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stop()
	}()
	const shuttingDown = "shutting down: no new deliveries or DigiCert calls; calls in flight get the shutdown timeout"
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", shuttingDown)) == 1 }, b.logs.Text)
	return stopped
}
