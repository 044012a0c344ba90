package ops_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKey = "ops-test-key-7c1e2b"

// bundle is what an ops test works with: a real Redis, the Service under
// test, and an inspector and client of its own to look behind the Service's back.
type bundle struct {
	redis     *redistest.Server
	svc       *ops.Service
	inspector *asynq.Inspector
	rdb       *redis.Client
}

// setup starts a Redis server and a Service on it with opts (the zero
// Options when none are given).
func setup(t *testing.T, opts ...ops.Config) *bundle {
	t.Helper()
	var o ops.Config
	if len(opts) > 0 {
		o = opts[0]
	}
	b := &bundle{redis: redistest.Start(t)}
	conn := b.open(t)
	o.Redis = conn
	var err error
	if b.svc, err = ops.New(o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.svc.Close(); err != nil {
			t.Errorf("Service.Close: %v", err)
		}
	})
	b.inspector = asynq.NewInspector(b.redis.ConnOpt())
	t.Cleanup(func() { _ = b.inspector.Close() })
	b.rdb = b.redis.Client()
	return b
}

// open returns a connection to the test's Redis, closed when the test ends.
func (b *bundle) open(t *testing.T) *redisconn.Conn {
	t.Helper()
	return certmailtest.Conn(t, b.redis.URL())
}

// startWorker runs a real worker against a fake CertCentral in which the
// orders and certificates given exist and no other does, so that a task for
// another id fails permanently (404) and is dead-lettered. The returned
// function stops the worker and waits for it; the test's cleanup does too.
func (b *bundle) startWorker(t *testing.T, orders ...int64) (stop func()) {
	t.Helper()
	fake, baseURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{testKey}})
	fake.AddOrder(orders...)
	return certmailtest.StartWorker(t, b.redis.URL(), worker.Config{
		Accounts: account.Set{"default": account.Account{
			Name: "default", BaseURL: baseURL, APIKey: account.Secret(testKey)}},
		Concurrency:       2,
		ShutdownTimeout:   2 * time.Second,
		TaskCheckInterval: 20 * time.Millisecond,
		Client:            digicert.Config{Timeout: 2 * time.Second},
	}).Stop
}

// enqueue enqueues a set-emails task through the Service and returns its id.
func (b *bundle) enqueue(t *testing.T, orderID int64) string {
	t.Helper()
	ref, _, err := b.svc.Enqueue(context.Background(), enqueue.Request{
		Type:    "set-emails",
		Payload: fmt.Appendf(nil, `{"order_id":%d,"additional_emails":["jill@example.com"]}`, orderID),
	})
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return ref.ID
}

// deadLetters has a running worker dead-letter one task per order id (ids
// the fake does not know) and returns the task ids in the order given, each
// both archived and in the stream once the function returns.
func (b *bundle) deadLetters(t *testing.T, orderIDs ...int64) []string {
	t.Helper()
	ids := make([]string, 0, len(orderIDs))
	for _, o := range orderIDs {
		id := b.enqueue(t, o)
		ids = append(ids, id)
		// One at a time, so that the stream holds them in the order given.
		waitFor(t, 10*time.Second, func() error {
			dl, err := b.svc.DeadLetter(context.Background(), id)
			if err != nil {
				return err
			}
			if !dl.Archived {
				return errors.New("in the stream but not archived yet")
			}
			return nil
		})
	}
	return ids
}

// waitFor polls cond until it returns nil, failing the test with cond's last
// error when within passes.
func waitFor(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	var last error
	certmailtest.WaitFor(t, within, func() bool { last = cond(); return last == nil }, func() string { return fmt.Sprint(last) })
}

// queueSizes returns the number of tasks of each queue asynq knows.
func (b *bundle) queueSizes(t *testing.T) map[string]int {
	t.Helper()
	queues, err := b.inspector.Queues()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int{}
	for _, q := range queues {
		info, err := b.inspector.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		sizes[q] = info.Size
	}
	return sizes
}
