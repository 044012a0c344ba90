package main_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/redistest"
)

// TestDrillTwoReplicasFailover: the failover of TestDrillFailoverCallsInFlight
// (SENTINEL FAILOVER while send-cert tasks stream in, DigiCert answering in
// 2 s, idle worker slots) in a group of two replicas, R1 promoted and R2
// left. Until the sentinels see the promotion (they ask the replicas for
// INFO once a second) and make R2 the new master's replica, R2 still
// replicates from the old master, which still takes the workers' writes:
// R2 acknowledges them, and drops them when it resyncs from R1, from
// scratch, its offset past R1's. A worker asking one replica
// (CERTMAIL_GUARD_REPLICAS=1) takes R2's acknowledgement of a dequeue for
// a replicated one and calls DigiCert, while the task is still pending on
// the new master. Asking both replicas (CERTMAIL_GUARD_REPLICAS=2), the
// promoted R1 never acknowledges a write of the old master's: every task
// confirmed on both replicas is delivered, none is called twice at the
// fake, and once every queue is empty (a completion the old master took
// is lost, and asynq's recoverer hands the task out again) still none is.
func TestDrillTwoReplicasFailover(t *testing.T) {
	t.Parallel()
	f := twoReplicasFailover(t, 2)
	if len(f.doubles) > 0 {
		t.Errorf("%d send-cert tasks called twice or more at the fake: %v", len(f.doubles), f.doubles)
	}
	t.Logf("two-replica failover drill: %s", f)
}

// twoReplicasFigures are what one run of twoReplicasFailover measured.
type twoReplicasFigures struct {
	guardReplicas     int
	promoted          time.Duration // from the ask to the sentinels naming the new master
	followed, rejoins time.Duration // from then to R2, the old master, in sync with it
	tries, acked      int
	doubles           []int64 // once every queue is empty
	when              []string
	behind, short     int
	took              time.Duration
}

func (f twoReplicasFigures) String() string {
	return fmt.Sprintf("CERTMAIL_GUARD_REPLICAS=%d, DigiCert answering in 2 s, 2 workers of 100 slots; promoted %v after the ask, "+
		"the other replica following %v and the old master %v after that; %d enqueues, %d confirmed on both replicas, all delivered, "+
		"%d tasks called twice once every queue was empty (calls after the promotion: %v); %d deliveries handed back before their call (replicas_behind); "+
		"%d of 2 workers short of replicas; %v in all",
		f.guardReplicas, f.promoted.Round(10*time.Millisecond), f.followed.Round(100*time.Millisecond), f.rejoins.Round(100*time.Millisecond),
		f.tries, f.acked, len(f.doubles), f.when, f.behind, f.short, f.took.Round(time.Second))
}

// callTimes describes, for each certificate of ns, when the fake accepted
// its send-cert calls, from since.
func (d *drill) callTimes(ns []int64, since time.Time) []string {
	var out []string
	for _, n := range ns {
		suffix := fmt.Sprintf("/certificate/%d/sendemail", n)
		s := strconv.FormatInt(n, 10) + " at"
		for _, r := range d.fake.Requests() {
			if r.Status/100 == 2 && strings.HasSuffix(r.Path, suffix) {
				s += " " + r.At.Sub(since).Round(10*time.Millisecond).String()
			}
		}
		out = append(out, s)
	}
	return out
}

// twoReplicasFailover runs the drill of TestDrillTwoReplicasFailover with
// workers asking guardReplicas replicas, and returns what it measured.
func twoReplicasFailover(t *testing.T, guardReplicas int) twoReplicasFigures {
	t.Helper()
	began := time.Now()
	const latency = 2 * time.Second
	g := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 2})
	d := newDrill(t, g.URL(), latency)
	workers := d.wideWorkers("CERTMAIL_GUARD_REPLICAS=" + strconv.Itoa(guardReplicas))
	opt := asynq.RedisFailoverClientOpt{MasterName: redistest.SentinelMaster, SentinelAddrs: g.Addrs()}
	const first = 800000
	stop := make(chan struct{})
	prod := produce(t, opt, sendCert, first, 10*time.Millisecond, stop, confirmOnReplicas(t, g, len(g.Replicas)))
	waitFor(t, 30*time.Second, func() bool { return d.fake.StatusCount(204) >= 20 }, func() string { return "too few deliveries" })
	f := twoReplicasFigures{guardReplicas: guardReplicas}
	asked := askFailover(t, g)
	var master *redistest.Server
	waitFor(t, 30*time.Second, func() bool {
		m, err := g.CurrentMaster(context.Background())
		master = g.Member(m)
		return err == nil && master != nil && master != g.Master
	}, func() string { return "no replica promoted" })
	f.promoted = time.Since(asked)
	promoted := time.Now()
	other := g.Replicas[0]
	if other == master {
		other = g.Replicas[1]
	}
	waitReplicaOf(t, other, master)
	f.followed = time.Since(promoted)
	close(stop)
	waitReplicaOf(t, g.Master, master)
	f.rejoins = time.Since(promoted)
	acked, tries := prod.result()
	f.acked, f.tries = len(acked), tries
	d.explain = whereAre(opt, prod, workers)
	d.waitSent(acked, recoveredWithin, d.sendCertCalls)
	waitFor(t, recoveredWithin, func() bool { return queuesEmpty(opt) && d.fake.InFlight() == 0 },
		func() string {
			return fmt.Sprintf("tasks still queued, or %d calls in flight at the fake", d.fake.InFlight())
		})
	f.doubles = calledTwice(first, tries, d.sendCertCalls)
	f.when = d.callTimes(f.doubles, promoted)
	for _, w := range workers {
		f.behind += w.countField("error_code", "replicas_behind")
		if w.count("warn", "too few Redis replicas acknowledge the duplicate guards: deliveries now end without waiting for them, "+
			"their guards on the master only (a failover before a replica copies one could email again), until enough acknowledge again") > 0 {
			f.short++
		}
	}
	f.took = time.Since(began)
	return f
}

// queuesEmpty reports whether opt's master has no task pending, active,
// scheduled or retrying in any queue.
func queuesEmpty(opt asynq.RedisConnOpt) bool {
	in := asynq.NewInspector(opt)
	defer in.Close()
	queues, err := in.Queues()
	if err != nil {
		return false
	}
	for _, q := range queues {
		info, err := in.GetQueueInfo(q)
		if err != nil || info.Pending+info.Active+info.Scheduled+info.Retry > 0 {
			return false
		}
	}
	return true
}
