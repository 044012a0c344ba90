package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/certmail/certmail/internal/dev"
)

// TestDevIgnoresRedisURLEnv: `certmail dev` does not adopt REDIS_URL from
// the environment. A shell set up for the CLI has it, and dev's worker would
// drain that Redis's real queues into the fake DigiCert, marking them
// delivered; only an explicit --redis-url points dev at another Redis.
func TestDevIgnoresRedisURLEnv(t *testing.T) {
	const fromEnv = "redis://prod.example:6379/0"
	t.Setenv("REDIS_URL", fromEnv)
	parse := func(args ...string) CLI { return parseCLI(t, args...) }
	if got := parse("dev").Dev.RedisURL; got != "" {
		t.Errorf("certmail dev with REDIS_URL in the environment uses %q, want the embedded Redis", got)
	}
	const given = "redis://127.0.0.1:26379/3"
	if got := parse("dev", "--redis-url", given).Dev.RedisURL; got != given {
		t.Errorf("certmail dev --redis-url %s uses %q", given, got)
	}
	// The other commands do read it: the variable reaches the parser.
	if got := parse("worker").Worker.RedisURL; got != fromEnv {
		t.Errorf("certmail worker with REDIS_URL=%s uses %q", fromEnv, got)
	}
}

// TestDevScheduleMinInterval: dev passes on CERTMAIL_SCHEDULE_MIN_INTERVAL
// only when it is set (flag or variable), so that its demo default does not
// override a value set; a value that cannot work is refused.
func TestDevScheduleMinInterval(t *testing.T) {
	parse := func(args ...string) *time.Duration { return parseCLI(t, args...).Dev.MinInterval }
	if got := parse("dev"); got != nil {
		t.Errorf("certmail dev: schedule-min-interval %v, want unset", *got)
	}
	if got := parse("dev", "--schedule-min-interval", "5m"); got == nil || *got != 5*time.Minute {
		t.Errorf("certmail dev --schedule-min-interval 5m: %v, want 5m", got)
	}
	t.Setenv("CERTMAIL_SCHEDULE_MIN_INTERVAL", "90s")
	if got := parse("dev"); got == nil || *got != 90*time.Second {
		t.Errorf("certmail dev with CERTMAIL_SCHEDULE_MIN_INTERVAL=90s: %v, want 90s", got)
	}
	for _, bad := range []string{"0s", "-1m", "999ms", "43801h"} {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), []string{"dev", "--schedule-min-interval=" + bad}, strings.NewReader(""), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "--schedule-min-interval: ") {
			t.Errorf("certmail dev --schedule-min-interval %s: exit %d, %q; want 2 naming the setting", bad, code, errOut.String())
		}
	}
}

// parseCLI parses args as the command line does, with the environment as
// it is, without running anything.
func parseCLI(t *testing.T, args ...string) CLI {
	t.Helper()
	var c CLI
	parser, err := kong.New(&c, defaults())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return c
}

// TestDevDemoFlags: --demo (the demo into the Redis --redis-url names too)
// reaches the parsed command, and cannot be given with --no-demo.
func TestDevDemoFlags(t *testing.T) {
	if c := parseCLI(t, "dev", "--redis-url", "redis://127.0.0.1:1/0", "--demo").Dev; !c.Demo || c.NoDemo {
		t.Errorf("certmail dev --demo: Demo %t, NoDemo %t", c.Demo, c.NoDemo)
	}
	if c := parseCLI(t, "dev", "--redis-url", "redis://127.0.0.1:1/0").Dev; c.Demo {
		t.Error("certmail dev --redis-url: Demo set without --demo")
	}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"dev", "--demo", "--no-demo"}, strings.NewReader(""), &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "--no-demo and --demo") {
		t.Errorf("certmail dev --demo --no-demo: exit %d, %q; want 2 naming both", code, errOut.String())
	}
}

// TestDevEmptyAdminAddrIsNone: CERTMAIL_ADMIN_ADDR or --admin-addr given
// empty means no admin server in dev, as in the worker and the scheduler:
// the worker logs none, and the banner names no worker metrics URL (not
// dev's default address).
func TestDevEmptyAdminAddrIsNone(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  bool
	}{{"flag", false}, {"variable", true}} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"dev", "--http-addr", "127.0.0.1:0", "--no-demo", "--log-format", "json"}
			if tt.env {
				t.Setenv("CERTMAIL_ADMIN_ADDR", "")
			} else {
				args = append(args, "--admin-addr=")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &bannerWriter{up: make(chan struct{}), cancel: cancel}
			var errOut bytes.Buffer
			done := make(chan int, 1)
			go func() { done <- Main(ctx, args, strings.NewReader(""), out, &errOut) }()
			select {
			case code := <-done:
				t.Fatalf("dev stopped at start: exit %d, %s", code, errOut.String())
			case <-out.up:
			case <-time.After(30 * time.Second):
				t.Fatal("no banner within 30s")
			}
			if code := <-done; code != ExitInterrupted && code != 0 {
				t.Errorf("exit %d, %s", code, errOut.String())
			}
			banner := out.String()
			if strings.Contains(banner, dev.DefaultAdminAddr) || strings.Contains(banner, "(worker)") ||
				!strings.Contains(banner, "the worker serves none") {
				t.Errorf("banner names a worker metrics URL:\n%s", banner)
			}
			if !strings.Contains(errOut.String(), `"admin_addr":"none"`) {
				t.Errorf("the worker's log does not say admin_addr none:\n%s", errOut.String())
			}
		})
	}
}

// bannerWriter is dev's stdout in a test: once the banner's metrics line
// is written, it closes up and stops dev (cancel).
type bannerWriter struct {
	mu     sync.Mutex
	b      strings.Builder
	up     chan struct{}
	once   sync.Once
	cancel func()
}

func (w *bannerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), "  metrics ") {
		w.once.Do(func() { close(w.up); w.cancel() })
	}
	return len(p), nil
}

func (w *bannerWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
