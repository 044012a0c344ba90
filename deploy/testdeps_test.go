package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTestDepsInstallsBuildTools runs .ci/test-deps as root on a machine
// that has the test servers but no C compiler and no make, with apt-get
// replaced by a stub that records its calls. `go test -race` needs cgo, and
// Go turns cgo off when no C compiler is on PATH: a Debian machine with Go
// alone failed `make test` on "-race requires cgo". test-deps must update
// the package lists, then install gcc and make.
func TestTestDepsInstallsBuildTools(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	script, err := filepath.Abs(filepath.Join(repo, ".ci", "test-deps"))
	if err != nil {
		t.Fatal(err)
	}
	bin, log := t.TempDir(), filepath.Join(t.TempDir(), "apt-get.log")
	stub := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub("id", "echo 0")
	stub("apt-get", `echo "$*" >>"$APT_LOG"`)
	// Present: the servers, the browser, the tools without which a test skips.
	for _, name := range []string{"redis-server", "redis-sentinel", "chromium", "kubectl", "promtool"} {
		stub(name, "exit 0")
	}
	cmd := exec.Command(bash, script)
	cmd.Env = []string{"PATH=" + bin, "APT_LOG=" + log, "HOME=" + t.TempDir()}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("test-deps: %v\n%s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("test-deps did not run apt-get: %v", err)
	}
	calls := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(calls) != 2 || !strings.Contains(calls[0], "update") || !strings.Contains(calls[1], "install") {
		t.Fatalf("apt-get calls %q, want update then install", calls)
	}
	installed := strings.Fields(calls[1])
	for _, want := range []string{"gcc", "make"} {
		if !slices.Contains(installed, want) {
			t.Errorf("apt-get %s: %s is not installed", calls[1], want)
		}
	}
	for _, present := range []string{"redis-server", "chromium"} {
		if slices.Contains(installed, present) {
			t.Errorf("apt-get %s: installs %s, which is there", calls[1], present)
		}
	}
}
