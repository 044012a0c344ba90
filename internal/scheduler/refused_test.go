package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
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
