package scheduler_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
)

// cutProxy stands between a scheduler and Redis. When a command it
// forwards contains its trigger's bytes, it waits for Redis's reply, and
// then cuts every connection and refuses new ones, before the reply reaches
// the scheduler: from then on the scheduler is as dead to Redis as a killed
// process, and its lease is neither renewed nor released.
type cutProxy struct {
	t       *testing.T
	ln      net.Listener
	target  string
	trigger *trigger

	mu    sync.Mutex
	conns []net.Conn
	once  sync.Once
	cut   chan struct{} // closed when everything is cut
	cutAt time.Time
	wg    sync.WaitGroup
}

// trigger is what cuts a proxy; proxies that share one cut one scheduler
// between them, the first whose command contains it.
type trigger struct {
	mu    sync.Mutex
	bytes []byte
}

// arm makes the next command containing s, through any proxy of t, the
// last one through that proxy.
func (t *trigger) arm(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bytes = []byte(s)
}

// fires reports whether cmd contains the armed trigger, and disarms it if
// so: it fires once.
func (t *trigger) fires(cmd []byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.bytes) == 0 || !bytes.Contains(cmd, t.bytes) {
		return false
	}
	t.bytes = nil
	return true
}

func startCutProxy(t *testing.T, target string, trig *trigger) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, target: target, trigger: trig, cut: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { p.cutAll(); p.wg.Wait() })
	return p
}

func (p *cutProxy) url() string { return "redis://" + p.ln.Addr().String() + "/0" }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // listener closed by cutAll
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		select {
		case <-p.cut:
			p.mu.Unlock()
			client.Close()
			server.Close()
			continue
		default:
		}
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		replied := make(chan struct{}, 1)
		var awaiting sync.Mutex // held from a trigger's forwarding until its reply
		waiting := false
		p.wg.Add(2)
		go func() { // Redis → scheduler
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 {
					awaiting.Lock()
					w := waiting
					awaiting.Unlock()
					if w {
						replied <- struct{}{}
						return // the reply is not delivered
					}
					if _, werr := client.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // scheduler → Redis
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					hit := p.trigger.fires(buf[:n])
					if hit {
						awaiting.Lock()
						waiting = true
						awaiting.Unlock()
					}
					if _, werr := server.Write(buf[:n]); werr != nil {
						return
					}
					if hit {
						select {
						case <-replied:
						case <-time.After(5 * time.Second):
							p.t.Error("cut proxy: Redis did not answer the trigger command")
						}
						p.cutAll()
						return
					}
				}
				if err != nil {
					_ = server.Close()
					return
				}
			}
		}()
	}
}

// cutAll closes the listener and every connection, once.
func (p *cutProxy) cutAll() {
	p.once.Do(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.cutAt = time.Now()
		close(p.cut)
		_ = p.ln.Close()
		for _, c := range p.conns {
			_ = c.Close()
		}
	})
}

// replica is one running scheduler of a failover test.
type replica struct {
	logs *observer.ObservedLogs
	reg  *prometheus.Registry
	stop func()
}

// replicaLease is the replicas' leader lease: short, so that the takeover
// after the leader died comes within seconds, and long enough that a leader
// stalled for a moment on a loaded machine seldom loses it (the failover
// test allows for one that does).
const replicaLease = 4 * time.Second

func startReplica(t *testing.T, redisURL, file string) *replica {
	t.Helper()
	conn, err := redisconn.Open(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	r := &replica{logs: logs, reg: prometheus.NewRegistry()}
	svc, err := ops.New(ops.Config{Redis: conn})
	if err != nil {
		t.Fatal(err)
	}
	store, err := schedule.NewStore(schedule.Config{Redis: conn.Client, Rules: schedule.Rules{MinInterval: time.Second}}) // ticks every second
	if err != nil {
		t.Fatal(err)
	}
	s, err := scheduler.New(scheduler.Config{Redis: conn, Ops: svc, Store: store, File: file,
		Lease: replicaLease, ReloadInterval: 200 * time.Millisecond, Logger: zap.New(core), Registry: r.reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("scheduler Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("scheduler did not stop within 15s")
			}
			_ = svc.Close()
			_ = conn.Client.Close()
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *replica) leaderships() int { return r.logs.FilterMessage("became the scheduler leader").Len() }

// isLeader reads certmail_scheduler_is_leader.
func (r *replica) isLeader(t *testing.T) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "certmail_scheduler_is_leader" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("certmail_scheduler_is_leader not exported")
	return 0
}

// ticksFired reads certmail_scheduler_ticks_total of one schedule (0 when
// this replica fired none).
func (r *replica) ticksFired(t *testing.T, schedule string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "certmail_scheduler_ticks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "schedule" && l.GetValue() == schedule {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// pendingTicks returns the ticks (Unix seconds) of the schedule's tasks
// waiting in queue, sorted, failing on any task id that is not
// sched:<id>:<tick>.
func pendingTicks(t *testing.T, insp *asynq.Inspector, queue, id string) []int64 {
	t.Helper()
	list, err := insp.ListPendingTasks(queue, asynq.PageSize(10000))
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	var ticks []int64
	for _, ti := range list {
		tick, ok := strings.CutPrefix(ti.ID, "sched:"+id+":")
		n, err := strconv.ParseInt(tick, 10, 64)
		if !ok || err != nil {
			t.Fatalf("task id %q is not sched:%s:<tick>", ti.ID, id)
		}
		ticks = append(ticks, n)
	}
	sort.Slice(ticks, func(i, j int) bool { return ticks[i] < ticks[j] })
	return ticks
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The leader dies (its Redis connections cut, as a SIGKILL does, so its
// lease is neither renewed nor released) right after enqueueing a tick and
// before recording it. The follower takes over once the lease has expired,
// recognises the tick by its task id instead of enqueueing it twice, and
// fires on: every tick is one task, none missed or doubled around the
// takeover, each counted once in the schedule's runs and at most once in
// certmail_scheduler_ticks_total, and certmail_scheduler_is_leader moves
// from the dead leader to the follower (which keeps the series; the dead
// leader drops them once it sees it lost the lease).
//
// Both replicas reach Redis through cut proxies sharing one trigger: the
// one that sends the doomed tick's first command dies. That is A, which
// leads first, unless A's loop stalled past its lease on a loaded machine
// and B took over while A lived (which the lease allows: the ticks are
// fenced by it and named by their task ids); then B dies on the tick and A
// takes over, and the checks hold the same.
func TestFollowerTakesOverAfterLeaderDiesMidTick(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(file, []byte("schedules:\n  - id: fo\n    cron: \"@every 1s\"\n    type: resend-dcv\n    payload: {order_id: 1}\n    until_validated: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(srv.ConnOpt())
	t.Cleanup(func() { insp.Close() })

	doom := &trigger{}
	proxyA, proxyB := startCutProxy(t, srv.Addr(), doom), startCutProxy(t, srv.Addr(), doom)
	a := startReplica(t, proxyA.url(), file)
	waitUntil(t, 10*time.Second, "A leads", func() bool { return a.leaderships() == 1 })
	b := startReplica(t, proxyB.url(), file)
	waitUntil(t, 15*time.Second, "3 ticks fired", func() bool { return len(pendingTicks(t, insp, "bulk", "fo")) >= 3 })

	// The leader dies on the first command that names a tick two seconds
	// ahead.
	doomed := time.Now().Unix() + 2
	doomedID := "sched:fo:" + strconv.FormatInt(doomed, 10)
	doom.arm(doomedID)
	var dead, follower *replica
	var cutAt time.Time
	select {
	case <-proxyA.cut:
		dead, follower, cutAt = a, b, proxyA.cutAt
	case <-proxyB.cut:
		dead, follower, cutAt = b, a, proxyB.cutAt
		t.Logf("A lost its lease while alive (B became leader %d times): B dies on the tick instead", b.leaderships())
	case <-time.After(15 * time.Second):
		t.Fatalf("no replica sent a command for tick %d (A became leader %d times, B %d)", doomed, a.leaderships(), b.leaderships())
	}
	if ticks := pendingTicks(t, insp, "bulk", "fo"); ticks[len(ticks)-1] != doomed {
		t.Fatalf("ticks %v at the leader's death: want the last to be %d, which it enqueued and did not record", ticks, doomed)
	}

	// The follower finds the doomed tick already enqueued when it fires it,
	// and fires on as the leader.
	recognised := func() bool {
		for _, e := range follower.logs.FilterMessage("tick already enqueued by an earlier leader").All() {
			if e.ContextMap()["task_id"] == doomedID {
				return true
			}
		}
		return false
	}
	waitUntil(t, 15*time.Second, "the follower finds the doomed tick enqueued", recognised)
	t.Logf("the follower found the doomed tick enqueued %v after the leader died (lease %v)", time.Since(cutAt).Round(10*time.Millisecond), replicaLease)
	waitUntil(t, 15*time.Second, "the follower fires 3 ticks after the doomed one", func() bool {
		ticks := pendingTicks(t, insp, "bulk", "fo")
		return ticks[len(ticks)-1] >= doomed+3
	})
	waitUntil(t, 10*time.Second, "the dead leader sees it lost the lease", func() bool { return dead.isLeader(t) == 0 })
	if v := follower.isLeader(t); v != 1 {
		t.Errorf("the follower's certmail_scheduler_is_leader = %v, want 1", v)
	}
	follower.stop()

	ticks := pendingTicks(t, insp, "bulk", "fo")
	for i := 1; i < len(ticks); i++ {
		if ticks[i] != ticks[i-1]+1 {
			t.Errorf("ticks %v: %d follows %d (a tick missed or doubled around the takeover)", ticks, ticks[i], ticks[i-1])
		}
	}
	// Each tick is counted by the replica that saw its enqueue succeed, so
	// never twice; the doomed tick by neither (the dead leader never got
	// Redis's reply, the follower found it enqueued); those after it by the
	// follower. The dead leader, once it sees it lost the lease, drops its
	// per-schedule series (a follower does not keep them up to date).
	after := len(ticks) - 1 - slices.Index(ticks, doomed)
	if d, f := dead.ticksFired(t, "fo"), follower.ticksFired(t, "fo"); d != 0 || f < float64(after) || f > float64(len(ticks)-1) {
		t.Errorf("certmail_scheduler_ticks_total: dead leader %v, follower %v; want none kept by the dead leader, "+
			"and of the %d ticks but the doomed one, at least the %d after it the follower's", d, f, len(ticks), after)
	}
	conn, err := redisconn.Open(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Client.Close() })
	store, err := schedule.NewStore(schedule.Config{Redis: conn.Client})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Get(context.Background(), "fo")
	if err != nil {
		t.Fatal(err)
	}
	if st.Runs != len(ticks) || st.LastTaskID != "sched:fo:"+strconv.FormatInt(ticks[len(ticks)-1], 10) {
		t.Errorf("schedule status: %d runs, last task %s; want %d runs (one per tick), last sched:fo:%d",
			st.Runs, st.LastTaskID, len(ticks), ticks[len(ticks)-1])
	}
}
