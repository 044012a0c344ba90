// Command certmail-bench measures what certmail costs on top of what any
// asynq service pays, each figure against a baseline measured in the same
// run on the same redis-server, and prints one "BENCH name=value" line per
// figure. `make bench` runs it; it exits 1 when a figure misses its target.
//
// The baselines are hand-written programs of the same shape, run as
// processes of their own (this binary re-executed with -child): "plain", an
// asynq handler that decodes a resend-dcv payload, builds the body and PUTs
// it to the fake CertCentral with net/http; "guarded", plain with a
// duplicate guard (EXISTS before the call, SET after it: two round trips of
// its own, as many as the worker makes); "noop", an asynq handler that
// does nothing; "bridge", a net/http server that decodes a JSON body and
// enqueues it with asynq.Client. certmail runs as `certmail worker` and
// `certmail api` processes, so that CPU per task is read per process
// (/proc/<pid>/stat) and Redis's from its own process.
//
// Figures (targets in parentheses). The worker runs on two rate-limit
// windows, as by default, that never bind, except in ratelimit_*:
//
//	worker_tps, plain_tps, noop_tps               resend-dcv tasks per second drained at concurrency 20
//	worker_vs_plain_ratio (≥ 0.8)                 from one queue against the fake CertCentral without
//	worker_vs_noop_ratio                          latency, between 10 % and 90 % done (steady state);
//	worker_cpu_us_per_task, plain_..., noop_...   medians of alternating rounds (ratios: of the rounds
//	worker_vs_plain_cpu_ratio (≤ 1.5)             run side by side); CPU from /proc/<pid>/stat of each
//	redis_cpu_us_per_task_worker, _plain, _noop   program's process and of redis-server
//	guarded_tps, guarded_cpu_us_per_task, ...     the same for the guarded handler, and the ratios
//	guarded_vs_plain_ratio, _cpu_ratio            guarded/plain and worker/guarded: what two round
//	worker_vs_guarded_ratio, _cpu_ratio           trips cost alone, and what the worker adds to them
//	redis_round_trips_per_task (≤ 4)              per delivered task, between 10 % and 90 % of the
//	redis_commands_per_task                       DigiCert calls: Redis's read events (INFO stats
//	redis_script_commands_per_task                total_reads_processed, one per round trip), the
//	..._plain, ..._guarded, ..._3_queues          commands MONITOR shows from clients and apart those
//	                                              their scripts run (Lua's), with breakdowns; certmail
//	                                              on one queue, the plain and guarded handlers,
//	                                              certmail on the default three queues
//	pickup_p50_ms, pickup_p99_ms (p99 ≤ 150)      enqueue to DigiCert call at 200 tasks/s into "default"
//	pickup_plain_asynq_default_p50_ms, _p99_ms    of the three default queues: `certmail worker` with
//	idle_redis_commands_per_s, ..._plain          default settings, the plain handler on asynq's
//	                                              default poll interval (and on the worker's when it
//	                                              differs); Redis commands per second of each idle
//	api_tps, bridge_tps, api_vs_bridge_ratio      set-emails enqueues by 50 concurrent HTTP clients
//	(≥ 0.85), api_enqueue_p99_ms, bridge_...      through `certmail api` and through the bridge;
//	api_cpu_us_per_request, bridge_...            medians of alternating rounds
//	ratelimit_share (≥ 0.95), ratelimit_429 (0)   three `certmail worker` processes sharing scaled-down
//	                                              windows; calls in whole long windows from the first
//	                                              call, as a share of what the windows allow
//	worker_rss_mb (≤ 80)                          peak RSS (VmHWM) of a `certmail worker` process at
//	                                              concurrency 50 with 50 ms DigiCert latency
//
// With -redis-cpus, redis-server runs on CPUs of its own and everything else
// on the others, as when Redis has a host of its own.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/logging"
)

// options are the driver's flags.
type options struct {
	binary         string
	tasks          int
	rounds         int
	countTasks     int
	rateSeconds    int
	rssTasks       int
	apiRequests    int
	clients        int
	latencySeconds int
	idleSeconds    int
	// taskCheckInterval, when positive, is passed to the worker as
	// CERTMAIL_TASK_CHECK_INTERVAL in the pickup-latency run.
	taskCheckInterval time.Duration
	only              string
	cpuProfile        string
	redisCPUs         string // -redis-cpus: see cpuSplit
	child             childOptions
}

func main() {
	var o options
	flag.StringVar(&o.binary, "certmail", "bin/certmail", "the certmail binary (make build)")
	flag.IntVar(&o.tasks, "tasks", 20000, "tasks per throughput round")
	flag.IntVar(&o.rounds, "rounds", 5, "alternating rounds of each kind (the median is reported)")
	flag.IntVar(&o.countTasks, "count-tasks", 2000, "tasks of each Redis command count")
	flag.IntVar(&o.rateSeconds, "rate-seconds", 18, "length of the rate-limit measurement (a multiple of the 6s window)")
	flag.IntVar(&o.rssTasks, "rss-tasks", 3000, "tasks of the memory run")
	flag.IntVar(&o.apiRequests, "api-requests", 30000, "enqueues per API/bridge round")
	flag.IntVar(&o.clients, "clients", 50, "concurrent API clients")
	flag.IntVar(&o.latencySeconds, "latency-seconds", 10, "length of each pickup-latency run at 200 tasks/s")
	flag.IntVar(&o.idleSeconds, "idle-seconds", 10, "length of each idle Redis command count")
	flag.DurationVar(&o.taskCheckInterval, "task-check-interval", 0, "the worker's CERTMAIL_TASK_CHECK_INTERVAL in the pickup-latency run (0: its default)")
	flag.StringVar(&o.only, "only", "", "run some steps only, comma separated: throughput, roundtrips, latency, api, ratelimit, rss")
	flag.StringVar(&o.redisCPUs, "redis-cpus", "", "run redis-server on these CPUs (such as 1 or 2-3) and everything else on the others (taskset)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of a `certmail worker` process in a throughput round (CERTMAIL_PPROF) to this file")
	o.child.flags()
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if o.child.mode != "" {
		err = runChild(ctx, o.child)
	} else {
		err = run(ctx, o)
	}
	if err != nil {
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

func atLeast(bound float64) (func(float64) bool, string) {
	return func(v float64) bool { return v >= bound }, ">= " + strconv.FormatFloat(bound, 'f', -1, 64)
}

func atMost(bound float64) (func(float64) bool, string) {
	return func(v float64) bool { return v <= bound }, "<= " + strconv.FormatFloat(bound, 'f', -1, 64)
}

func target(name string, value float64, check func(float64) (func(float64) bool, string), bound float64) figure {
	ok, want := check(bound)
	return figure{name: name, value: value, ok: ok, want: want}
}

// step is one measurement.
type step struct {
	name string
	fn   func(context.Context, *redisServer, options) ([]figure, error)
}

var steps = []step{
	{"throughput", throughput},
	{"roundtrips", roundTrips},
	{"latency", pickupLatency},
	{"api", apiEnqueue},
	{"ratelimit", rateLimitShare},
	{"rss", workerRSS},
}

func run(ctx context.Context, o options) error {
	if _, err := os.Stat(o.binary); err != nil {
		return fmt.Errorf("%s: %w (run make build first)", o.binary, err)
	}
	selected := map[string]bool{}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			selected[s] = true
		}
	}
	var split cpuSplit
	if o.redisCPUs != "" {
		allowed, err := allowedCPUs()
		if err != nil {
			return err
		}
		if split, err = parseCPUSplit(o.redisCPUs, allowed); err != nil {
			return err
		}
		if err := split.pinSelf(); err != nil {
			return err
		}
		fmt.Printf("redis-server on CPU %s, everything else on CPU %s\n", split.redis, split.rest)
	}
	redis, err := startRedis(ctx, split)
	if err != nil {
		return err
	}
	defer redis.stop()
	fmt.Printf("redis-server on %s; load average %s\n", redis.addr, loadAverage())

	var figures []figure
	for _, s := range steps {
		if len(selected) > 0 && !selected[s.name] {
			continue
		}
		fmt.Printf("== %s\n", s.name)
		fs, err := s.fn(ctx, redis, o)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		figures = append(figures, fs...)
	}
	fmt.Printf("load average %s\n", loadAverage())
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

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
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

func startRedis(ctx context.Context, split cpuSplit) (*redisServer, error) {
	dir, err := os.MkdirTemp("", "certmail-bench-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	name, args := split.redisCommand("--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	cmd := exec.CommandContext(ctx, name, args...)
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

func (s *redisServer) pid() int { return s.cmd.Process.Pid }

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

func freeAddr() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// serve runs h on a free loopback port until the returned stop is called;
// net/http's own messages are JSON lines on stderr (benchLog).
func serve(h http.Handler) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := admin.NewServer(h, admin.Limits{}, benchLog())
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
		logging.FlushHTTPErrorLog(srv.ErrorLog)
	}, nil
}

// process is a subprocess: a certmail command or a child of this binary.
// Its stderr goes to a file, as a service's log would, so that reading it
// costs the measurement nothing.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// startCertmail runs the certmail binary with args and env (added to a
// minimal environment).
func startCertmail(ctx context.Context, binary string, env []string, args ...string) (*process, error) {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "CERTMAIL_ADMIN_ADDR=127.0.0.1:0"}, env...)
	return startProcess("certmail "+args[0], cmd)
}

// startChild re-executes this binary as a baseline program.
func startChild(ctx context.Context, c childOptions) (*process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, c.args()...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+v)
	}
	return startProcess(c.mode, cmd)
}

func startProcess(name string, cmd *exec.Cmd) (*process, error) {
	f, err := os.CreateTemp("", "certmail-bench-*.log")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd.Stderr, cmd.Stdout = f, f
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 40 * time.Second
	if err := cmd.Start(); err != nil {
		_ = os.Remove(f.Name())
		return nil, err
	}
	p := &process{name: name, cmd: cmd, log: f.Name(), done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, waits for the exit and reports the process's ERROR
// lines (a certmail process that failed a task says so there).
func (p *process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		err = fmt.Errorf("%s did not stop within 40s of SIGTERM", p.name)
	}
	if f, oerr := os.Open(p.log); oerr == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		shown := 0
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, `"level":"error"`) && shown < 5 {
				fmt.Fprintf(os.Stderr, "%s: %s\n", p.name, line)
				shown++
			}
		}
		f.Close()
	}
	_ = os.Remove(p.log)
	return err
}

// waitHTTP waits until url answers 200.
func waitHTTP(ctx context.Context, p *process, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited before %s answered: %v", p.name, url, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s did not answer 200 within 30s", p.name, url)
		}
	}
}

// cpuTime is the CPU time (user and system) a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 of the whole line
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const ticksPerSecond = 100 // USER_HZ, the same on every Linux architecture Go builds for
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
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

// benchLog is the logger of net/http's own messages in the bench's servers:
// JSON lines on stderr at WARN, as certmail's services write them.
func benchLog() *zap.Logger {
	return zap.Must(logging.New("warn", logging.DefaultFormat, os.Stderr)) // constants: it cannot fail
}
