package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// Three workers (each with its own Redis connections, sharing only Redis)
// and a burst of 500 tasks stay under the fake's windows: not one 429.
func TestBurstStaysUnderDigiCertLimits(t *testing.T) {
	t.Parallel()
	limits := []ratelimit.Window{{Limit: 50, Period: 500 * time.Millisecond}, {Limit: 300, Period: 3 * time.Second}}
	var fakeLimits []digicerttest.Window
	for _, w := range limits {
		fakeLimits = append(fakeLimits, digicerttest.Window{Limit: w.Limit, Period: w.Period})
	}
	regs := make([]*prometheus.Registry, 3)
	i := 0
	b := setup(t, setupOpts{
		fake:         digicerttest.Config{AnyIDExists: true, RateLimits: fakeLimits, BlockFor: 10 * time.Second},
		startWorkers: 3,
		configure: func(c *worker.Config) {
			c.Concurrency = 20
			a := c.Accounts["default"]
			a.RateLimits = limits
			c.Accounts["default"] = a
			c.Registry = admin.NewRegistry()
			regs[i] = c.Registry
			i++
		},
	})
	const n = 500
	ids := make([]string, n)
	for k := range n {
		task, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: int64(k + 1)}, asynq.Retention(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		info, err := b.client.Enqueue(task)
		if err != nil {
			t.Fatal(err)
		}
		ids[k] = info.ID
	}
	waitFor(t, 60*time.Second, func() bool { return b.fake.StatusCount(204) == n }, func() string {
		return fmt.Sprintf("%d of %d delivered, %d×429", b.fake.StatusCount(204), n, b.fake.StatusCount(429))
	})
	if got := b.fake.StatusCount(429); got != 0 {
		t.Errorf("fake answered %d×429, want 0", got)
	}
	if got := b.fake.RequestCount(); got != n {
		t.Errorf("fake saw %d requests for %d tasks", got, n)
	}
	waits := 0.0
	for _, reg := range regs {
		waits += histogramCount(t, reg, "certmail_ratelimit_wait_seconds")
	}
	if waits == 0 {
		t.Error("certmail_ratelimit_wait_seconds observed no wait: the limiter never held anyone back")
	}
}

// A worker stopped right after DigiCert accepted a send-cert (its guard
// written, the task not yet completed) hands the task back; the next
// delivery finds the guard and reports duplicate: one email batch in all.
func TestRedeliveryAfterSuccessIsDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	hit := make(chan struct{}, 1)
	stopA := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = 200 * time.Millisecond
		c.AfterDelivery = func(ctx context.Context, _ string) {
			hit <- struct{}{}
			<-ctx.Done() // the process "dies" here: nothing after the guard runs
		}
	}})
	id := b.enqueue(t, "send-cert", `{"certificate_id": 77, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	<-hit
	stopA() // shutdown: asynq hands the unfinished task back to its queue
	b.startWorker(t, setupOpts{})
	r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second))
	if r.Outcome != taskresult.Duplicate {
		t.Errorf("outcome = %q, want duplicate", r.Outcome)
	}
	if n := len(b.fake.CertSends(77)); n != 1 {
		t.Errorf("certificate 77 emailed %d times, want once", n)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1", n)
	}
}

// set-emails A then B; A fails transiently and is retried after B was
// applied: the order keeps B's list and A is superseded.
// A set-emails retried after a newer one of the same order was applied is
// skipped: whether certmail stamped its sequence when building it, or a raw
// producer sent none and the worker stamps the time it first processed it.
func TestStaleSetEmailsIsSuperseded(t *testing.T) {
	t.Parallel()
	for _, raw := range []bool{false, true} {
		t.Run(map[bool]string{false: "built by tasks", true: "raw producer"}[raw], func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
			enqueue := func(email string) string {
				if raw {
					return b.enqueue(t, tasks.TypeSetEmails, `{"order_id": 5, "additional_emails": ["`+email+`"]}`)
				}
				task, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 5, AdditionalEmails: []string{email}}, asynq.Retention(time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				info, err := b.client.Enqueue(task)
				if err != nil {
					t.Fatal(err)
				}
				return info.ID
			}
			b.fake.FailNext(4, 503, "<html>bad gateway</html>", "text/html") // every in-call attempt of A
			idA := enqueue("a@example.com")
			b.waitState(t, idA, asynq.TaskStateRetry, 10*time.Second)
			idB := enqueue("b@example.com")
			if r := result(t, b.waitState(t, idB, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Delivered {
				t.Fatalf("B outcome = %q", r.Outcome)
			}
			if err := b.inspector.RunTask("default", idA); err != nil { // A's retry comes now
				t.Fatal(err)
			}
			if r := result(t, b.waitState(t, idA, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Superseded {
				t.Errorf("A outcome = %q, want superseded", r.Outcome)
			}
			if got, _ := b.fake.AdditionalEmails(5); strings.Join(got, ",") != "b@example.com" {
				t.Errorf("order 5 list = %v, want B's", got)
			}
		})
	}
}

// Two accounts with their own keys and base URLs: each task reaches its own.
func TestTasksReachTheirOwnAccount(t *testing.T) {
	t.Parallel()
	euFake, euURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{"eu-key-0123456789"}, AnyIDExists: true})
	b := setup(t, setupOpts{
		fake: digicerttest.Config{AnyIDExists: true},
		configure: func(c *worker.Config) {
			c.Accounts["eu"] = account.Account{Name: "eu", BaseURL: euURL, APIKey: "eu-key-0123456789"}
		},
	})
	us := b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	eu := b.enqueue(t, "resend-dcv", `{"order_id": 2, "account": "eu"}`)
	unknown := b.enqueue(t, "resend-dcv", `{"order_id": 3, "account": "apac"}`)
	b.waitState(t, us, asynq.TaskStateCompleted, 10*time.Second)
	b.waitState(t, eu, asynq.TaskStateCompleted, 10*time.Second)
	b.waitState(t, unknown, asynq.TaskStateArchived, 10*time.Second)
	if len(b.fake.DCVSends(1)) != 1 || len(b.fake.DCVSends(2)) != 0 {
		t.Errorf("US fake: order 1 sends %d, order 2 sends %d", len(b.fake.DCVSends(1)), len(b.fake.DCVSends(2)))
	}
	if len(euFake.DCVSends(2)) != 1 || len(euFake.DCVSends(1)) != 0 {
		t.Errorf("EU fake: order 2 sends %d, order 1 sends %d", len(euFake.DCVSends(2)), len(euFake.DCVSends(1)))
	}
	for _, r := range euFake.Requests() {
		if r.Header.Get("X-DC-DEVKEY") != "eu-key-0123456789" {
			t.Error("EU fake received another account's key")
		}
	}
	if e := b.deadLetters(t, 1)[0]; e["error_code"] != "unknown_account" {
		t.Errorf("unknown account dead-lettered with %q", e["error_code"])
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// A probe that reaches DigiCert's own judgement (here: the order does not
// exist) proves the key works: the account resumes at once, though the
// probing task is dead-lettered, and the gauge follows.
func TestProbeAnsweredByDigiCertResumes(t *testing.T) {
	t.Parallel()
	var reg *prometheus.Registry
	b := setup(t, setupOpts{fake: digicerttest.Config{APIKeys: []string{"another-key"}}, configure: func(c *worker.Config) {
		c.Registry = admin.NewRegistry()
		reg = c.Registry
	}})
	id := b.enqueue(t, "resend-dcv", `{"order_id": 404}`)
	waitFor(t, 10*time.Second, func() bool { return b.fake.StatusCount(403) >= 2 }, func() string { return "no refused probe" })
	if v := gaugeValue(t, reg, "certmail_account_paused"); v != 1 {
		t.Errorf("certmail_account_paused = %v while paused, want 1", v)
	}
	b.fake.SetAPIKeys("another-key", testKey)
	b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second)
	if n := intVal(t, b.redis.Client().Exists(context.Background(), "certmail:account:default:auth_broken")); n != 0 {
		t.Error("the account is still marked broken after DigiCert answered 404 to the probe")
	}
	if n := len(b.logs.Lines("info", "DigiCert accepts the API key again; account resumed")); n != 1 {
		t.Errorf("%d resume lines, want 1", n)
	}
	if v := gaugeValue(t, reg, "certmail_account_paused"); v != 0 {
		t.Errorf("certmail_account_paused = %v after the resume, want 0", v)
	}
}

// A raw set-emails (no sequence) keeps the stamp of its first delivery
// after it ends, as the duplicate guard is kept: a worker stopped after
// DigiCert applied its list, before asynq recorded the completion, hands it
// back, and when it comes again after a newer list of the order was
// applied, it is superseded, not applied over the newer list.
func TestRawSetEmailsRedeliveredAfterSuccessIsSuperseded(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	hit := make(chan struct{}, 1)
	stopA := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = 200 * time.Millisecond
		c.AfterDelivery = func(ctx context.Context, id string) {
			if id == "old" {
				hit <- struct{}{}
				<-ctx.Done() // the process "dies" here: asynq never records the completion
			}
		}
	}})
	old := b.enqueue(t, tasks.TypeSetEmails, `{"order_id": 77, "additional_emails": ["old@example.com"]}`, asynq.TaskID("old"))
	<-hit
	newer := b.enqueue(t, tasks.TypeSetEmails, `{"order_id": 77, "additional_emails": ["new@example.com"]}`)
	if r := result(t, b.waitState(t, newer, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Delivered {
		t.Fatalf("the newer task's outcome = %q, want delivered", r.Outcome)
	}
	stopA() // shutdown: asynq hands the old task back to its queue
	// The old task's handler has returned on worker A (its line is logged
	// after it), so nothing of A runs when B takes the task.
	waitFor(t, 10*time.Second, func() bool {
		for _, l := range b.logs.Lines("info", "task done") {
			if l["task_id"] == old {
				return true
			}
		}
		return false
	}, func() string { return "worker A's handler of the old task has not returned" })
	b.startWorker(t, setupOpts{})
	if r := result(t, b.waitState(t, old, asynq.TaskStateCompleted, 15*time.Second)); r.Outcome != taskresult.Superseded {
		t.Errorf("the old task's redelivery: outcome = %q, want superseded", r.Outcome)
	}
	if got, _ := b.fake.AdditionalEmails(77); strings.Join(got, ",") != "new@example.com" {
		t.Errorf("order 77 holds %v after the old task's redelivery, want the newer list", got)
	}
	if n := b.fake.RequestCount(); n != 2 {
		t.Errorf("fake saw %d requests, want 2", n)
	}
	// The stamp expires with the guards (GuardRetention, 7 days).
	if ttl := b.redis.Client().PTTL(context.Background(), "certmail:first_seen:old").Val(); ttl <= 0 || ttl > worker.DefaultGuardRetention {
		t.Errorf("the stamp's time to live is %v, want at most %v", ttl, worker.DefaultGuardRetention)
	}
}

// A raw producer that uses one task id per order, enqueueing again once the
// previous task is gone, gets duplicate for the second list, nothing sent,
// as any task id used again within the guards' retention: the worker keeps
// the stamp of a task without a sequence as long.
func TestReusedTaskIDKeepsItsStamp(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	for i, c := range []struct{ email, outcome, list string }{
		{"first@example.com", taskresult.Delivered, "first@example.com"},
		{"second@example.com", taskresult.Duplicate, "first@example.com"},
	} {
		id := b.enqueue(t, tasks.TypeSetEmails, `{"order_id": 77, "additional_emails": ["`+c.email+`"]}`, asynq.TaskID("order-77"))
		if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != c.outcome {
			t.Fatalf("task %d outcome = %q, want %s", i, r.Outcome, c.outcome)
		}
		if got, _ := b.fake.AdditionalEmails(77); strings.Join(got, ",") != c.list {
			t.Errorf("after task %d the list is %v, want %s", i, got, c.list)
		}
		if err := b.inspector.DeleteTask("default", id); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1", n)
	}
}

// A raw set-emails dead-lettered and requeued (certmail dlq requeue runs the
// archived task again) keeps the stamp of its first delivery, whether it
// failed permanently or ran out of retries: after a newer list of its order
// was applied, both are superseded.
func TestRequeuedRawSetEmailsKeepsItsStamp(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	raw := func(email string) string { return `{"order_id": 9, "additional_emails": ["` + email + `"]}` }
	b.fake.FailNext(1, 404, `{"errors":[{"code":"not_found|order","message":"Order not found."}]}`, "application/json")
	permanent := b.enqueue(t, tasks.TypeSetEmails, raw("permanent@example.com"))
	b.waitState(t, permanent, asynq.TaskStateArchived, 10*time.Second)
	b.fake.FailNext(4, 503, "<html>bad gateway</html>", "text/html") // every in-call attempt
	exhausted := b.enqueue(t, tasks.TypeSetEmails, raw("exhausted@example.com"), asynq.MaxRetry(0))
	b.waitState(t, exhausted, asynq.TaskStateArchived, 10*time.Second)
	newer := b.enqueue(t, tasks.TypeSetEmails, raw("new@example.com"))
	if r := result(t, b.waitState(t, newer, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Delivered {
		t.Fatalf("the newer task's outcome = %q, want delivered", r.Outcome)
	}
	for _, id := range []string{permanent, exhausted} {
		if err := b.inspector.RunTask("default", id); err != nil {
			t.Fatal(err)
		}
		if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)); r.Outcome != taskresult.Superseded {
			t.Errorf("requeued task %s: outcome = %q, want superseded", id, r.Outcome)
		}
	}
	if got, _ := b.fake.AdditionalEmails(9); strings.Join(got, ",") != "new@example.com" {
		t.Errorf("order 9 holds %v after the requeues, want the newer list", got)
	}
}

// Workers of one account with other rate limits (a rollout that lowers
// DIGICERT_RATE_LIMITS) count in other windows. Each says so once, at
// ERROR, naming both settings, whichever started first; a worker with the
// same limits is not reported. When the other worker has been gone for a
// few checks, one INFO line says so, and the setting is reported again
// when it comes back.
func TestWorkersWithOtherRateLimitsAreReported(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	const old, lowered = "100/5s,1000/3m", "80/5s,1000/3m"
	limits := func(s string) setupOpts {
		ws, err := ratelimit.ParseWindows(s)
		if err != nil {
			t.Fatal(err)
		}
		return setupOpts{configure: func(c *worker.Config) {
			a := c.Accounts["default"]
			a.RateLimits = ws
			c.Accounts["default"] = a
			c.RateLimitCheckInterval = 100 * time.Millisecond
		}}
	}
	reports := func(level, own string) []map[string]any {
		var out []map[string]any
		for _, l := range b.logs.Lines(level, "") {
			if _, ok := l["other_rate_limits"]; ok && l["rate_limits"] == own {
				out = append(out, l)
			}
		}
		return out
	}
	b.startWorker(t, limits(old))
	b.startWorker(t, limits("1000/3m, 100/5s")) // the same windows, in another order
	stop := b.startWorkerCtl(t, limits(lowered))
	waitFor(t, 10*time.Second, func() bool {
		return len(reports("error", old)) == 2 && len(reports("error", lowered)) == 1
	}, func() string {
		return fmt.Sprintf("%d ERROR lines of the old workers, %d of the lowered one", len(reports("error", old)), len(reports("error", lowered)))
	})
	for _, l := range append(reports("error", old), reports("error", lowered)...) {
		if l["account"] != "default" || l["other_rate_limits"] == l["rate_limits"] ||
			(l["other_rate_limits"] != old && l["other_rate_limits"] != lowered) {
			t.Errorf("ERROR line %v: want account default and the other setting", l)
		}
	}
	stop()
	// The lowered worker is forgotten after three checks: each old worker
	// says so once, and has not reported it again meanwhile.
	waitFor(t, 10*time.Second, func() bool { return len(reports("info", old)) == 2 },
		func() string { return fmt.Sprintf("%d INFO lines", len(reports("info", old))) })
	if n := len(reports("error", old)); n != 2 {
		t.Errorf("%d ERROR lines of the old workers after many checks, want 2 (one each)", n)
	}
	b.startWorker(t, limits(lowered))
	waitFor(t, 10*time.Second, func() bool { return len(reports("error", old)) == 4 },
		func() string {
			return fmt.Sprintf("%d ERROR lines of the old workers, want 4", len(reports("error", old)))
		})
	if strings.Contains(b.logs.Text(), testKey) {
		t.Error("the API key is in the logs")
	}
}
