package cli

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/certmail/certmail/internal/ranges"
)

// Every default a flag names is defined, and a duration default reads back
// as the constant it was printed from.
func TestDefaults(t *testing.T) {
	t.Parallel()
	vars := defaults()
	used := map[string]bool{}
	ref := regexp.MustCompile(`\$\{(\w+)\}`)
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			for _, m := range ref.FindAllStringSubmatch(f.Tag.Get("default")+" "+f.Tag.Get("help"), -1) {
				used[m[1]] = true
				if _, ok := vars[m[1]]; !ok {
					t.Errorf("%s.%s: default ${%s} is not defined", typ.Name(), f.Name, m[1])
				}
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(CLI{}))
	for name, v := range vars {
		if !used[name] {
			t.Errorf("default %s = %q is used by no flag", name, v)
		}
	}
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{30 * time.Second, "30s"}, {time.Minute, "1m"}, {24 * time.Hour, "24h"}, {90 * time.Minute, "1h30m"}, {0, "0s"}} {
		if got := ranges.Duration(tt.d); got != tt.want {
			t.Errorf("ranges.Duration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	// The flags parse to the package constants.
	var c CLI
	parser, err := kong.New(&c, vars)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse(strings.Fields("worker")); err != nil {
		t.Fatal(err)
	}
	w := c.Worker
	if w.ShutdownTimeout != 30*time.Second || w.RateLimitPause != 30*time.Second || w.DigiCertTimeout != 10*time.Second ||
		w.AuthProbeInterval != time.Minute || w.Concurrency != 20 || w.MaxRetry != 12 || w.DeadLetterMaxLen != 100000 ||
		w.AdminAddr != ":9090" || w.RedisURL != "redis://127.0.0.1:6379/0" || w.TaskCheckInterval != 50*time.Millisecond {
		t.Errorf("worker defaults %+v", w)
	}
}

// CERTMAIL_GUARD_REPLICAS unset leaves the choice to the worker (0: one
// replica under Sentinel, none otherwise); set to 0 it asks for none
// (worker.Config's negative), and a number is passed on.
func TestGuardReplicasSetting(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args string
		want int
	}{{"worker", 0}, {"worker --guard-replicas=0", -1}, {"worker --guard-replicas=2", 2}, {"dev --guard-replicas=0", -1}} {
		var c CLI
		parser, err := kong.New(&c, defaults())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parser.Parse(strings.Fields(tt.args)); err != nil {
			t.Fatal(err)
		}
		f := c.Worker.PollFlags
		if strings.HasPrefix(tt.args, "dev") {
			f = c.Dev.PollFlags
		}
		if got := f.guardReplicas(); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.args, got, tt.want)
		}
	}
}
