package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/schedule"
)

// putSchedules stores n API schedules straight into Redis, as an earlier
// leader would have left them: ids prefix0000…, @every 24h from now (none
// due in a test), every other one ended.
func (e *env) putSchedules(prefix string, n int) {
	e.t.Helper()
	ctx := context.Background()
	p := e.redis.Client().Pipeline()
	for i := range n {
		id := fmt.Sprintf("%s%04d", prefix, i)
		p.HSet(ctx, "certmail:schedules", id, fmt.Sprintf(
			`{"id":%q,"cron":"@every 24h","timezone":"Europe/Berlin","type":"resend-dcv","payload":{"order_id":%d}}`, id, i+1))
		p.HSet(ctx, stateKey(id), "since", time.Now().Unix())
		if i%2 == 1 {
			p.HSet(ctx, stateKey(id), "ended", "1", "ended_reason", schedule.EndedValidated)
		}
	}
	if _, err := p.Exec(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// TestIdleRoundsCostTheSameForAnyNumberOfSchedules: once the leader has
// read the schedules, a round with nothing due, refresh and dashboard
// write included, costs the same Redis commands with 10 schedules as with
// 400 (none per schedule: no state is read, ended or not), and judges no
// schedule again (the same *schedule.Compiled comes back).
func TestIdleRoundsCostTheSameForAnyNumberOfSchedules(t *testing.T) {
	t.Parallel()
	const rounds = 5
	perRound := map[int]map[string]int64{}
	for _, n := range []int{10, 400} {
		e := setup(t)
		e.putSchedules("s", n)
		s, _ := e.leader(t, Config{Lease: time.Minute, Heartbeat: time.Hour})
		s.renewedAt = time.Now() // no renewal is due in this test
		ctx := context.Background()
		s.round(ctx) // the first round reads every schedule and its state
		s.beat(ctx, time.Now())
		if len(s.apiScheds) != n {
			t.Fatalf("n=%d: %d schedules after the first round", n, len(s.apiScheds))
		}
		first := map[string]*schedule.Compiled{}
		for _, c := range s.apiScheds {
			first[c.ID] = c
		}
		e.redis.ResetStats()
		for range rounds {
			s.refreshedAt = time.Time{} // a refresh in every round
			s.round(ctx)
			s.hb.at = time.Time{} // a dashboard write in every round
			s.beat(ctx, time.Now())
		}
		cmds := e.redis.Commands()
		delete(cmds, "config|resetstat")
		perRound[n] = cmds
		for _, c := range s.apiScheds {
			if first[c.ID] != c {
				t.Errorf("n=%d: schedule %s judged again though its JSON did not change", n, c.ID)
				break
			}
		}
		for _, name := range []string{"hmget", "hgetall", "evalsha"} {
			if most := map[string]int64{"hgetall": rounds}[name]; cmds[name] > most {
				t.Errorf("n=%d: %d %s in %d idle rounds, want at most %d (the schedules hash, no state)", n, cmds[name], name, rounds, most)
			}
		}
	}
	if a, b := fmt.Sprint(perRound[10]), fmt.Sprint(perRound[400]); a != b {
		t.Errorf("commands in %d idle rounds:\n 10 schedules: %s\n400 schedules: %s\nwant the same", rounds, a, b)
	}
}

// TestEndedScheduleAddedAgainFires: an ended schedule deleted and added
// again with the same JSON at once, so that no refresh of the leader sees
// it gone, fires again: the leader, which looks no more at a schedule it
// saw ended, looks at it again.
func TestEndedScheduleAddedAgainFires(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	no := false
	sched := schedule.Schedule{ID: "again", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`),
		MaxRuns: 1, UntilValidated: &no}
	st := e.store()
	if _, err := st.Add(ctx, sched); err != nil {
		t.Fatal(err)
	}
	s, _ := e.leader(t, Config{Lease: time.Minute})
	s.renewedAt = time.Now() // no renewal is due in this test
	// rounds runs the leader's rounds, a refresh in each, until cond holds.
	rounds := func(what string, cond func() bool) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() bool {
			s.refreshedAt = time.Time{}
			s.round(ctx)
			return cond()
		})
	}
	seenEnded := func() bool {
		return len(s.apiScheds) == 1 && s.due[s.apiScheds[0]].Equal(never)
	}
	rounds("the leader sees the schedule ended after its one run", seenEnded)
	if err := st.Delete(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Add(ctx, sched); err != nil {
		t.Fatal(err)
	}
	rounds("the schedule added again runs", func() bool { return len(e.ticks("bulk")["again"]) == 2 })
	rounds("the leader sees it ended again", seenEnded)
}

// TestLeaseRenewedDuringALongRound: a round that lasts three times the
// lease (a slow step: the first judging of thousands of schedules, a slow
// Redis) keeps the lease: no other replica can take it meanwhile, and the
// tick the round fires after the slow step is recorded, under the same
// fence.
func TestLeaseRenewedDuringALongRound(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rdb := e.redis.Client()
	// A schedule due now, and one the rules refuse, whose ERROR line is
	// written as the round reads the schedules: the slow step.
	if err := rdb.HSet(ctx, "certmail:schedules",
		"due", `{"id":"due","cron":"@every 1s","type":"resend-dcv","payload":{"order_id":1},"until_validated":false}`,
		"refused", `{"id":"refused","cron":"@daily","type":"resend-dcv","payload":{"order_id":1,"account":"us"}}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, stateKey("due"), "since", time.Now().Unix()-2).Err(); err != nil {
		t.Fatal(err)
	}
	const leaseFor = time.Second
	rival := lease.New(rdb, leaderKey, leaseFor)
	var slowStart time.Time
	var taken []time.Duration // when the rival took the lease, after the slow step began
	slow := func(en zapcore.Entry) error {
		if !strings.HasPrefix(en.Message, "invalid API schedule skipped") {
			return nil
		}
		slowStart = time.Now()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if ok, err := rival.Acquire(ctx); err == nil && ok {
				taken = append(taken, time.Since(slowStart))
				return nil
			}
			if time.Since(slowStart) > 3*leaseFor {
				return nil
			}
		}
		return nil
	}
	cfg, logs := e.deps(Config{Lease: leaseFor})
	cfg.Logger = cfg.Logger.WithOptions(zap.Hooks(slow))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// As the scheduler's loop does, try again when an attempt runs out of
	// its third of the lease (a first connection on a busy machine).
	for deadline := time.Now().Add(10 * time.Second); !s.leader && time.Now().Before(deadline); {
		s.lead(ctx, time.Now())
	}
	if !s.leader {
		t.Fatal("did not take the free lease")
	}
	s.round(ctx)
	if slowStart.IsZero() {
		t.Fatal("the slow step did not run")
	}
	if len(taken) > 0 {
		t.Errorf("another replica took the lease %v into a round of %v; want it kept", taken[0], 3*leaseFor)
	}
	state, err := e.store().State(ctx, "due")
	if err != nil || state.Runs < 1 || !s.leader {
		t.Errorf("after the slow step: %d runs (%v), leader %v; want the due ticks recorded by the leader", state.Runs, err, s.leader)
	}
	if n := logs.FilterMessageSnippet("lost the scheduler leadership").Len(); n != 0 {
		t.Errorf("%d lines of a lost leadership", n)
	}
	if !s.renewedAt.After(slowStart) {
		t.Errorf("the last renewal %v is not noted for lead (the slow step began %v)", s.renewedAt, slowStart)
	}
}
