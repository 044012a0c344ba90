package worker_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/worker"
)

// afterSend is a transport that runs once, after DigiCert's answer to a
// send-cert arrived and before the worker reads it.
type afterSend struct {
	once sync.Once
	do   func()
}

func (a *afterSend) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/sendemail") {
		a.once.Do(a.do)
	}
	return resp, err
}

// A worker stopped while it still tries to write a duplicate guard (Redis
// went away right after DigiCert's 2xx) keeps trying until its shutdown
// timeout, then gives up with one ERROR line and exits: Redis's absence
// does not hold it past the timeout, nor does it exit without saying that
// the task may email again.
func TestStopWhileTheGuardWaitsForRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	const timeout = 2 * time.Second
	stop := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = timeout
		c.Client.HTTPClient = &http.Client{Transport: &afterSend{do: b.redis.Kill}}
	}})
	b.enqueue(t, "send-cert", `{"certificate_id": 41, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	const tryingAgain = "could not write the duplicate guard; trying again until Redis answers"
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("warn", tryingAgain)) == 1 }, b.logs.Text)

	start := time.Now()
	stop()
	// asynq's own shutdown, its last writes refused one by one after
	// go-redis's dial retries, adds a few seconds to the timeout while
	// Redis is away, with or without a guard to write.
	if took := time.Since(start); took > timeout+8*time.Second {
		t.Errorf("the worker took %v to stop, want its shutdown timeout (%v) and asynq's last tries", took, timeout)
	}
	const gaveUp = "could not write the duplicate guard before the worker stopped: a redelivery of this task would email again"
	if n := len(b.logs.Lines("error", gaveUp)); n != 1 {
		t.Errorf("%d ERROR lines saying the guard was given up, want 1:\n%s", n, b.logs.Text())
	}
	if n := len(b.fake.CertSends(41)); n != 1 {
		t.Errorf("certificate 41 emailed %d times, want once", n)
	}
}

// A worker whose Redis is away logs each of its loops' failures once,
// not once per try: here asynq's loops, the unparker and the lease sweep
// try several times a second.
func TestRedisOutageLogsEachFailureOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1})
	stop := b.startWorkerCtl(t, setupOpts{})
	b.redis.Kill()
	// Nothing to wait for: the test counts what the loops log in 6 s, in
	// which each of them fails several times (go-redis's own retries of a
	// refused dial take about a second and a half).
	time.Sleep(6 * time.Second)
	counts := map[string]int{}
	for _, e := range b.logs.All() {
		if e.Level >= zapcore.WarnLevel {
			counts[logging.Key(e.Level, e.Message)]++
		}
	}
	if len(counts) == 0 {
		t.Fatal("no WARN or ERROR line while Redis was away")
	}
	for msg, n := range counts {
		if n > 1 {
			t.Errorf("%d lines of %q in 6 s, want 1", n, msg)
		}
	}
	// The worker that stops says how many lines it held back.
	stop()
	held := 0
	for _, e := range b.logs.FilterMessage("repeated lines held back").All() {
		held += int(e.ContextMap()["suppressed"].(int64))
	}
	if held == 0 {
		t.Error("the stopped worker did not report the lines it held back")
	}
}

// A Redis outage has a first and a last line in the worker's log, whatever
// its loops log meanwhile: WARN when Redis stops answering, INFO when it
// answers again.
func TestRedisOutageFirstAndLastLine(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1})
	b.startWorkerCtl(t, setupOpts{})
	const gone, back = "Redis is not answering; certmail keeps trying", "Redis is answering again"
	b.redis.Kill()
	waitFor(t, 20*time.Second, func() bool { return len(b.logs.Lines("warn", gone)) == 1 }, b.logs.Text)
	b.redis.Relaunch()
	waitFor(t, 20*time.Second, func() bool { return len(b.logs.Lines("info", back)) == 1 }, b.logs.Text)
	if n := len(b.logs.Lines("warn", gone)); n != 1 {
		t.Errorf("%d lines saying Redis is not answering, want 1:\n%s", n, b.logs.Text())
	}
}

// A worker stopped while Redis stalls (it keeps its connections and
// answers nothing, as in a long fork or a paused VM) exits within its
// shutdown timeout and a grace, its give-up line before its last one:
// asynq's own last writes, each waiting for go-redis's timeouts and
// retries, would otherwise hold it for a minute or more, past any
// orchestrator's grace period.
func TestStopWhileRedisStalls(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	const timeout = 2 * time.Second
	paused := make(chan struct{})
	stop := b.startWorkerCtl(t, setupOpts{configure: func(c *worker.Config) {
		c.ShutdownTimeout = timeout
		c.Client.HTTPClient = &http.Client{Transport: &afterSend{do: func() { b.redis.Pause(); close(paused) }}}
	}})
	b.enqueue(t, "send-cert", `{"certificate_id": 42, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatalf("no send-cert call in 10 s:\n%s", b.logs.Text())
	}

	start := time.Now()
	stop()
	// The shutdown timeout, the grace given to writes that give up, and
	// the admin server's and loops' stop: seconds, not asynq's minute.
	if took := time.Since(start); took > timeout+6*time.Second {
		t.Errorf("the worker took %v to stop while Redis stalled, want about its shutdown timeout (%v)", took, timeout)
	}
	// The task is named in an ERROR line before the last one: its guard
	// given up, or the delivery left running in its first try.
	named, stopped := -1, -1
	for i, e := range b.logs.All() {
		switch {
		case e.Level == zapcore.ErrorLevel && e.ContextMap()["task_id"] != nil:
			named = i
		case e.Message == "worker stopped":
			stopped = i
		}
	}
	if named < 0 || stopped < 0 || named > stopped {
		t.Errorf("want an ERROR line naming the task (at %d) before \"worker stopped\" (at %d):\n%s", named, stopped, b.logs.Text())
	}
	b.redis.Continue()
}
