package main_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/certmailtest"
)

// binary is the certmail binary built once for the end-to-end tests, with
// the flags `make build` uses.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "certmail-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "certmail")
	build := exec.Command("go", "build", "-trimpath", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build certmail: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// proc is a certmail process started by a test, its JSON log collected.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu     sync.Mutex
	lines  []map[string]any
	raw    strings.Builder
	stdout strings.Builder
}

// stdoutWriter collects a proc's standard output.
type stdoutWriter struct{ p *proc }

func (w stdoutWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.stdout.Write(b)
}

// start runs certmail with args and env (added to a minimal environment),
// and kills it at the test's end if it is still running.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "CERTMAIL_LOG_FORMAT=json"}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = stdoutWriter{p}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var m map[string]any
			p.mu.Lock()
			p.raw.WriteString(line + "\n")
			if json.Unmarshal([]byte(line), &m) == nil {
				p.lines = append(p.lines, m)
			}
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.log())
		}
	})
	return p
}

// output returns what p wrote to its standard output so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw.String()
}

// waitLog waits for a log line with msg and returns it.
func (p *proc) waitLog(msg string, within time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, l := range p.lines {
			if l["msg"] == msg {
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, msg)
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("%s did not log %q within %v", p.name, msg, within)
	return nil
}

// count returns how many log lines have level and msg ("" matches any).
func (p *proc) count(level, msg string) int {
	return p.countWhere(func(l map[string]any) bool {
		return (level == "" || l["level"] == level) && (msg == "" || l["msg"] == msg)
	})
}

// countField counts p's log lines whose field name is value.
func (p *proc) countField(name, value string) int {
	return p.countWhere(func(l map[string]any) bool { return l[name] == value })
}

// countWhere counts p's log lines that match.
func (p *proc) countWhere(match func(map[string]any) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if match(l) {
			n++
		}
	}
	return n
}

// signal sends sig and, for SIGTERM/SIGINT, waits for the exit.
func (p *proc) stop(sig syscall.Signal, within time.Duration) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		p.t.Fatalf("%s still running %v after %v", p.name, within, sig)
		return nil
	}
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	certmailtest.WaitFor(t, within, cond, describe)
}
