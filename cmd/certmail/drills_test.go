package main_test

// Failure drills: real certmail processes, real redis-server and
// redis-sentinel on loopback, the fake CertCentral in this process. Each
// drill logs its figures (t.Logf); the README's "Failure drills" section
// quotes them.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// drill is the fake CertCentral and what the drills start against a Redis
// given by URL.
type drill struct {
	t        *testing.T
	redisURL string
	fake     *digicerttest.Server
	baseURL  string
	// explain, when set, tells where the tasks waitSent still misses are.
	explain func(missing []int64) string
}

// victimKey is the API key of a worker a drill kills, so that the fake's
// records tell its requests from the others'.
const victimKey = "drill-victim-key-5d2e8a41"

func newDrill(t *testing.T, redisURL string, latency time.Duration) *drill {
	t.Helper()
	d := &drill{t: t, redisURL: redisURL}
	d.fake, d.baseURL = digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{e2eKey, victimKey}, AnyIDExists: true})
	d.fake.SetFaults(digicerttest.Faults{Latency: latency})
	return d
}

func (d *drill) worker(name string) *proc {
	d.t.Helper()
	return d.workerWithKey(name, e2eKey)
}

// workerWithKey starts a worker that calls DigiCert with key.
func (d *drill) workerWithKey(name, key string) *proc {
	d.t.Helper()
	p := start(d.t, name, []string{
		"REDIS_URL=" + d.redisURL, "DIGICERT_API_KEY=" + key, "DIGICERT_BASE_URL=" + d.baseURL,
		"CERTMAIL_ADMIN_ADDR=127.0.0.1:0", "CERTMAIL_CONCURRENCY=10",
	}, "worker")
	p.waitLog("worker started", 20*time.Second)
	return p
}

// firstSendKey returns the API key of the first DCV resend of order the
// fake answered 204, "" when there is none.
func (d *drill) firstSendKey(order int64) string {
	path := fmt.Sprintf("/order/certificate/%d/resend-emails", order)
	for _, r := range d.fake.Requests() {
		if r.Status == 204 && strings.HasSuffix(r.Path, path) {
			return r.Header.Get("X-DC-DEVKEY")
		}
	}
	return ""
}

// producer enqueues the tasks newTask makes of numbers from first on (for
// resendDCV, an order each), one every interval, until stop is closed;
// acked are the numbers whose enqueue was acknowledged (and, with confirm,
// confirmed by it).
type producer struct {
	mu    sync.Mutex
	acked []int64
	ids   map[int64]string // each acknowledged enqueue's task id, for a failure's report
	tries int
	done  chan struct{}
}

// resendDCV is a resend-dcv task for order n.
func resendDCV(n int64) (*asynq.Task, error) {
	return tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: n})
}

func produce(t *testing.T, opt asynq.RedisConnOpt, newTask func(int64) (*asynq.Task, error), first int64,
	interval time.Duration, stop <-chan struct{}, confirm func(context.Context) bool) *producer {
	t.Helper()
	client := asynq.NewClient(opt)
	p := &producer{ids: map[int64]string{}, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer client.Close()
		var pending []int64
		for order := first; ; order++ {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			task, err := newTask(order)
			if err != nil {
				t.Error(err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			info, err := client.EnqueueContext(ctx, task, asynq.MaxRetry(20))
			ok := err == nil
			if ok {
				p.mu.Lock()
				p.ids[order] = info.ID
				p.mu.Unlock()
			}
			if ok && confirm != nil {
				pending = append(pending, order)
				ok = confirm(ctx)
				if !ok {
					pending = nil // not known to be on the replica: not counted
				}
			} else if ok {
				pending = []int64{order}
			}
			cancel()
			p.mu.Lock()
			p.tries++
			if ok {
				p.acked = append(p.acked, pending...)
				pending = nil
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *producer) result() (acked []int64, tries int) {
	<-p.done
	return p.acked, p.tries
}

// confirmOnReplica is a producer's confirm under g: an enqueue counts as
// acknowledged once a later write of the producer reached a replica
// (replication keeps order), as asynchronous replication may lose what
// the master accepted just before a failover.
func confirmOnReplica(t *testing.T, g *redistest.SentinelGroup) func(context.Context) bool {
	t.Helper()
	return confirmOnReplicas(t, g, 1)
}

// confirmOnReplicas is a producer's confirm under g: an enqueue counts as
// acknowledged once a later write of the producer reached n replicas
// (confirmOnReplica is n = 1). In a group of two, one replica's
// acknowledgement may be that of a replica still following an old master
// whose other replica was promoted, which drops it when it follows the
// new one.
func confirmOnReplicas(t *testing.T, g *redistest.SentinelGroup, n int) func(context.Context) bool {
	t.Helper()
	waiter := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.SentinelMaster, SentinelAddrs: g.Addrs()})
	t.Cleanup(func() { waiter.Close() })
	return func(ctx context.Context) bool {
		// One pipeline, so one connection: WAIT counts the replicas that
		// acknowledged its own connection's writes.
		var wait *redis.Cmd
		_, err := waiter.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Incr(ctx, "certmail:drill:confirm")
			wait = pipe.Do(ctx, "WAIT", n, 1000)
			return nil
		})
		if err != nil {
			return false
		}
		acked, err := wait.Int()
		return err == nil && acked >= n
	}
}

// recoveredWithin bounds the wait for every acknowledged task's delivery
// after a Redis restart or failover. asynq's writes of the last moment
// before it can be lost (the old master's, in the second after a
// promotion): a task whose end was lost stays active until asynq's
// recoverer, every minute, finds its lease (30 s) expired for 30 s, and
// hands it out a second later, up to about 2 min after its last delivery
// began; a call of its that times out then is retried 24 to 36 s later.
// With room to spare: a passing run does not wait for the bound.
const recoveredWithin = 4 * time.Minute

// waitDelivered waits until every order has a DCV send at the fake and
// returns the orders sent more than once.
func (d *drill) waitDelivered(orders []int64, within time.Duration) (doubles []int64) {
	d.t.Helper()
	return d.waitSent(orders, within, d.dcvSends)
}

// dcvSends counts each order's DCV sends at the fake.
func (d *drill) dcvSends(orders []int64) map[int64]int {
	sends := make(map[int64]int, len(orders))
	for _, o := range orders {
		sends[o] = len(d.fake.DCVSends(o))
	}
	return sends
}

// waitSent waits until sends, which counts each task's calls the fake
// accepted, counts one at least for every task of ns, and returns those
// with more than one.
func (d *drill) waitSent(ns []int64, within time.Duration, sends func([]int64) map[int64]int) (doubles []int64) {
	d.t.Helper()
	missing := func() int {
		n := 0
		for _, c := range sends(ns) {
			if c == 0 {
				n++
			}
		}
		return n
	}
	waitFor(d.t, within, func() bool { return missing() == 0 },
		func() string {
			var lost []int64
			for _, n := range ns {
				if sends([]int64{n})[n] == 0 {
					lost = append(lost, n)
				}
			}
			msg := fmt.Sprintf("%d of %d acknowledged tasks not delivered", len(lost), len(ns))
			if d.explain != nil {
				msg += ":\n" + d.explain(lost)
			}
			return msg
		})
	counts := sends(ns)
	for _, n := range ns {
		if counts[n] > 1 {
			doubles = append(doubles, n)
		}
	}
	return doubles
}

// whereAre is an explain for the tasks prod enqueued on opt: for each of
// the first few missing, its state in Redis and the workers' log lines
// that name it.
func whereAre(opt asynq.RedisConnOpt, prod *producer, workers []*proc) func([]int64) string {
	return func(missing []int64) string {
		in := asynq.NewInspector(opt)
		defer in.Close()
		queues, err := in.Queues()
		if err != nil {
			return fmt.Sprintf("queues: %v", err)
		}
		var b strings.Builder
		for i, n := range missing {
			if i == 5 {
				fmt.Fprintf(&b, "and %d more\n", len(missing)-i)
				break
			}
			id := prod.ids[n]
			fmt.Fprintf(&b, "task %d (%s):", n, id)
			for _, q := range queues {
				if info, err := in.GetTaskInfo(q, id); err == nil {
					fmt.Fprintf(&b, " %s in %q, retried %d, last error %q at %v, next %v", info.State, q, info.Retried,
						info.LastErr, info.LastFailedAt.Format(time.StampMilli), info.NextProcessAt.Format(time.StampMilli))
				}
			}
			b.WriteString("\n")
			for _, w := range workers {
				for _, line := range strings.Split(w.log(), "\n") {
					if id != "" && strings.Contains(line, id) {
						fmt.Fprintf(&b, "  %s: %s\n", w.name, line)
					}
				}
			}
		}
		return b.String()
	}
}

// firstDeliveryAfter is when the fake first answered 204 after t0.
func (d *drill) firstDeliveryAfter(t0 time.Time) time.Time {
	for _, r := range d.fake.Requests() {
		if r.Status == 204 && r.At.After(t0) {
			return r.At
		}
	}
	return time.Time{}
}

// TestDrillRedisRestart: Redis (AOF, appendfsync everysec) is restarted
// mid-run. Workers and the scheduler reconnect by themselves; every
// acknowledged enqueue is delivered exactly once.
func TestDrillRedisRestart(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{AppendOnly: true})
	d := newDrill(t, r.URL(), 20*time.Millisecond)
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(file, []byte("schedules:\n  - id: drill\n    cron: \"@every 1s\"\n    type: resend-dcv\n    payload: {order_id: 7}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	workers := []*proc{d.worker("worker-1"), d.worker("worker-2")}
	sched := start(t, "scheduler", []string{"REDIS_URL=" + r.URL(), "CERTMAIL_SCHEDULES_FILE=" + file,
		"CERTMAIL_ADMIN_ADDR=127.0.0.1:0", "CERTMAIL_SCHEDULER_LEASE=2s", "CERTMAIL_QUEUES=bulk=1",
		"CERTMAIL_SCHEDULE_MIN_INTERVAL=1s"}, "scheduler")
	sched.waitLog("scheduler started", 20*time.Second)

	stop := make(chan struct{})
	prod := produce(t, r.ConnOpt(), resendDCV, 100000, 10*time.Millisecond, stop, nil)
	time.Sleep(2 * time.Second) // load before the restart: the point of the drill
	r.Stop()
	down := time.Now()
	time.Sleep(time.Second)
	r.Relaunch()
	up := time.Now()
	time.Sleep(2 * time.Second) // load after the restart
	close(stop)
	acked, tries := prod.result()

	d.explain = whereAre(r.ConnOpt(), prod, workers)
	doubles := d.waitDelivered(acked, recoveredWithin)
	if len(doubles) > 0 {
		t.Errorf("orders emailed twice: %v", doubles)
	}
	first := d.firstDeliveryAfter(up)
	sends := len(d.fake.DCVSends(7))
	waitFor(t, 30*time.Second, func() bool { return len(d.fake.DCVSends(7)) >= sends+2 },
		func() string { return "the scheduler fires no more after the restart" })
	for _, w := range workers {
		select {
		case <-w.done:
			t.Errorf("%s exited during the drill: %v", w.name, w.err)
		default:
		}
	}
	t.Logf("Redis restart drill: %d enqueues tried, %d acknowledged, all delivered once; Redis down %v; first delivery %v after it came back",
		tries, len(acked), up.Sub(down).Round(10*time.Millisecond), first.Sub(up).Round(10*time.Millisecond))
}

// TestDrillSentinelFailover: the master dies; Sentinel promotes the replica;
// workers follow; nothing acknowledged (enqueued and confirmed on the
// replica with WAIT) is lost. Time to recover is measured. The dead master
// is not restarted, so the promoted one has no replica: the workers'
// duplicate guards (CERTMAIL_GUARD_REPLICAS, 1 under Sentinel) wait for
// one at most worker.GuardReplicasWaitBound, then deliveries go on without.
func TestDrillSentinelFailover(t *testing.T) {
	t.Parallel()
	g := redistest.StartSentinel(t)
	d := newDrill(t, g.URL(), 20*time.Millisecond)
	workers := []*proc{d.worker("worker-1"), d.worker("worker-2")}
	opt := asynq.RedisFailoverClientOpt{MasterName: redistest.SentinelMaster, SentinelAddrs: g.Addrs()}
	stop := make(chan struct{})
	prod := produce(t, opt, resendDCV, 200000, 10*time.Millisecond, stop, confirmOnReplica(t, g))
	time.Sleep(2 * time.Second)
	killing := time.Now()
	g.Master.Kill()
	killed := time.Now() // reaped
	waitFor(t, 60*time.Second, func() bool {
		m, err := g.CurrentMaster(context.Background())
		return err == nil && m == g.Replica.Addr()
	}, func() string { return "no failover" })
	promoted := time.Now()
	waitFor(t, 60*time.Second, func() bool { return !d.firstDeliveryAfter(promoted).IsZero() },
		func() string { return "no delivery after the failover" })
	recovered := d.firstDeliveryAfter(promoted)
	time.Sleep(time.Second)
	close(stop)
	acked, tries := prod.result()

	d.explain = whereAre(opt, prod, workers)
	doubles := d.waitDelivered(acked, recoveredWithin)
	// A double is explained only by a send in flight when the master died:
	// its guard (or its task's dequeue) reached the master and not the
	// replica. A second either side of the kill allows for a worker stalled
	// between DigiCert's answer and the guard's write, and for replication
	// lag, on a loaded machine. Any other double is a broken guard.
	for _, o := range doubles {
		first := d.fake.DCVSends(o)[0].At
		if first.Before(killing.Add(-time.Second)) || first.After(killed.Add(time.Second)) {
			t.Errorf("order %d emailed twice; its first send at %v is not within a second of the master's death (%v to %v)",
				o, first, killing, killed)
		}
	}
	for _, w := range workers {
		select {
		case <-w.done:
			t.Errorf("%s exited during the drill: %v", w.name, w.err)
		default:
		}
	}
	short := 0
	for _, w := range workers {
		short += w.count("warn", "too few Redis replicas acknowledge the duplicate guards: deliveries now end without waiting for them, "+
			"their guards on the master only (a failover before a replica copies one could email again), until enough acknowledge again")
	}
	t.Logf("Sentinel drill: %d enqueues tried, %d acknowledged and all delivered (%d twice, all sent as the master died); "+
		"failover %v after the kill, first delivery %v after the kill; %d of %d workers stopped waiting for the gone replica",
		tries, len(acked), len(doubles), promoted.Sub(killed).Round(10*time.Millisecond), recovered.Sub(killed).Round(10*time.Millisecond),
		short, len(workers))
}

// TestDrillOrderlySentinelFailover: a sentinel is asked for a failover
// (SENTINEL FAILOVER) while send-cert and set-emails tasks stream in
// faster than the workers deliver them. The replica is promoted while the
// master still runs: until the workers follow the sentinels to the new
// master, the old one takes their writes (dequeues, duplicate guards,
// completions), and drops them when it becomes the new master's replica,
// while the tasks it handed out are still pending on the new master. The
// workers' guards wait for a replica (CERTMAIL_GUARD_REPLICAS, 1 under
// Sentinel), which the old master no longer has, and are written again on
// the new master: every task confirmed on the replica is delivered, none
// is called twice at the fake, and the new master serves the workers.
func TestDrillOrderlySentinelFailover(t *testing.T) {
	t.Parallel()
	const failovers = 1
	g := redistest.StartSentinel(t)
	// 20 slots over 200 ms calls deliver fewer tasks than the producer
	// enqueues: a backlog the workers dequeue from the old master.
	d := newDrill(t, g.URL(), 200*time.Millisecond)
	workers := []*proc{d.worker("worker-1"), d.worker("worker-2")}
	opt := asynq.RedisFailoverClientOpt{MasterName: redistest.SentinelMaster, SentinelAddrs: g.Addrs()}
	const first = 600000
	stop := make(chan struct{})
	prod := produce(t, opt, sendCertOrSetEmails, first, 5*time.Millisecond, stop, confirmOnReplica(t, g))
	waitFor(t, 30*time.Second, func() bool { return d.fake.StatusCount(204) >= 50 }, func() string { return "too few deliveries" })
	master, replica := g.Master, g.Replica
	var took []time.Duration
	for i := range failovers {
		if i > 0 {
			waitReplicaOf(t, replica, master)
		}
		asked := askFailover(t, g)
		waitFor(t, 30*time.Second, func() bool {
			m, err := g.CurrentMaster(context.Background())
			return err == nil && m == replica.Addr()
		}, func() string { return fmt.Sprintf("failover %d: %s not promoted", i+1, replica.Addr()) })
		took = append(took, time.Since(asked).Round(10*time.Millisecond))
		master, replica = replica, master
	}
	// The old master serves no longer once it is the new one's replica
	// (the sentinels wait 8 s before they make it one); a task enqueued
	// after that is delivered from the new master.
	promoted := time.Now()
	waitReplicaOf(t, replica, master)
	rejoined := time.Since(promoted).Round(100 * time.Millisecond)
	close(stop)
	acked, tries := prod.result()
	last := int64(first + tries)
	task, err := sendCertOrSetEmails(last)
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(master.ConnOpt())
	defer client.Close()
	if _, err := client.Enqueue(task); err != nil {
		t.Fatalf("enqueue on the new master: %v", err)
	}
	d.explain = whereAre(opt, prod, workers)
	d.waitSent(append(acked, last), recoveredWithin, d.callsByTask)

	doubles := calledTwice(first, tries+1, d.callsByTask)
	if len(doubles) > 0 {
		t.Errorf("%d tasks called twice or more at the fake (even: send-cert, odd: set-emails): %v", len(doubles), doubles)
	}
	for _, w := range workers {
		select {
		case <-w.done:
			t.Errorf("%s exited during the drill: %v", w.name, w.err)
		default:
		}
	}
	var notAcked, onMaster, short int
	for _, w := range workers {
		notAcked += w.count("warn", "the duplicate guard was written but too few replicas acknowledged it, and a failover could lose it; "+
			"trying again, for wait_bound at most, until a master with enough replicas holds it") +
			w.count("warn", "the applied sequence was written but too few replicas acknowledged it, and a failover could lose it; "+
				"trying again, for wait_bound at most, until a master with enough replicas holds it")
		onMaster += w.count("warn", "the duplicate guard is on the master only: too few replicas acknowledged it, and the delivery ends without them; "+
			"a failover before a replica copies it could email again") +
			w.count("warn", "the applied sequence is on the master only: too few replicas acknowledged it, and the delivery ends without them; "+
				"a failover before a replica copies it could email again")
		short += w.count("warn", "too few Redis replicas acknowledge the duplicate guards: deliveries now end without waiting for them, "+
			"their guards on the master only (a failover before a replica copies one could email again), until enough acknowledge again")
	}
	t.Logf("orderly Sentinel failover drill: %d failover(s), each promoted %v after the ask, the old master the new one's replica %v after that; "+
		"%d enqueues tried, %d confirmed on a replica, all delivered, %d called twice; "+
		"%d guards not acknowledged by a replica and written again, %d of them given up on after %v; %d of %d workers short of replicas",
		failovers, took, rejoined, tries, len(acked), len(doubles), notAcked, onMaster, worker.GuardReplicasWaitBound, short, len(workers))
}

// sendCertOrSetEmails is a send-cert task for certificate n when n is
// even, a set-emails task for order n when it is odd.
func sendCertOrSetEmails(n int64) (*asynq.Task, error) {
	if n%2 == 0 {
		return tasks.NewSendCertTask(tasks.SendCert{CertificateID: n, Emails: []string{"a@example.com"},
			CertificateCollectFormat: tasks.CollectAttachment})
	}
	return tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: n, AdditionalEmails: []string{"b@example.com"}})
}

// calledTwice is, in order, the tasks first to first+n-1 that calls (a
// count of the fake's accepted calls per task) finds called more than once.
func calledTwice(first int64, n int, calls func(ns []int64) map[int64]int) []int64 {
	all := make([]int64, 0, n)
	for i := range int64(n) {
		all = append(all, first+i)
	}
	var doubles []int64
	for task, c := range calls(all) {
		if c > 1 {
			doubles = append(doubles, task)
		}
	}
	slices.Sort(doubles)
	return doubles
}

// callsByTask counts the calls the fake accepted (2xx) for each task of ns
// that sendCertOrSetEmails made.
func (d *drill) callsByTask(ns []int64) map[int64]int {
	return d.acceptedCalls(ns, func(n int64, endpoint string) bool {
		return (n%2 == 0 && endpoint == "sendemail") || (n%2 == 1 && endpoint == "additional-emails")
	})
}

// acceptedCalls counts, for each id of ns, the calls the fake accepted
// (2xx) whose path ends in that id and an endpoint (.../certificate/{id}/sendemail,
// .../order/certificate/{id}/additional-emails) that counts takes.
func (d *drill) acceptedCalls(ns []int64, counts func(id int64, endpoint string) bool) map[int64]int {
	calls := make(map[int64]int, len(ns))
	for _, n := range ns {
		calls[n] = 0
	}
	for _, r := range d.fake.Requests() {
		parts := strings.Split(r.Path, "/")
		if r.Status/100 != 2 || len(parts) < 2 {
			continue
		}
		n, err := strconv.ParseInt(parts[len(parts)-2], 10, 64)
		if _, ok := calls[n]; ok && err == nil && counts(n, parts[len(parts)-1]) {
			calls[n]++
		}
	}
	return calls
}

// waitReplicaOf waits until r is master's replica, in sync.
func waitReplicaOf(t *testing.T, r, master *redistest.Server) {
	t.Helper()
	c := r.Client()
	var info string
	waitFor(t, 60*time.Second, func() bool {
		info, _ = c.Info(context.Background(), "replication").Result()
		return strings.Contains(info, "role:slave") && strings.Contains(info, fmt.Sprintf("master_port:%d\r\n", master.Port())) &&
			strings.Contains(info, "master_link_status:up")
	}, func() string {
		return fmt.Sprintf("%s is not %s's replica in sync:\n%s", r.Addr(), master.Addr(), info)
	})
}

// TestDrillWorkerSIGKILL: one of two workers is killed under load; nothing
// is lost, and no email batch is sent twice except in the documented window
// (a kill between DigiCert's answer and the duplicate guard's write).
func TestDrillWorkerSIGKILL(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{AppendOnly: true})
	const latency = 100 * time.Millisecond
	d := newDrill(t, r.URL(), latency)
	victim := d.workerWithKey("worker-1", victimKey)
	d.worker("worker-2")
	client := asynq.NewClient(r.ConnOpt())
	t.Cleanup(func() { client.Close() })
	var orders []int64
	for i := range 300 {
		order := int64(300000 + i)
		task, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: order})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Enqueue(task); err != nil {
			t.Fatal(err)
		}
		orders = append(orders, order)
	}
	waitFor(t, 30*time.Second, func() bool { return d.fake.StatusCount(204) >= 60 }, func() string { return "too few deliveries" })
	killing := time.Now()
	if err := victim.stop(syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("the SIGKILLed worker exited cleanly")
	}
	killed := time.Now() // reaped
	// The dead worker's tasks come back when asynq's recoverer (every minute)
	// finds their 30 s lease expired for 30 s: about 2 minutes, then a
	// second's delay and asynq's move of due tasks (5 s).
	doubles := d.waitDelivered(orders, 4*time.Minute)
	// A double is explained only by a send of the killed worker answered
	// right before the kill (the guard not yet written), or finished by the
	// fake before it saw the connection gone. A second either side of the
	// kill allows for a stalled worker or fake on a loaded machine.
	for _, o := range doubles {
		if key := d.firstSendKey(o); key != victimKey {
			who := "the surviving worker"
			if key == "" {
				who = "no answered request"
			}
			t.Errorf("order %d emailed twice; its first send came from %s, not the killed worker", o, who)
		}
		first := d.fake.DCVSends(o)[0].At
		if first.Before(killing.Add(-time.Second)) || first.After(killed.Add(time.Second)) {
			t.Errorf("order %d emailed twice; its first send at %v is not within a second of the kill (%v to %v)", o, first, killing, killed)
		}
	}
	t.Logf("worker SIGKILL drill: 300 tasks, all delivered %v after the kill; %d sent twice inside the documented window",
		d.lastDelivery().Sub(killed).Round(100*time.Millisecond), len(doubles))
}

func (d *drill) lastDelivery() time.Time {
	var last time.Time
	for _, r := range d.fake.Requests() {
		if r.Status == 204 && r.At.After(last) {
			last = r.At
		}
	}
	return last
}

// answer is one enqueue through the API during the outage drill.
type answer struct {
	at         time.Time
	took       time.Duration
	status     int // 0: no answer (a transport error)
	problem    bool
	retryAfter string
	id         string // of an accepted task
	err        error
}

// TestDrillRedisOutageDuringEnqueue: four producers enqueue through
// `certmail api` while Redis (AOF) is stopped for a few seconds and started
// again.
// While it is away every answer is 503 problem+json with Retry-After, none
// a 500, none slower than the write timeout; once it is back, enqueues
// succeed again without restarting the API, and every acknowledged task is
// in Redis.
func TestDrillRedisOutageDuringEnqueue(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{AppendOnly: true})
	const token = "drill-producer-4c1e9a7b"
	apiProc := start(t, "api", []string{"REDIS_URL=" + r.URL(), "CERTMAIL_HTTP_ADDR=127.0.0.1:0",
		"CERTMAIL_API_TOKENS=" + token + " producer"}, "api")
	base := "http://" + apiProc.waitLog("api started", 20*time.Second)["addr"].(string)
	client := &http.Client{Timeout: admin.DefaultWriteTimeout + 5*time.Second}

	var mu sync.Mutex
	var answers []answer
	var orders atomic.Int64
	orders.Store(500000)
	stop := make(chan struct{})
	var producers sync.WaitGroup
	for range 4 {
		producers.Go(func() { produceHTTP(t, client, base, token, &orders, stop, &mu, &answers) })
	}
	accepted := func(after time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range answers {
			if a.at.After(after) && a.status == http.StatusAccepted {
				return true
			}
		}
		return false
	}
	waitFor(t, 20*time.Second, func() bool { return accepted(time.Time{}) }, func() string { return "no enqueue accepted before the outage" })
	time.Sleep(time.Second) // load before the outage: part of the drill
	r.Stop()
	down := time.Now()
	time.Sleep(5 * time.Second) // the outage
	r.Relaunch()
	up := time.Now()
	waitFor(t, 60*time.Second, func() bool { return accepted(up) }, func() string { return "no enqueue accepted after Redis came back" })
	time.Sleep(time.Second)
	close(stop)
	producers.Wait()

	var ok, unavailable, during int
	var slowest time.Duration
	var firstAfter time.Time
	var ids []string
	for _, a := range answers {
		if a.at.After(down) && a.at.Before(up) {
			during++
			slowest = max(slowest, a.took)
		}
		switch {
		case a.status == http.StatusAccepted:
			ok++
			ids = append(ids, a.id)
			if a.at.After(up) && firstAfter.IsZero() {
				firstAfter = a.at.Add(a.took)
			}
		case a.status == http.StatusServiceUnavailable && a.problem && a.retryAfter != "":
			unavailable++
		default:
			t.Errorf("answer at %v (%v after Redis stopped): status %d, problem %t, Retry-After %q, error %v",
				a.at.Format("15:04:05.000"), a.at.Sub(down).Round(time.Millisecond), a.status, a.problem, a.retryAfter, a.err)
		}
		if a.took >= admin.DefaultWriteTimeout {
			t.Errorf("an answer took %v, past the write timeout", a.took)
		}
	}
	if unavailable == 0 || during == 0 {
		t.Fatalf("%d requests while Redis was away, %d answered 503: the drill did not hit the outage", during, unavailable)
	}
	select {
	case <-apiProc.done:
		t.Fatalf("the API exited during the drill: %v", apiProc.err)
	default:
	}
	// Every task acknowledged with 202 is in Redis (AOF: a stop writes it).
	inspector := asynq.NewInspector(r.ConnOpt())
	defer inspector.Close()
	for _, id := range ids {
		if _, err := inspector.GetTaskInfo("default", id); err != nil {
			t.Errorf("acknowledged task %s: %v", id, err)
		}
	}
	// go-redis's own complaints while Redis was away came out as JSON lines.
	for _, line := range strings.Split(strings.TrimSpace(apiProc.log()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("API log line is not JSON: %q", line)
		}
	}
	t.Logf("Redis outage during enqueue drill: %d enqueues, %d accepted (all in Redis afterwards), %d answered 503 with Retry-After, none 500; "+
		"Redis away %v, slowest answer meanwhile %v; first enqueue accepted %v after Redis was back, same API process",
		len(answers), ok, unavailable, up.Sub(down).Round(10*time.Millisecond), slowest.Round(time.Millisecond),
		firstAfter.Sub(up).Round(10*time.Millisecond))
}

// produceHTTP enqueues resend-dcv tasks through the API at base, one order
// after another, every 10 ms, until stop is closed; each answer goes to
// answers.
func produceHTTP(t *testing.T, client *http.Client, base, token string, orders *atomic.Int64, stop <-chan struct{},
	mu *sync.Mutex, answers *[]answer) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		order := orders.Add(1)
		req, err := http.NewRequest(http.MethodPost, base+"/v1/tasks/resend-dcv", strings.NewReader(fmt.Sprintf(`{"order_id": %d}`, order)))
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		a := answer{at: time.Now()}
		res, err := client.Do(req)
		a.took = time.Since(a.at)
		if err != nil {
			a.err = err
		} else {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			a.status, a.retryAfter = res.StatusCode, res.Header.Get("Retry-After")
			a.problem = res.Header.Get("Content-Type") == "application/problem+json"
			var ref struct{ ID string }
			if res.StatusCode == http.StatusAccepted && json.Unmarshal(body, &ref) == nil {
				a.id = ref.ID
			}
		}
		mu.Lock()
		*answers = append(*answers, a)
		mu.Unlock()
	}
}
