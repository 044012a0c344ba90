package worker_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/worker"
)

// A 429 from DigiCert while work is queued on three workers stops every
// worker for the shared cool-down, and the first 429 after it has ended
// doubles the cool-down. The test checks from the fake's records that no request
// arrived during either cool-down, that work was waiting at each 429 (tasks
// still undelivered), that the 429s used no retry, and that the series the
// 429 alert and the dashboard read moved.
func TestForced429CoolDownHoldsEveryWorkerAndDoubles(t *testing.T) {
	t.Parallel()
	const (
		pause = 3 * time.Second
		// Requests that passed the limiter before the cool-down was written
		// may reach the fake after the 429, as late as a stalled worker
		// sends them: none may arrive from slack after the 429 until the
		// cool-down ends. It ends no earlier than the 429's arrival plus
		// its length (the cool-down is written after that arrival), so no
		// slack is needed at that end, but for Redis's millisecond clock.
		slack     = 2 * time.Second
		redisTick = 10 * time.Millisecond
		// The fake's latency makes the queue last longer than that slack
		// (90 tasks, 12 handlers: at least 7 × 400 ms), so that a worker
		// that ignored the first cool-down would be seen calling during it.
		latency = 400 * time.Millisecond
		n       = 90
	)
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	b.fake.SetFaults(digicerttest.Faults{Latency: latency})
	b.fake.FailNext(1, 429, limited, "application/json")
	var ids []string
	for k := range n {
		ids = append(ids, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, k+1)))
	}
	o := setupOpts{configure: func(c *worker.Config) { c.RateLimitPause = pause }}
	for range 3 {
		b.startWorker(t, o)
	}
	waitFor(t, 10*time.Second, func() bool { return b.fake.StatusCount(429) == 1 }, func() string { return "no 429" })
	// The second 429 goes to a request sent after the first cool-down: one
	// sent before it began, answered 429 during it, would not double it.
	rdb := b.redis.Client()
	waitFor(t, 10*time.Second, func() bool { return rdb.PTTL(t.Context(), "certmail:ratelimit:{default}:cooldown").Val() < 0 },
		func() string { return "the first cool-down did not end" })
	b.fake.FailNext(1, 429, limited, "application/json")
	waitFor(t, 20*time.Second, func() bool { return b.fake.StatusCount(429) == 2 }, func() string { return "no second 429" })
	// The second 429 leaves only the doubled cool-down to watch, which a
	// shorter latency does not hide (requests resuming early arrive whatever
	// the latency), and lets the queue drain sooner after it.
	b.fake.SetFaults(digicerttest.Faults{Latency: 10 * time.Millisecond})
	for _, id := range ids {
		if info := b.waitState(t, id, asynq.TaskStateCompleted, 60*time.Second); info.Retried != 0 {
			t.Errorf("task %s used %d retries on 429s, want 0", id, info.Retried)
		}
	}

	reqs := b.fake.Requests()
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].At.Before(reqs[j].At) })
	at429 := answered429(reqs)
	if len(at429) != 2 {
		t.Fatalf("%d answers 429, want 2", len(at429))
	}
	for i, at := range at429 {
		coolDown := pause << i // doubles with each 429 of the streak
		delivered := 0
		for _, r := range reqs {
			if r.Status == 204 && r.At.Before(at.Add(slack)) {
				delivered++
			}
			if r.At.After(at.Add(slack)) && r.At.Before(at.Add(coolDown-redisTick)) {
				t.Errorf("request at +%v during the %v cool-down after 429 #%d", r.At.Sub(at).Round(time.Millisecond), coolDown, i+1)
			}
		}
		if delivered >= n {
			t.Errorf("all %d tasks were delivered by the start of cool-down #%d: it held nothing back", n, i+1)
		}
	}
	if got := b.fake.StatusCount(204); got != n {
		t.Errorf("%d deliveries, want %d", got, n)
	}
	var coolDowns, answers429 float64
	for i := range 3 {
		text := b.scrape(t, i)
		v, _ := sum(text, "certmail_ratelimit_cooldowns_total", "account", "default")
		coolDowns += v
		v, _ = sum(text, "certmail_digicert_requests_total", "account", "default", "status", "429")
		answers429 += v
	}
	if coolDowns != 2 || answers429 != 2 {
		t.Errorf("over the three workers: certmail_ratelimit_cooldowns_total = %v, certmail_digicert_requests_total{status=\"429\"} = %v; want 2 and 2",
			coolDowns, answers429)
	}
}

// DigiCert's own 429 is a transient failure, which the contract logs at
// WARN: its wait is one WARN line with http_status 429, though it uses no
// retry. certmail's own waits stay INFO (TestLimiterWaitHandsTaskBackWithoutRetry).
func TestDigiCert429IsLoggedAtWarn(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		fake:      digicerttest.Config{AnyIDExists: true},
		configure: func(c *worker.Config) { c.RateLimitPause = worker.MinRateLimitPause },
	})
	b.fake.FailNext(1, 429, limited, "application/json")
	id := b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	if info := b.waitState(t, id, asynq.TaskStateCompleted, 20*time.Second); info.Retried != 0 {
		t.Errorf("the task used %d retries on a 429, want 0", info.Retried)
	}
	warn := b.logs.Lines("warn", "delivery deferred")
	if len(warn) != 1 || fmt.Sprint(warn[0]["http_status"]) != "429" || warn[0]["error_code"] != "request_limit_exceeded" {
		t.Errorf("WARN lines %v, want one delivery deferred with http_status 429", warn)
	}
	for _, line := range b.logs.Lines("info", "delivery deferred") {
		if fmt.Sprint(line["http_status"]) == "429" {
			t.Errorf("INFO line for DigiCert's 429: %v", line)
		}
	}
}

// A task held back by the cool-down that DigiCert's 429 started says so in
// its last_error, rather than blame certmail's own limiter, and its wait
// is certmail's: INFO, without a retry.
func TestCoolDownWaitNamesDigiCerts429(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		fake:      digicerttest.Config{AnyIDExists: true},
		configure: func(c *worker.Config) { c.RateLimitPause = time.Minute }, // beyond the limiter's 30 s wait
	})
	b.fake.FailNext(1, 429, limited, "application/json")
	first := b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	if info := b.waitState(t, first, asynq.TaskStateRetry, 10*time.Second); !strings.HasPrefix(info.LastErr, "request_limit_exceeded: ") {
		t.Errorf("the task answered 429: last_error %q", info.LastErr)
	}
	second := b.enqueue(t, "resend-dcv", `{"order_id": 2}`)
	info := b.waitState(t, second, asynq.TaskStateRetry, 10*time.Second)
	const reason = "rate_limit_wait: not sent to DigiCert, held back by the account's cool-down after DigiCert answered 429: next request in "
	if !strings.HasPrefix(info.LastErr, reason) || info.Retried != 0 {
		t.Errorf("the task the cool-down held back: last_error %q, retried %d; want %q…, 0", info.LastErr, info.Retried, reason)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1", n)
	}
	lines := b.logs.Lines("info", "delivery deferred")
	if len(lines) != 1 || lines[0]["error_code"] != "rate_limit_wait" || !strings.HasPrefix(fmt.Sprint(lines[0]["error"]), reason) {
		t.Errorf("INFO lines %v, want one for the cool-down's wait", lines)
	}
}

// A long streak of 429s doubles the cool-down no further than the README's
// 5 minutes: the cool-down Redis holds after one more 429 lasts 5 minutes,
// not the 17 hours the doubling alone would give.
func TestCoolDownStopsDoublingAt5Minutes(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	// Ten cool-downs of the streak have come and gone (the key as
	// ratelimit's CoolDown names it): the next is 2^10 × the pause.
	rdb := b.redis.Client()
	if err := rdb.Set(t.Context(), "certmail:ratelimit:{default}:streak", 10, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	b.fake.FailNext(1, 429, limited, "application/json")
	b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.RateLimitPause = time.Minute }})
	var left time.Duration
	waitFor(t, 10*time.Second, func() bool {
		left = rdb.PTTL(t.Context(), "certmail:ratelimit:{default}:cooldown").Val()
		return left > 0
	}, func() string { return "no cool-down after the 429" })
	if left > 5*time.Minute || left < 5*time.Minute-30*time.Second {
		t.Errorf("cool-down of %v after a long streak of 429s, want 5m", left)
	}
}

// The requests in flight when DigiCert starts answering 429 (here: sent
// together, the fake over its window by the second) are all answered 429
// during the cool-down the first of them starts: they start no other and do
// not lengthen it. One cool-down is counted, its streak stays at 1, and
// every task refused comes back when the base pause ends, not after a
// doubled one.
func TestConcurrent429sStartOneCoolDown(t *testing.T) {
	t.Parallel()
	const pause, n = time.Minute, 4 // a pause longer than the test: no task comes back during it
	b := setup(t, setupOpts{
		fake:         digicerttest.Config{AnyIDExists: true, RateLimits: []digicerttest.Window{{Limit: 1, Period: time.Hour}}},
		startWorkers: -1,
	})
	// The fake counts a request after its latency: every request sent
	// within it is answered after the others were admitted by certmail.
	b.fake.SetFaults(digicerttest.Faults{Latency: 500 * time.Millisecond})
	var ids []string
	for k := range n {
		ids = append(ids, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, k+1)))
	}
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.RateLimitPause, c.Concurrency = pause, n }})
	var retry []*asynq.TaskInfo
	waitFor(t, 10*time.Second, func() bool {
		retry = retry[:0]
		done := 0
		for _, id := range ids {
			info, err := b.inspector.GetTaskInfo("default", id)
			if err != nil {
				return false
			}
			switch info.State {
			case asynq.TaskStateRetry:
				retry = append(retry, info)
			case asynq.TaskStateCompleted:
				done++
			}
		}
		return done == 1 && len(retry) == n-1
	}, func() string {
		return fmt.Sprintf("%d of %d tasks waiting, want one delivered and the others waiting", len(retry), n)
	})

	answers429 := b.fake.StatusCount(429)
	if answers429 < 2 {
		t.Fatalf("%d answers 429; want at least 2 (requests in flight together)", answers429)
	}
	text := b.scrape(t, 0)
	if v, _ := sum(text, "certmail_ratelimit_cooldowns_total", "account", "default"); v != 1 {
		t.Errorf("certmail_ratelimit_cooldowns_total = %v after %d 429s in flight together; want 1", v, answers429)
	}
	if v, _ := sum(text, "certmail_digicert_requests_total", "account", "default", "status", "429"); v != float64(answers429) {
		t.Errorf("certmail_digicert_requests_total{status=\"429\"} = %v; want %d", v, answers429)
	}
	rdb := b.redis.Client()
	if s, err := rdb.Get(t.Context(), "certmail:ratelimit:{default}:streak").Int(); err != nil || s != 1 {
		t.Errorf("streak = %d, %v; want 1", s, err)
	}
	if left := rdb.PTTL(t.Context(), "certmail:ratelimit:{default}:cooldown").Val(); left <= 0 || left > pause {
		t.Errorf("cool-down left %v; want at most the %v pause", left, pause)
	}
	for _, info := range retry {
		// The pause and its jitter (at most a quarter more), from no later than now.
		if due := time.Until(info.NextProcessAt); due > pause+pause/4 {
			t.Errorf("task %s comes back in %v; want by the end of the %v cool-down and its jitter", info.ID, due.Round(time.Second), pause)
		}
	}
}

// answered429 returns when the requests answered 429 arrived, in the order given.
func answered429(reqs []digicerttest.Request) []time.Time {
	var at []time.Time
	for _, r := range reqs {
		if r.Status == 429 {
			at = append(at, r.At)
		}
	}
	return at
}

// twoAccounts configures the account "eu" on a fake of its own, besides
// "default".
func twoAccounts(t *testing.T, o setupOpts) (*bundle, *digicerttest.Server) {
	t.Helper()
	const euKey = "eu-key-0123456789"
	euFake, euURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{euKey}, AnyIDExists: true})
	configure := o.configure
	o.configure = func(c *worker.Config) {
		c.Accounts["eu"] = account.Account{Name: "eu", BaseURL: euURL, APIKey: euKey}
		if configure != nil {
			configure(c)
		}
	}
	return setup(t, o), euFake
}

// An account whose key DigiCert rejects is paused; another account's tasks
// are delivered meanwhile, and certmail_account_paused tells them apart.
func TestAccountPauseIsPerAccount(t *testing.T) {
	t.Parallel()
	b, euFake := twoAccounts(t, setupOpts{fake: digicerttest.Config{APIKeys: []string{"another-key"}, AnyIDExists: true}})
	var held []string
	for k := range 3 {
		held = append(held, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, k+1)))
	}
	waitFor(t, 10*time.Second, func() bool {
		v, _ := sum(b.scrape(t, 0), "certmail_account_paused", "account", "default")
		return v == 1
	}, func() string { return "account default not reported paused" })
	var eu []string
	for k := range 5 {
		eu = append(eu, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d, "account": "eu"}`, k+1)))
	}
	for _, id := range eu {
		b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)
	}
	if n := euFake.StatusCount(204); n != 5 {
		t.Errorf("eu fake delivered %d, want 5", n)
	}
	text := b.scrape(t, 0)
	if v, ok := sum(text, "certmail_account_paused", "account", "default"); !ok || v != 1 {
		t.Errorf("certmail_account_paused{account=default} = %v (%t) after eu's deliveries, want 1", v, ok)
	}
	if v, ok := sum(text, "certmail_account_paused", "account", "eu"); !ok || v != 0 {
		t.Errorf("certmail_account_paused{account=eu} = %v (%t), want 0", v, ok)
	}
	for _, id := range held {
		info, err := b.inspector.GetTaskInfo("default", id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived || info.Retried != 0 {
			t.Errorf("task %s of the paused account is %v with %d retries", id, info.State, info.Retried)
		}
	}
	if n := b.fake.StatusCount(204); n != 0 {
		t.Errorf("the paused account's fake delivered %d", n)
	}
}

// A 429 on one account starts a cool-down for that account only: another
// account's tasks are delivered while the first account's task waits.
func TestCoolDownIsPerAccount(t *testing.T) {
	t.Parallel()
	b, euFake := twoAccounts(t, setupOpts{
		fake:      digicerttest.Config{AnyIDExists: true},
		configure: func(c *worker.Config) { c.RateLimitPause = time.Minute },
	})
	euFake.FailNext(1, 429, limited, "application/json")
	euID := b.enqueue(t, "resend-dcv", `{"order_id": 1, "account": "eu"}`)
	b.waitState(t, euID, asynq.TaskStateRetry, 10*time.Second)
	var ids []string
	for k := range 5 {
		ids = append(ids, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, k+1)))
	}
	for _, id := range ids {
		b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)
	}
	if n := euFake.RequestCount(); n != 1 {
		t.Errorf("eu fake saw %d requests during its cool-down, want only the 429", n)
	}
	if info, err := b.inspector.GetTaskInfo("default", euID); err != nil || info.State == asynq.TaskStateCompleted {
		t.Errorf("eu's task after default's deliveries: %v, %v; want it still waiting", info, err)
	}
	v, _ := sum(b.scrape(t, 0), "certmail_ratelimit_cooldowns_total", "account", "eu")
	w, _ := sum(b.scrape(t, 0), "certmail_ratelimit_cooldowns_total", "account", "default")
	if v != 1 || w != 0 {
		t.Errorf("certmail_ratelimit_cooldowns_total: eu %v, default %v; want 1 and 0", v, w)
	}
}

// A delivery that would wait longer than the limiter's 30 s for a slot of
// the shared windows hands its task back to the queue at once, without
// calling DigiCert and without using a retry, due when the slot frees.
func TestLimiterWaitHandsTaskBackWithoutRetry(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{
		fake: digicerttest.Config{AnyIDExists: true},
		configure: func(c *worker.Config) {
			a := c.Accounts["default"]
			a.RateLimits = []ratelimit.Window{{Limit: 1, Period: time.Minute}}
			c.Accounts["default"] = a
		},
	})
	first := b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	b.waitState(t, first, asynq.TaskStateCompleted, 10*time.Second)
	second := b.enqueue(t, "resend-dcv", `{"order_id": 2}`)
	info := b.waitState(t, second, asynq.TaskStateRetry, 10*time.Second)
	if info.Retried != 0 {
		t.Errorf("the waiting task used %d retries, want 0", info.Retried)
	}
	if due := time.Until(info.NextProcessAt); due < 30*time.Second || due > 90*time.Second {
		t.Errorf("the waiting task is due in %v, want when the one-minute window frees its slot", due)
	}
	if n := b.fake.RequestCount(); n != 1 {
		t.Errorf("fake saw %d requests, want 1", n)
	}
	if n := len(b.logs.Lines("warn", "")) + len(b.logs.Lines("error", "")); n != 0 {
		t.Errorf("%d WARN or ERROR lines for a wait, want none", n)
	}
	// The reason says that certmail held the request back, not that
	// DigiCert did not answer: nothing was sent.
	const reason = "rate_limit_wait: not sent to DigiCert, held back by certmail's own rate limiter: next request slot in "
	if !strings.HasPrefix(info.LastErr, reason) {
		t.Errorf("last_error %q, want it to start with %q", info.LastErr, reason)
	}
	lines := b.logs.Lines("info", "delivery deferred")
	if len(lines) != 1 || !strings.HasPrefix(fmt.Sprint(lines[0]["error"]), reason) {
		t.Errorf("INFO lines %v, want one whose reason starts with %q", lines, reason)
	}
}
