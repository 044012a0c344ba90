package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// usage is what one program spent on the steady part of a round.
type usage struct {
	tps        float64 // tasks per second
	cpuUS      float64 // the program's CPU per task, µs
	redisCPUUS float64 // redis-server's CPU per task, µs
}

// throughput alternates rounds of the no-op handler, the plain handler, the
// guarded one and `certmail worker`, one queue each, and reports medians:
// the rates, and the ratios of rounds run side by side.
func throughput(ctx context.Context, r *redisServer, o options) ([]figure, error) {
	rc := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rc.Close()
	fake, err := startFake(digicerttest.Config{}, nil)
	if err != nil {
		return nil, err
	}
	defer fake.stop()

	progs := []program{{kind: "noop", queues: oneQueue}, {kind: "plain", queues: oneQueue},
		{kind: "guarded", queues: oneQueue}, {kind: "worker", queues: oneQueue}}
	got := map[string][]usage{}
	var vsPlain, vsNoop, cpuVsPlain, guardedVsPlain, guardedCPUVsPlain, vsGuarded, cpuVsGuarded []float64
	for i := range o.rounds {
		for _, prog := range progs {
			u, err := throughputRound(ctx, o, r, rc, fake, prog, o.tasks, "")
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", prog, i+1, err)
			}
			fmt.Printf("  round %d %-6s %8.0f tasks/s %7.1f µs CPU/task, redis %6.1f µs/task\n", i+1, prog, u.tps, u.cpuUS, u.redisCPUUS)
			got[prog.kind] = append(got[prog.kind], u)
		}
		w, p, g, n := got["worker"][i], got["plain"][i], got["guarded"][i], got["noop"][i]
		vsPlain, vsNoop, cpuVsPlain = append(vsPlain, w.tps/p.tps), append(vsNoop, w.tps/n.tps), append(cpuVsPlain, w.cpuUS/p.cpuUS)
		guardedVsPlain, guardedCPUVsPlain = append(guardedVsPlain, g.tps/p.tps), append(guardedCPUVsPlain, g.cpuUS/p.cpuUS)
		vsGuarded, cpuVsGuarded = append(vsGuarded, w.tps/g.tps), append(cpuVsGuarded, w.cpuUS/g.cpuUS)
	}
	if o.cpuProfile != "" {
		if _, err := throughputRound(ctx, o, r, rc, fake, progs[len(progs)-1], 4*o.tasks, o.cpuProfile); err != nil {
			return nil, fmt.Errorf("profiled round: %w", err)
		}
		fmt.Printf("  CPU profile of a certmail worker in %s\n", o.cpuProfile)
	}
	med := func(kind string, f func(usage) float64) float64 {
		var v []float64
		for _, u := range got[kind] {
			v = append(v, f(u))
		}
		return median(v)
	}
	tps := func(u usage) float64 { return u.tps }
	cpu := func(u usage) float64 { return u.cpuUS }
	rcpu := func(u usage) float64 { return u.redisCPUUS }
	return []figure{
		{name: "worker_tps", value: round(med("worker", tps), 0)},
		{name: "plain_tps", value: round(med("plain", tps), 0)},
		{name: "noop_tps", value: round(med("noop", tps), 0)},
		target("worker_vs_plain_ratio", round(median(vsPlain), 3), atLeast, 0.8),
		{name: "worker_vs_noop_ratio", value: round(median(vsNoop), 3)},
		{name: "worker_cpu_us_per_task", value: round(med("worker", cpu), 1)},
		{name: "plain_cpu_us_per_task", value: round(med("plain", cpu), 1)},
		{name: "noop_cpu_us_per_task", value: round(med("noop", cpu), 1)},
		target("worker_vs_plain_cpu_ratio", round(median(cpuVsPlain), 3), atMost, 1.5),
		{name: "redis_cpu_us_per_task_worker", value: round(med("worker", rcpu), 1)},
		{name: "redis_cpu_us_per_task_plain", value: round(med("plain", rcpu), 1)},
		{name: "redis_cpu_us_per_task_noop", value: round(med("noop", rcpu), 1)},
		{name: "guarded_tps", value: round(med("guarded", tps), 0)},
		{name: "guarded_cpu_us_per_task", value: round(med("guarded", cpu), 1)},
		{name: "redis_cpu_us_per_task_guarded", value: round(med("guarded", rcpu), 1)},
		{name: "guarded_vs_plain_ratio", value: round(median(guardedVsPlain), 3)},
		{name: "guarded_vs_plain_cpu_ratio", value: round(median(guardedCPUVsPlain), 3)},
		{name: "worker_vs_guarded_ratio", value: round(median(vsGuarded), 3)},
		{name: "worker_vs_guarded_cpu_ratio", value: round(median(cpuVsGuarded), 3)},
	}, nil
}

// throughputRound drains n queued tasks with prog and measures the part
// between 10 % and 90 % done, where start-up and the last stragglers do not
// count. With profile set (the worker only), it writes a CPU profile of
// that part, fetched from the worker's admin address.
func throughputRound(ctx context.Context, o options, r *redisServer, rc *redis.Client, fake *fakeCertCentral,
	prog program, n int, profile string) (u usage, err error) {
	if err := flush(ctx, rc); err != nil {
		return u, err
	}
	if err := enqueueResends(ctx, r, n, 100000, "default"); err != nil {
		return u, err
	}
	admin := ""
	if profile != "" {
		if admin, err = freeAddr(); err != nil {
			return u, err
		}
		prog.env = append(prog.env, "CERTMAIL_PPROF=true", "CERTMAIL_ADMIN_ADDR="+admin)
	}
	p, err := prog.start(ctx, o, r, fake.baseURL)
	if err != nil {
		return u, err
	}
	defer func() { err = errors.Join(err, p.stop()) }()

	total := int64(n)
	if err := waitUnfinished(ctx, rc, p, "default", total-total/10); err != nil {
		return u, err
	}
	m0, err := takeMark(ctx, rc, p, r)
	if err != nil {
		return u, err
	}
	profiled := make(chan error, 1)
	if profile != "" {
		go func() { profiled <- fetchProfile(ctx, "http://"+admin+"/debug/pprof/profile?seconds=2", profile) }()
	}
	if err := waitUnfinished(ctx, rc, p, "default", total/10); err != nil {
		return u, err
	}
	m1, err := takeMark(ctx, rc, p, r)
	if err != nil {
		return u, err
	}
	if profile != "" {
		if err := <-profiled; err != nil {
			return u, err
		}
	}
	if err := waitUnfinished(ctx, rc, p, "default", 0); err != nil {
		return u, err
	}
	if err := checkCompleted(ctx, rc, "default", n); err != nil {
		return u, err
	}
	done := float64(m0.left - m1.left)
	return usage{
		tps:        done / m1.at.Sub(m0.at).Seconds(),
		cpuUS:      float64((m1.cpu - m0.cpu).Microseconds()) / done,
		redisCPUUS: float64((m1.redisCPU - m0.redisCPU).Microseconds()) / done,
	}, nil
}

// mark is the state of a round at one moment.
type mark struct {
	at       time.Time
	left     int64         // unfinished tasks
	cpu      time.Duration // the program's CPU so far
	redisCPU time.Duration // redis-server's
}

func takeMark(ctx context.Context, rc *redis.Client, p *process, r *redisServer) (mark, error) {
	m := mark{at: time.Now()}
	var err1, err2, err3 error
	m.left, err1 = unfinished(ctx, rc, "default")
	m.cpu, err2 = cpuTime(p.pid())
	m.redisCPU, err3 = cpuTime(r.pid())
	return m, errors.Join(err1, err2, err3)
}

// fetchProfile saves the CPU profile served at url to file.
func fetchProfile(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
