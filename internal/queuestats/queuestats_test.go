package queuestats_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/queuestats"
	"github.com/certmail/certmail/internal/redistest"
)

// setup starts Redis and returns a client on it and a registry with the collector.
func setup(t *testing.T) (*redistest.Server, redis.UniversalClient, *prometheus.Registry) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(queuestats.New(rdb, "certmail:deadletter", []string{"critical", "default", "bulk"}))
	return srv, rdb, reg
}

func TestCollect(t *testing.T) {
	t.Parallel()
	_, rdb, reg := setup(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	for _, opts := range [][]asynq.Option{
		{asynq.Queue("default")},
		{asynq.Queue("default")},
		{asynq.Queue("bulk"), asynq.ProcessIn(time.Hour)},
	} {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), opts...); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "certmail:deadletter", Values: []string{"task_id", "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	if err := inspector.PauseQueue("bulk"); err != nil {
		t.Fatal(err)
	}

	want := `
# HELP certmail_deadletter_stream_length Entries in the dead-letter stream certmail:deadletter.
# TYPE certmail_deadletter_stream_length gauge
certmail_deadletter_stream_length 3
# HELP certmail_queue_paused 1 when the queue is paused (from the dashboard or the inspector).
# TYPE certmail_queue_paused gauge
certmail_queue_paused{queue="bulk"} 1
certmail_queue_paused{queue="default"} 0
# HELP certmail_queue_stats_up 1 when the last scrape could read the queues from Redis.
# TYPE certmail_queue_stats_up gauge
certmail_queue_stats_up 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"certmail_deadletter_stream_length", "certmail_queue_paused", "certmail_queue_stats_up"); err != nil {
		t.Error(err)
	}
	for _, c := range []struct {
		queue, state string
		want         float64
	}{
		{"default", "pending", 2}, {"default", "scheduled", 0}, {"bulk", "scheduled", 1}, {"bulk", "pending", 0},
	} {
		if got := gauge(t, reg, "certmail_queue_tasks", c.queue, c.state); got != c.want {
			t.Errorf("certmail_queue_tasks{queue=%q,state=%q} = %v, want %v", c.queue, c.state, got, c.want)
		}
	}
	if got := gauge(t, reg, "certmail_queue_latency_seconds", "default", ""); got < 0 || got > 60 {
		t.Errorf("latency of default = %v, want a small age", got)
	}
}

// Queues nobody serves (a producer can create any) are counted under
// "other", so that they cannot grow the series without limit.
func TestUnservedQueuesAreOther(t *testing.T) {
	t.Parallel()
	_, rdb, reg := setup(t)
	client := asynq.NewClientFromRedisClient(rdb)
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.Queue("default")); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.Queue(fmt.Sprintf("made-up-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if n := len(f.GetMetric()); strings.HasPrefix(f.GetName(), "certmail_queue_") && n > 2*6 {
			t.Errorf("%s has %d series for 201 queues", f.GetName(), n)
		}
	}
	if got := gauge(t, reg, "certmail_queue_tasks", queuestats.OtherQueues, "pending"); got != 200 {
		t.Errorf("other queues' pending tasks = %v, want 200", got)
	}
	if got := gauge(t, reg, "certmail_queue_tasks", "default", "pending"); got != 1 {
		t.Errorf("default's pending tasks = %v, want 1", got)
	}
}

func TestCollectRedisDown(t *testing.T) {
	t.Parallel()
	srv, _, reg := setup(t)
	srv.Kill()
	want := `
# HELP certmail_queue_stats_up 1 when the last scrape could read the queues from Redis.
# TYPE certmail_queue_stats_up gauge
certmail_queue_stats_up 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "certmail_queue_stats_up"); err != nil {
		t.Error(err)
	}
}

// gauge returns the value of metric name with labels queue (and state when not empty).
func gauge(t *testing.T, reg *prometheus.Registry, name, queue, state string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["queue"] == queue && labels["state"] == state {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("%s{queue=%q,state=%q} not exported", name, queue, state)
	return 0
}
