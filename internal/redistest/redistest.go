// Package redistest starts real redis-server processes for tests: each on a
// free loopback port with its data in the test's temporary directory, stopped
// when the test ends. Tests that touch Redis use it instead of a mock.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/queues"
)

// Options tune the server. The zero value is a throw-away in-memory server.
type Options struct {
	// AppendOnly turns on AOF persistence with appendfsync everysec, as in production.
	AppendOnly bool
	// Args are extra redis-server arguments, e.g. {"--replicaof", "127.0.0.1", "6380"}.
	Args []string
	// Password, when set, is required of clients (requirepass) and given to
	// the master when the server is a replica (masterauth). The helpers of
	// Server use it.
	Password string
}

// Server is one redis-server process owned by a test.
type Server struct {
	tb   testing.TB
	opts Options
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	held *portHold     // the port while no server runs on it, once one exited
}

// Start launches a redis-server and registers its shutdown with tb.Cleanup.
// The test fails at once, saying how to install it, when redis-server is not
// on PATH.
func Start(tb testing.TB, opts ...Options) *Server {
	tb.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redistest: redis-server not found on PATH (apt-get install -y redis-server): %v", err)
	}
	s := &Server{tb: tb, opts: o, dir: tb.TempDir()}
	var err error
	for range 5 { // a free port can be taken by someone else before we bind it
		if s.port, err = FreePort(); err != nil {
			break
		}
		if err = s.launch(); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: start redis-server: %v", err)
	}
	tb.Cleanup(s.releasePort) // after the Kill below
	tb.Cleanup(s.Kill)
	return s
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on right
// now and, as far as it can, one that no FreePort of the same user's test
// processes on this machine returned or a Server freed in the last
// PortHold. A killed server's port is then not taken by another test's
// server while a test still expects nothing to answer there (test packages
// run in processes of their own, so the claim is a file, in a directory of
// the user's own). When every port the kernel offers is held (many test
// runs at once on one machine), it returns the one held the longest rather
// than fail.
func FreePort() (int, error) {
	dir, err := claimDir()
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	port, err := freePort(dir, offeredPort)
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	return port, nil
}

// offeredPort is a port the kernel offers on 127.0.0.1, free right now.
func offeredPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePort claims, in dir, the first port offer gives that is not held,
// or after 100 offers the one held the longest.
func freePort(dir string, offer func() (int, error)) (int, error) {
	var oldestPort int
	var oldest time.Time
	for range 100 {
		port, err := offer()
		if err != nil {
			return 0, err
		}
		ok, since, err := claimPort(filepath.Join(dir, strconv.Itoa(port)))
		switch {
		case err != nil:
			return 0, err
		case ok:
			return port, nil
		case oldestPort == 0 || since.Before(oldest):
			oldestPort, oldest = port, since
		}
	}
	return oldestPort, holdPortIn(dir, oldestPort)
}

// PortHold is how long FreePort keeps a port from any other caller after
// it returned it or a Server on it exited: longer than a test waits on a
// killed server's port, short enough that many test runs on one machine
// do not hold every port the kernel offers.
const PortHold = 5 * time.Minute

func claimDir() (string, error) {
	dir := filepath.Join(os.TempDir(), "certmail-redistest-ports-"+strconv.Itoa(os.Getuid()))
	return dir, os.MkdirAll(dir, 0o700)
}

// claimPort claims the port whose claim file is name, unless a claim of
// the last PortHold holds it; it then says since when. The error says why
// a claim could not be read or written.
func claimPort(name string) (ok bool, since time.Time, err error) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err == nil {
		return true, time.Time{}, f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, time.Time{}, err
	}
	st, err := os.Stat(name)
	if err != nil {
		return false, time.Time{}, err
	}
	if time.Since(st.ModTime()) < PortHold {
		return false, st.ModTime(), nil
	}
	// An old claim: take it over (another process may do so at the same
	// moment; the later launch then fails to bind and Start tries again).
	now := time.Now()
	return true, time.Time{}, os.Chtimes(name, now, now)
}

// holdPort claims port again from now on, as when a server on it exited:
// the hold counts from the moment the port was freed.
func holdPort(port int) error {
	dir, err := claimDir()
	if err != nil {
		return err
	}
	return holdPortIn(dir, port)
}

func holdPortIn(dir string, port int) error {
	name := filepath.Join(dir, strconv.Itoa(port))
	now := time.Now()
	if err := os.Chtimes(name, now, now); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(name, nil, 0o600)
}

func (s *Server) launch() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", "",
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password, "--masterauth", s.opts.Password)
	}
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.opts.Args...)
	out, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("exec: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := waitReady(s.Addr(), s.opts.Password, cmd.Process.Pid, exited); err != nil {
		_ = cmd.Process.Kill()
		out.Close()
		log, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%w; log:\n%s", err, log)
	}
	done := make(chan struct{})
	go func() {
		// Killed on purpose or not, the server is gone; a test that cares
		// notices through its clients.
		if err := <-exited; err != nil {
			s.tb.Logf("redistest: redis-server on %s exited: %v", s.Addr(), err)
		}
		s.holdSocket()
		if err := holdPort(s.port); err != nil {
			s.tb.Logf("redistest: hold port %d: %v", s.port, err)
		}
		_ = out.Close()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	held := s.held
	s.held = nil
	s.mu.Unlock()
	held.release() // the server has the port now
	return nil
}

// holdSocket holds the port of the server that just exited (portHold),
// so that Relaunch finds it free.
func (s *Server) holdSocket() {
	h, err := holdPortSocket(s.port)
	if err != nil {
		s.tb.Logf("redistest: hold port %d: %v", s.port, err)
		return
	}
	s.mu.Lock()
	old := s.held
	s.held = h
	s.mu.Unlock()
	old.release()
}

// releasePort frees the port held since the server exited.
func (s *Server) releasePort() {
	s.mu.Lock()
	h := s.held
	s.held = nil
	s.mu.Unlock()
	h.release()
}

// waitReady waits until the redis-server of process pid answers on addr.
// Another test's server that took the port first answers too, while this
// one fails to bind it: that is an error, so that Start tries another port
// rather than let two tests share a server.
func waitReady(addr, password string, pid int, exited <-chan error) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
		ContextTimeoutEnabled: true})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			if !strings.Contains(info, "\r\nprocess_id:"+strconv.Itoa(pid)+"\r\n") {
				return fmt.Errorf("another redis-server answers on %s", addr)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 10s: %w", err)
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("redis-server exited: %v", werr)
		case <-tick.C:
		}
	}
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// URL is the server as a REDIS_URL.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr(), Path: "/0"}
	if s.opts.Password != "" {
		u.User = url.UserPassword("", s.opts.Password)
	}
	return u.String()
}

// ConnOpt is the server as an asynq connection option.
func (s *Server) ConnOpt() asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Addr: s.Addr(), Password: s.opts.Password}
}

// Client returns a go-redis client closed at the test's cleanup. As
// certmail's own clients (redisconn.Open), it honours the deadline of each
// call's context (go-redis's ContextTimeoutEnabled).
func (s *Server) Client() *redis.Client {
	c := s.newClient()
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// newClient is a go-redis client of the server that honours the deadline
// of each call's context, as certmail's own clients do (redisconn.Open).
func (s *Server) newClient() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.opts.Password, ContextTimeoutEnabled: true})
}

// ResetStats zeroes the server's statistics (CONFIG RESETSTAT), so that
// Commands counts from here.
func (s *Server) ResetStats() {
	s.tb.Helper()
	c := s.newClient()
	defer c.Close()
	if err := c.ConfigResetStat(context.Background()).Err(); err != nil {
		s.tb.Fatalf("redis CONFIG RESETSTAT: %v", err)
	}
}

// Commands counts the commands the server ran since it started or since
// ResetStats, by lower-case name, as INFO commandstats does: those that Lua
// scripts call included, each subcommand under its own name
// ("config|resetstat").
func (s *Server) Commands() map[string]int64 {
	s.tb.Helper()
	c := s.newClient()
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		s.tb.Fatalf("redis INFO commandstats: %v", err)
	}
	calls := map[string]int64{}
	for _, line := range strings.Split(info, "\r\n") {
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, stats, _ := strings.Cut(rest, ":")
		for _, kv := range strings.Split(stats, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					s.tb.Fatalf("redis INFO commandstats: %q", line)
				}
				calls[name] = n
			}
		}
	}
	return calls
}

// Reads counts the reads the server made from its clients' connections
// since it started or since ResetStats (INFO stats total_reads_processed):
// one per round trip, more for a pipeline longer than one read takes in
// (16 KiB), and those of the INFO that Reads sends, and of its client's
// handshake, included.
func (s *Server) Reads() int64 {
	s.tb.Helper()
	c := s.newClient()
	defer c.Close()
	info, err := c.Info(context.Background(), "stats").Result()
	if err != nil {
		s.tb.Fatalf("redis INFO stats: %v", err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_reads_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				s.tb.Fatalf("redis INFO stats: %q", line)
			}
			return n
		}
	}
	s.tb.Fatalf("redis INFO stats: no total_reads_processed")
	return 0
}

// Pause stops the server with SIGSTOP: it keeps its port, the kernel
// still accepts connections and takes commands in, and nothing answers, as
// with a partition, a paused VM or a failover's dark old master. Continue
// ends the pause; so does the cleanup Pause registers, which runs before
// those registered earlier (a worker started before the pause stops
// against a server that answers). Kill, Stop and Restart also work on a
// paused server.
func (s *Server) Pause() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatal("redistest: Pause: the server is not running")
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.tb.Fatalf("redistest: Pause: %v", err)
	}
	s.tb.Cleanup(s.Continue)
}

// Continue ends a Pause (SIGCONT): the server answers what it took in
// meanwhile. Continuing a server that is not paused does nothing.
func (s *Server) Continue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Kill stops the server with SIGKILL (no chance to write anything) and waits
// for it to go. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Stop stops the server with SIGTERM, as an orderly restart does: Redis
// writes its AOF to disk and exits. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused server handles SIGTERM once it runs
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart kills the server and starts it again on the same port and data
// directory, so an AOF written before is replayed.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	s.Relaunch()
}

// Relaunch starts a stopped or killed server again on the same port and
// data directory. On Linux the port is held from the server's exit (see
// portHold): no listener or connection of another test takes it meanwhile.
func (s *Server) Relaunch() {
	s.tb.Helper()
	var err error
	for range 50 { // the port may linger for a moment after the kill
		if err = s.launch(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.tb.Fatalf("redistest: restart redis-server: %v", err)
}

// TrimArchive has asynq's own "Archive all" script trim every task now in
// queue's archive from it, as it does to the oldest once an archive goes
// over its cap of 10 000: asynq removes them from the archive's sorted set
// and leaves their hashes, state "archived". It fills the archive with
// placeholder members newer than any task, up to 9 999, archives one more
// pending task (ArchiveAllPendingTasks), and removes the placeholders; the
// archive is then empty.
func (s *Server) TrimArchive(tb testing.TB, queue string) {
	tb.Helper()
	ctx := context.Background()
	rdb := s.newClient()
	defer rdb.Close()
	key := queues.AsynqKey(queue, "archived")
	later := float64(time.Now().Add(time.Hour).Unix())
	fill := make([]redis.Z, 9999)
	for i := range fill {
		fill[i] = redis.Z{Score: later, Member: fmt.Sprintf("placeholder-%04d", i)}
	}
	if err := rdb.ZAdd(ctx, key, fill...).Err(); err != nil {
		tb.Fatal(err)
	}
	c := asynq.NewClient(s.ConnOpt())
	defer c.Close()
	if _, err := c.Enqueue(asynq.NewTask("placeholder", nil), asynq.Queue(queue)); err != nil {
		tb.Fatal(err)
	}
	in := asynq.NewInspector(s.ConnOpt())
	defer in.Close()
	if _, err := in.ArchiveAllPendingTasks(queue); err != nil {
		tb.Fatal(err)
	}
	if err := rdb.ZRemRangeByScore(ctx, key, fmt.Sprint(later), "+inf").Err(); err != nil {
		tb.Fatal(err)
	}
	if n, err := rdb.ZCard(ctx, key).Result(); err != nil || n != 0 {
		tb.Fatalf("archive of %s after the trim: %d tasks (%v), want none", queue, n, err)
	}
}
