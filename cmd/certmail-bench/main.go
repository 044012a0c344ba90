// Command certmail-bench measures certmail's throughput, rate-limit use,
// memory and API overhead, each against a baseline measured in the same run
// on the same redis-server, and prints one "BENCH name=value" line per
// figure. `make bench` runs it. It exits 1 when a figure misses its target.
//
// Figures (targets in parentheses):
//
//	worker_tps, noop_tps, worker_vs_noop_ratio (≥ 0.8)  certmail's worker (in-process, concurrency 20) against
//	                                                   the fake CertCentral without latency or limits, and a
//	                                                   no-op asynq handler with the same concurrency; medians
//	                                                   of alternating runs
//	ratelimit_share (≥ 0.95), ratelimit_429 (0)        three `certmail worker` processes sharing scaled-down
//	                                                   windows; calls in whole long windows from the first
//	                                                   call, as a share of what the windows allow
//	worker_rss_mb (≤ 80)                               peak RSS (VmHWM) of a `certmail worker` process at
//	                                                   concurrency 50 with 50 ms DigiCert latency
//	api_vs_client_enqueue_ratio (≥ 0.5),               50 concurrent clients enqueueing through the HTTP API
//	api_enqueue_p99_ms                                 against 50 goroutines calling asynq.Client directly
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/certmail/certmail/internal/admin"
)

// options are the driver's flags.
type options struct {
	binary      string
	tasks       int
	rounds      int
	rateSeconds int
	rssTasks    int
	apiRequests int
	clients     int
	only        string
	cpuProfile  string
}

func main() {
	var o options
	flag.StringVar(&o.binary, "certmail", "bin/certmail", "the certmail binary (make build)")
	flag.IntVar(&o.tasks, "tasks", 5000, "tasks per throughput run")
	flag.IntVar(&o.rounds, "rounds", 3, "alternating worker/no-op rounds (the median is reported)")
	flag.IntVar(&o.rateSeconds, "rate-seconds", 18, "length of the rate-limit measurement (a multiple of the 6s window)")
	flag.IntVar(&o.rssTasks, "rss-tasks", 3000, "tasks of the memory run")
	flag.IntVar(&o.apiRequests, "api-requests", 5000, "enqueues per API/client run")
	flag.IntVar(&o.clients, "clients", 50, "concurrent API clients")
	flag.StringVar(&o.only, "only", "", "run one step only: throughput, ratelimit, rss or api")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the driver process (the in-process worker, API and fake) to this file")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "certmail-bench:", err)
		os.Exit(1)
	}
}

// figure is one BENCH line and its target.
type figure struct {
	name  string
	value float64
	ok    func(float64) bool // nil: no target
	want  string
}

func run(ctx context.Context, o options) error {
	if _, err := os.Stat(o.binary); err != nil {
		return fmt.Errorf("%s: %w (run make build first)", o.binary, err)
	}
	redis, err := startRedis(ctx)
	if err != nil {
		return err
	}
	defer redis.stop()
	fmt.Printf("redis-server on %s; %d tasks per throughput run, %d rounds\n", redis.addr, o.tasks, o.rounds)

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	steps := []struct {
		name string
		fn   func(context.Context, *redisServer, options) ([]figure, error)
	}{{"throughput", throughput}, {"ratelimit", rateLimitShare}, {"rss", workerRSS}, {"api", apiEnqueue}}
	var figures []figure
	for _, step := range steps {
		if o.only != "" && o.only != step.name {
			continue
		}
		fs, err := step.fn(ctx, redis, o)
		if err != nil {
			return err
		}
		figures = append(figures, fs...)
	}
	var missed []string
	for _, f := range figures {
		fmt.Printf("BENCH %s=%s\n", f.name, strconv.FormatFloat(f.value, 'f', -1, 64))
		if f.ok != nil && !f.ok(f.value) {
			missed = append(missed, fmt.Sprintf("%s=%.3g (target %s)", f.name, f.value, f.want))
		}
	}
	if len(missed) > 0 {
		return fmt.Errorf("missed targets: %s", strings.Join(missed, ", "))
	}
	fmt.Println("every target met")
	return nil
}

func round(v float64, digits int) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', digits, 64), 64)
	return f
}

// redisServer is a redis-server process on a free loopback port.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	dir  string
}

func startRedis(ctx context.Context) (*redisServer, error) {
	dir, err := os.MkdirTemp("", "certmail-bench-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server (make test-deps installs it): %w", err)
	}
	s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, dir: dir}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server not listening on %s", s.addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *redisServer) url() string { return "redis://" + s.addr + "/0" }

func (s *redisServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.cmd.Wait()
	_ = os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serve runs h on a free loopback port until the returned stop is called.
func serve(h http.Handler) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := admin.NewServer(h, admin.Limits{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	return l.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// process is a certmail subprocess.
type process struct {
	cmd  *exec.Cmd
	done chan error
}

func startCertmail(ctx context.Context, binary string, env []string, args ...string) (*process, error) {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "CERTMAIL_LOG_LEVEL=warn", "CERTMAIL_ADMIN_ADDR=127.0.0.1:0"}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"level":"error"`) {
				fmt.Fprintln(os.Stderr, "worker:", sc.Text())
			}
		}
		p.done <- cmd.Wait()
	}()
	return p, nil
}

// stop sends SIGTERM and waits for the exit.
func (p *process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		return errors.New("worker did not stop within 40s of SIGTERM")
	}
}

// peakRSS reads VmHWM (peak resident set) of a process, in MiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}
