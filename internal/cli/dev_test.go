package cli

import (
	"testing"

	"github.com/alecthomas/kong"
)

// TestDevIgnoresRedisURLEnv: `certmail dev` does not adopt REDIS_URL from
// the environment. A shell set up for the CLI has it, and dev's worker would
// drain that Redis's real queues into the fake DigiCert, marking them
// delivered; only an explicit --redis-url points dev at another Redis.
func TestDevIgnoresRedisURLEnv(t *testing.T) {
	const fromEnv = "redis://prod.example:6379/0"
	t.Setenv("REDIS_URL", fromEnv)
	parse := func(args ...string) CLI {
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
