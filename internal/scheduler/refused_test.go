package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/certmailtest"
)

// A trouble is logged when it starts and when its error changes, never at
// each try while it lasts, and ends with one INFO line; a Redis out of
// reach (the outage's own lines say so) and a try cut short by the
// scheduler's stop neither start, change nor end it.
func TestTroubleLoggedOncePerProblem(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	tr := trouble{msg: "could not", cleared: "could again"}
	wrongType := errors.New("read: WRONGTYPE Operation against a key holding the wrong kind of value")
	outage := fmt.Errorf("read: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})
	for i, step := range []struct {
		err        error
		warn, info int // lines so far
	}{
		{nil, 0, 0},
		{wrongType, 1, 0},
		{wrongType, 1, 0},
		{outage, 1, 0},
		{context.Canceled, 1, 0},
		{errors.New("read: WRONGTYPE Operation against a key holding the wrong kind of value"), 1, 0},
		{errors.New("read: NOPERM this user has no permissions to access one of the keys used as arguments"), 2, 0},
		{nil, 2, 1},
		{nil, 2, 1},
		{outage, 2, 1},
	} {
		tr.note(log, step.err)
		warn, info := logs.FilterMessage("could not").Len(), logs.FilterMessage("could again").Len()
		if warn != step.warn || info != step.info {
			t.Fatalf("after try %d (%v): %d WARN and %d INFO lines, want %d and %d", i, step.err, warn, info, step.warn, step.info)
		}
	}
	if got := tr.lasting(); got != nil {
		t.Errorf("lasting() = %v after the trouble ended, want nil", got)
	}
}

// A leader lease that Redis refuses, a key of its name that another
// application made (WRONGTYPE) or an ACL user not allowed it (NOPERM), is
// reported once, at WARN, naming the key and what to do, however many
// rounds it lasts; /readyz answers 503 meanwhile (this replica cannot
// lead). Once it is fixed, one INFO line says so, the replica leads and is
// ready, without a restart.
func TestLeaseRefusedReportedOnce(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		user   string // the ACL user the scheduler connects as; "" for the default
		refuse func(*env, context.Context) error
		fix    func(*env, context.Context) error
		tries  func(*env) int64 // the lease's tries Redis refused so far
		reply  string
		advice string
	}{
		{
			name:   "another application's key",
			refuse: func(e *env, ctx context.Context) error { return e.redis.Client().HSet(ctx, leaderKey, "f", "v").Err() },
			fix:    func(e *env, ctx context.Context) error { return e.redis.Client().Del(ctx, leaderKey).Err() },
			// Each try's SET NX finds the key taken, then the renewal's
			// script fails on it.
			tries:  func(e *env) int64 { return e.redis.Commands()["set"] },
			reply:  "WRONGTYPE",
			advice: "another application uses that name",
		},
		{
			name: "an ACL without the key",
			user: "noleader",
			refuse: func(e *env, ctx context.Context) error {
				return e.redis.Client().Do(ctx, "ACL", "SETUSER", "noleader", "on", ">pw", "~asynq:*", "~certmail:schedules*",
					"~certmail:schedule:*", "+@all").Err()
			},
			fix: func(e *env, ctx context.Context) error {
				return e.redis.Client().Do(ctx, "ACL", "SETUSER", "noleader", "~certmail:*").Err()
			},
			tries:  refusedTries,
			reply:  "NOPERM",
			advice: "~certmail:*",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			ctx := context.Background()
			if err := tt.refuse(e, ctx); err != nil {
				t.Fatal(err)
			}
			cfg, logs := e.deps(Config{AdminAddr: "127.0.0.1:0", Lease: testLease})
			if tt.user != "" {
				cfg.Redis = certmailtest.Conn(t, "redis://"+tt.user+":pw@"+e.redis.Addr()+"/0")
			}
			admin := runWithAdmin(t, cfg)
			refused := func() *observer.ObservedLogs {
				return logs.FilterMessage(leaseTrouble.msg).FilterLevelExact(zap.WarnLevel)
			}
			waitFor(t, 10*time.Second, "a WARN line saying Redis refuses the lease", func() bool { return refused().Len() > 0 })
			line := refused().All()[0].ContextMap()
			if msg, _ := line["error"].(string); line["key"] != leaderKey || !strings.Contains(msg, tt.reply) ||
				!strings.Contains(msg, "the key "+leaderKey) || !strings.Contains(msg, tt.advice) {
				t.Errorf("the WARN line %v does not name the key %s, Redis's %s and %q", line, leaderKey, tt.reply, tt.advice)
			}
			if got := httpStatus(t, admin+"/readyz"); got != http.StatusServiceUnavailable {
				t.Errorf("/readyz while Redis refuses the lease: %d, want 503", got)
			}
			// Every round (200 ms) tries again: wait for 10 more tries.
			from := tt.tries(e)
			waitFor(t, 20*time.Second, "10 more tries", func() bool { return tt.tries(e) >= from+10 })
			if n := refused().Len(); n != 1 {
				t.Errorf("%d WARN lines over 10 rounds that Redis refuses the lease, want 1:\n%v", n, refused().All())
			}
			if n := logs.FilterMessage("not ready").Len(); n != 1 {
				t.Errorf("%d lines \"not ready\", want 1 for the one probe", n)
			}

			if err := tt.fix(e, ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the leadership once the lease is fixed", func() bool {
				return logs.FilterMessage("became the scheduler leader").Len() == 1
			})
			if n := logs.FilterMessage(leaseTrouble.cleared).FilterLevelExact(zap.InfoLevel).Len(); n != 1 {
				t.Errorf("%d INFO lines that Redis no longer refuses the lease, want 1", n)
			}
			if got := httpStatus(t, admin+"/readyz"); got != http.StatusOK {
				t.Errorf("/readyz once the lease is fixed: %d, want 200", got)
			}
			if n := refused().Len(); n != 1 {
				t.Errorf("%d WARN lines that Redis refuses the lease, want 1", n)
			}
		})
	}
}

// Schedule keys that another application made (certmail:schedules a
// string) fail the leader's publication of the file's schedules and its
// reads of the API's at every round: each is reported once, at WARN,
// naming the keys and what to do, however many rounds it lasts, and once
// the key is gone one INFO line each says so and the file's schedule
// fires.
func TestScheduleKeysRefusedReportedOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	if err := e.redis.Client().Set(ctx, "certmail:schedules", "theirs", 0).Err(); err != nil {
		t.Fatal(err)
	}
	file := e.writeFile("schedules:\n  - id: beat\n    cron: \"@every 1s\"\n    type: resend-dcv\n    payload: {order_id: 9}\n    until_validated: false\n")
	logs, _ := e.start(Config{File: file})
	warns := func(msg string) *observer.ObservedLogs {
		return logs.FilterMessage(msg).FilterLevelExact(zap.WarnLevel)
	}
	const publish, read = "could not publish the file's schedules", "could not read the API's schedules"
	waitFor(t, 10*time.Second, "both WARN lines", func() bool { return warns(publish).Len() > 0 && warns(read).Len() > 0 })
	for _, msg := range []string{publish, read} {
		err, _ := warns(msg).All()[0].ContextMap()["error"].(string)
		if !strings.Contains(err, "WRONGTYPE") || !strings.Contains(err, "certmail:schedules") || !strings.Contains(err, "another application") {
			t.Errorf("%s: error %q does not name Redis's WRONGTYPE, the keys and what to do", msg, err)
		}
	}
	// Each round (200 ms) reads the API's schedules once (HGETALL): wait
	// for at least 10 more rounds.
	rounds := func() int64 { return e.redis.Commands()["hgetall"] }
	from := rounds()
	waitFor(t, 20*time.Second, "10 more rounds", func() bool { return rounds() >= from+10 })
	for _, msg := range []string{publish, read} {
		if n := warns(msg).Len(); n != 1 {
			t.Errorf("%d WARN lines %q over 10 rounds, want 1", n, msg)
		}
	}

	if err := e.redis.Client().Del(ctx, "certmail:schedules").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the file's schedule fires", func() bool { return len(e.ticks("bulk")["beat"]) > 0 })
	for _, msg := range []string{"published the file's schedules after failed tries", "read the API's schedules after failed tries"} {
		if n := logs.FilterMessage(msg).FilterLevelExact(zap.InfoLevel).Len(); n != 1 {
			t.Errorf("%d INFO lines %q, want 1", n, msg)
		}
	}
}

// refusedTries counts the commands on the leader lease that Redis's ACL
// refused (ACL LOG counts the repeats of an entry).
func refusedTries(e *env) int64 {
	entries, err := e.redis.Client().ACLLog(context.Background(), 128).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var n int64
	for _, l := range entries {
		if l.Object == leaderKey {
			n += l.Count
		}
	}
	return n
}

// runWithAdmin runs a scheduler of cfg, with its admin server, until the
// test ends, and returns the admin server's base URL once it schedules.
func runWithAdmin(t *testing.T, cfg Config) string {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan net.Addr, 1)
	go func() { done <- s.Run(ctx, func(a net.Addr) { started <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-started:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not started within 10s")
	}
	return ""
}

// httpStatus is the status of a GET of url.
func httpStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	return res.StatusCode
}
