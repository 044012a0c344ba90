package main_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// e2eLease is the schedulers' leader lease: the default, so that a renewal
// held up on a loaded machine does not hand the lease over before the test
// kills the leader.
const e2eLease = "5s"

// scheduler starts `certmail scheduler` with the schedules file, as the
// README shows.
func (e *e2e) scheduler(t *testing.T, name, file string) *proc {
	t.Helper()
	p := start(t, name, []string{
		"REDIS_URL=" + e.redis.URL(),
		"CERTMAIL_SCHEDULES_FILE=" + file,
		"CERTMAIL_ADMIN_ADDR=127.0.0.1:0",
		"CERTMAIL_SCHEDULER_LEASE=" + e2eLease,
		"CERTMAIL_SCHEDULE_MIN_INTERVAL=1s", // the schedule fires every second
		"CERTMAIL_QUEUES=bulk=1",            // as the worker's
	}, "scheduler")
	if got := p.waitLog("scheduler started", 20*time.Second)["redis"]; got != e.redis.URL() {
		t.Errorf("%s started on redis %v, want %s", name, got, e.redis.URL())
	}
	return p
}

// leads reports whether scheduler p leads now, as its metric
// certmail_scheduler_is_leader says on its admin address (its log keeps
// every leadership it ever took).
func leads(t *testing.T, p *proc) bool {
	t.Helper()
	addr, _ := p.waitLog("scheduler started", time.Second)["admin_addr"].(string)
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s metrics: %v", p.name, err)
	}
	for line := range strings.Lines(string(body)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "certmail_scheduler_is_leader" {
			return f[1] == "1"
		}
	}
	t.Fatalf("%s metrics lack certmail_scheduler_is_leader:\n%s", p.name, body)
	return false
}

// whoLeads waits until exactly one of the schedulers leads and returns it
// and the other.
func whoLeads(t *testing.T, a, b *proc) (leader, other *proc) {
	t.Helper()
	waitFor(t, 15*time.Second, func() bool {
		switch la, lb := leads(t, a), leads(t, b); {
		case la && !lb:
			leader, other = a, b
		case lb && !la:
			leader, other = b, a
		default:
			return false
		}
		return true
	}, func() string { return "exactly one scheduler leads" })
	return leader, other
}

// TestTwoSchedulersSurviveSIGKILL: two scheduler processes and a worker;
// the leader is killed with SIGKILL; every tick gives exactly one DigiCert
// call at the fake, before and after the takeover.
func TestTwoSchedulersSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	e := setupE2E(t, digicerttest.Config{AnyIDExists: true})
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(file, []byte(`schedules:
  - id: dcv-order-1002
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1002, locale: en}
    until_validated: false
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e.worker(t, "worker", "CERTMAIL_QUEUES=bulk=1")
	a := e.scheduler(t, "scheduler-a", file)
	b := e.scheduler(t, "scheduler-b", file)

	sends := func() int { return len(e.fake.DCVSends(1002)) }
	waitFor(t, 30*time.Second, func() bool { return sends() >= 10 }, func() string { return strconv.Itoa(sends()) + " DCV sends" })

	leader, other := whoLeads(t, a, b)
	killed := time.Now()
	if err := leader.stop(syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("the SIGKILLed scheduler exited cleanly")
	}
	waitFor(t, 20*time.Second, func() bool { return leads(t, other) }, func() string { return other.name + " does not take over" })
	t.Logf("takeover after SIGKILL of the leader: %v (lease %s)", time.Since(killed).Round(10*time.Millisecond), e2eLease)
	n := sends()
	waitFor(t, 30*time.Second, func() bool { return sends() >= n+5 }, func() string { return strconv.Itoa(sends()) + " DCV sends" })

	// One task per tick: the ids are consecutive seconds, with no double.
	ticks := schedTicks(t, e, "dcv-order-1002")
	for i := 1; i < len(ticks); i++ {
		if ticks[i] == ticks[i-1] {
			t.Fatalf("tick %d enqueued twice", ticks[i])
		}
		if ticks[i] != ticks[i-1]+1 {
			t.Errorf("ticks %d..%d missing around the takeover", ticks[i-1]+1, ticks[i]-1)
		}
	}
	// One DigiCert call per delivered tick.
	waitFor(t, 20*time.Second, func() bool { return sends() == len(schedTicks(t, e, "dcv-order-1002")) }, func() string {
		return strconv.Itoa(sends()) + " sends for " + strconv.Itoa(len(schedTicks(t, e, "dcv-order-1002"))) + " ticks"
	})
}

// schedTicks lists the ticks of a schedule's tasks in Redis (any state).
func schedTicks(t *testing.T, e *e2e, id string) []int64 {
	t.Helper()
	keys, err := e.redis.Client().Keys(t.Context(), "asynq:{bulk}:t:sched:"+id+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var ticks []int64
	for _, k := range keys {
		n, err := strconv.ParseInt(k[strings.LastIndex(k, ":")+1:], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		ticks = append(ticks, n)
	}
	sort.Slice(ticks, func(i, j int) bool { return ticks[i] < ticks[j] })
	return ticks
}

// TestSchedulesEndWhenOrdersAreValidated: two scheduler processes (the
// leader SIGKILLed after the first reminders) and a worker; a DV and an OV
// order each get a resend-dcv schedule every second, their defaults
// (until_validated) untouched. The fake approves a domain once three
// reminders reached it. Each order gets exactly three reminders, the tick
// after its approval ends its schedule with one log line, and DigiCert is
// not called again over later tick times.
func TestSchedulesEndWhenOrdersAreValidated(t *testing.T) {
	t.Parallel()
	e := setupE2E(t, digicerttest.Config{ApproveAfter: 3})
	e.fake.SetOrder(digicerttest.Order{ID: 5001, Domains: []digicerttest.Domain{{ID: 51, NameScope: "dv.example.com"}}})
	e.fake.SetOrder(digicerttest.Order{ID: 5002, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{
		{ID: 61, NameScope: "example.com"}, {ID: 62, NameScope: "example.org"}, {ID: 63, NameScope: "example.net", Method: "dns-txt-token", Status: "approved"}}})
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(file, []byte(`schedules:
  - id: remind-dv
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 5001, locale: en}
  - id: remind-ov
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 5002, domain_approval_emails: [{domain: example.org, email: admin@example.org}]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e.worker(t, "worker", "CERTMAIL_QUEUES=bulk=1")
	a := e.scheduler(t, "scheduler-a", file)
	b := e.scheduler(t, "scheduler-b", file)

	sends := func() string {
		return fmt.Sprintf("DV order %d, domains %d and %d", len(e.fake.DCVSends(5001)), len(e.fake.DomainDCVSends(61)), len(e.fake.DomainDCVSends(62)))
	}
	waitFor(t, 30*time.Second, func() bool { return len(e.fake.DCVSends(5001)) >= 1 && len(e.fake.DomainDCVSends(61)) >= 1 }, sends)
	leader, other := whoLeads(t, a, b)
	if err := leader.stop(syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("the SIGKILLed scheduler exited cleanly")
	}
	waitFor(t, 20*time.Second, func() bool { return leads(t, other) }, func() string { return other.name + " does not take over" })

	state := func(id string) map[string]string {
		s, err := e.redis.Client().HGetAll(t.Context(), "certmail:schedule:"+id).Result()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, id := range []string{"remind-dv", "remind-ov"} {
		waitFor(t, 60*time.Second, func() bool { return state(id)["ended"] == "1" }, func() string { return id + " not ended; " + sends() })
		if s := state(id); s["ended_reason"] != "validated" || s["order_status"] != "issued" {
			t.Errorf("%s state %v, want ended as validated, order issued", id, s)
		}
	}
	if got := sends(); got != "DV order 3, domains 3 and 3" {
		t.Errorf("reminders: %s; want 3 each", got)
	}
	for _, r := range e.fake.DomainDCVSends(62) {
		if len(r.EmailArray) != 1 || r.EmailArray[0] != "admin@example.org" || r.NameScope != "example.org" {
			t.Errorf("domain 62 resend %+v, want its approval address and name scope", r)
		}
	}
	// The scheduler logs the end after Redis has it: wait for the lines.
	ended := func() int {
		return other.count("info", "schedule ended: the order no longer waits for validation by email") +
			leader.count("info", "schedule ended: the order no longer waits for validation by email")
	}
	waitFor(t, 10*time.Second, func() bool { return ended() >= 2 },
		func() string { return fmt.Sprintf("%d end log lines, want one per schedule", ended()) })
	if n := ended(); n != 2 {
		t.Errorf("%d end log lines, want one per schedule", n)
	}

	// Later tick times pass: no tick, no DigiCert call.
	calls, ticks := e.fake.RequestCount(), len(schedTicks(t, e, "remind-dv"))+len(schedTicks(t, e, "remind-ov"))
	time.Sleep(3 * time.Second)
	if got := e.fake.RequestCount(); got != calls {
		t.Errorf("DigiCert called %d more times after the schedules ended", got-calls)
	}
	if got := len(schedTicks(t, e, "remind-dv")) + len(schedTicks(t, e, "remind-ov")); got != ticks {
		t.Errorf("%d more ticks after the schedules ended", got-ticks)
	}
}

// TestScheduleOutlivesUnusableValidationAnswers: the first validation reads
// of an until_validated schedule's order are answered 200 with {} (no
// order_status), as a proxy might during maintenance. The schedule is not
// ended by them: the read is retried, the order reminded, and the schedule
// ends only once the fake approved the order, with its real status.
func TestScheduleOutlivesUnusableValidationAnswers(t *testing.T) {
	t.Parallel()
	e := setupE2E(t, digicerttest.Config{ApproveAfter: 2})
	e.fake.SetOrder(digicerttest.Order{ID: 5101, Domains: []digicerttest.Domain{{ID: 71, NameScope: "dv.example.com"}}})
	e.fake.FailPath("/services/v2/order/certificate/5101/validation", 3, 200, `{}`, "application/json") // fewer than a read's attempts
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	if err := os.WriteFile(file, []byte(`schedules:
  - id: remind-5101
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 5101, locale: en}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e.worker(t, "worker", "CERTMAIL_QUEUES=bulk=1")
	e.scheduler(t, "scheduler", file)

	state := func() map[string]string {
		s, err := e.redis.Client().HGetAll(t.Context(), "certmail:schedule:remind-5101").Result()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitFor(t, 60*time.Second, func() bool { return state()["ended"] == "1" }, func() string {
		return fmt.Sprintf("not ended; %d reminders, state %v", len(e.fake.DCVSends(5101)), state())
	})
	if s, n := state(), len(e.fake.DCVSends(5101)); s["ended_reason"] != "validated" || s["order_status"] != "issued" || n != 2 {
		t.Errorf("state %v after %d reminders; want ended as validated, order issued, after 2", s, n)
	}
}
