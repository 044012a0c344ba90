package queuestats_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/certmailtest"
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
	reg.MustRegister(mustNew(t, queuestats.Config{Redis: rdb, DeadLetterStream: "certmail:deadletter", Served: []string{"critical", "default", "bulk"}}))
	return srv, rdb, reg
}

// mustNew returns the collector of cfg, failing the test when New refuses it.
func mustNew(t *testing.T, cfg queuestats.Config) *queuestats.Collector {
	t.Helper()
	c, err := queuestats.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
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
# HELP certmail_queue_stats_up 1 when the last scrape could read the queues from Redis within its budget.
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
// "other", so that they cannot grow the series without limit, and counted.
func TestUnservedQueuesAreOther(t *testing.T) {
	t.Parallel()
	_, rdb, reg := setup(t)
	client := asynq.NewClientFromRedisClient(rdb)
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.Queue("default")); err != nil {
		t.Fatal(err)
	}
	const made = 50
	for i := range made {
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
			t.Errorf("%s has %d series for %d queues", f.GetName(), n, made+1)
		}
	}
	if got := gauge(t, reg, "certmail_queue_tasks", queuestats.OtherQueues, "pending"); got != made {
		t.Errorf("other queues' pending tasks = %v, want %d", got, made)
	}
	if got := gauge(t, reg, "certmail_queue_other_queues", "", ""); got != made {
		t.Errorf("certmail_queue_other_queues = %v, want %d", got, made)
	}
	if got := gauge(t, reg, "certmail_queue_tasks", "default", "pending"); got != 1 {
		t.Errorf("default's pending tasks = %v, want 1", got)
	}
}

// A served queue named OtherQueues would have the figures of every unserved
// queue added to its own series: New refuses it, as CERTMAIL_QUEUES does. A
// raw producer's queue of that name is an unserved queue like any other,
// summed with them.
func TestServedQueueNamedOtherRefused(t *testing.T) {
	t.Parallel()
	_, err := queuestats.New(queuestats.Config{DeadLetterStream: "certmail:deadletter", Served: []string{"default", queuestats.OtherQueues}})
	if err == nil || !strings.Contains(err.Error(), `queue "other": the name is reserved for the metrics of the queues no process serves`) {
		t.Errorf("New with a served queue %q: %v, want refused", queuestats.OtherQueues, err)
	}

	_, rdb, reg := setup(t) // serves critical, default and bulk
	client := asynq.NewClientFromRedisClient(rdb)
	for _, q := range []string{"default", queuestats.OtherQueues, "raw-a", "raw-b", "raw-c"} {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	if got := gauge(t, reg, "certmail_queue_tasks", queuestats.OtherQueues, "pending"); got != 4 {
		t.Errorf(`certmail_queue_tasks{queue="other",state="pending"} = %v, want 4 (the raw queue "other" and three more, all unserved)`, got)
	}
	if got := gauge(t, reg, "certmail_queue_other_queues", "", ""); got != 4 {
		t.Errorf("certmail_queue_other_queues = %v, want 4", got)
	}
	if got := gauge(t, reg, "certmail_queue_tasks", "default", "pending"); got != 1 {
		t.Errorf("default's pending tasks = %v, want 1", got)
	}
}

// However many queue names asynq knows (a raw producer's typos, one per
// task), a scrape reads the figures of MaxOtherQueues of them at most: its
// Redis work is bounded, and certmail_queue_other_queues still counts them
// all. asynq's Inspector took three round trips and a memory sample per
// queue: 2 000 names took a scrape to about a second.
func TestUnservedQueuesBoundTheWork(t *testing.T) {
	t.Parallel()
	srv, rdb, reg := setup(t)
	ctx := context.Background()
	const names = 2000
	members := make([]any, names)
	for i := range members {
		members[i] = fmt.Sprintf("typo-%d", i)
	}
	if err := rdb.SAdd(ctx, "asynq:queues", members...).Err(); err != nil {
		t.Fatal(err)
	}
	// One pending task id in each: the "other" pending figure then counts
	// the unserved queues a scrape read.
	pipe := rdb.Pipeline()
	for _, q := range members {
		pipe.RPush(ctx, fmt.Sprintf("asynq:{%s}:pending", q), "t")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(rdb)
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`)), asynq.Queue("default")); err != nil {
		t.Fatal(err)
	}
	srv.ResetStats()
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, n := range srv.Commands() {
		total += n
	}
	// One pipeline (SCARD, a SISMEMBER per served queue, SSCAN, XLEN), then
	// one script (EVALSHA, and EVAL the first time; nine commands per queue
	// at most).
	const served = 3
	if most := int64(3 + served + 2 + 9*(served+queuestats.MaxOtherQueues)); total > most {
		t.Errorf("one scrape ran %d Redis commands with %d queue names, want at most %d", total, names, most)
	}
	if got := gauge(t, reg, "certmail_queue_other_queues", "", ""); got != names {
		t.Errorf("certmail_queue_other_queues = %v, want %d", got, names)
	}
	if got := gauge(t, reg, "certmail_queue_tasks", "default", "pending"); got != 1 {
		t.Errorf("default's pending tasks = %v, want 1", got)
	}
	// SSCAN's page holds at least MaxOtherQueues names, "default" among
	// them at most: the scrape reads every other queue it may, no more.
	if got := gauge(t, reg, "certmail_queue_tasks", queuestats.OtherQueues, "pending"); got < queuestats.MaxOtherQueues-1 || got > queuestats.MaxOtherQueues {
		t.Errorf("other queues read = %v, want %d (or one less when the page held default)", got, queuestats.MaxOtherQueues)
	}
}

// The figures are asynq's own, state by state: those its Inspector reports
// of a queue with a task in each state, paused, with a pending task waiting.
func TestFiguresMatchAsynq(t *testing.T) {
	t.Parallel()
	_, rdb, reg := setup(t)
	client := asynq.NewClientFromRedisClient(rdb)
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 3, Queues: map[string]int{"default": 1},
		RetryDelayFunc:  func(int, error, *asynq.Task) time.Duration { return time.Hour },
		ShutdownTimeout: time.Second, LogLevel: asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		switch task.Type() {
		case "fail":
			return errors.New("fails")
		case "hold":
			<-release
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(release)
		srv.Shutdown()
	})
	for _, typ := range []string{"done", "fail", "hold"} {
		if _, err := client.Enqueue(asynq.NewTask(typ, nil), asynq.Retention(time.Hour), asynq.MaxRetry(1)); err != nil {
			t.Fatal(err)
		}
	}
	certmailtest.WaitFor(t, 10*time.Second, func() bool {
		info, err := inspector.GetQueueInfo("default")
		return err == nil && info.Completed == 1 && info.Retry == 1 && info.Active == 1
	}, func() string { return "the tasks did not reach completed, retry and active" })
	if err := inspector.PauseQueue("default"); err != nil {
		t.Fatal(err)
	}
	for _, opt := range []asynq.Option{asynq.ProcessIn(time.Hour), nil, nil} {
		opts := []asynq.Option{asynq.MaxRetry(0)}
		if opt != nil {
			opts = append(opts, opt)
		}
		if _, err := client.Enqueue(asynq.NewTask("archived", nil), opts...); err != nil {
			t.Fatal(err)
		}
	}
	pending, err := inspector.ListPendingTasks("default")
	if err != nil || len(pending) != 2 {
		t.Fatalf("pending tasks %v, %v", pending, err)
	}
	if err := inspector.ArchiveTask("default", pending[0].ID); err != nil {
		t.Fatal(err)
	}
	info, err := inspector.GetQueueInfo("default")
	if err != nil {
		t.Fatal(err)
	}
	for state, want := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
		"retry": info.Retry, "archived": info.Archived, "completed": info.Completed} {
		if want != 1 {
			t.Errorf("asynq reports %d %s tasks; the test wants one of each", want, state)
		}
		if got := gauge(t, reg, "certmail_queue_tasks", "default", state); got != float64(want) {
			t.Errorf("certmail_queue_tasks{queue=default,state=%s} = %v, asynq says %d", state, got, want)
		}
	}
	if got := gauge(t, reg, "certmail_queue_paused", "default", ""); got != 1 || !info.Paused {
		t.Errorf("certmail_queue_paused{queue=default} = %v, asynq says paused %t", got, info.Paused)
	}
	latency := gauge(t, reg, "certmail_queue_latency_seconds", "default", "")
	// Read after asynq's: the same age or a little more.
	if d := latency - info.Latency.Seconds(); info.Latency <= 0 || d < 0 || d > 5 {
		t.Errorf("certmail_queue_latency_seconds{queue=default} = %v, asynq says %v", latency, info.Latency)
	}
}

// The latency is the age of the oldest pending task, the one asynq
// serves next (at the list's tail), as asynq's Inspector reports it: a
// queue that keeps receiving tasks while none is served shows its wait,
// not the age of the task that came last.
func TestLatencyIsTheOldestPendingTasksAge(t *testing.T) {
	t.Parallel()
	_, rdb, reg := setup(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	oldest, err := client.Enqueue(asynq.NewTask("oldest", nil))
	if err != nil {
		t.Fatal(err)
	}
	// Pending for an hour (asynq records the time in the task's hash).
	since := time.Now().Add(-time.Hour).UnixNano()
	if err := rdb.HSet(ctx, "asynq:{default}:t:"+oldest.ID, "pending_since", since).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(asynq.NewTask("newest", nil)); err != nil {
		t.Fatal(err)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("default")
	if err != nil {
		t.Fatal(err)
	}
	if info.Pending != 2 || info.Latency < time.Hour {
		t.Fatalf("asynq reports %d pending tasks, latency %v; the test wants 2, the oldest an hour old", info.Pending, info.Latency)
	}
	// Read after asynq's: the same age or a little more.
	latency := gauge(t, reg, "certmail_queue_latency_seconds", "default", "")
	if d := latency - info.Latency.Seconds(); d < 0 || d > 5 {
		t.Errorf("certmail_queue_latency_seconds{queue=default} = %v, asynq says %v: want the oldest pending task's age", latency, info.Latency)
	}
}

// A Redis that takes commands in and never answers (a partition, a paused
// VM, a failover's dark old master) holds no scrape past the budget, even
// through a client that ignores deadlines and waits 30 s for an answer:
// each scrape reports certmail_queue_stats_up 0 at the budget and the
// process's other series with it, scrapes during the stall, one after the
// other or at once, share one read rather than pile up more, and the read
// ends once Redis answers.
func TestStalledRedisAnswersWithinBudget(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 30 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	const budget = 300 * time.Millisecond
	reg := prometheus.NewPedanticRegistry()
	own := prometheus.NewCounter(prometheus.CounterOpts{Name: "certmail_own_total", Help: "A series of the process."})
	c := mustNew(t, queuestats.Config{Redis: rdb, DeadLetterStream: "certmail:deadletter",
		Served: []string{"default"}, Budget: budget})
	reg.MustRegister(own, c)
	readers := func() int { return readers(c) }
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	scrape := func() error {
		done := make(chan error, 1)
		go func() {
			done <- testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP certmail_own_total A series of the process.
# TYPE certmail_own_total counter
certmail_own_total 0
# HELP certmail_queue_stats_up 1 when the last scrape could read the queues from Redis within its budget.
# TYPE certmail_queue_stats_up gauge
certmail_queue_stats_up 0
`))
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(budget + time.Second):
			return fmt.Errorf("no answer within %v of a %v budget", budget+time.Second, budget)
		}
	}
	for i := range 5 {
		if err := scrape(); err != nil {
			t.Fatalf("scrape %d during the stall: %v", i+1, err)
		}
		if n := readers(); n > 1 {
			t.Fatalf("%d reads running after %d scrapes, want 1 at most", n, i+1)
		}
	}
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() { errs <- scrape() }()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent scrape during the stall: %v", err)
		}
	}
	if n := readers(); n > 1 {
		t.Fatalf("%d reads running after concurrent scrapes, want 1 at most", n)
	}
	srv.Continue()
	certmailtest.WaitFor(t, 10*time.Second, func() bool { return readers() == 0 },
		func() string { return "the read still runs after Redis answered again" })
	certmailtest.WaitFor(t, 10*time.Second, func() bool { return gauge(t, reg, "certmail_queue_stats_up", "", "") == 1 },
		func() string { return "certmail_queue_stats_up stays 0 after Redis answered again" })
}

// readers counts the goroutines reading queue figures for c.
func readers(c *queuestats.Collector) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), fmt.Sprintf("queuestats.(*Collector).run(%p", c))
}

func TestCollectRedisDown(t *testing.T) {
	t.Parallel()
	srv, _, reg := setup(t)
	srv.Kill()
	want := `
# HELP certmail_queue_stats_up 1 when the last scrape could read the queues from Redis within its budget.
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

// A dead-letter stream Redis refuses to read (its key of another type, on
// a Redis shared with another program, or an ACL that denies XLEN) leaves
// out the stream's gauge alone: the queues are reported and
// certmail_queue_stats_up is 1. One WARN line names the key and what to
// do, however many scrapes follow; once the stream is read again its gauge
// is back, and a later refusal is logged again.
func TestStreamRefusedLeavesOutItsGaugeAlone(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, reply, advice string
		refuse, allow       func(ctx context.Context, admin *redis.Client) error
	}{
		{"wrongtype", "WRONGTYPE", "another type",
			func(ctx context.Context, admin *redis.Client) error {
				return admin.Set(ctx, "certmail:deadletter", "another program's", 0).Err()
			},
			func(ctx context.Context, admin *redis.Client) error {
				return admin.Del(ctx, "certmail:deadletter").Err()
			}},
		{"noperm", "NOPERM", "An ACL user for certmail",
			func(ctx context.Context, admin *redis.Client) error {
				return admin.Do(ctx, "ACL", "SETUSER", "certmail", "-xlen").Err()
			},
			func(ctx context.Context, admin *redis.Client) error {
				return admin.Do(ctx, "ACL", "SETUSER", "certmail", "+xlen").Err()
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv := redistest.Start(t)
			admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { admin.Close() })
			if err := admin.Do(ctx, "ACL", "SETUSER", "certmail", "on", ">pw", "~*", "&*", "+@all").Err(); err != nil {
				t.Fatal(err)
			}
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "certmail", Password: "pw", MaxRetries: -1})
			t.Cleanup(func() { rdb.Close() })
			log, logs := certmailtest.NewLogger(t)
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(mustNew(t, queuestats.Config{Redis: rdb, DeadLetterStream: "certmail:deadletter",
				Served: []string{"default"}, Logger: log}))
			if _, err := asynq.NewClientFromRedisClient(admin).Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":1}`))); err != nil {
				t.Fatal(err)
			}
			if err := c.refuse(ctx, admin); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				scrapeWithoutStream(t, reg)
			}
			warns := logs.Lines("warn", "")
			if len(warns) != 1 {
				t.Fatalf("%d WARN lines after three scrapes, want 1: %v", len(warns), warns)
			}
			if warns[0]["key"] != "certmail:deadletter" || !strings.HasPrefix(fmt.Sprint(warns[0]["error"]), c.reply) ||
				!strings.Contains(fmt.Sprint(warns[0]["advice"]), c.advice) {
				t.Errorf("WARN line %v: want the key, Redis's %s and advice with %q", warns[0], c.reply, c.advice)
			}
			if err := c.allow(ctx, admin); err != nil {
				t.Fatal(err)
			}
			if got := seriesCount(t, reg, "certmail_deadletter_stream_length"); got != 1 {
				t.Errorf("%d certmail_deadletter_stream_length series once the stream reads, want 1", got)
			}
			if err := c.refuse(ctx, admin); err != nil {
				t.Fatal(err)
			}
			scrapeWithoutStream(t, reg)
			if n := len(logs.Lines("warn", "")); n != 2 {
				t.Errorf("%d WARN lines after the stream was refused again, want 2", n)
			}
		})
	}
}

// scrapeWithoutStream gathers reg and checks that the queues are reported
// without the stream's length.
func scrapeWithoutStream(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	if got := gauge(t, reg, "certmail_queue_tasks", "default", "pending"); got != 1 {
		t.Errorf("certmail_queue_tasks{queue=default,state=pending} = %v, want 1", got)
	}
	if got := seriesCount(t, reg, "certmail_queue_stats_up"); got != 1 {
		t.Fatalf("%d certmail_queue_stats_up series", got)
	}
	if up := gauge(t, reg, "certmail_queue_stats_up", "", ""); up != 1 {
		t.Errorf("certmail_queue_stats_up %v, want 1: the queues were read", up)
	}
	if got := seriesCount(t, reg, "certmail_deadletter_stream_length"); got != 0 {
		t.Errorf("%d certmail_deadletter_stream_length series while Redis refuses the stream, want none", got)
	}
}

// seriesCount is how many series of metric name reg gathers.
func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	n, err := testutil.GatherAndCount(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
