package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/redistest"
)

// A shortage that starts and one that ends at the same moment leave the
// gauge agreeing with the flag. The gauge here runs, inside the first
// Set(1) (the shortage starting), the end of the shortage, and gives it a
// moment to finish: when the flag and the gauge change in separate steps,
// the end's Set(0) comes before the start's Set(1), and the gauge stays at
// 1 for a worker no longer short.
func TestReplicaGuardGaugeAgreesWithFlag(t *testing.T) {
	t.Parallel()
	g := &replicaGuard{}
	gauge := &interleavingGauge{Gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	ended := make(chan struct{})
	gauge.during = func() {
		go func() {
			defer close(ended)
			g.acknowledged(zap.NewNop(), 1)
		}()
		select {
		case <-ended:
		case <-time.After(200 * time.Millisecond): // held back until the start is done
		}
	}
	g.gauge = gauge
	g.fallShort(zap.NewNop(), &notReplicatedError{asked: 1}, 0)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the end of the shortage did not return")
	}
	if v := testutil.ToFloat64(gauge.Gauge); v != gaugeValue(g.isShort()) {
		t.Errorf("gauge %v, short %v: want them to agree", v, g.isShort())
	}
}

// interleavingGauge runs during once, inside its first Set(1).
type interleavingGauge struct {
	prometheus.Gauge
	during func()
	once   sync.Once
}

func (g *interleavingGauge) Set(v float64) {
	if v == 1 {
		g.once.Do(g.during)
	}
	g.Gauge.Set(v)
}

// Round trips before calls that too few replicas acknowledge count as one
// shortfall while each follows the last within the gap: its length grows
// from the first. A pause longer than the gap (the task handed back did
// not come again: the shortfall is stale) or an acknowledged WAIT starts
// a new one at 0, so that a lone shortfall long ago does not let a call go
// ahead unconfirmed at the next.
func TestBehindCountsOnlyAShortfallThatGoesOn(t *testing.T) {
	t.Parallel()
	const gap = 8 * time.Second
	g := &replicaGuard{}
	t0 := time.Unix(1_800_000_000, 0)
	steps := []struct {
		at   time.Duration // after t0
		ack  bool          // a WAIT acknowledged enough just before
		want time.Duration
	}{
		{at: 0, want: 0},
		{at: 6 * time.Second, want: 6 * time.Second},
		{at: 12 * time.Second, want: 12 * time.Second}, // each within the gap of the last
		{at: 30 * time.Second, want: 0},                // 18 s since the last: stale, a new one
		{at: 35 * time.Second, want: 5 * time.Second},
		{at: 36 * time.Second, ack: true, want: 0}, // acknowledged meanwhile: a new one
		{at: 37 * time.Second, want: time.Second},
	}
	for _, s := range steps {
		if s.ack {
			g.acknowledged(zap.NewNop(), 1)
		}
		if got := g.behind(t0.Add(s.at), gap); got != s.want {
			t.Errorf("shortfall at %v (acknowledged before: %v): lasted %v, want %v", s.at, s.ack, got, s.want)
		}
	}
}

// A WAIT acknowledged by another delivery while one records its shortfall
// never makes that shortfall look long: each lasts from a moment of its
// own, never before the first.
func TestBehindBesideAcknowledged(t *testing.T) {
	t.Parallel()
	g := &replicaGuard{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				g.acknowledged(zap.NewNop(), 1)
			}
		}
	})
	start := time.Now()
	for range 20000 {
		now := time.Now()
		if got := g.behind(now, time.Minute); got < 0 || got > now.Sub(start) {
			t.Fatalf("a shortfall recorded beside acknowledged WAITs lasted %v, more than the %v since the first", got, now.Sub(start))
		}
	}
	close(stop)
	wg.Wait()
}

// beforeCall counts a shortfall toward the bound only while each follows
// the last within behindGap: shortfalls spread wider (a task handed back
// long ago, then a quiet spell) each hand the task back, however long
// they span in all; close ones let the call go ahead once they have
// lasted the bound, the worker then short of replicas.
func TestBeforeCallCountsShortfallsWithinTheGap(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t, redistest.Options{}).Client()
	p := &processor{rdb: rdb, log: zap.NewNop(), replicas: 1, replicaBound: time.Second, behindGap: 200 * time.Millisecond}
	d := &delivery{taskID: "t-1", attempt: 1}
	ctx := context.Background()
	var start time.Time // of the last spread shortfall: the close ones follow it within the gap
	for i := range 4 {  // 1.2 s in all, each 400 ms after the last
		if i > 0 {
			time.Sleep(2 * p.behindGap)
		}
		start = time.Now()
		if err := p.beforeCall(ctx, d, gateGo, unconfirmed); !handedBack(err) {
			t.Fatalf("shortfall %d, %v after the last: %v; want the task handed back without a retry used", i+1, 2*p.behindGap, err)
		}
	}
	if p.guard.isShort() {
		t.Fatal("short of replicas after shortfalls each beyond the gap")
	}
	for {
		err := p.beforeCall(ctx, d, gateGo, unconfirmed)
		if err == nil {
			break
		}
		if !handedBack(err) || time.Since(start) > 10*p.replicaBound {
			t.Fatalf("after %v of close shortfalls: %v; want the call to go ahead after %v", time.Since(start), err, p.replicaBound)
		}
		time.Sleep(p.behindGap / 10)
	}
	if took := time.Since(start); took < p.replicaBound || !p.guard.isShort() {
		t.Errorf("went ahead after %v, short %v; want after the bound (%v), short", took, p.guard.isShort(), p.replicaBound)
	}
}

// unconfirmed is the error of a round trip before a call that too few
// replicas acknowledged.
var unconfirmed = &unconfirmedError{err: &notReplicatedError{asked: 1, timeout: GuardReplicasTimeout}}

// handedBack reports whether err hands the task back for too few
// replicas, without using a retry.
func handedBack(err error) bool {
	var te *taskError
	return errors.As(err, &te) && te.code == codeReplicasBehind && !te.failure
}

// A lone task handed back to one worker, then another, goes ahead once
// its own hand-backs have lasted the bound, though neither worker's
// shortfalls follow one another within the gap: each worker sees it
// every other time, 400 ms apart, the task every 200 ms.
func TestBeforeCallCountsATasksHandBacksAcrossWorkers(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t, redistest.Options{}).Client()
	workers := make([]*processor, 2)
	for i := range workers {
		workers[i] = &processor{rdb: rdb, log: zap.NewNop(), replicas: 1, replicaBound: time.Second, behindGap: 300 * time.Millisecond}
	}
	d := &delivery{taskID: "t-lone", attempt: 1}
	start := time.Now()
	for i := 0; ; i++ {
		p := workers[i%2]
		err := p.beforeCall(context.Background(), d, gateGo, unconfirmed)
		if err == nil {
			if took := time.Since(start); took < p.replicaBound || !p.guard.isShort() {
				t.Errorf("went ahead after %v, short %v; want after the bound (%v), short", took, p.guard.isShort(), p.replicaBound)
			}
			return
		}
		if !handedBack(err) || time.Since(start) > 10*time.Second {
			t.Fatalf("after %v and %d hand-backs between two workers: %v; want the call to go ahead after %v",
				time.Since(start), i+1, err, p.replicaBound)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A task's hand-backs count toward its own bound only: another task's
// first shortfall, on a worker that has seen no other, is handed back,
// though the first task's hand-backs, which still follow one another
// within the gap, began longer than the bound ago.
func TestBeforeCallCountsEachTasksOwnHandBacks(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t, redistest.Options{}).Client()
	workers := make([]*processor, 2)
	for i := range workers {
		workers[i] = &processor{rdb: rdb, log: zap.NewNop(), replicas: 1, replicaBound: time.Second, behindGap: time.Second}
	}
	ctx := context.Background()
	a := &delivery{taskID: "t-a", attempt: 1}
	start := time.Now()
	for time.Since(start) < 700*time.Millisecond { // short of the bound: each handed back
		if err := workers[0].beforeCall(ctx, a, gateGo, unconfirmed); !handedBack(err) {
			t.Fatalf("task A %v after its first hand-back: %v; want it handed back", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(start.Add(1200 * time.Millisecond))) // past the bound, within the gap of A's last
	b := &delivery{taskID: "t-b", attempt: 1}
	if err := workers[1].beforeCall(ctx, b, gateGo, unconfirmed); !handedBack(err) {
		t.Errorf("task B's first shortfall, %v after task A's first: %v; want B handed back", time.Since(start), err)
	}
	if workers[1].guard.isShort() {
		t.Error("the worker that saw task B's first shortfall is short of replicas")
	}
}

// A Redis that refuses the count of a task's hand-backs (an ACL user not
// allowed scripts, or one not allowed the TIME its script runs) gets one WARN per worker, naming the reply, however
// many tasks meet it; each task is still handed back (the worker's own
// count applies). A Redis not reached, or one that answers another error
// (READONLY: a replica, as a demoted master answers), logs nothing: the
// WARN's advice would be wrong.
func TestTaskBehindErrorReplyWarnedOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	if err := srv.Client().Do(ctx, "ACL", "SETUSER", "noscript", "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval").Err(); err != nil {
		t.Fatal(err)
	}
	refused := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "noscript", Password: "pw"})
	t.Cleanup(func() { _ = refused.Close() })
	if err := srv.Client().Do(ctx, "ACL", "SETUSER", "notime", "on", ">pw", "~*", "&*", "+@all", "-time").Err(); err != nil {
		t.Fatal(err)
	}
	refusedInScript := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "notime", Password: "pw"})
	t.Cleanup(func() { _ = refusedInScript.Close() })
	unreached := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1}) // nothing listens
	t.Cleanup(func() { _ = unreached.Close() })
	readOnly := redis.NewClient(&redis.Options{Addr: redistest.StartReplica(t, srv, redistest.Options{}).Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = readOnly.Close() })
	for _, tt := range []struct {
		name  string
		rdb   *redis.Client
		warns int
	}{
		{"error reply", refused, 1},
		{"refused in the script", refusedInScript, 1},
		{"not reached", unreached, 0},
		{"read-only", readOnly, 0},
	} {
		core, logs := zapobserver.New(zap.WarnLevel)
		p := &processor{rdb: tt.rdb, log: zap.New(core), replicas: 1, replicaBound: time.Second, behindGap: time.Second}
		for i := range 3 {
			d := &delivery{taskID: fmt.Sprintf("t-%d", i), attempt: 1}
			if err := p.beforeCall(ctx, d, gateGo, unconfirmed); !handedBack(err) {
				t.Errorf("%s: task %s: %v; want it handed back", tt.name, d.taskID, err)
			}
		}
		lines := logs.FilterMessage(taskCountFailed).All()
		if len(lines) != tt.warns || logs.Len() != tt.warns {
			t.Errorf("%s: %d WARN lines of the count failing, %d lines in all; want %d", tt.name, len(lines), logs.Len(), tt.warns)
			continue
		}
		for _, l := range lines {
			if e, _ := l.ContextMap()["error"].(string); !strings.Contains(e, "NOPERM") && !strings.Contains(e, "ACL") && !strings.Contains(e, "can't") || len(e) > maxReplyShown {
				t.Errorf("%s: the WARN's error %q; want Redis's refusal, at most %d bytes", tt.name, e, maxReplyShown)
			}
		}
	}
}

// A task's count never runs ahead of the time that passed: two
// hand-backs within the same millisecond of Redis's clock, or in
// consecutive ones, count no more than Go's clock measured around them.
// Readings rounded down to the ms would count 1 ms for a pair a
// fraction of one apart, whenever it spans a ms boundary.
func TestTaskBehindNeverCountsAheadOfTheClock(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t, redistest.Options{}).Client()
	p := &processor{rdb: rdb, log: zap.NewNop(), behindGap: time.Minute}
	ctx := context.Background()
	pauses := []time.Duration{0, 300 * time.Microsecond, 700 * time.Microsecond, 1200 * time.Microsecond}
	counted := 0
	for i := range 400 {
		id := fmt.Sprintf("t-clock-%d", i)
		start := time.Now()
		p.taskBehind(ctx, id)
		if pause := pauses[i%len(pauses)]; pause > 0 {
			time.Sleep(pause)
		}
		got := p.taskBehind(ctx, id)
		if elapsed := time.Since(start); got > elapsed {
			t.Fatalf("pair %d: the task's hand-backs counted %v, %v after the first began", i+1, got, elapsed)
		}
		if got > 0 {
			counted++
		}
	}
	if counted == 0 {
		t.Error("no pair counted a millisecond: the pauses were too short to show the count grows")
	}
}

// A task's count keeps when its hand-backs began as an exact integer of
// microseconds, unchanged by the hand-backs that follow: Lua's own
// conversion of a number to text keeps 14 digits, and would write such a
// time in exponent form, rounded.
func TestTaskBehindKeepsTheFirstMicrosecond(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t, redistest.Options{}).Client()
	p := &processor{rdb: rdb, log: zap.NewNop(), behindGap: time.Minute}
	ctx := context.Background()
	const id = "t-exact"
	before := time.Now()
	p.taskBehind(ctx, id)
	after := time.Now()
	first, err := rdb.Get(ctx, taskBehindKey(id)).Result()
	if err != nil {
		t.Fatal(err)
	}
	us, err := strconv.ParseInt(first, 10, 64)
	// Redis's clock and Go's are this host's; a second covers a step of it.
	if err != nil || us < before.Add(-time.Second).UnixMicro() || us > after.Add(time.Second).UnixMicro() {
		t.Fatalf("stored %q (%v); want whole microseconds between %d and %d", first, err, before.UnixMicro(), after.UnixMicro())
	}
	for range 3 {
		time.Sleep(time.Millisecond)
		p.taskBehind(ctx, id)
		if again, err := rdb.Get(ctx, taskBehindKey(id)).Result(); err != nil || again != first {
			t.Fatalf("after another hand-back: %q (%v), want %q kept", again, err, first)
		}
	}
}

// A start a worker of the version before wrote, in milliseconds, counts
// from when it says: during a rolling upgrade, read as microseconds, it
// would let the task's first shortfall go ahead at once.
func TestTaskBehindReadsAStartInMilliseconds(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t, redistest.Options{}).Client()
	p := &processor{rdb: rdb, log: zap.NewNop(), behindGap: time.Minute}
	ctx := context.Background()
	const id = "t-ms"
	start := time.Now().Add(-5 * time.Second) // a count of 0 (the start dropped) fails too
	if err := rdb.Set(ctx, taskBehindKey(id), strconv.FormatInt(start.UnixMilli(), 10), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	got := p.taskBehind(ctx, id)
	// Redis's clock and Go's are this host's; a second covers a step of it.
	if want := time.Since(start); got < want-time.Second || got > want+time.Second {
		t.Fatalf("a start written in ms %v ago counted %v", want, got)
	}
}

// The probe of a worker short of replicas writes before its WAIT: a WAIT
// on a connection that wrote nothing counts every replica the master
// still lists, a stalled one too, and would end the shortage while the
// replica acknowledges nothing.
func TestProbeDoesNotCountAStalledReplica(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, redistest.Options{})
	replica := redistest.StartReplica(t, master, redistest.Options{})
	replica.Pause()
	t.Cleanup(replica.Continue)
	rdb := master.Client() // fresh connections: none has written yet
	p := &processor{rdb: rdb, log: zap.NewNop(), replicas: 1}
	p.guard.fallShort(zap.NewNop(), &notReplicatedError{asked: 1}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p.probeReplicas(ctx, 50*time.Millisecond)
	if !p.guard.isShort() {
		t.Fatal("a probe ended the shortage while the only replica is stopped")
	}
	replica.Continue()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.probeReplicas(ctx, 50*time.Millisecond)
	}()
	for p.guard.isShort() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if p.guard.isShort() {
		t.Error("the shortage did not end within 10 s of the replica running again")
	}
}
