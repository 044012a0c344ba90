package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// newSetEmails builds a set-emails task as a producer does (sequence
// stamped, increasing with each call) for one address.
func newSetEmails(t *testing.T, order int64, email string) *asynq.Task {
	t.Helper()
	task, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: order, AdditionalEmails: []string{email}}, asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// Several workers receive set-emails of one order at once while DigiCert
// takes its time: one call per order is in flight at any moment (each
// request reaches the fake only after the previous one was answered), no
// list is ever sent after a newer one, and the newest list is the one the
// order keeps. The first task is in flight when the others arrive, so the
// others contend for the order while it is busy.
func TestSetEmailsOneCallPerOrderInFlight(t *testing.T) {
	t.Parallel()
	const latency = 250 * time.Millisecond
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: 3})
	b.fake.SetFaults(digicerttest.Faults{Latency: latency})
	const order, n = 31, 8
	path := fmt.Sprintf("/services/v2/order/certificate/%d/additional-emails", order)
	email := func(i int) string { return fmt.Sprintf("list%d@example.com", i) }

	ids := make([]string, n)
	built := make([]*asynq.Task, n)
	for i := range n {
		built[i] = newSetEmails(t, order, email(i))
	}
	enqueue := func(i int) {
		info, err := b.client.Enqueue(built[i])
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = info.ID
	}
	enqueue(0)
	waitFor(t, 10*time.Second, func() bool { return b.fake.RequestCount() == 1 }, func() string { return "the first list is not in flight" })
	for i := 1; i < n; i++ {
		enqueue(i)
	}
	outcomes := map[string]int{}
	for i, id := range ids {
		r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 30*time.Second))
		outcomes[r.Outcome]++
		if i == n-1 && r.Outcome != taskresult.Delivered {
			t.Errorf("the newest list's outcome = %q, want delivered", r.Outcome)
		}
		if r.Outcome != taskresult.Delivered && r.Outcome != taskresult.Superseded {
			t.Errorf("task %d outcome = %q, want delivered or superseded", i, r.Outcome)
		}
	}

	var reqs []digicerttest.Request
	for _, r := range b.fake.Requests() {
		if r.Path == path {
			reqs = append(reqs, r)
		}
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].At.Before(reqs[j].At) })
	if len(reqs) < 2 || len(reqs) != outcomes[taskresult.Delivered] {
		t.Fatalf("%d requests for %v outcomes: want one per delivered task, and at least the first and the newest", len(reqs), outcomes)
	}
	last := -1
	for k, r := range reqs {
		if k > 0 {
			if gap := r.At.Sub(reqs[k-1].At); gap < latency {
				t.Errorf("request %d reached DigiCert %v after the previous one, which took %v to answer: two calls in flight", k, gap, latency)
			}
		}
		var body struct {
			AdditionalEmails []string `json:"additional_emails"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil || len(body.AdditionalEmails) != 1 {
			t.Fatalf("request %d body %s: %v", k, r.Body, err)
		}
		var i int
		if _, err := fmt.Sscanf(body.AdditionalEmails[0], "list%d@example.com", &i); err != nil {
			t.Fatalf("request %d body %s: %v", k, r.Body, err)
		}
		if i <= last {
			t.Errorf("list %d sent after list %d: an older list overwrote a newer one", i, last)
		}
		last = i
	}
	if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != email(n-1) {
		t.Errorf("order %d keeps %v, want the newest list %s", order, got, email(n-1))
	}
}

// An older set-emails that arrives after a newer one was applied is
// superseded without a call; the newer task delivered again (a redelivery
// after its success, here the same task, its id too, enqueued again once
// the first is gone) is a duplicate without a call. The order keeps the
// newer list throughout.
func TestSetEmailsSupersededAndDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: 2})
	older := newSetEmails(t, 32, "old@example.com")
	newer := newSetEmails(t, 32, "new@example.com")
	run := func(task *asynq.Task, opts ...asynq.Option) taskresult.Result {
		t.Helper()
		info, err := b.client.Enqueue(task, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return result(t, b.waitState(t, info.ID, asynq.TaskStateCompleted, 10*time.Second))
	}
	if r := run(newer, asynq.TaskID("newer")); r.Outcome != taskresult.Delivered || r.HTTPStatus != 204 {
		t.Fatalf("newer: %+v, want delivered", r)
	}
	if r := run(older); r.Outcome != taskresult.Superseded {
		t.Errorf("older after newer: outcome %q, want superseded", r.Outcome)
	}
	if err := b.inspector.DeleteTask("default", "newer"); err != nil {
		t.Fatal(err)
	}
	if r := run(newer, asynq.TaskID("newer")); r.Outcome != taskresult.Duplicate {
		t.Errorf("newer delivered again: outcome %q, want duplicate", r.Outcome)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1: superseded and duplicate tasks do not call DigiCert", n)
	}
	if got, _ := b.fake.AdditionalEmails(32); strings.Join(got, ",") != "new@example.com" {
		t.Errorf("order 32 keeps %v, want the newer list", got)
	}
	for _, outcome := range []string{taskresult.Delivered, taskresult.Superseded, taskresult.Duplicate} {
		var seen int
		for _, l := range b.logs.Lines("info", "task done") {
			if l["outcome"] == outcome {
				seen++
			}
		}
		if seen != 1 {
			t.Errorf("%d 'task done' lines with outcome %s, want 1", seen, outcome)
		}
	}
}

// The order's applied sequence lives as long as the duplicate guards
// (GuardRetention, 7 days by default; README "Redis keys"), written first
// or over an older one: a Redis that runs for years does not keep one key
// for every order ever updated.
func TestAppliedSequenceExpiresWithTheGuards(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	const order = 33
	appliedKey := "certmail:order:default:33:applied"
	rdb := b.redis.Client()
	for i, task := range []*asynq.Task{newSetEmails(t, order, "old@example.com"), newSetEmails(t, order, "new@example.com")} {
		info, err := b.client.Enqueue(task)
		if err != nil {
			t.Fatal(err)
		}
		if r := result(t, b.waitState(t, info.ID, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Delivered {
			t.Fatalf("list %d: outcome %q, want delivered", i, r.Outcome)
		}
		if ttl := rdb.PTTL(context.Background(), appliedKey).Val(); ttl <= worker.DefaultGuardRetention-time.Minute || ttl > worker.DefaultGuardRetention {
			t.Errorf("list %d: the applied sequence's time to live is %v, want %v", i, ttl, worker.DefaultGuardRetention)
		}
	}
}

// A set-emails whose account is paused probes the key like any task, and a
// probe that DigiCert refuses again frees the order's lock: the next probe
// comes an interval later, not when the lock would have expired.
func TestRefusedProbeFreesTheOrderLock(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{APIKeys: []string{"another-key"}, AnyIDExists: true},
		configure: func(c *worker.Config) { c.AuthProbeInterval = time.Second }})
	info, err := b.client.Enqueue(newSetEmails(t, 7, "ops@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	rdb := b.redis.Client()
	ctx := context.Background()
	const lockKey = "certmail:order:default:7:lock"
	// Look at the lock between two deliveries: the task neither active
	// before nor after the look, and no request reached DigiCert meanwhile.
	var locked bool
	waitFor(t, 30*time.Second, func() bool {
		refused := b.fake.StatusCount(403)
		if refused < 2 { // the first call, then a probe
			return false
		}
		before, err := b.inspector.GetTaskInfo("default", info.ID)
		if err != nil || before.State == asynq.TaskStateActive {
			return false
		}
		n := intVal(t, rdb.Exists(ctx, lockKey))
		after, err := b.inspector.GetTaskInfo("default", info.ID)
		if err != nil || after.State != before.State || b.fake.StatusCount(403) != refused {
			return false
		}
		locked = n == 1
		return true
	}, func() string {
		return fmt.Sprintf("%d refused requests, no look between deliveries", b.fake.StatusCount(403))
	})
	if locked {
		t.Error("a refused probe left the order's lock behind")
	}
}

// setEmailsAt builds a set-emails task of sequence seq for one address.
func setEmailsAt(t *testing.T, order int64, email string, seq int64) *asynq.Task {
	t.Helper()
	task, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: order, AdditionalEmails: []string{email}, Sequence: seq},
		asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// afterSetEmails is a transport that runs do once, after DigiCert's answer
// to a set-emails arrived and before the worker reads it.
type afterSetEmails struct {
	once sync.Once
	do   func()
}

func (a *afterSetEmails) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/additional-emails") {
		a.once.Do(a.do)
	}
	return resp, err
}

// The order's lock is a 15 s lease; the applied sequence of a list that
// DigiCert accepted waits for Redis however long it takes. A worker cut
// off from Redis right after DigiCert's 2xx for the newer list can neither
// renew the lock nor record the list, and the lock expires. An older list
// of the order that another worker takes meanwhile is superseded, not sent
// (DigiCert would keep it, and the newer write landing after it would not
// undo that): the newer list's call was recorded as being sent before it
// went. When Redis is back, the newer one's write turns that record into
// the applied sequence.
func TestOlderSetEmailsAfterLockExpiryIsSuperseded(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	const order = 41
	ctx := context.Background()
	rdb := b.redis.Client()
	lockKey, appliedKey := "certmail:order:default:41:lock", "certmail:order:default:41:applied"
	sendingKey := "certmail:order:default:41:sending"
	seq := time.Now().UnixNano()
	older := setEmailsAt(t, order, "old@example.com", seq)
	newer := setEmailsAt(t, order, "new@example.com", seq+1)

	proxy := b.redis.Proxy()
	cut := make(chan struct{})
	b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.Redis = certmailtest.Conn(t, "redis://"+proxy.Addr()+"/0")
		c.Client.HTTPClient = &http.Client{Transport: &afterSetEmails{do: func() { proxy.Disconnect(); close(cut) }}}
	}})
	t.Cleanup(proxy.Resume) // before the worker stops
	if _, err := b.client.Enqueue(newer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cut:
	case <-time.After(10 * time.Second):
		t.Fatalf("the newer list was not sent:\n%s", b.logs.Text())
	}
	if n := intVal(t, rdb.Exists(ctx, lockKey)); n != 1 {
		t.Fatal("the newer list's call went out without the order's lock")
	}
	// Cut off, its worker does not renew the lock: it expires, 15 s after
	// the last renewal, cut short here.
	if err := rdb.PExpire(ctx, lockKey, time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return intVal(t, rdb.Exists(ctx, lockKey)) == 0 },
		func() string { return "the lock did not expire" })

	info, err := b.client.Enqueue(older)
	if err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, setupOpts{}) // reaches Redis
	r := result(t, b.waitState(t, info.ID, asynq.TaskStateCompleted, 15*time.Second))
	want := strconv.FormatInt(seq+1, 10)
	if got := rdb.Get(ctx, appliedKey).Val(); got == want {
		t.Fatal("the newer list's applied sequence was written while its worker was cut off from Redis")
	}
	if r.Outcome != taskresult.Superseded {
		t.Errorf("the older list's outcome = %q, want superseded", r.Outcome)
	}
	if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "new@example.com" {
		t.Errorf("order %d keeps %v, want the newer list", order, got)
	}

	proxy.Resume()
	waitFor(t, 10*time.Second, func() bool {
		return rdb.Get(ctx, appliedKey).Val() == want && intVal(t, rdb.Exists(ctx, sendingKey)) == 0
	}, func() string {
		return fmt.Sprintf("applied %q, sending %q; want applied %s and no sending record",
			rdb.Get(ctx, appliedKey).Val(), rdb.Get(ctx, sendingKey).Val(), want)
	})
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1: the newer list alone", n)
	}
	if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "new@example.com" {
		t.Errorf("order %d keeps %v once Redis is back, want the newer list", order, got)
	}
}

// A newer list whose call fails, then an older list of the order. DigiCert
// refused the newer one (a 4xx: the task fails for good): nothing of it was
// applied and the record of its sending goes, so the older list is applied
// (an operator who requeues an older update gets it). DigiCert did not
// answer (5xx, every in-call attempt): it may have applied the newer list,
// and the task will retry it, so the record stays and the older list is
// superseded; the newer one's retry applies it and clears the record.
func TestOlderSetEmailsAfterANewerCallFailed(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name             string
		status, attempts int
		body, ctype      string
		state            asynq.TaskState // of the newer task after its failure
		outcome, list    string          // of the older task, and the order's list after it
	}{
		{name: "refused", status: 400, attempts: 1, body: `{"errors":[{"code":"invalid_email","message":"Invalid email."}]}`,
			ctype: "application/json", state: asynq.TaskStateArchived, outcome: taskresult.Delivered, list: "old@example.com"},
		{name: "no answer", status: 503, attempts: 4, body: "<html>bad gateway</html>", ctype: "text/html",
			state: asynq.TaskStateRetry, outcome: taskresult.Superseded, list: ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
			const order = 42
			ctx := context.Background()
			rdb := b.redis.Client()
			sendingKey := "certmail:order:default:42:sending"
			seq := time.Now().UnixNano()
			b.fake.FailPath(fmt.Sprintf("/services/v2/order/certificate/%d/additional-emails", order), c.attempts, c.status, c.body, c.ctype)
			newer, err := b.client.Enqueue(setEmailsAt(t, order, "new@example.com", seq+1))
			if err != nil {
				t.Fatal(err)
			}
			b.waitState(t, newer.ID, c.state, 10*time.Second)
			if n := b.fake.StatusCount(c.status); n != c.attempts {
				t.Fatalf("fake answered %d %d times, want %d", c.status, n, c.attempts)
			}
			older, err := b.client.Enqueue(setEmailsAt(t, order, "old@example.com", seq))
			if err != nil {
				t.Fatal(err)
			}
			if r := result(t, b.waitState(t, older.ID, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != c.outcome {
				t.Errorf("the older list's outcome = %q, want %s", r.Outcome, c.outcome)
			}
			if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != c.list {
				t.Errorf("order %d keeps %v, want %q", order, got, c.list)
			}
			if c.state != asynq.TaskStateRetry {
				if n := intVal(t, rdb.Exists(ctx, sendingKey)); n != 0 {
					t.Errorf("the refused list's sending record is left: %q", rdb.Get(ctx, sendingKey).Val())
				}
				return
			}
			if err := b.inspector.RunTask("default", newer.ID); err != nil { // its retry, now
				t.Fatal(err)
			}
			if r := result(t, b.waitState(t, newer.ID, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Delivered {
				t.Errorf("the newer list's retry: outcome = %q, want delivered", r.Outcome)
			}
			if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "new@example.com" {
				t.Errorf("order %d keeps %v after the newer list's retry, want it", order, got)
			}
			if n := intVal(t, rdb.Exists(ctx, sendingKey)); n != 0 {
				t.Errorf("the sending record is left after the list was applied: %q", rdb.Get(ctx, sendingKey).Val())
			}
		})
	}
}
