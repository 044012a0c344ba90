package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/tasks"
)

// pickupRate is the enqueue rate of the pickup-latency runs, tasks/s.
const pickupRate = 200

// pickupLatency measures, at 200 tasks/s into "default" of the default
// three queues, the time from enqueue to the DigiCert call: `certmail
// worker` with default settings (its poll interval -task-check-interval
// when given, rate-limit windows that never bind), and the plain
// handler on asynq's default poll interval and, when the worker's differs,
// on the worker's. Before each run, the idle process's Redis commands per
// second.
func pickupLatency(ctx context.Context, r *redisServer, o options) ([]figure, error) {
	rc := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rc.Close()
	arrivals := &arrivalLog{first: map[int64]time.Time{}}
	fake, err := startFake(digicerttest.Config{}, arrivals.wrap)
	if err != nil {
		return nil, err
	}
	defer fake.stop()
	interval, known, err := workerTaskCheckInterval(o.binary)
	if err != nil {
		return nil, err
	}
	worker := program{kind: "worker", queues: defaultQueues}
	switch {
	case known && o.taskCheckInterval > 0:
		interval = o.taskCheckInterval
		worker.env = []string{"CERTMAIL_TASK_CHECK_INTERVAL=" + interval.String()}
		fmt.Printf("  certmail worker polls every %v (-task-check-interval)\n", interval)
	case known:
		fmt.Printf("  certmail worker polls every %v by default (CERTMAIL_TASK_CHECK_INTERVAL)\n", interval)
	case o.taskCheckInterval > 0:
		return nil, errors.New("-task-check-interval: this certmail worker has no CERTMAIL_TASK_CHECK_INTERVAL")
	default:
		fmt.Println("  certmail worker has no CERTMAIL_TASK_CHECK_INTERVAL: it polls on asynq's default")
	}
	runs := []struct {
		name string
		prog program
	}{
		{"", worker},
		{"_plain_asynq_default", program{kind: "plain", queues: defaultQueues}},
	}
	if known && interval != time.Second { // asynq's default
		runs = append(runs, struct {
			name string
			prog program
		}{"_plain_same_interval", program{kind: "plain", queues: defaultQueues, taskCheckInterval: interval}})
	}
	var figures []figure
	for i, run := range runs {
		idle, lat, err := latencyRound(ctx, o, r, rc, fake, arrivals, run.prog, int64(i+1)*1_000_000)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", run.prog, run.name, err)
		}
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		label := run.prog.kind
		if run.name != "" {
			label = strings.TrimPrefix(run.name, "_")
		}
		fmt.Printf("  %s: idle %.1f Redis commands/s; pickup of %d tasks at %d/s: p50 %v, p99 %v, max %v\n", label,
			idle, len(lat), pickupRate, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), lat[len(lat)-1].Round(time.Millisecond))
		p99f := figure{name: "pickup" + run.name + "_p99_ms", value: ms(p99)}
		if run.name == "" {
			p99f = target(p99f.name, p99f.value, atMost, 150)
		}
		figures = append(figures, figure{name: "pickup" + run.name + "_p50_ms", value: ms(p50)}, p99f,
			figure{name: "idle_redis_commands_per_s" + strings.TrimSuffix(run.name, "_asynq_default"), value: round(idle, 1)})
	}
	return figures, nil
}

// latencyRound starts prog, counts the idle process's commands, then
// enqueues pickupRate tasks a second (orders from first) and returns the
// enqueue-to-call latencies, sorted.
func latencyRound(ctx context.Context, o options, r *redisServer, rc *redis.Client, fake *fakeCertCentral, arrivals *arrivalLog,
	prog program, first int64) (idle float64, lat []time.Duration, err error) {
	if err := flush(ctx, rc); err != nil {
		return 0, nil, err
	}
	p, err := prog.start(ctx, o, r, fake.baseURL)
	if err != nil {
		return 0, nil, err
	}
	defer func() { err = errors.Join(err, p.stop()) }()
	if err := waitRegistered(ctx, rc, p); err != nil {
		return 0, nil, err
	}
	if idle, err = idleCommands(ctx, r, time.Duration(o.idleSeconds)*time.Second); err != nil {
		return 0, nil, err
	}
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: r.addr})
	defer client.Close()
	n := o.latencySeconds * pickupRate
	enqueued := make(map[int64]time.Time, n)
	tick := time.NewTicker(time.Second / pickupRate)
	defer tick.Stop()
	for i := range int64(n) {
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-tick.C:
		}
		t, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: first + i}, asynq.Queue("default"))
		if err != nil {
			return 0, nil, err
		}
		enqueued[first+i] = time.Now()
		if _, err := client.EnqueueContext(ctx, t); err != nil {
			return 0, nil, err
		}
	}
	err = waitFor(ctx, p, 30*time.Second, "every task's DigiCert call", func() (bool, error) {
		return arrivals.count(first, first+int64(n)) == n, nil
	})
	if err != nil {
		return 0, nil, err
	}
	for id, at := range enqueued {
		lat = append(lat, arrivals.at(id).Sub(at))
	}
	slices.Sort(lat)
	return idle, lat, nil
}

// idleCommands is the commands per second clients send to Redis over span
// (after a 2 s settle), by MONITOR; it prints them by command and key.
func idleCommands(ctx context.Context, r *redisServer, span time.Duration) (float64, error) {
	mon, err := startMonitor(r.addr, "")
	if err != nil {
		return 0, err
	}
	defer mon.close()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(2 * time.Second):
	}
	mon.counting.Store(true)
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(span):
	}
	mon.counting.Store(false)
	labels, total, _, _ := mon.counts()
	for _, l := range breakdown(labels, 1) {
		fmt.Printf("      idle %5.2f/s  %s\n", l.perTask/span.Seconds(), l.label)
	}
	return total / span.Seconds(), nil
}

// arrivalLog stamps the first DigiCert call for each order.
type arrivalLog struct {
	mu    sync.Mutex
	first map[int64]time.Time
}

var orderPath = regexp.MustCompile(`/order/certificate/([0-9]+)/`)

func (a *arrivalLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		now := time.Now()
		if m := orderPath.FindStringSubmatch(req.URL.Path); m != nil {
			if id, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				a.mu.Lock()
				if _, seen := a.first[id]; !seen {
					a.first[id] = now
				}
				a.mu.Unlock()
			}
		}
		h.ServeHTTP(w, req)
	})
}

// count is the number of orders in [from, to) called.
func (a *arrivalLog) count(from, to int64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for id := range a.first {
		if id >= from && id < to {
			n++
		}
	}
	return n
}

func (a *arrivalLog) at(id int64) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.first[id]
}

var intervalFlag = regexp.MustCompile(`--[a-z-]+="?([0-9][0-9a-zµ.]*)"?`)

// workerTaskCheckInterval reads from `certmail worker --help` whether the
// worker has CERTMAIL_TASK_CHECK_INTERVAL, and its default.
func workerTaskCheckInterval(binary string) (time.Duration, bool, error) {
	out, err := exec.Command(binary, "worker", "--help").CombinedOutput()
	if err != nil {
		return 0, false, fmt.Errorf("%s worker --help: %w", binary, err)
	}
	return taskCheckIntervalFromHelp(string(out))
}

// taskCheckIntervalFromHelp finds CERTMAIL_TASK_CHECK_INTERVAL's default
// in kong's help: the value of the last --flag=value before its name.
func taskCheckIntervalFromHelp(help string) (time.Duration, bool, error) {
	i := strings.Index(help, "$CERTMAIL_TASK_CHECK_INTERVAL")
	if i < 0 {
		return 0, false, nil
	}
	m := intervalFlag.FindAllStringSubmatch(help[:i], -1)
	if m == nil {
		return 0, false, errors.New("certmail worker --help: no default for CERTMAIL_TASK_CHECK_INTERVAL")
	}
	d, err := time.ParseDuration(m[len(m)-1][1])
	if err != nil {
		return 0, false, fmt.Errorf("certmail worker --help: CERTMAIL_TASK_CHECK_INTERVAL: %w", err)
	}
	return d, true, nil
}
