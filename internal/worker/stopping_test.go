package worker_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// watchFullWindows counts, from now until the test ends, the admissions of
// the default account's limiter that found a window full: Lua's admit reads
// the oldest member of a full window (ZRANGE), which nothing else does to a
// window, and MONITOR shows the commands scripts call. A delivery whose
// first request waits for a slot is refused twice: in its round trip before
// the call, then by Acquire, which then waits.
func (b *bundle) watchFullWindows(t *testing.T) (refused func() int) {
	t.Helper()
	conn, err := net.Dial("tcp", b.redis.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("MONITOR answered %q: %v", line, err)
	}
	var n atomic.Int32
	go func() {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.Contains(strings.ToLower(line), `"zrange" "certmail:ratelimit:{default}:`) {
				n.Add(1)
			}
		}
	}()
	return func() int { return int(n.Load()) }
}

// slowAnswer is the fake CertCentral acting on a request at once but
// answering only after lat; firstPut is closed as the first PUT arrives.
type slowAnswer struct {
	fake      *digicerttest.Server
	lat       atomic.Int64 // nanoseconds
	puts      atomic.Int32
	firstPut  chan struct{}
	closeOnce sync.Once
}

func (s *slowAnswer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	s.fake.ServeHTTP(rec, r)
	if r.Method == http.MethodPut && s.puts.Add(1) == 1 {
		s.closeOnce.Do(func() { close(s.firstPut) })
	}
	timer := time.NewTimer(time.Duration(s.lat.Load()))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-r.Context().Done():
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// TestStoppingWorkerStartsNoNewCall: a resend-dcv with only_if_pending of an
// OV order with 6 domains waiting for email is in its first domain's PUT
// when its worker is told to stop. That PUT finishes; the next domains are
// not started (they would be cut by the shutdown timeout after DigiCert
// acted, and sent again by the redelivery): the task is handed back at
// once, without a retry used, the worker stops without waiting for its
// shutdown timeout, and another worker resends the other domains. Each
// domain is emailed exactly once.
func TestStoppingWorkerStartsNoNewCall(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1})
	o := digicerttest.Order{ID: 3901, Type: digicerttest.OrderOV}
	for i := range 6 {
		o.Domains = append(o.Domains, digicerttest.Domain{ID: int64(901 + i), NameScope: fmt.Sprintf("d%c.example.com", 'a'+i)})
	}
	b.fake.SetOrder(o)
	const lat = 2 * time.Second
	slow := &slowAnswer{fake: b.fake, firstPut: make(chan struct{})}
	slow.lat.Store(int64(lat))
	ts := httptest.NewServer(slow)
	t.Cleanup(ts.Close)
	const shutdownTimeout = 5 * time.Second // past one answer, not past the six of the loop
	conf := func(c *worker.Config) {
		c.Accounts = account.Set{"default": account.Account{Name: "default", BaseURL: ts.URL + "/services/v2", APIKey: account.Secret(testKey)}}
		c.ShutdownTimeout = shutdownTimeout
		c.Client = digicert.Config{} // the defaults: 10 s per attempt, 20 s per call
	}
	stop1 := b.startWorkerCtl(t, setupOpts{configure: conf})
	id := b.enqueueTask(t)(tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: o.ID, Locale: "en", OnlyIfPending: true}))
	select {
	case <-slow.firstPut:
	case <-time.After(20 * time.Second):
		t.Fatal("no PUT reached DigiCert")
	}
	sigterm := time.Now()
	stop1()
	if took := time.Since(sigterm); took >= shutdownTimeout-time.Second {
		t.Errorf("worker 1 took %v to stop, want about one answer (%v), not its shutdown timeout (%v)", took, lat, shutdownTimeout)
	}
	var after []string
	for _, r := range b.fake.Requests() {
		if r.Method == http.MethodPut && r.At.After(sigterm) {
			after = append(after, fmt.Sprintf("%s at +%v", r.Path, r.At.Sub(sigterm).Round(time.Millisecond)))
		}
	}
	if len(after) > 0 {
		t.Errorf("the stopping worker started PUTs after it was told to stop: %q", after)
	}
	lines := b.logs.Lines("info", "delivery deferred")
	if len(lines) != 1 || fmt.Sprint(lines[0]["error_code"]) != "worker_stopping" {
		t.Errorf("INFO lines %v, want one hand-back with error_code worker_stopping", lines)
	}

	slow.lat.Store(int64(10 * time.Millisecond))
	b.startWorkerCtl(t, setupOpts{configure: conf})
	info := b.waitState(t, id, asynq.TaskStateCompleted, 30*time.Second)
	if info.Retried != 0 {
		t.Errorf("the handed-back task used %d retries, want 0", info.Retried)
	}
	for i := range 6 {
		if n := len(b.fake.DomainDCVSends(int64(901 + i))); n != 1 {
			t.Errorf("domain %d emailed %d times, want once", 901+i, n)
		}
	}
}

// A delivery whose call waits for a slot of the shared rate limit for its
// first request when its worker starts stopping ends its wait and sends
// nothing, rather than sending once the slot frees: the task is handed back
// (worker_stopping, no retry used), the worker stops without waiting for
// the slot, and the next worker delivers the task once.
func TestStoppingWorkerEndsASlotWait(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	const period = 10 * time.Second
	limits := func(c *worker.Config) {
		a := c.Accounts["default"]
		a.RateLimits = []ratelimit.Window{{Limit: 1, Period: period}}
		c.Accounts["default"] = a
		c.ShutdownTimeout = 3 * period // time enough to wait for the slot and send
	}
	stop := b.startWorkerCtl(t, setupOpts{configure: limits})
	first := b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	b.waitState(t, first, asynq.TaskStateCompleted, 10*time.Second)
	refused := b.watchFullWindows(t)
	second := b.enqueue(t, "resend-dcv", `{"order_id": 2}`)
	// Past its round trip before the call, into the wait for the slot, which
	// lasts until the first request is a period old. The hand-back's reason
	// below says that it came from the wait.
	waitFor(t, period/2, func() bool { return refused() >= 2 }, func() string {
		return fmt.Sprintf("%d refused admissions, want 2 (the round trip's, then the wait's)", refused())
	})
	sigterm := time.Now()
	select {
	case <-b.stopping(t, stop):
	case <-time.After(2 * period):
		t.Fatal("the worker did not stop")
	}
	if took := time.Since(sigterm); took > period/2 {
		t.Errorf("the worker took %v to stop: it waited for the slot (%v)", took, period)
	}
	for _, r := range b.fake.Requests() {
		if r.Method == http.MethodPut && r.At.After(sigterm) {
			t.Errorf("the stopping worker sent %s at +%v", r.Path, r.At.Sub(sigterm).Round(time.Millisecond))
		}
	}
	lines := b.logs.Lines("info", "delivery deferred")
	if len(lines) != 1 || fmt.Sprint(lines[0]["error_code"]) != "worker_stopping" ||
		!strings.Contains(fmt.Sprint(lines[0]["error"]), "while the call waited for a rate-limit slot") {
		t.Errorf("INFO lines %v, want one hand-back with error_code worker_stopping, from the wait for a slot", lines)
	}

	b.startWorkerCtl(t, setupOpts{configure: limits})
	info := b.waitState(t, second, asynq.TaskStateCompleted, 3*period)
	if info.Retried != 0 {
		t.Errorf("the handed-back task used %d retries, want 0", info.Retried)
	}
	puts := 0
	for _, r := range b.fake.Requests() {
		if r.Method == http.MethodPut {
			puts++
		}
	}
	if puts != 2 {
		t.Errorf("fake saw %d PUTs, want 2 (one per task)", puts)
	}
}
