package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/queuestats"
	"github.com/certmail/certmail/internal/worker"
)

// The queue series a worker serves follow the queue, as the queue-latency
// alert and the dashboard read them: tasks waiting in a paused queue make
// its latency grow and are counted pending, the pause is reported, and once
// the queue is resumed and drained the latency and the pending count fall
// to 0.
func TestQueueMetricsFollowTheQueue(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	// A queue exists in Redis once a task was enqueued to it: a task due in
	// an hour creates it, then it is paused before the two tasks to count.
	if _, err := b.client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": 3}`)), asynq.Queue("bulk"), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := b.inspector.PauseQueue("bulk"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for k := range 2 {
		info, err := b.client.Enqueue(asynq.NewTask("resend-dcv", fmt.Appendf(nil, `{"order_id": %d}`, k+1)), asynq.Queue("bulk"), asynq.Retention(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	series := func(name string, labels ...string) float64 {
		t.Helper()
		v, ok := sum(b.scrape(t, 0), name, labels...)
		if !ok {
			t.Fatalf("/metrics has no %s%v", name, labels)
		}
		return v
	}
	waitFor(t, 15*time.Second, func() bool { return series("certmail_queue_latency_seconds", "queue", "bulk") >= 1 },
		func() string { return "the latency of the paused queue did not grow" })
	if v := series("certmail_queue_tasks", "queue", "bulk", "state", "pending"); v != 2 {
		t.Errorf("certmail_queue_tasks{queue=bulk,state=pending} = %v, want 2", v)
	}
	if v := series("certmail_queue_paused", "queue", "bulk"); v != 1 {
		t.Errorf("certmail_queue_paused{queue=bulk} = %v while paused, want 1", v)
	}
	if v := series("certmail_queue_stats_up"); v != 1 {
		t.Errorf("certmail_queue_stats_up = %v, want 1", v)
	}
	if b.fake.RequestCount() != 0 {
		t.Fatal("a task of the paused queue was delivered")
	}
	if err := b.inspector.UnpauseQueue("bulk"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, func() bool {
		for _, id := range ids {
			if info, err := b.inspector.GetTaskInfo("bulk", id); err != nil || info.State != asynq.TaskStateCompleted {
				return false
			}
		}
		return true
	}, func() string { return "queue bulk not drained" })
	if v := series("certmail_queue_latency_seconds", "queue", "bulk"); v != 0 {
		t.Errorf("certmail_queue_latency_seconds{queue=bulk} = %v once drained, want 0", v)
	}
	if v := series("certmail_queue_tasks", "queue", "bulk", "state", "completed"); v != 2 {
		t.Errorf("certmail_queue_tasks{queue=bulk,state=completed} = %v, want 2", v)
	}
	if v := series("certmail_queue_paused", "queue", "bulk"); v != 0 {
		t.Errorf("certmail_queue_paused{queue=bulk} = %v after the unpause, want 0", v)
	}
}

// certmail_queue_stats_up, which the queue-stats alert reads, falls to 0
// while Redis does not answer and comes back with it; the rest of the
// scrape still works meanwhile.
func TestQueueStatsUpFollowsRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	up := func() float64 {
		t.Helper()
		v, ok := sum(b.scrape(t, 0), "certmail_queue_stats_up")
		if !ok {
			t.Fatal("/metrics has no certmail_queue_stats_up")
		}
		return v
	}
	if v := up(); v != 1 {
		t.Fatalf("certmail_queue_stats_up = %v with Redis up, want 1", v)
	}
	b.redis.Stop()
	if v := up(); v != 0 {
		t.Errorf("certmail_queue_stats_up = %v with Redis stopped, want 0", v)
	}
	b.redis.Relaunch()
	waitFor(t, 15*time.Second, func() bool { return up() == 1 }, func() string { return "certmail_queue_stats_up stays 0 after Redis came back" })
}

// A Redis that takes commands in and never answers (a partition, a paused
// VM, a failover's dark old master) does not hold /metrics past the queue
// figures' budget, well under Prometheus's 10 s scrape timeout: the answer
// has certmail_queue_stats_up 0, which CertmailQueueStatsDown reads, and
// the worker's own series. It took 10 to 15 s: the scrape failed, every
// worker series went stale, and CertmailWorkersAbsent fired instead.
func TestStalledRedisMetricsAnswerInTime(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	if v, _ := sum(b.scrape(t, 0), "certmail_queue_stats_up"); v != 1 {
		t.Fatalf("certmail_queue_stats_up = %v with Redis up, want 1", v)
	}
	b.redis.Pause()
	start := time.Now()
	text := b.scrape(t, 0)
	if took := time.Since(start); took > queuestats.DefaultBudget+1500*time.Millisecond {
		t.Errorf("/metrics with Redis stalled took %v, want %v at most", took, queuestats.DefaultBudget)
	}
	if v, ok := sum(text, "certmail_queue_stats_up"); !ok || v != 0 {
		t.Errorf("certmail_queue_stats_up = %v (exposed: %t) with Redis stalled, want 0", v, ok)
	}
	if _, ok := sum(text, "certmail_digicert_requests_total", "status", "429"); !ok {
		t.Error("/metrics with Redis stalled lacks the worker's own series (certmail_digicert_requests_total)")
	}
}

// A delivery moves the series the dashboard draws: in flight while DigiCert
// takes its time, then counted by outcome, with its duration and the
// DigiCert request's latency observed.
func TestDeliveryMetricsMove(t *testing.T) {
	t.Parallel()
	const latency = 2 * time.Second // long enough to scrape while the call is in flight
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true},
		configure: func(c *worker.Config) { c.Client.Timeout = 4 * latency }})
	b.fake.SetFaults(digicerttest.Faults{Latency: latency})
	id := b.enqueue(t, "send-cert", `{"certificate_id": 5, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	waitFor(t, 10*time.Second, func() bool { return b.fake.RequestCount() == 1 }, func() string { return "no call" })
	if v, _ := sum(b.scrape(t, 0), "certmail_tasks_in_flight", "type", "send-cert"); v != 1 {
		t.Errorf("certmail_tasks_in_flight{type=send-cert} = %v during the call, want 1", v)
	}
	b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)
	text := b.scrape(t, 0)
	for _, m := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		what   string
	}{
		{"certmail_tasks_in_flight", []string{"type", "send-cert"}, func(v float64) bool { return v == 0 }, "0"},
		{"certmail_tasks_total", []string{"type", "send-cert", "outcome", "delivered"}, func(v float64) bool { return v == 1 }, "1"},
		{"certmail_task_duration_seconds_count", []string{"type", "send-cert"}, func(v float64) bool { return v == 1 }, "1"},
		{"certmail_task_duration_seconds_sum", []string{"type", "send-cert"}, func(v float64) bool { return v >= latency.Seconds() }, "the latency or more"},
		{"certmail_digicert_requests_total", []string{"account", "default", "status", "204"}, func(v float64) bool { return v == 1 }, "1"},
		{"certmail_digicert_request_duration_seconds_count", []string{"account", "default"}, func(v float64) bool { return v == 1 }, "1"},
		{"certmail_digicert_request_duration_seconds_sum", []string{"account", "default"}, func(v float64) bool { return v >= latency.Seconds() }, "the latency or more"},
	} {
		if v, ok := sum(text, m.name, m.labels...); !ok || !m.want(v) {
			t.Errorf("%s%v = %v (exposed: %t), want %s", m.name, m.labels, v, ok, m.what)
		}
	}
}

// The series the 429 alert reads exist at 0 from the start, for each
// configured account and each DigiCert endpoint: a counter series created by
// its first 429, at 1, has no increase, and CertmailDigiCert429 would miss
// the single 429 the shared cool-down usually leaves. No other status is
// created ahead.
func TestRateLimitSeriesExistFromStart(t *testing.T) {
	t.Parallel()
	b, _ := twoAccounts(t, setupOpts{})
	text := b.scrape(t, 0)
	for _, a := range []string{"default", "eu"} {
		for _, e := range digicert.Endpoints() {
			if v, ok := sum(text, "certmail_digicert_requests_total", "account", a, "endpoint", e, "status", "429"); !ok || v != 0 {
				t.Errorf(`certmail_digicert_requests_total{account=%q,endpoint=%q,status="429"} = %v (exposed: %t), want 0`, a, e, v, ok)
			}
		}
		if v, ok := sum(text, "certmail_ratelimit_cooldowns_total", "account", a); !ok || v != 0 {
			t.Errorf("certmail_ratelimit_cooldowns_total{account=%q} = %v (exposed: %t), want 0", a, v, ok)
		}
	}
	if v, ok := sum(text, "certmail_digicert_requests_total"); !ok || v != 0 {
		t.Errorf("certmail_digicert_requests_total sums to %v before any request, want 0", v)
	}
	if strings.Contains(text, `status="204"`) {
		t.Error("a series of another status exists before any request")
	}
}
