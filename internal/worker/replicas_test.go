package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

const (
	notAcknowledged = "the duplicate guard was written but too few replicas acknowledged it, and a failover could lose it; trying again, for wait_bound at most, until a master with enough replicas holds it"
	appliedNotAcked = "the applied sequence was written but too few replicas acknowledged it, and a failover could lose it; trying again, for wait_bound at most, until a master with enough replicas holds it"
	guardOnMaster   = "the duplicate guard is on the master only: too few replicas acknowledged it, and the delivery ends without them; a failover before a replica copies it could email again"
	becameShort     = "too few Redis replicas acknowledge the duplicate guards: deliveries now end without waiting for them, their guards on the master only (a failover before a replica copies one could email again), until enough acknowledge again"
	shortEnded      = "enough Redis replicas acknowledge the duplicate guards again: deliveries wait for them again"
	acknowledged    = "duplicate guard written and acknowledged by enough replicas"
	appliedAcked    = "applied sequence written and acknowledged by enough replicas"
)

// callLatency is how long the fake holds its answers in the tests that
// stop a replica during a call (pauseDuringCalls).
const callLatency = 500 * time.Millisecond

// pauseDuringCalls stops replica (SIGSTOP) once the fake, answering after
// callLatency (set before the tasks were enqueued), has received calls
// requests in all: the round trips before those calls, which wait for a
// replica too, are done, and the ones after them meet the stopped replica.
func pauseDuringCalls(t *testing.T, b *bundle, replica *redistest.Server, calls int) {
	t.Helper()
	waitFor(t, 15*time.Second, func() bool { return b.fake.RequestCount() >= calls }, b.logs.Text)
	replica.Pause()
}

// A delivery whose DigiCert call succeeded does not end until a replica
// acknowledged its duplicate guard (for a set-emails, its applied
// sequence): with the replica stopped (SIGSTOP) during the call, the task stays active,
// one WARN line says why, and it completes once the replica runs again,
// the guard on the replica, with one INFO line. A failover's promoted
// replica then holds the guard, and the redelivery of a task whose
// completion the old master lost finds it. DigiCert is called once.
func TestGuardWaitsForReplica(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas = 1 }})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)

	b.fake.SetFaults(digicerttest.Faults{Latency: callLatency})
	cert := b.enqueue(t, "send-cert", `{"certificate_id": 61, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	order := b.enqueue(t, "set-emails", `{"order_id": 62, "additional_emails": ["b@example.com"], "sequence": 7}`)
	pauseDuringCalls(t, b, replica, 2)
	waitFor(t, 15*time.Second, func() bool {
		return len(b.logs.Lines("warn", notAcknowledged)) == 1 && len(b.logs.Lines("warn", appliedNotAcked)) == 1
	}, b.logs.Text)
	// Two more tries, each waiting a second for the replica: still active.
	// A fixed sleep, not a wait on a condition: what it shows is that
	// nothing happens (the tasks do not complete) while the replica is
	// stopped, and no event marks the end of such a stretch.
	time.Sleep(2500 * time.Millisecond)
	for _, id := range []string{cert, order} {
		if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStateActive {
			t.Fatalf("task %s while the replica is stopped: %v %v, want active", id, info, err)
		}
	}
	if n := len(b.logs.Lines("warn", notAcknowledged)); n != 1 {
		t.Errorf("%d WARN lines for the guard not acknowledged, want 1", n)
	}

	replica.Continue()
	for _, id := range []string{cert, order} {
		if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)); r.Outcome != taskresult.Delivered {
			t.Errorf("task %s: outcome %q, want delivered", id, r.Outcome)
		}
	}
	if len(b.logs.Lines("info", acknowledged)) != 1 || len(b.logs.Lines("info", appliedAcked)) != 1 {
		t.Errorf("want one INFO line each once acknowledged:\n%s", b.logs.Text())
	}
	ctx := context.Background()
	for _, key := range []string{"certmail:delivered:" + cert, "certmail:delivered:" + order, "certmail:order:default:62:applied"} {
		if n, err := replica.Client().Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("%s on the replica: %d, %v; want it there", key, n, err)
		}
	}
	if n := len(b.fake.CertSends(61)); n != 1 {
		t.Errorf("certificate 61 emailed %d times, want once", n)
	}
}

// A replica gone for longer than the wait's bound (a group of a master and
// one replica whose master died) does not hold deliveries: the delivery
// waiting for it ends after the bound, delivered, with one WARN naming it,
// and the worker is short of replicas (one WARN, the gauge at 1). The next
// delivery ends at once, without a line of its own. Once the replica is
// back, the next WAIT acknowledges it: one INFO, the gauge at 0, and the
// guard on the replica.
func TestGuardStopsWaitingForAGoneReplica(t *testing.T) {
	t.Parallel()
	const bound = 1500 * time.Millisecond
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas, c.GuardWaitBound = 1, bound }})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)
	short := func() float64 {
		v, found := sum(b.scrape(t, 0), "certmail_guard_replicas_short")
		if !found {
			t.Fatalf("no certmail_guard_replicas_short in /metrics")
		}
		return v
	}
	if v := short(); v != 0 {
		t.Fatalf("certmail_guard_replicas_short %v before any delivery, want 0", v)
	}

	b.fake.SetFaults(digicerttest.Faults{Latency: callLatency})
	start := time.Now()
	first := b.enqueue(t, "send-cert", `{"certificate_id": 71, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	pauseDuringCalls(t, b, replica, 1)
	if r := result(t, b.waitState(t, first, asynq.TaskStateCompleted, 10*bound)); r.Outcome != taskresult.Delivered {
		t.Errorf("first task: outcome %q, want delivered", r.Outcome)
	}
	if took := time.Since(start); took < bound {
		t.Errorf("first task completed after %s, want the bound (%s) first", took, bound)
	}
	gaveUp := b.logs.Lines("warn", guardOnMaster)
	if len(gaveUp) != 1 || gaveUp[0]["task_id"] != first {
		t.Errorf("want one WARN naming %s for its guard on the master only, got %v:\n%s", first, gaveUp, b.logs.Text())
	}
	if v := short(); v != 1 {
		t.Errorf("certmail_guard_replicas_short %v once short, want 1", v)
	}

	start = time.Now()
	second := b.enqueue(t, "send-cert", `{"certificate_id": 72, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.waitState(t, second, asynq.TaskStateCompleted, 10*bound)
	if took := time.Since(start); took >= bound {
		t.Errorf("second task, while short, completed after %s, want well within the bound (%s)", took, bound)
	}
	for msg, want := range map[string]int{notAcknowledged: 1, guardOnMaster: 1, becameShort: 1} {
		if n := len(b.logs.Lines("warn", msg)); n != want {
			t.Errorf("%d WARN lines %q, want %d", n, msg, want)
		}
	}

	replica.Continue()
	ctx := context.Background()
	waitFor(t, 10*time.Second, func() bool {
		n, err := replica.Client().Exists(ctx, "certmail:delivered:"+second).Result()
		return err == nil && n == 1
	}, func() string { return "the replica did not catch up" })
	// A replica in sync acknowledges within ShortReplicasTimeout; a busy
	// machine may take longer, so a few deliveries get the chance.
	for i := range 5 {
		id := b.enqueue(t, "send-cert", fmt.Sprintf(`{"certificate_id": %d, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`, 73+i))
		b.waitState(t, id, asynq.TaskStateCompleted, 10*bound)
		if len(b.logs.Lines("info", shortEnded)) > 0 {
			break
		}
	}
	if n := len(b.logs.Lines("info", shortEnded)); n != 1 {
		t.Errorf("%d INFO lines %q once the replica is back, want 1:\n%s", n, shortEnded, b.logs.Text())
	}
	if v := short(); v != 0 {
		t.Errorf("certmail_guard_replicas_short %v once replicas acknowledge again, want 0", v)
	}
	for _, c := range []int64{71, 72} {
		if n := len(b.fake.CertSends(c)); n != 1 {
			t.Errorf("certificate %d emailed %d times, want once", c, n)
		}
	}
}

// With no replica asked for (the default without Sentinel, or set to 0
// under it), nothing waits for one: a stopped replica does not hold a
// delivery, and no WAIT is sent.
func TestGuardWaitsForNoReplicaWhenNoneAsked(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas = -1 }})
	replica.Pause()
	b.redis.ResetStats()
	id := b.enqueue(t, "send-cert", `{"certificate_id": 63, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.waitState(t, id, asynq.TaskStateCompleted, 5*time.Second)
	if n := b.redis.Commands()["wait"]; n != 0 {
		t.Errorf("%d WAIT commands, want none", n)
	}
	if strings.Contains(b.logs.Text(), "acknowledge") {
		t.Errorf("a line about replicas with none asked:\n%s", b.logs.Text())
	}
}

// A worker that asks for more replicas than the master has says so once
// at start, and starts short of replicas (the gauge at 1): its first
// deliveries do not each wait the bound for replicas that are not there.
// A replica that then joins ends the shortage without any delivery (the
// worker's own WAIT): one INFO, the gauge at 0.
func TestFewReplicasWarnedAtStart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) {
		c.GuardReplicas, c.GuardProbeInterval = 1, 100*time.Millisecond
	}})
	const warning = "Redis's master has fewer replicas connected than CERTMAIL_GUARD_REPLICAS asks: the worker starts short of replicas, " +
		"its deliveries ending with their duplicate guards on the master only until enough replicas acknowledge a WAIT " +
		"(it tries every 10 s); for a Redis without replicas, set CERTMAIL_GUARD_REPLICAS=0"
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("warn", warning)) == 1 }, b.logs.Text)
	line := b.logs.Lines("warn", warning)[0]
	if line["guard_replicas"] != int64(1) || line["connected_replicas"] != int64(0) {
		t.Errorf("the warning's fields %v, want guard_replicas 1 and connected_replicas 0", line)
	}
	if v := shortGauge(t, b); v != 1 {
		t.Errorf("certmail_guard_replicas_short %v at start without a replica, want 1", v)
	}

	redistest.StartReplica(t, b.redis, redistest.Options{})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", shortEnded)) == 1 }, b.logs.Text)
	if v := shortGauge(t, b); v != 0 {
		t.Errorf("certmail_guard_replicas_short %v once a replica acknowledges, want 0", v)
	}
}

// A worker that asks fewer replicas than its master has says so at start,
// once, with both numbers: an orderly failover can lose a write that the
// replicas not promoted acknowledged (TestDrillTwoReplicasFailover). It
// is not short of replicas for that.
func TestMoreReplicasWarnedAtStart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1})
	redistest.StartReplica(t, b.redis, redistest.Options{})
	redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas = 1 }})
	const warning = "Redis's master has more replicas connected than CERTMAIL_GUARD_REPLICAS asks: in an orderly Sentinel failover " +
		"a replica that was not promoted can acknowledge a dequeue or duplicate guard the old master then loses, and a task can be sent twice; " +
		"set CERTMAIL_GUARD_REPLICAS to the number of replicas"
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("warn", warning)) == 1 }, b.logs.Text)
	line := b.logs.Lines("warn", warning)[0]
	if line["guard_replicas"] != int64(1) || line["connected_replicas"] != int64(2) {
		t.Errorf("the warning's fields %v, want guard_replicas 1 and connected_replicas 2", line)
	}
	if v := shortGauge(t, b); v != 0 {
		t.Errorf("certmail_guard_replicas_short %v, want 0: the replicas asked are there", v)
	}
}

// An idle worker ends its shortage of replicas by itself once they are
// back: short after a delivery waited the bound for a stopped replica, it
// gets no delivery after the replica runs again, and its own WAIT ends
// the shortage (one INFO, the gauge at 0), so that the alert stops.
func TestShortEndsWhileIdle(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) {
		c.GuardReplicas, c.GuardWaitBound, c.GuardProbeInterval = 1, 500*time.Millisecond, 200*time.Millisecond
	}})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)

	replica.Pause()
	id := b.enqueue(t, "send-cert", `{"certificate_id": 81, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)
	if v := shortGauge(t, b); v != 1 {
		t.Fatalf("certmail_guard_replicas_short %v after the replica stopped, want 1", v)
	}
	replica.Continue()
	waitFor(t, 10*time.Second, func() bool { return shortGauge(t, b) == 0 }, b.logs.Text)
	if n := len(b.logs.Lines("info", shortEnded)); n != 1 {
		t.Errorf("%d INFO lines %q, want 1", n, shortEnded)
	}
}

// waitRefused is the WARN of a worker whose WAIT Redis refuses.
const waitRefused = "Redis refuses WAIT, so no replica can be asked to acknowledge the duplicate guards: deliveries end with their guards " +
	"on the master only (a failover before a replica copies one could email again); allow WAIT (an ACL user needs +wait) " +
	"or set CERTMAIL_GUARD_REPLICAS=0"

// A WAIT that Redis refuses (here an ACL without it; a proxy that does not
// know it answers alike) once the guard's script has run does not hold
// the delivery: the guard is on the master, the task completes, delivered,
// within the bound, and the worker is short of replicas with one WARN
// naming the refusal, however many deliveries meet it. No line says the
// guard could not be written. Once Redis takes WAIT again, the next one
// acknowledged ends the shortage.
func TestGuardWaitRefused(t *testing.T) {
	t.Parallel()
	const bound = time.Second
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) {
		c.GuardReplicas, c.GuardWaitBound, c.GuardProbeInterval = 1, bound, 100*time.Millisecond
	}})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)
	ctx := context.Background()
	admin := b.redis.Client()
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "-wait").Err(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		start := time.Now()
		id := b.enqueue(t, "send-cert", fmt.Sprintf(`{"certificate_id": %d, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`, 91+i))
		if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 8*bound)); r.Outcome != taskresult.Delivered {
			t.Errorf("task %s: outcome %q, want delivered", id, r.Outcome)
		}
		if took := time.Since(start); took > bound {
			t.Errorf("task %s with WAIT refused completed after %s, want within the bound (%s)", id, took, bound)
		}
		if n, err := admin.Exists(ctx, "certmail:delivered:"+id).Result(); err != nil || n != 1 {
			t.Errorf("guard of %s: %d, %v; want it on the master", id, n, err)
		}
	}
	refusals := b.logs.Lines("warn", waitRefused)
	if len(refusals) != 1 || !strings.Contains(fmt.Sprint(refusals[0]["error"]), "NOPERM") {
		t.Errorf("want one WARN for the refusal, naming NOPERM, got %v:\n%s", refusals, b.logs.Text())
	}
	if strings.Contains(b.logs.Text(), "could not write the duplicate guard") {
		t.Errorf("a line says the guard was not written:\n%s", b.logs.Text())
	}
	if v := shortGauge(t, b); v != 1 {
		t.Errorf("certmail_guard_replicas_short %v while WAIT is refused, want 1", v)
	}

	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "+wait").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return shortGauge(t, b) == 0 }, b.logs.Text)
	if n := len(b.logs.Lines("info", shortEnded)); n != 1 {
		t.Errorf("%d INFO lines %q once WAIT is allowed again, want 1", n, shortEnded)
	}
}

// A worker whose Redis refuses WAIT at start (WAIT 0 0) says so there,
// once, and starts short of replicas: its deliveries end at once, without
// another line about it.
func TestGuardWaitRefusedAtStart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	redistest.StartReplica(t, b.redis, redistest.Options{})
	if err := b.redis.Client().Do(context.Background(), "ACL", "SETUSER", "default", "-wait").Err(); err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas = 1 }})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)
	if lines := b.logs.Lines("warn", waitRefused); len(lines) != 1 || lines[0]["redis"] == nil {
		t.Fatalf("want one WARN at start for the refusal, naming the Redis, got %v:\n%s", lines, b.logs.Text())
	}
	if v := shortGauge(t, b); v != 1 {
		t.Errorf("certmail_guard_replicas_short %v at start with WAIT refused, want 1", v)
	}
	start := time.Now()
	id := b.enqueue(t, "send-cert", `{"certificate_id": 95, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.waitState(t, id, asynq.TaskStateCompleted, 5*time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("delivery with WAIT refused took %s, want no wait", took)
	}
	if n := len(b.logs.Lines("warn", waitRefused)); n != 1 {
		t.Errorf("%d WARN lines for the refusal, want 1 (at start)", n)
	}
}

// A worker stopped while a delivery waits for a replica to acknowledge its
// guard, which the master holds, says the guard is on the master only (a
// WARN), not that a redelivery would email again (an ERROR).
func TestStopDuringReplicaWait(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	stop := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.GuardReplicas, c.GuardWaitBound = 1, time.Minute
	}})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)
	b.fake.SetFaults(digicerttest.Faults{Latency: callLatency})
	id := b.enqueue(t, "send-cert", `{"certificate_id": 96, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	pauseDuringCalls(t, b, replica, 1)
	waitFor(t, 15*time.Second, func() bool { return len(b.logs.Lines("warn", notAcknowledged)) == 1 }, b.logs.Text)
	<-b.stopping(t, stop)
	if lines := b.logs.Lines("error", "could not write the duplicate guard before the worker stopped: a redelivery of this task would email again"); len(lines) != 0 {
		t.Errorf("an ERROR says a guard the master holds was not written: %v", lines)
	}
	if lines := b.logs.Lines("warn", guardOnMaster); len(lines) != 1 || lines[0]["task_id"] != id {
		t.Errorf("want one WARN naming %s for its guard on the master only, got %v:\n%s", id, lines, b.logs.Text())
	}
}

// shortGauge is certmail_guard_replicas_short on the bundle's first worker.
func shortGauge(t *testing.T, b *bundle) float64 {
	t.Helper()
	v, found := sum(b.scrape(t, 0), "certmail_guard_replicas_short")
	if !found {
		t.Fatalf("no certmail_guard_replicas_short in /metrics")
	}
	return v
}

// GuardReplicas defaults to 1 under Sentinel and to none otherwise, and
// is bounded by MaxGuardReplicas.
func TestGuardReplicasDefaults(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url  string
		want int
	}{
		{"redis://127.0.0.1:1/0", 0},
		{"rediss://127.0.0.1:1/0", 0},
		{"redis-sentinel://127.0.0.1:1/0?master=m", 1},
	} {
		conn, err := redisconn.Open(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Client.Close() })
		if got := (worker.Config{Redis: conn}).WithDefaults().GuardReplicas; got != tt.want {
			t.Errorf("%s: default %d, want %d", tt.url, got, tt.want)
		}
		if got := (worker.Config{Redis: conn, GuardReplicas: -1}).WithDefaults().GuardReplicas; got != -1 {
			t.Errorf("%s: -1 became %d, want kept (none)", tt.url, got)
		}
	}
	base := worker.Config{Redis: &redisconn.Conn{}, Logger: zap.NewNop(),
		Accounts: account.Set{"default": account.Account{Name: "default", APIKey: account.Secret(testKey)}}}.WithDefaults()
	for n, ok := range map[int]bool{-1: true, 1: true, worker.MaxGuardReplicas: true, worker.MaxGuardReplicas + 1: false} {
		cfg := base
		cfg.GuardReplicas = n
		if err := cfg.Validate(); (err == nil) != ok {
			t.Errorf("GuardReplicas %d: %v, want accepted %v", n, err, ok)
		}
	}
}

// No DigiCert call is made before a replica acknowledged the round trip
// before it, and with it the task's dequeue: a failover's promoted replica
// would hold the task pending, and another worker could call DigiCert for
// it while this call is in flight. With the replica stopped (SIGSTOP), a
// send-cert and a set-emails are handed back without a call, without using
// a retry (replicas_behind), the set-emails' lock and sending record given
// back; once the replica runs again, each is delivered once.
func TestCallWaitsForReplica(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas, c.GuardWaitBound = 1, time.Minute }})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)

	replica.Pause()
	cert := b.enqueue(t, "send-cert", `{"certificate_id": 81, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	order := b.enqueue(t, "set-emails", `{"order_id": 82, "additional_emails": ["b@example.com"], "sequence": 7}`)
	handedBack := func(id string) int {
		n := 0
		for _, l := range b.logs.Lines("info", "delivery deferred") {
			if l["task_id"] == id && l["error_code"] == "replicas_behind" {
				n++
			}
		}
		return n
	}
	waitFor(t, 15*time.Second, func() bool { return handedBack(cert) >= 2 && handedBack(order) >= 2 }, b.logs.Text)
	if n := b.fake.RequestCount(); n != 0 {
		t.Fatalf("%d DigiCert calls while the replica is stopped, want none", n)
	}
	ctx := context.Background()
	for _, id := range []string{cert, order} {
		if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.Retried != 0 {
			t.Errorf("task %s while the replica is stopped: %v %v, want no retry used", id, info, err)
		}
	}
	// Each delivery holds the order's lease and sending record during its
	// own WAIT; a hand-back gives them back, so they are gone between two
	// deliveries (else they would stay for the lease's whole lifetime).
	held := func() int64 {
		return intVal(t, b.redis.Client().Exists(ctx, "certmail:order:default:82:lock", "certmail:order:default:82:sending"))
	}
	// Held only through a WAIT of 1 s each time, they are gone well within
	// 5 s, far less than the lease's 25 s.
	waitFor(t, 5*time.Second, func() bool { return held() == 0 },
		func() string {
			return "the order's lock and sending record are never given back by a delivery handed back"
		})

	replica.Continue()
	for _, id := range []string{cert, order} {
		if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)); r.Outcome != taskresult.Delivered {
			t.Errorf("task %s: outcome %q, want delivered", id, r.Outcome)
		}
	}
	if n, m := len(b.fake.CertSends(81)), b.fake.RequestCount(); n != 1 || m != 2 {
		t.Errorf("certificate 81 emailed %d times, %d calls in all; want once, 2", n, m)
	}
}

// A replica gone for good does not stop deliveries: once the round trips
// before calls have gone unacknowledged for the bound, the worker is short
// of replicas (one WARN) and calls DigiCert.
func TestCallGoesAheadWithoutAGoneReplica(t *testing.T) {
	t.Parallel()
	const bound = 1500 * time.Millisecond
	if took := goesAheadWithoutAGoneReplica(t, 10*bound, func(c *worker.Config) {
		c.GuardReplicas, c.GuardWaitBound = 1, bound
	}); took < bound {
		t.Errorf("completed after %s, want the bound (%s) first", took, bound)
	}
}

// The same on a worker that polls slowly when idle
// (CERTMAIL_TASK_CHECK_INTERVAL): a lone task handed back comes again only
// after its slot's idle sleep (half the interval to 1.5 times it, 4 to
// 12 s here, one slot), and its shortfalls still make one streak that
// reaches the bound, rather than each looking stale and the task being
// handed back for good. A pickup within 12 s, then a hand-back or two,
// each up to 1 + 12 s after the last: a minute is enough.
func TestCallGoesAheadWithoutAGoneReplicaOnASlowPoll(t *testing.T) {
	t.Parallel()
	goesAheadWithoutAGoneReplica(t, time.Minute, func(c *worker.Config) {
		c.GuardReplicas, c.GuardWaitBound = 1, 2*time.Second
		c.Concurrency, c.TaskCheckInterval, c.DelayedTaskCheckInterval = 1, 8*time.Second, 500*time.Millisecond
	})
}

// goesAheadWithoutAGoneReplica starts a worker configured so, with its
// only replica stopped (SIGSTOP), enqueues a send-cert and checks that it
// is delivered within, once, the worker short of replicas with one WARN;
// it returns how long the delivery took from the enqueue.
func goesAheadWithoutAGoneReplica(t *testing.T, within time.Duration, configure func(*worker.Config)) time.Duration {
	t.Helper()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: configure})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)

	replica.Pause()
	start := time.Now()
	id := b.enqueue(t, "send-cert", `{"certificate_id": 91, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, within)); r.Outcome != taskresult.Delivered {
		t.Errorf("outcome %q, want delivered", r.Outcome)
	}
	took := time.Since(start)
	if n := len(b.logs.Lines("warn", becameShort)); n != 1 {
		t.Errorf("%d WARN lines %q, want 1:\n%s", n, becameShort, b.logs.Text())
	}
	if n := len(b.fake.CertSends(91)); n != 1 {
		t.Errorf("certificate 91 emailed %d times, want once", n)
	}
	return took
}
