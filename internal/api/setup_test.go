package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/worker"
)

// testToken is the API token of every test server, an operator token given
// without a role; otherToken is a second one where a test needs two;
// producerToken and readerToken have those roles.
const (
	testToken     = "tok-3c9e1f0a7b5d4e2c"
	otherToken    = "tok-other-88a1c4d2"
	producerToken = "tok-producer-5e0b7a91"
	readerToken   = "tok-reader-c41d09f3"
	digicertKey   = "dc-key-4f1d9a7c2b"
)

// bundle is what an API test works with: a real Redis, the API behind a real
// HTTP server, an asynq inspector and the API's log.
type bundle struct {
	redis     *redistest.Server
	conn      *redisconn.Conn
	ops       *ops.Service
	schedules *schedule.Store
	srv       *api.Server
	url       string // base URL of the API, no trailing slash
	http      *http.Client
	inspector *asynq.Inspector
	registry  *prometheus.Registry
	logs      *certmailtest.Logs
	proxy     *redistest.Proxy // between ops and Redis, with setupOpts.proxied
}

type setupOpts struct {
	configure func(*api.Config) // adjusts the API's configuration
	worker    bool              // start a worker against a fake CertCentral that knows no order
	// proxied puts the API's ops.Service behind a redistest.Proxy (bundle.proxy),
	// its clients giving up a read after 250 ms, its scripts loaded in Redis.
	proxied bool
	redis   redistest.Options // the Redis server's options
}

func setup(t testing.TB, opts ...setupOpts) *bundle {
	t.Helper()
	var o setupOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	b := &bundle{redis: redistest.Start(t, o.redis), registry: admin.NewRegistry()}
	var err error
	b.conn, err = redisconn.Open(b.redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.conn.Client.Close() })
	rules := enqueue.Rules{Accounts: []string{"default", "eu"}}
	opsConn := b.conn
	if o.proxied {
		b.proxy = b.redis.Proxy()
		opt := asynq.RedisClientOpt{Addr: b.proxy.Addr(),
			DialTimeout: time.Second, ReadTimeout: 250 * time.Millisecond, WriteTimeout: 250 * time.Millisecond}
		client := opt.MakeRedisClient().(redis.UniversalClient)
		t.Cleanup(func() { _ = client.Close() })
		opsConn = &redisconn.Conn{Opt: opt, Client: client, Target: "redis://" + b.proxy.Addr() + "/0"}
	}
	if b.ops, err = ops.New(ops.Config{Redis: opsConn, Rules: rules}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.ops.Close() })
	if o.proxied { // a first EVALSHA that finds no script is answered NOSCRIPT without running
		if _, _, err := b.ops.Enqueue(context.Background(), enqueue.Request{Type: "resend-dcv", Queue: "bulk",
			Payload: []byte(`{"order_id":1}`)}); err != nil {
			t.Fatalf("prime the scripts: %v", err)
		}
	}
	b.schedules, err = schedule.NewStore(schedule.Config{Redis: b.conn.Client, Rules: schedule.Rules{Enqueue: rules}})
	if err != nil {
		t.Fatal(err)
	}
	var log *zap.Logger
	log, b.logs = certmailtest.NewLogger(t)
	cfg := api.Config{
		Ops:       b.ops,
		Redis:     b.conn,
		Schedules: b.schedules,
		Tokens:    []api.Token{{Secret: testToken}, {Secret: otherToken}, {Secret: producerToken, Role: api.RoleProducer}, {Secret: readerToken, Role: api.RoleReader}},
		Logger:    log,
		Registry:  b.registry,
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	b.srv, err = api.New(cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	t.Cleanup(func() { _ = b.srv.Close() })
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	b.url = ts.URL
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	b.http = &http.Client{
		Transport:     transport,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	b.inspector = asynq.NewInspector(b.redis.ConnOpt())
	t.Cleanup(func() { _ = b.inspector.Close() })
	if o.worker {
		b.startWorker(t)
	}
	return b
}

// startWorker runs a worker whose DigiCert is a fake that knows no order or
// certificate, so that every task it takes is dead-lettered (404) at once.
// It stops at the test's cleanup.
func (b *bundle) startWorker(t testing.TB) {
	t.Helper()
	_, baseURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{digicertKey}})
	certmailtest.StartWorker(t, b.redis.URL(), worker.Config{
		Accounts: account.Set{
			"default": {Name: "default", BaseURL: baseURL, APIKey: account.Secret(digicertKey)},
			"eu":      {Name: "eu", BaseURL: baseURL, APIKey: account.Secret(digicertKey)},
		},
		Concurrency:       2,
		ShutdownTimeout:   2 * time.Second,
		TaskCheckInterval: 50 * time.Millisecond,
		Client:            digicert.Config{Timeout: 2 * time.Second, InitialBackoff: 10 * time.Millisecond},
	})
}

// response is an answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// authJSON is the header set of an authorised JSON request.
func authJSON() http.Header {
	return http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {"application/json"}}
}

// do sends a request to the API; header nil means authJSON().
func (b *bundle) do(t testing.TB, method, path, body string, header http.Header) response {
	t.Helper()
	if header == nil {
		header = authJSON()
	}
	req, err := http.NewRequest(method, b.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	res, err := b.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: got}
}

// get is an authorised GET.
func (b *bundle) get(t testing.TB, path string) response {
	t.Helper()
	return b.do(t, http.MethodGet, path, "", http.Header{"Authorization": {"Bearer " + testToken}})
}

// mustJSON decodes an application/json answer of the expected status into v.
func mustJSON(t testing.TB, res response, status int, v any) {
	t.Helper()
	if res.status != status {
		t.Fatalf("status %d, want %d; body: %s", res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(res.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", res.body, err)
	}
}

// mustProblem checks that res is a problem+json answer of status and
// returns it. Every problem must carry type, title, status, detail and the
// request id of the X-Request-Id header.
func mustProblem(t testing.TB, res response, status int) api.Problem {
	t.Helper()
	if res.status != status {
		t.Fatalf("status %d, want %d; body: %s", res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != api.ProblemContentType {
		t.Fatalf("Content-Type %q, want %s", ct, api.ProblemContentType)
	}
	var p api.Problem
	dec := json.NewDecoder(bytes.NewReader(res.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("decode problem %s: %v", res.body, err)
	}
	switch {
	case p.Status != status:
		t.Errorf("problem status %d, want %d", p.Status, status)
	case p.Type != "about:blank" && p.Type != api.TypeValidation:
		t.Errorf("problem type %q", p.Type)
	case p.Title == "" || p.Detail == "":
		t.Errorf("problem without title or detail: %s", res.body)
	case p.RequestID == "" || p.RequestID != res.header.Get("X-Request-Id"):
		t.Errorf("problem request_id %q, header %q", p.RequestID, res.header.Get("X-Request-Id"))
	}
	if p.Type == api.TypeValidation && len(p.Errors) == 0 {
		t.Errorf("validation problem without errors: %s", res.body)
	}
	return p
}

// taskCount is how many tasks Redis holds in every state of every queue.
func (b *bundle) taskCount(t testing.TB) int {
	t.Helper()
	queues, err := b.inspector.Queues()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range queues {
		info, err := b.inspector.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		n += info.Pending + info.Active + info.Scheduled + info.Retry + info.Archived + info.Completed + info.Aggregating
	}
	return n
}

// assertUntouched checks that nothing reached Redis: no queue, no task, no
// key at all.
func (b *bundle) assertUntouched(t testing.TB) {
	t.Helper()
	queues, err := b.inspector.Queues()
	if err != nil {
		t.Fatal(err)
	}
	if len(queues) > 0 {
		t.Errorf("queues %v exist, want none", queues)
	}
	keys, err := b.redis.Client().Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		t.Errorf("Redis holds keys %v, want none", keys)
	}
}

// waitFor polls cond until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	certmailtest.WaitFor(t, within, cond, describe)
}
