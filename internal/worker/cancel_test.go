package worker_test

import (
	"bytes"
	"fmt"
	"io"
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
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// cancelWhenPut cancels task id through asynq (what the dashboard's
// Cancel, an operator's Inspector or another asynq application on the
// instance does) once a PUT has reached DigiCert, and waits for asynq to
// hand the task back.
func (b *bundle) cancelWhenPut(t *testing.T, id string, put <-chan struct{}) {
	t.Helper()
	select {
	case <-put:
	case <-time.After(20 * time.Second):
		t.Fatal("no PUT reached DigiCert")
	}
	if err := b.inspector.CancelProcessing(id); err != nil {
		t.Fatal(err)
	}
}

// atMost polls cond for up to within and reports whether it held; unlike
// waitFor, not holding is no failure.
func atMost(within time.Duration, cond func() bool) bool {
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// slowWorker is a worker whose DigiCert is h, with the client's default
// budget (10 s per attempt, 20 s per call).
func slowWorker(h http.Handler, t *testing.T, more func(*worker.Config)) func(*worker.Config) {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return func(c *worker.Config) {
		c.Accounts = account.Set{"default": account.Account{Name: "default", BaseURL: ts.URL + "/services/v2", APIKey: account.Secret(testKey)}}
		c.Client = digicert.Config{}
		if more != nil {
			more(c)
		}
	}
}

// An asynq cancel of a send-cert whose PUT DigiCert has received (and acted
// on) does not cut the call: it finishes, its duplicate guard is written,
// and the retry asynq makes (brought forward here) is a duplicate that
// sends nothing. The certificate is emailed once. The cancel is logged as
// such (canceled), not as an internal error.
func TestCancelLetsTheCallInFlightFinish(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	const lat = 2 * time.Second
	slow := &slowAnswer{fake: b.fake, firstPut: make(chan struct{})}
	slow.lat.Store(int64(lat))
	b.startWorkerCtl(t, setupOpts{configure: slowWorker(slow, t, nil)})
	id := b.enqueue(t, "send-cert", `{"certificate_id": 4401, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.cancelWhenPut(t, id, slow.firstPut)
	b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
	// The call in flight ends with DigiCert's answer; its guard is written
	// right after. Without the fix it was cut, and nothing is written.
	atMost(lat+5*time.Second, func() bool { return len(b.logs.Lines("info", "task done")) == 1 })
	if err := b.inspector.RunTask("default", id); err != nil {
		t.Fatal(err)
	}
	info := b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)
	if got := result(t, info).Outcome; got != taskresult.Duplicate {
		t.Errorf("the retry after the cancel: outcome %q, want %q", got, taskresult.Duplicate)
	}
	if n := len(b.fake.CertSends(4401)); n != 1 || slow.puts.Load() != 1 {
		t.Errorf("certificate emailed %d times (%d PUTs), want once", n, slow.puts.Load())
	}
	lines := b.logs.Lines("warn", "delivery failed; will retry")
	if len(lines) != 1 || lines[0]["error_code"] != "canceled" {
		t.Errorf("WARN lines %v, want one with error_code canceled", lines)
	}
	// The cancelled delivery counts at the cancel and at its end (README
	// "Metrics"), its retry once.
	metrics := b.scrape(t, 0)
	for outcome, want := range map[string]float64{"retry": 1, "delivered": 1, taskresult.Duplicate: 1} {
		if v, _ := sum(metrics, "certmail_tasks_total", "type", "send-cert", "outcome", outcome); v != want {
			t.Errorf("certmail_tasks_total{outcome=%q} = %v, want %v", outcome, v, want)
		}
	}
}

// lateActor is a DigiCert slow to act on the first PUT it receives: it
// applies it (to the fake) lat after it arrived, whether or not the client
// is still there, and answers then; later PUTs are applied at once. It
// notes when each PUT arrived and when it was applied.
type lateActor struct {
	fake     *digicerttest.Server
	lat      time.Duration
	firstPut chan struct{}

	mu   sync.Mutex
	puts []actedPut
}

type actedPut struct {
	body         string
	arrived, end time.Time
}

func (a *lateActor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		a.fake.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	n := len(a.puts)
	a.puts = append(a.puts, actedPut{body: string(body), arrived: time.Now()})
	a.mu.Unlock()
	if n == 0 {
		close(a.firstPut)
		time.Sleep(a.lat) // DigiCert still acts on a request whose client left
	}
	rec := httptest.NewRecorder()
	r.Body = io.NopCloser(bytes.NewReader(body))
	a.fake.ServeHTTP(rec, r)
	a.mu.Lock()
	a.puts[n].end = time.Now()
	a.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (a *lateActor) acted() []actedPut {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]actedPut(nil), a.puts...)
}

// An asynq cancel of a set-emails whose PUT DigiCert is still acting on
// keeps the order's lock until that call ended: a newer list of the order,
// enqueued at once, is sent only after it, and the order keeps the newer
// list. Without the fix the lock went with the cancel, the newer list was
// applied first and the older one landed over it.
func TestCancelKeepsTheOrderUntilTheCallEnded(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	late := &lateActor{fake: b.fake, lat: 2 * time.Second, firstPut: make(chan struct{})}
	b.startWorkerCtl(t, setupOpts{configure: slowWorker(late, t, nil)})
	const order = 4402
	older, err := b.client.Enqueue(newSetEmails(t, order, "older@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	newer := newSetEmails(t, order, "newer@example.com") // stamped after the older one
	b.cancelWhenPut(t, older.ID, late.firstPut)
	info, err := b.client.Enqueue(newer)
	if err != nil {
		t.Fatal(err)
	}
	b.waitState(t, info.ID, asynq.TaskStateCompleted, 20*time.Second)
	// Every PUT DigiCert received has been applied (the older one, cut
	// without the fix, only lat after it arrived).
	atMost(late.lat+5*time.Second, func() bool {
		for _, p := range late.acted() {
			if p.end.IsZero() {
				return false
			}
		}
		return true
	})
	// The older task's retry comes later and is superseded.
	if err := b.inspector.RunTask("default", older.ID); err != nil {
		t.Fatal(err)
	}
	if got := result(t, b.waitState(t, older.ID, asynq.TaskStateCompleted, 15*time.Second)).Outcome; got != taskresult.Superseded {
		t.Errorf("the older list's retry: outcome %q, want %q", got, taskresult.Superseded)
	}
	if got, _ := b.fake.AdditionalEmails(order); fmt.Sprint(got) != "[newer@example.com]" {
		t.Errorf("the order keeps %v, want the newer list", got)
	}
	puts := late.acted()
	if len(puts) != 2 || !strings.Contains(puts[0].body, "older") || puts[0].end.IsZero() || !puts[0].end.Before(puts[1].arrived) {
		var desc []string
		for _, p := range puts {
			desc = append(desc, fmt.Sprintf("%s arrived %s, applied %s", p.body, p.arrived.Format("15:04:05.000"), p.end.Format("15:04:05.000")))
		}
		t.Errorf("PUTs %q: want the older list's call ended before the newer one started, and nothing else", desc)
	}
}

// An asynq cancel of a delivery waiting for a rate-limit slot for its
// first request ends the wait: nothing is sent, once the slot frees or
// later, and the delivery ends at once rather than when the slot frees.
func TestCancelEndsASlotWait(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	const period = 6 * time.Second
	b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		a := c.Accounts["default"]
		a.RateLimits = []ratelimit.Window{{Limit: 1, Period: period}}
		c.Accounts["default"] = a
	}})
	first := b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	b.waitState(t, first, asynq.TaskStateCompleted, 10*time.Second)
	refused := b.watchFullWindows(t)
	second := b.enqueue(t, "resend-dcv", `{"order_id": 2}`)
	// Into the wait for the slot (a cancel before it ends the delivery too).
	waitFor(t, period/2, func() bool { return refused() >= 2 }, func() string {
		return fmt.Sprintf("%d refused admissions, want 2 (the round trip's, then the wait's)", refused())
	})
	cancelled := time.Now()
	if err := b.inspector.CancelProcessing(second); err != nil {
		t.Fatal(err)
	}
	b.waitState(t, second, asynq.TaskStateRetry, 10*time.Second)
	waitFor(t, period/2, func() bool { return len(b.logs.Lines("info", "cancelled delivery ended")) == 1 }, b.logs.Text)
	if took := time.Since(cancelled); took > period/2 {
		t.Errorf("the cancelled delivery ended %v after the cancel: it waited for the slot", took)
	}
	// The delivery has ended (its line is written as it returns): no
	// request of its can come once the slot frees.
	puts := 0
	for _, r := range b.fake.Requests() {
		if r.Method == http.MethodPut {
			puts++
		}
	}
	if puts != 1 {
		t.Errorf("fake saw %d PUTs, want 1 (the first task's)", puts)
	}
}

// A cancel on a task's last delivery dead-letters it with the code
// canceled and a reason that says the call in flight was left to finish,
// and the same on the ERROR line.
func TestCancelOnTheLastDeliveryDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	slow := &slowAnswer{fake: b.fake, firstPut: make(chan struct{})}
	slow.lat.Store(int64(time.Second))
	b.startWorkerCtl(t, setupOpts{configure: slowWorker(slow, t, nil)})
	task, err := tasks.NewSendCertTask(tasks.SendCert{CertificateID: 4403, Emails: []string{"a@example.com"}, CertificateCollectFormat: "attachment"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.client.Enqueue(task, asynq.MaxRetry(0), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b.cancelWhenPut(t, info.ID, slow.firstPut)
	b.waitState(t, info.ID, asynq.TaskStateArchived, 10*time.Second)
	var entry map[string]string
	waitFor(t, 5*time.Second, func() bool {
		for _, e := range b.deadLetters(t, -1) {
			if e["task_id"] == info.ID {
				entry = e
			}
		}
		return entry != nil
	}, func() string { return "no dead-letter entry" })
	if entry["error_code"] != "canceled" || !strings.Contains(entry["error_message"], "cancelled") ||
		!strings.Contains(entry["error_message"], "duplicate") {
		t.Errorf("dead letter %s: %s, want canceled, saying the call in flight was left to finish", entry["error_code"], entry["error_message"])
	}
	lines := b.logs.Lines("error", "task dead-lettered")
	if len(lines) != 1 || lines[0]["error"] != entry["error_code"]+": "+entry["error_message"] {
		t.Errorf("ERROR lines %v, want one with the stream's reason", lines)
	}
	// The call in flight finished: a requeue would be a duplicate.
	waitFor(t, 10*time.Second, func() bool { return len(b.fake.CertSends(4403)) == 1 && len(b.logs.Lines("info", "task done")) == 1 }, b.logs.Text)
}

// A worker told to stop while a delivery asynq cancelled still has its
// call in flight (asynq no longer waits for it) waits for that call,
// within its shutdown timeout: by the time it has stopped, the call has
// ended and its outcome is recorded, and the retry is a duplicate.
func TestStopWaitsForACancelledCall(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	const lat = 2 * time.Second
	slow := &slowAnswer{fake: b.fake, firstPut: make(chan struct{})}
	slow.lat.Store(int64(lat))
	conf := slowWorker(slow, t, func(c *worker.Config) { c.ShutdownTimeout = 4 * lat })
	stop := b.startWorkerCtl(t, setupOpts{configure: conf})
	id := b.enqueue(t, "send-cert", `{"certificate_id": 4404, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.cancelWhenPut(t, id, slow.firstPut)
	b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
	stop()
	if n := len(b.logs.Lines("info", "task done")); n != 1 {
		t.Errorf("the worker stopped before the cancelled delivery's call ended (%d 'task done' lines, want 1)", n)
	}
	if !strings.Contains(b.logs.Text(), `"msg":"worker stopped"`) || strings.Contains(b.logs.Text(), `"level":"error"`) {
		t.Errorf("want the worker stopped without an ERROR line:\n%s", b.logs.Text())
	}
	b.startWorkerCtl(t, setupOpts{configure: conf})
	if err := b.inspector.RunTask("default", id); err != nil {
		t.Fatal(err)
	}
	if got := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)).Outcome; got != taskresult.Duplicate {
		t.Errorf("the retry after the stop: outcome %q, want %q", got, taskresult.Duplicate)
	}
	if n := slow.puts.Load(); n != 1 {
		t.Errorf("%d PUTs, want 1", n)
	}
}

// A cancelled delivery whose call is still running when the shutdown
// timeout has passed is cut, as any call past it is, and named: one ERROR
// line with its task id says that its outcome is not recorded, since the
// cancel's own line said the call was left to finish.
func TestStopNamesACancelledCallItCuts(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	slow := &slowAnswer{fake: b.fake, firstPut: make(chan struct{})}
	slow.lat.Store(int64(6 * time.Second))
	conf := slowWorker(slow, t, func(c *worker.Config) { c.ShutdownTimeout = time.Second })
	stop := b.startWorkerCtl(t, setupOpts{configure: conf})
	id := b.enqueue(t, "send-cert", `{"certificate_id": 4405, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.cancelWhenPut(t, id, slow.firstPut)
	b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
	stop()
	lines := b.logs.Lines("error", "the worker stopped before this delivery ended: its outcome is not recorded; "+
		"if its DigiCert call succeeded, a redelivery would email again")
	if len(lines) != 1 || lines[0]["task_id"] != id {
		t.Errorf("ERROR lines naming the cut delivery: %v, want one for %s\n%s", lines, id, b.logs.Text())
	}
}

// slowGet is a DigiCert whose first GET (an only_if_pending read) answers
// after 2 s, counting the PUTs it receives.
type slowGet struct {
	fake     http.Handler
	firstGet chan struct{}
	once     sync.Once
	puts     atomic.Int32
}

func (s *slowGet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		first := false
		s.once.Do(func() { first = true; close(s.firstGet) })
		if first {
			time.Sleep(2 * time.Second)
		}
	}
	if r.Method == http.MethodPut {
		s.puts.Add(1)
	}
	s.fake.ServeHTTP(w, r)
}

// A cancel while a resend-dcv's validation read is in flight lets the read
// finish, but the delivery starts no new call: the resend is not sent.
func TestCancelDuringTheReadStartsNoResend(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	sg := &slowGet{fake: b.fake, firstGet: make(chan struct{})}
	b.startWorkerCtl(t, setupOpts{configure: slowWorker(sg, t, nil)})
	id := b.enqueue(t, "resend-dcv", `{"order_id": 7, "only_if_pending": true}`)
	b.cancelWhenPut(t, id, sg.firstGet)
	b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "cancelled delivery ended")) == 1 }, b.logs.Text)
	if n := sg.puts.Load(); n != 0 {
		t.Errorf("%d PUTs after the cancel, want 0", n)
	}
}

// A cancel while a resend-dcv's validation read is in flight, on an order
// no longer pending, ends not_pending without a warning: asynq refuses a
// result once it cancelled the delivery, and the task's retry records its
// own.
func TestCancelledNotPendingWarnsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
	if !b.fake.SetOrderStatus(8, digicerttest.StatusIssued) {
		t.Fatal("the fake does not know order 8")
	}
	sg := &slowGet{fake: b.fake, firstGet: make(chan struct{})}
	b.startWorkerCtl(t, setupOpts{configure: slowWorker(sg, t, nil)})
	id := b.enqueue(t, "resend-dcv", `{"order_id": 8, "only_if_pending": true}`)
	b.cancelWhenPut(t, id, sg.firstGet)
	b.waitState(t, id, asynq.TaskStateRetry, 10*time.Second)
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "task done")) == 1 }, b.logs.Text)
	if got := b.logs.Lines("info", "task done")[0]["outcome"]; got != taskresult.NotPending {
		t.Errorf("the cancelled delivery ended %v, want %s", got, taskresult.NotPending)
	}
	if lines := b.logs.Lines("warn", "could not store task result"); len(lines) != 0 {
		t.Errorf("a cancelled delivery warned %v", lines)
	}
}
