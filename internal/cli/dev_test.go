package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
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
