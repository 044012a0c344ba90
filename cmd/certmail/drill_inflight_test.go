package main_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/tasks"
)

// TestDrillFailoverCallsInFlight: an orderly Sentinel failover (SENTINEL
// FAILOVER) while send-cert tasks (no per-order lock) stream in, DigiCert
// answers in 2 s and the workers have idle slots. An idle slot looks for
// a task once a second, so the tasks enqueued in the second before the
// promotion are dequeued on the old master after it, and that dequeue is
// lost when the old master becomes a replica: on the new master the task
// is pending while its call is in flight. A worker that moved there must
// not call DigiCert for it a second time: the round trip before a call
// waits for a replica (CERTMAIL_GUARD_REPLICAS, 1 under Sentinel), which
// the old master no longer has, and the delivery is handed back without a
// call (replicas_behind). Every task confirmed on the replica is
// delivered, none is called twice at the fake.
func TestDrillFailoverCallsInFlight(t *testing.T) {
	t.Parallel()
	const latency = 2 * time.Second
	g := redistest.StartSentinel(t)
	d := newDrill(t, g.URL(), latency)
	workers := d.wideWorkers()
	opt := asynq.RedisFailoverClientOpt{MasterName: redistest.SentinelMaster, SentinelAddrs: g.Addrs()}
	const first = 700000
	stop := make(chan struct{})
	prod := produce(t, opt, sendCert, first, 10*time.Millisecond, stop, confirmOnReplica(t, g))
	waitFor(t, 30*time.Second, func() bool { return d.fake.StatusCount(204) >= 20 }, func() string { return "too few deliveries" })
	asked := askFailover(t, g)
	waitFor(t, 30*time.Second, func() bool {
		m, err := g.CurrentMaster(context.Background())
		return err == nil && m == g.Replica.Addr()
	}, func() string { return "the replica not promoted" })
	promoted := time.Since(asked)
	time.Sleep(time.Second)
	close(stop)
	acked, tries := prod.result()
	d.explain = whereAre(opt, prod, workers)
	d.waitSent(acked, recoveredWithin, d.sendCertCalls)
	// A second call of a task may still be in flight at the fake. A call
	// stays there until the fake answers or the worker gives up (the
	// per-attempt timeout, 10 s): one given up stays unanswered for good.
	waitFor(t, digicert.DefaultTimeout+5*time.Second, func() bool { return d.fake.InFlight() == 0 },
		func() string { return fmt.Sprintf("%d calls still in flight at the fake", d.fake.InFlight()) })

	doubles := calledTwice(first, tries, d.sendCertCalls)
	if len(doubles) > 0 {
		t.Errorf("%d send-cert tasks called twice or more at the fake: %v", len(doubles), doubles)
	}
	behind := 0
	for _, w := range workers {
		behind += w.countField("error_code", "replicas_behind")
	}
	t.Logf("failover with calls in flight drill: DigiCert answering in %v, 2 workers of 100 slots; promoted %v after the ask; "+
		"%d enqueues, %d confirmed on a replica, all delivered, %d called twice; %d deliveries handed back before their call (replicas_behind)",
		latency, promoted.Round(10*time.Millisecond), tries, len(acked), len(doubles), behind)
}

// wideWorkers starts two workers of 100 slots each, with env added to
// their environment, and waits until both have started.
func (d *drill) wideWorkers(env ...string) []*proc {
	d.t.Helper()
	var workers []*proc
	for i := range 2 {
		p := start(d.t, fmt.Sprintf("worker-%d", i+1), append([]string{
			"REDIS_URL=" + d.redisURL, "DIGICERT_API_KEY=" + e2eKey, "DIGICERT_BASE_URL=" + d.baseURL,
			"CERTMAIL_ADMIN_ADDR=127.0.0.1:0", "CERTMAIL_CONCURRENCY=100",
		}, env...), "worker")
		p.waitLog("worker started", 20*time.Second)
		workers = append(workers, p)
	}
	return workers
}

// askFailover asks g's sentinels for a failover until one takes it (one
// just after another is refused for a while), and returns when it was
// first asked.
func askFailover(t *testing.T, g *redistest.SentinelGroup) time.Time {
	t.Helper()
	asked := time.Now()
	var refused error
	waitFor(t, 30*time.Second, func() bool {
		refused = g.Failover(context.Background())
		return refused == nil
	}, func() string { return fmt.Sprintf("failover: %v", refused) })
	return asked
}

// sendCert is a send-cert task for certificate n.
func sendCert(n int64) (*asynq.Task, error) {
	return tasks.NewSendCertTask(tasks.SendCert{CertificateID: n, Emails: []string{"a@example.com"},
		CertificateCollectFormat: tasks.CollectAttachment})
}

// sendCertCalls counts the send-cert calls the fake accepted (2xx) for
// each certificate of ns.
func (d *drill) sendCertCalls(ns []int64) map[int64]int {
	return d.acceptedCalls(ns, func(_ int64, endpoint string) bool { return endpoint == "sendemail" })
}
