package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/cli"
	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// result is one run of the command line.
type result struct {
	code           int
	stdout, stderr string
}

// run runs certmail with args (stdin empty) in this process.
func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Main(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// env is a Redis for CLI tests and the flag that points commands at it.
type env struct {
	t         *testing.T
	redis     *redistest.Server
	inspector *asynq.Inspector
}

func setup(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, redis: redistest.Start(t)}
	e.inspector = asynq.NewInspector(e.redis.ConnOpt())
	t.Cleanup(func() { e.inspector.Close() })
	return e
}

// run runs certmail with --redis-url added after the subcommand words.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return run(e.t, append(args, "--redis-url", e.redis.URL())...)
}

// runIn is run with stdin read from in (not a terminal: read as the answer
// to a question).
func (e *env) runIn(in io.Reader, args ...string) result {
	e.t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Main(context.Background(), append(args, "--redis-url", e.redis.URL()), in, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// tasks lists the tasks of every queue in every state.
func (e *env) tasks() []*asynq.TaskInfo {
	e.t.Helper()
	queues, err := e.inspector.Queues()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*asynq.TaskInfo
	for _, q := range queues {
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			e.inspector.ListPendingTasks, e.inspector.ListScheduledTasks, e.inspector.ListArchivedTasks, e.inspector.ListCompletedTasks,
		} {
			ts, err := list(q, asynq.PageSize(5000))
			if err != nil {
				e.t.Fatal(err)
			}
			out = append(out, ts...)
		}
	}
	return out
}

// TestHelpListsEveryCommand: --help names every command of the CLI struct
// with its one-line help.
func TestHelpListsEveryCommand(t *testing.T) {
	t.Parallel()
	r := run(t, "--help")
	if r.code != 0 {
		t.Fatalf("--help exit %d: %s", r.code, r.stderr)
	}
	help := strings.Join(strings.Fields(r.stdout), " ")
	typ := reflect.TypeOf(cli.CLI{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		if _, ok := f.Tag.Lookup("cmd"); !ok {
			continue
		}
		name := f.Tag.Get("name")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		text := strings.Join(strings.Fields(f.Tag.Get("help")), " ")
		if text == "" {
			t.Errorf("command %s has no help", name)
			continue
		}
		if !strings.Contains(help, name) {
			t.Errorf("--help does not list %s", name)
		}
		// Commands with subcommands are listed by their subcommands.
		if f.Type.Kind() == reflect.Struct && !hasSubcommands(f.Type) && !strings.Contains(help, text) {
			t.Errorf("--help lacks the line of %s: %q", name, text)
		}
	}
	for _, want := range []string{"worker", "scheduler", "api", "dev", "fake-digicert", "enqueue", "task", "dlq", "schedule", "version"} {
		if !regexp.MustCompile(`(^|\s)` + want + `(\s|$)`).MatchString(help) {
			t.Errorf("--help does not list %s", want)
		}
	}
}

func hasSubcommands(t reflect.Type) bool {
	for i := range t.NumField() {
		if _, ok := t.Field(i).Tag.Lookup("cmd"); ok {
			return true
		}
	}
	return false
}

// An operator lost at the command line is pointed the right way: "certmail
// help [command]" prints the help, and a word it does not know (help
// nosuch) points to the --help that lists the commands; a command that
// needs a subcommand, or is given too many arguments or too few, points to
// its --help; enqueue alone lists the task types rather than ask for
// --file (bulk, the default subcommand, needs it), and so does enqueue
// given a word that is no task type rather than point to bulk's help; and
// --queue given to enqueue --file says that each line names its queue
// rather than suggest --queues, the workers' list.
func TestUsageErrorsPointTheWay(t *testing.T) {
	t.Parallel()
	giveType := "give a task type (" + strings.Join(tasks.Types(), ", ") + "), or --file FILE"
	for _, tt := range []struct {
		args []string
		code int
		out  string // on stdout for a 0, on stderr otherwise
		not  string
	}{
		{nil, 2, "; certmail --help lists them", ""},
		{[]string{"help"}, 0, "Usage: certmail <command>", ""},
		{[]string{"help", "dlq"}, 0, "Usage: certmail dlq <command>", ""},
		{[]string{"help", "nosuch"}, 2, "unexpected argument nosuch; certmail --help lists the commands", ""},
		{[]string{"help", "dlq", "nosuch"}, 2, "unexpected argument nosuch; certmail dlq --help says what it takes", ""},
		{[]string{"task", "an-id", "nosuch"}, 2, "unexpected argument nosuch; certmail task --help says what it takes", ""},
		{[]string{"dlq"}, 2, "; certmail dlq --help lists them", ""},
		{[]string{"task"}, 2, `expected "<id>"; certmail task --help says what it takes`, ""},
		{[]string{"schedule", "rm"}, 2, `expected "<id>"; certmail schedule rm --help says what it takes`, ""},
		{[]string{"dlq", "show"}, 2, `expected "<task-id>"; certmail dlq show --help says what it takes`, ""},
		{[]string{"dlq", "requeue"}, 2, `expected "<task-id> ..."; certmail dlq requeue --help says what it takes`, ""},
		{[]string{"dlq", "delete"}, 2, `expected "<task-id> ..."; certmail dlq delete --help says what it takes`, ""},
		{[]string{"enqueue"}, 2, "enqueue: " + giveType, "missing flags"},
		{[]string{"enqueue", "resend-dvc"}, 2, "enqueue: resend-dvc is not a task type; " + giveType, "bulk"},
		{[]string{"enqueue", "--dry-run", "resend-dvc", "--order-id", "1"}, 2, "enqueue: resend-dvc is not a task type; " + giveType, "bulk"},
		{[]string{"enqueue", "-f", "jobs.jsonl", "extra"}, 2, "unexpected argument extra; certmail enqueue bulk --help says what it takes", "task type"},
		{[]string{"enqueue", "-f", "jobs.jsonl", "--queue", "bulk"}, 2, "enqueue --file takes each task's queue from its line", "--queues"},
		{[]string{"enqueue", "set-emails", "--order-id"}, 2, "--order-id", "give a task type"},
	} {
		r := run(t, tt.args...)
		got := r.stderr
		if tt.code == 0 {
			got = r.stdout
		}
		if r.code != tt.code || !strings.Contains(got, tt.out) || (tt.not != "" && strings.Contains(got, tt.not)) ||
			(tt.code != 0 && strings.Count(r.stderr, "\n") != 1) {
			t.Errorf("certmail %s: exit %d, stdout %q, stderr %q; want %d and %q", strings.Join(tt.args, " "), r.code, r.stdout, r.stderr, tt.code, tt.out)
		}
	}
}

func TestVersionAndUsageErrors(t *testing.T) {
	t.Parallel()
	if r := run(t, "version"); r.code != 0 || strings.TrimSpace(r.stdout) == "" {
		t.Errorf("version: %+v", r)
	}
	for _, args := range [][]string{{"nope"}, {"worker", "--concurrency", "x"}, {"enqueue", "set-emails", "--order-id"}} {
		if r := run(t, args...); r.code != 2 || r.stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, r.code, r.stderr)
		}
	}
	// The worker refuses to start without a key, in one line.
	r := run(t, "worker", "--redis-url", "redis://127.0.0.1:1/0")
	if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "DIGICERT_API_KEY") {
		t.Errorf("worker without a key: exit %d, %q", r.code, r.stderr)
	}
}

// Two accounts with one key share DigiCert's limits on it; the worker
// refuses them, exit 2, in one line naming both and not the key.
func TestWorkerRefusesSharedKey(t *testing.T) {
	t.Parallel()
	const key = "shared-k3y-that-must-not-leak"
	d := t.TempDir()
	accounts := filepath.Join(d, "accounts.yaml")
	for name, content := range map[string]string{"alias.key": key, accounts: "accounts:\n  - name: alias\n    api_key_file: alias.key\n"} {
		if err := os.WriteFile(filepath.Join(d, filepath.Base(name)), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A worker that accepted the accounts would wait for Redis: stop it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := cli.Main(ctx, []string{"worker", "--redis-url", "redis://127.0.0.1:1/0", "--digicert-api-key", key, "--digicert-accounts-file", accounts},
		strings.NewReader(""), &out, &errOut)
	r := result{code, out.String(), errOut.String()}
	if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 ||
		!strings.Contains(r.stderr, `"alias" and "default"`) || strings.Contains(r.stderr+r.stdout, key) {
		t.Errorf("worker with two accounts on one key: exit %d, %q; want 2 and one line naming both accounts", r.code, r.stderr)
	}
}

// A secret's _FILE setting that names no readable file stops the command
// with exit status 2 and one line naming the setting and the reason, never
// the path: the secret itself pasted in its place is a common mistake, and
// the line goes to the pod's log.
func TestUnreadableSecretFileNotEchoed(t *testing.T) {
	t.Parallel()
	const secret = "SECRETKEY123SECRETKEY123" // relative: resolved in the test's directory, where it is absent
	d := t.TempDir()
	accounts := filepath.Join(d, "accounts.yaml")
	if err := os.WriteFile(accounts, []byte("accounts:\n  - name: us\n    api_key_file: "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noRedis := []string{"--redis-url", "redis://127.0.0.1:1/0"}
	tests := []struct {
		name   string
		args   []string
		hidden string // the path, which must not be printed
		want   []string
	}{
		{"key file absent", append([]string{"worker", "--digicert-api-key-file", secret}, noRedis...), secret,
			[]string{"--digicert-api-key-file: ", "no such file or directory"}},
		{"key file a directory", append([]string{"worker", "--digicert-api-key-file", d}, noRedis...), d,
			[]string{"--digicert-api-key-file: ", "is a directory"}},
		{"accounts file's key file absent", append([]string{"worker", "--digicert-accounts-file", accounts}, noRedis...), secret,
			[]string{"accounts[0] (us)", "api_key_file", "no such file or directory"}},
		{"tokens file absent", append([]string{"api", "--api-tokens-file", secret}, noRedis...), secret,
			[]string{"--api-tokens-file: ", "no such file or directory"}},
		{"fake's key file absent", []string{"fake-digicert", "--api-key-file", secret, "--addr", "127.0.0.1:0"}, secret,
			[]string{"--api-key-file", "no such file or directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tt.args...)
			if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want 2 and one line", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not say %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr+r.stdout, tt.hidden) {
				t.Errorf("the output repeats the path %q: %q", tt.hidden, r.stderr)
			}
		})
	}
}

// The worker refuses to start on the DigiCert key placeholders shipped in
// deploy/ (as the API does on the token placeholders), with exit status 2
// and one line naming the setting, never the key; the compose sandbox's key,
// which only the fake CertCentral accepts, is taken.
func TestWorkerRefusesPlaceholderKey(t *testing.T) {
	t.Parallel()
	secrets := func(p ...string) string { return filepath.Join(append([]string{"..", "..", "deploy"}, p...)...) }
	noRedis := []string{"--redis-url", "redis://127.0.0.1:1/0", "--admin-addr="}
	for _, file := range []string{secrets("compose", "secrets", "digicert-api-key"), secrets("overlays", "example", "secrets", "digicert-api-key")} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			key, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			// Bounded: a worker that took the key would wait for Redis for ever.
			r := runFor(5*time.Second, append([]string{"worker", "--digicert-api-key-file", file}, noRedis...)...)
			want := "--digicert-api-key-file: the key is the placeholder shipped in deploy/"
			if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", r.code, r.stderr, want)
			}
			if strings.Contains(r.stderr+r.stdout, strings.TrimSpace(string(key))) {
				t.Errorf("the output repeats the key: %q", r.stderr)
			}
		})
	}
	t.Run("sandbox", func(t *testing.T) {
		t.Parallel()
		r := runFor(2*time.Second, append([]string{"worker", "--digicert-api-key-file", secrets("compose", "secrets", "sandbox-api-key"),
			"--digicert-base-url", "http://127.0.0.1:1/services/v2"}, noRedis...)...)
		if strings.Contains(r.stderr, "placeholder") || r.code == 2 {
			t.Errorf("the sandbox's key is refused: exit %d, %q", r.code, r.stderr)
		}
	})
}

// CERTMAIL_TASK_CHECK_INTERVAL out of its bounds (not positive, too short
// to leave Redis alone, too long for a task to be noticed) is refused by
// the worker and by dev, in one line naming the setting.
func TestTaskCheckIntervalBounds(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"worker", "dev"} {
		for _, d := range []string{"0s", "-1s", "5ms", "2m"} {
			r := run(t, cmd, "--task-check-interval="+d, "--redis-url", "redis://127.0.0.1:1/0")
			if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 ||
				!strings.Contains(r.stderr, "--task-check-interval: ") || !strings.Contains(r.stderr, "10ms to 1m") {
				t.Errorf("%s --task-check-interval %s: exit %d, %q; want 2 and one line naming the setting", cmd, d, r.code, r.stderr)
			}
		}
	}
}

// outOfRange lists, per setting, values outside the range its row of the
// README's configuration table states (TestReadmeStatesRanges), the words
// of that range, and the bounds, which are accepted. A value beyond such a
// range cannot work or would not be honoured: CERTMAIL_CONCURRENCY=1000000
// grew a worker by half a gigabyte a second before it wrote a line,
// DIGICERT_TIMEOUT=1ns timed out every call, CERTMAIL_SCHEDULER_LEASE=1000000h
// would keep a dead leader's lease for a century.
var outOfRange = []struct {
	cmd, flag, env string
	bad            []string
	want           string   // the range, as the error says it
	bounds         []string // accepted
}{
	{"worker", "concurrency", "CERTMAIL_CONCURRENCY", []string{"0", "-1", "1001", "1000000"}, "1 to 1000", []string{"1000"}},
	{"worker", "max-retry", "CERTMAIL_MAX_RETRY", []string{"-1", "101"}, "0 to 100", []string{"0", "100"}},
	{"worker", "deadletter-maxlen", "CERTMAIL_DEADLETTER_MAXLEN", []string{"0", "-1", "10000001"}, "1 to 10000000", []string{"1", "10000000"}},
	{"worker", "shutdown-timeout", "CERTMAIL_SHUTDOWN_TIMEOUT", []string{"0s", "-1s", "999ms", "1h1s", "2h"}, "1s to 1h", []string{"1s", "1h"}},
	{"worker", "auth-probe-interval", "CERTMAIL_AUTH_PROBE_INTERVAL", []string{"0s", "-1s", "1ns", "999ms", "1h1s", "2h"}, "1s to 1h", []string{"1s", "1h"}},
	{"worker", "rate-limit-pause", "CERTMAIL_RATE_LIMIT_PAUSE", []string{"0s", "-1s", "1ns", "999ms", "5m1s", "10m", "100000h"}, "1s to 5m", []string{"1s", "5m"}},
	{"worker", "task-check-interval", "CERTMAIL_TASK_CHECK_INTERVAL", []string{"0s", "-1s", "5ms", "1m1s", "2m"}, "10ms to 1m", []string{"10ms", "1m"}},
	{"worker", "guard-replicas", "CERTMAIL_GUARD_REPLICAS", []string{"-1", "6", "1000"}, "0 to 5", []string{"0", "5"}},
	{"dev", "guard-replicas", "CERTMAIL_GUARD_REPLICAS", []string{"-1", "6"}, "0 to 5", []string{"0", "5"}},
	{"worker", "digicert-timeout", "DIGICERT_TIMEOUT", []string{"0s", "-1s", "1ns", "100ms", "1.999s", "21s", "1h"}, "2s to 20s: at least what a call to DigiCert is given to start in, at most the budget of one call", []string{"2s", "20s"}},
	{"api", "shutdown-timeout", "CERTMAIL_SHUTDOWN_TIMEOUT", []string{"0s", "-1s", "999ms", "2h"}, "1s to 1h", []string{"1s", "1h"}},
	{"api", "schedule-max", "CERTMAIL_SCHEDULE_MAX", []string{"0", "-1", "100001"}, "1 to 100000", []string{"100000"}},
	{"api", "schedule-min-interval", "CERTMAIL_SCHEDULE_MIN_INTERVAL", []string{"0s", "1ns", "999ms", "43801h", "1000000h"}, "1s to 43800h", []string{"1s", "43800h"}},
	{"api", "result-retention", "CERTMAIL_RESULT_RETENTION", []string{"721h", "1000000h"}, "1m to 720h", []string{"720h"}},
	{"api", "max-retry", "CERTMAIL_MAX_RETRY", []string{"-1", "101"}, "0 to 100", []string{"100"}},
	{"scheduler", "lease", "CERTMAIL_SCHEDULER_LEASE", []string{"0s", "100ms", "61s", "1000000h"}, "1s to 1m", []string{"1s", "1m"}},
	{"scheduler", "schedule-min-interval", "CERTMAIL_SCHEDULE_MIN_INTERVAL", []string{"0s", "1ns", "1000000h"}, "1s to 43800h", []string{"43800h"}},
}

// outOfRangeArgs are what each command of outOfRange needs besides the
// setting to get as far as waiting for a Redis that does not answer.
var outOfRangeArgs = map[string][]string{
	"worker":    {"--digicert-api-key=k", "--admin-addr=", "--redis-url=redis://127.0.0.1:1/0"},
	"api":       {"--api-tokens=" + strings.Repeat("t", 20), "--http-addr=127.0.0.1:0", "--redis-url=redis://127.0.0.1:1/0"},
	"scheduler": {"--admin-addr=", "--redis-url=redis://127.0.0.1:1/0"},
	"dev":       {"--redis-url=redis://127.0.0.1:1/0"},
}

// Each setting outside its documented range, typed as a flag, is refused
// with exit 2 in one line naming the flag and the range; its bounds are
// accepted (the command then waits for Redis until the deadline).
func TestSettingsOutOfRangeRefused(t *testing.T) {
	t.Parallel()
	for _, tt := range outOfRange {
		t.Run(tt.cmd+" "+tt.flag, func(t *testing.T) {
			t.Parallel()
			for _, v := range tt.bad {
				r := runFor(2*time.Second, append([]string{tt.cmd, "--" + tt.flag + "=" + v}, outOfRangeArgs[tt.cmd]...)...)
				want := "certmail " + tt.cmd + ": --" + tt.flag + ": "
				if r.code != 2 || !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, ": want "+tt.want) || strings.Count(r.stderr, "\n") != 1 {
					t.Errorf("--%s=%s: exit %d, %q; want 2 and one line starting %q, saying %q", tt.flag, v, r.code, r.stderr, want, tt.want)
				}
			}
			for _, v := range tt.bounds {
				r := runFor(2*time.Second, append([]string{tt.cmd, "--" + tt.flag + "=" + v}, outOfRangeArgs[tt.cmd]...)...)
				if r.code == 2 || strings.Contains(r.stderr, "--"+tt.flag) || strings.Contains(r.stderr, tt.env) {
					t.Errorf("--%s=%s: exit %d, %q; want it accepted", tt.flag, v, r.code, r.stderr)
				}
			}
		})
	}
}

// The same settings from the environment are refused naming the variable.
func TestSettingsOutOfRangeFromEnvironment(t *testing.T) {
	// Not parallel: t.Setenv.
	for _, tt := range outOfRange {
		t.Run(tt.env+" "+tt.cmd, func(t *testing.T) {
			v := tt.bad[len(tt.bad)-1]
			t.Setenv(tt.env, v)
			r := runFor(2*time.Second, append([]string{tt.cmd}, outOfRangeArgs[tt.cmd]...)...)
			want := "certmail " + tt.cmd + ": " + tt.env + ": " + v + ": want " + tt.want
			if r.code != 2 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%s=%s: exit %d, %q; want 2 and one line starting %q", tt.env, v, r.code, r.stderr, want)
			}
		})
	}
}

// A result retention shorter than the scheduler's longest pause between
// looks at a tick's task let the result expire unseen: an until_validated
// schedule never ended and read the order at every tick. Every command that
// reads CERTMAIL_RESULT_RETENTION refuses it, exit 2, in one line naming the
// setting and its range, worded as a value above the range is (and as every
// ranged setting's error is: it had a wording of its own); the minimum
// itself is accepted.
func TestShortResultRetentionRefused(t *testing.T) {
	t.Parallel()
	const noRedis = "--redis-url=redis://127.0.0.1:1/0"
	minimum := scheduler.MinResultRetention
	const inRange = ": want 1m to 720h" // as outOfRange says it
	if minimum != time.Minute {
		t.Fatalf("the minimum is now %v: update the range's words", minimum)
	}
	for _, args := range [][]string{
		{"api", "--api-tokens=" + strings.Repeat("t", 20), "--http-addr=127.0.0.1:0", noRedis},
		{"scheduler", "--admin-addr=", noRedis},
		{"enqueue", "set-emails", "--order-id=1", "--email=a@example.com", noRedis},
	} {
		for _, v := range []string{"1s", (minimum - time.Second).String(), "0s", "-1s"} {
			// Accepted, the command would wait for Redis (the deadline ends
			// the wait) or fail to reach it (exit 1).
			r := runFor(2*time.Second, append(args, "--result-retention="+v)...)
			if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 ||
				!strings.HasPrefix(r.stderr, "certmail "+args[0]) || !strings.HasSuffix(r.stderr, ": --result-retention: "+v+inRange+"\n") {
				t.Errorf("%s --result-retention=%s: exit %d, %q; want 2 and one line naming the setting and its range from %v, as the other ranged settings say it",
					args[0], v, r.code, r.stderr, minimum)
			}
		}
		r := runFor(2*time.Second, append(args, "--result-retention="+minimum.String())...)
		if r.code == 2 || strings.Contains(r.stderr, "CERTMAIL_RESULT_RETENTION") {
			t.Errorf("%s --result-retention=%v: exit %d, %q; want it accepted", args[0], minimum, r.code, r.stderr)
		}
	}
}

// A setting kong refuses (a value outside its enum) is named as the
// operator gave it: by its variable when it came from the environment, by
// its flag when the flag was typed (and won over the variable).
func TestEnumSettingNamedAsGiven(t *testing.T) {
	// Not parallel: t.Setenv.
	for _, tt := range []struct {
		env, value string
		args       []string
		want       string
	}{
		{"CERTMAIL_LOG_FORMAT", "text", nil, "certmail: CERTMAIL_LOG_FORMAT must be one of"},
		{"CERTMAIL_LOG_LEVEL", "DEBUG", nil, "certmail: CERTMAIL_LOG_LEVEL must be one of"},
		{"CERTMAIL_LOG_FORMAT", "json", []string{"--log-format", "text"}, "certmail: --log-format must be one of"},
		{"CERTMAIL_LOG_FORMAT", "text", []string{"--log-format", "text"}, "certmail: --log-format must be one of"},
	} {
		t.Run(tt.env+"="+tt.value+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			r := run(t, append([]string{"dlq", "list", "--redis-url", "redis://127.0.0.1:1/0"}, tt.args...)...)
			if r.code != 2 || !strings.HasPrefix(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 2 and one line starting %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

// An empty DIGICERT_RATE_LIMITS (a manifest's ${DIGICERT_RATE_LIMITS} with
// the variable unset) read as no windows at all: a worker sent as fast as
// it could and DigiCert blocked the key for everyone. Every command that
// reads the setting refuses it, exit 2, in one line naming it, the form it
// wants and how to get the default.
func TestEmptyRateLimitsRefused(t *testing.T) {
	// Not parallel: t.Setenv. Accepted, a command would wait for Redis (the
	// deadline ends the wait) or fail to reach it (exit 1).
	for _, args := range [][]string{
		{"worker", "--digicert-api-key=k", "--admin-addr="},
		{"api", "--api-tokens=" + strings.Repeat("t", 20), "--http-addr=127.0.0.1:0"},
		{"scheduler", "--admin-addr="},
		{"enqueue", "set-emails", "--order-id=1", "--email=a@example.com"},
	} {
		for _, value := range []string{"", "  "} {
			t.Setenv("DIGICERT_RATE_LIMITS", value)
			r := runFor(2*time.Second, append(args, "--redis-url", "redis://127.0.0.1:1/0")...)
			if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 ||
				!strings.Contains(r.stderr, "DIGICERT_RATE_LIMITS: ") || !strings.Contains(r.stderr, ratelimit.DefaultWindows) ||
				!strings.Contains(r.stderr, "unset it") {
				t.Errorf("%s with DIGICERT_RATE_LIMITS=%q: exit %d, %q; want 2 and one line naming the setting", args[0], value, r.code, r.stderr)
			}
		}
		t.Setenv("DIGICERT_RATE_LIMITS", ratelimit.DefaultWindows) // the empty flag must win over it
		r := runFor(2*time.Second, append(args, "--digicert-rate-limits=", "--redis-url", "redis://127.0.0.1:1/0")...)
		if r.code != 2 || !strings.Contains(r.stderr, "--digicert-rate-limits: ") {
			t.Errorf("%s --digicert-rate-limits=: exit %d, %q; want 2 naming the setting", args[0], r.code, r.stderr)
		}
	}
}

// A setting naming a file, set but empty (a manifest's ${…} with the
// variable unset), would be the working directory: it is refused with one
// line naming the setting and exit status 2, in every command that reads
// one, whether it comes from the environment or a flag; a command that
// reads none of them does not mind it.
func TestEmptyFileSettingRefused(t *testing.T) {
	// Not parallel: t.Setenv. Accepted, a command would wait for Redis (the
	// deadline ends the wait) or fail to reach it (exit 1).
	token := "--api-tokens=" + strings.Repeat("t", 20)
	const noRedis = "--redis-url=redis://127.0.0.1:1/0"
	for _, tt := range []struct {
		setting, flag string
		args          []string
	}{
		{"DIGICERT_ACCOUNTS_FILE", "--digicert-accounts-file", []string{"worker", "--digicert-api-key=k", "--admin-addr=", noRedis}},
		{"DIGICERT_ACCOUNTS_FILE", "--digicert-accounts-file", []string{"api", token, "--http-addr=127.0.0.1:0", noRedis}},
		{"DIGICERT_ACCOUNTS_FILE", "--digicert-accounts-file", []string{"enqueue", "set-emails", "--order-id=1", "--email=a@example.com", noRedis}},
		{"DIGICERT_API_KEY_FILE", "--digicert-api-key-file", []string{"worker", "--digicert-api-key=k", "--admin-addr=", noRedis}},
		{"DIGICERT_API_KEY_FILE", "--api-key-file", []string{"fake-digicert", "--api-key=k", "--addr=127.0.0.1:0"}},
		{"CERTMAIL_API_TOKENS_FILE", "--api-tokens-file", []string{"api", token, "--http-addr=127.0.0.1:0", noRedis}},
		{"CERTMAIL_SCHEDULES_FILE", "--schedules-file", []string{"scheduler", "--admin-addr=", noRedis}},
	} {
		args := tt.args
		for _, value := range []string{"", "  "} {
			t.Setenv(tt.setting, value)
			r := runFor(2*time.Second, args...)
			if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 ||
				!strings.Contains(r.stderr, tt.setting+": empty") || !strings.Contains(r.stderr, "unset it") {
				t.Errorf("%s with %s=%q: exit %d, %q; want 2 and one line naming the setting", args[0], tt.setting, value, r.code, r.stderr)
			}
		}
		os.Unsetenv(tt.setting)
		r := runFor(2*time.Second, append(args, tt.flag+"=")...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.flag+": empty") {
			t.Errorf("%s %s=: exit %d, %q; want 2 naming the flag", args[0], tt.flag, r.code, r.stderr)
		}
	}
	// The flag given wins over the empty variable; a command that reads no
	// such setting ignores it.
	dir := t.TempDir()
	file := filepath.Join(dir, "accounts.yaml")
	if err := os.WriteFile(file, []byte("accounts:\n  - name: default\n    api_key_file: key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DIGICERT_ACCOUNTS_FILE", "")
	if r := runFor(2*time.Second, "enqueue", "set-emails", "--order-id=1", "--email=a@example.com", "--digicert-accounts-file="+file,
		noRedis); strings.Contains(r.stderr, "empty") {
		t.Errorf("enqueue with the flag over DIGICERT_ACCOUNTS_FILE=\"\": %q", r.stderr)
	}
	t.Setenv("DIGICERT_ACCOUNTS_FILE", file) // and the empty flag wins over a file
	if r := runFor(2*time.Second, "enqueue", "set-emails", "--order-id=1", "--email=a@example.com", "--digicert-accounts-file=",
		noRedis); r.code != 2 || !strings.Contains(r.stderr, "--digicert-accounts-file: empty") {
		t.Errorf("enqueue --digicert-accounts-file= over DIGICERT_ACCOUNTS_FILE=%s: exit %d, %q; want 2 naming the setting", file, r.code, r.stderr)
	}
	t.Setenv("DIGICERT_ACCOUNTS_FILE", "")
	if r := runFor(2*time.Second, "version"); r.code != 0 {
		t.Errorf("version with DIGICERT_ACCOUNTS_FILE=\"\": exit %d, %q", r.code, r.stderr)
	}
}

// runFor runs certmail with args until it returns or d has passed (a
// command that starts serves until its context ends).
func runFor(d time.Duration, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out, errOut bytes.Buffer
	code := cli.Main(ctx, args, strings.NewReader(""), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// A listen address that cannot be one is a setting's mistake: one line
// naming the setting and exit 2, before anything starts (or says it
// stopped), in every command that listens.
func TestListenAddressRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	token := "--api-tokens=" + strings.Repeat("t", 20)
	for _, tt := range []struct {
		setting string
		args    []string
	}{
		{"--http-addr", []string{"api", token, "--http-addr=garbage"}},
		{"--http-addr", []string{"api", token, "--http-addr=127.0.0.1:65536"}},
		{"--http-addr", []string{"api", token, "--http-addr=a host:80"}},
		{"--admin-addr", []string{"worker", "--digicert-api-key=k", "--admin-addr=garbage"}},
		{"--admin-addr", []string{"scheduler", "--admin-addr=:port"}},
		{"--http-addr", []string{"dev", "--http-addr=garbage", "--admin-addr=127.0.0.1:0"}},
		{"--admin-addr", []string{"dev", "--http-addr=127.0.0.1:0", "--admin-addr=garbage"}},
		{"--addr", []string{"fake-digicert", "--api-key=k", "--addr=garbage"}},
	} {
		args := tt.args
		if args[0] != "fake-digicert" {
			args = append(args, "--redis-url", e.redis.URL())
		}
		r := runFor(5*time.Second, args...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, tt.setting+": ") ||
			strings.Contains(r.stderr, "started") || strings.Contains(r.stderr, "stopped") {
			t.Errorf("%v: exit %d, %q; want 2 and one line naming %s", tt.args, r.code, r.stderr, tt.setting)
		}
	}
}

// A REDIS_URL whose port cannot be one is refused like any setting: one line
// naming it and exit 2, not a wait for a Redis that cannot be dialled; and
// by dev too, before it starts anything, as --redis-url (its only source).
func TestRedisURLPortRefused(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"worker", "--digicert-api-key=k", "--admin-addr="},
		{"scheduler", "--admin-addr="},
		{"dlq", "list"},
		{"dev", "--http-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--no-demo"},
	} {
		for _, u := range []string{"redis://127.0.0.1:99999/0", "redis-sentinel://127.0.0.1:26379,127.0.0.1:0/0?master=m"} {
			r := runFor(10*time.Second, append(args, "--redis-url", u)...)
			if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "--redis-url: port ") {
				t.Errorf("%v with %s: exit %d, %q; want 2 and one line naming the port", args, u, r.code, r.stderr)
			}
		}
	}
}

// An address that is valid but taken is not a setting's mistake: exit 1,
// with the address and why, and no line saying the API started or stopped.
func TestListenAddressInUse(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	r := runFor(10*time.Second, "api", "--api-tokens="+strings.Repeat("t", 20), "--http-addr="+addr, "--redis-url", e.redis.URL())
	if r.code != 1 || !strings.Contains(r.stderr, "listen "+addr+": bind: address already in use") ||
		strings.Contains(r.stderr, "api started") || strings.Contains(r.stderr, "api stopped") {
		t.Errorf("api on a taken address: exit %d, %q; want 1 naming the address", r.code, r.stderr)
	}
}

func TestEnqueueFromFlags(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tests := []struct {
		args    []string
		typ     string
		payload string
		queue   string
	}{
		{[]string{"enqueue", "set-emails", "--order-id", "123", "--email", "a@example.com", "--email", "B@Example.COM", "--email", "b@example.com"},
			"set-emails", `{"order_id":123,"additional_emails":["a@example.com","B@example.com"]}`, "default"},
		{[]string{"enqueue", "set-emails", "--order-id", "124", "--clear", "--queue", "critical"},
			"set-emails", `{"order_id":124,"additional_emails":[]}`, "critical"},
		{[]string{"enqueue", "resend-dcv", "--order-id", "125"}, "resend-dcv", `{"order_id":125}`, "default"},
		{[]string{"enqueue", "resend-dcv", "--order-id", "126", "--locale", "de", "--approval", "domain=www.example.com,email=admin@example.com,email-domain=example.com"},
			"resend-dcv", `{"order_id":126,"domain_approval_emails":[{"domain":"www.example.com","email":"admin@example.com","email_domain":"example.com"}],"locale":"de"}`, "default"},
		{[]string{"enqueue", "send-cert", "--certificate-id", "456", "--email", "ops@example.com", "--format", "plaintext", "--message", "Hi"},
			"send-cert", `{"certificate_id":456,"emails":["ops@example.com"],"certificate_collect_format":"plaintext","custom_message":"Hi"}`, "default"},
		{[]string{"enqueue", "resend-dcv", "--order-id", "127", "--only-if-pending", "--queue", "bulk"},
			"resend-dcv", `{"order_id":127,"only_if_pending":true}`, "bulk"},
		{[]string{"enqueue", "resend-domain-dcv", "--domain-id", "1234"}, "resend-domain-dcv", `{"domain_id":1234}`, "default"},
		{[]string{"enqueue", "resend-domain-dcv", "--domain-id", "1235", "--name-scope", "Sub.Example.com", "--locale", "en",
			"--email", "admin@example.com", "--email", "Admin@EXAMPLE.com", "--email", "hostmaster@example.com"},
			"resend-domain-dcv", `{"domain_id":1235,"name_scope":"sub.example.com","locale":"en","email_array":["admin@example.com","hostmaster@example.com"]}`, "default"},
	}
	for _, tt := range tests {
		r := e.run(tt.args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, r.code, r.stderr)
		}
		id := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(r.stdout)
		if id == nil {
			t.Fatalf("%v: no id in %q", tt.args, r.stdout)
		}
		info, err := e.inspector.GetTaskInfo(tt.queue, id[1])
		if err != nil {
			t.Fatalf("%v: task %s: %v", tt.args, id[1], err)
		}
		if info.Type != tt.typ || withoutSequence(t, info.Payload) != tt.payload {
			t.Errorf("%v: stored %s %s, want %s %s", tt.args, info.Type, info.Payload, tt.typ, tt.payload)
		}
	}
}

// --account default is the account left out: with one idempotency key, the
// two spellings are one request, in either order.
func TestEnqueueIdempotencyKeyDefaultAccount(t *testing.T) {
	t.Parallel()
	e := setup(t)
	base := []string{"enqueue", "set-emails", "--order-id", "1001", "--email", "a@example.com"}
	for i, accounts := range [][2][]string{{{"--account", "default"}, nil}, {nil, {"--account", "default"}}} {
		key := []string{"--idempotency-key", fmt.Sprintf("order-1001 v%d", i)}
		var ids []string
		for _, account := range accounts {
			r := e.run(slices.Concat(base, account, key)...)
			id := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(r.stdout)
			if r.code != 0 || id == nil {
				t.Fatalf("%v then %v: exit %d: %s%s", accounts[0], accounts[1], r.code, r.stdout, r.stderr)
			}
			ids = append(ids, id[1])
		}
		if ids[0] != ids[1] {
			t.Errorf("%v then %v: tasks %s and %s, want the first one twice", accounts[0], accounts[1], ids[0], ids[1])
		}
	}
}

// withoutSequence drops the sequence stamped on set-emails (its value is a
// clock reading) after checking it is there.
func withoutSequence(t *testing.T, payload []byte) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["additional_emails"]; ok {
		if _, ok := m["sequence"]; !ok {
			t.Errorf("set-emails without a sequence: %s", payload)
		}
		delete(m, "sequence")
		b, _ := json.Marshal(struct {
			OrderID json.RawMessage `json:"order_id"`
			Emails  json.RawMessage `json:"additional_emails"`
		}{m["order_id"], m["additional_emails"]})
		return string(b)
	}
	return string(payload)
}

// TestEnqueueHelpNamesTheBound: --process-at and --process-in give the
// bound as the refusal does, 43800h (1825 days), not as "five years", which
// a date five calendar years ahead can exceed.
func TestEnqueueHelpNamesTheBound(t *testing.T) {
	t.Parallel()
	r := run(t, "enqueue", "resend-dcv", "--help")
	help := strings.Join(strings.Fields(r.stdout), " ")
	if r.code != 0 || strings.Count(help, "43800h (1825 days)") != 2 || strings.Contains(help, "five years") {
		t.Errorf("enqueue resend-dcv --help: exit %d, %s; want --process-at and --process-in to say 43800h (1825 days)", r.code, help)
	}
}

func TestEnqueueRejects(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"enqueue", "set-emails", "--order-id", "0", "--email", "Bob <b@example.com>"}, []string{"order_id:", "additional_emails[0]:"}},
		{[]string{"enqueue", "set-emails", "--order-id", "5"}, []string{"--clear"}},
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--account", "mars"}, []string{"account: unknown account"}},
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--locale", "english"}, []string{"locale:"}},
		{[]string{"enqueue", "send-cert", "--certificate-id", "5", "--email", "a@example.com", "--format", "fax"}, []string{"certificate_collect_format:"}},
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--queue", "Not A Queue"}, []string{"queue:"}},
		{[]string{"enqueue", "set-emails", "--order-id", "5", "--email", "a@example.com", "--process-at", "9999-12-31T23:59:59Z"},
			[]string{"process_at: must be at most 43800h (1825 days) ahead"}},
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--process-in", "2000000h"}, []string{"process_in: must be at most 43800h (1825 days) ahead"}},
		{[]string{"enqueue", "resend-domain-dcv", "--name-scope", "*.example.com", "--email", "admin"}, []string{"domain_id: required", "name_scope:", "email_array[0]:"}},
		// A member given twice is refused even when the first is empty,
		// as the API refuses a repeated member.
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--approval", "domain=,domain=x.example.com,email=a@example.com"}, []string{"domain given twice"}},
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--approval", "domain=x.example.com,email=a@example.com,email-domain=,email_domain=example.com"}, []string{"email_domain given twice"}},
	}
	for _, tt := range tests {
		r := e.run(tt.args...)
		if r.code == 0 {
			t.Errorf("%v: exit 0", tt.args)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr %q lacks %q", tt.args, r.stderr, w)
			}
		}
	}
	if n := len(e.tasks()); n != 0 {
		t.Errorf("%d tasks in Redis after rejected enqueues", n)
	}
}

func TestEnqueueFile(t *testing.T) {
	t.Parallel()
	e := setup(t)
	lines := []string{
		"\ufeff" + `{"type": "resend-dcv", "payload": {"order_id": 1}}`, // a file's mark, skipped
		``,
		`not json`,
		`# a comment`,
		`{"type": "send-fax", "payload": {}}`,
		`{"type": "set-emails", "payload": {"order_id": 2, "additional_emails": ["x"]}}`,
		`{"type": "send-cert", "payload": {"certificate_id": 3, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}, "queue": "bulk"}`,
		`{"type": "resend-dcv", "payload": {"order_id": 4}, "unknown": true}`,
		`{"type": "set-emails", "payload": {"order_id": 5, "additional_emails": []}, "process_in": "1h"}`,
		`{"type": "set-emails", "payload": {"order_id": 6, "additional_emails": []}, "queue": "nope", "queue": "critical"}`,
		`{"type": "resend-dcv", "payload": {"order_id": 11}, "process_at": "2999-01-01T00:00:00Z"}`,
		"\ufeff" + `{"type": "resend-dcv", "payload": {"order_id": 12}}`, // not at the file's start: refused
		`{"type": "resend-dcv", "payload": "{\"order_id\": 13}"}`,        // a payload that is a JSON string
		`["resend-dcv", {"order_id": 14}]`,                   // a line that is not an object
		`{"type": "resend-dcv", "payload": 15, "queue": ""}`, // the payload's problem among the line's
		`{"type": "set-emails", "payload": {"order_id": 16, "additional_emails": [` + strings.Repeat(`"x", `, 29) + `"x"]}}`,
	}
	file := filepath.Join(t.TempDir(), "jobs.jsonl")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.run("enqueue", "--file", file)
	if r.code == 0 {
		t.Errorf("exit 0 with bad lines")
	}
	for _, n := range []int{3, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16} {
		if !strings.Contains(r.stderr, fmt.Sprintf("line %d:", n)) {
			t.Errorf("line %d not reported: %s", n, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, "queue: duplicate field") {
		t.Errorf("the repeated queue is not named: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, "process_at: must be at most 43800h (1825 days) ahead") {
		t.Errorf("the far process_at is not named: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, "line 12: starts with a byte order mark (U+FEFF)") {
		t.Errorf("the byte order mark of line 12 is not named: %s", r.stderr)
	}
	// A problem of the payload as a whole names the member; one of the
	// line as a whole, and the count of problems not listed, name none.
	for _, want := range []string{"line 13: payload: must be a JSON object\n", "line 14: must be a JSON object\n",
		"line 15: queue: must not be empty", "line 15: payload: must be a JSON object\n", "line 16: and 10 more problems not listed\n"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q: %s", want, r.stderr)
		}
	}
	for _, n := range []int{1, 7, 9} {
		if strings.Contains(r.stderr, fmt.Sprintf("line %d:", n)) {
			t.Errorf("good line %d reported: %s", n, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "3 enqueued") || !strings.Contains(r.stdout, "11 failed") {
		t.Errorf("summary: %s", r.stdout)
	}
	if n := len(e.tasks()); n != 3 {
		t.Errorf("%d tasks in Redis, want the 3 good lines", n)
	}
}

func TestEnqueueFileThousandLines(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, `{"type": "resend-dcv", "payload": {"order_id": %d}}`+"\n", i+1)
	}
	file := filepath.Join(t.TempDir(), "jobs.jsonl")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.run("enqueue", "--file", file)
	if r.code != 0 || !strings.Contains(r.stdout, "1000 enqueued") {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if n := len(e.tasks()); n != 1000 {
		t.Errorf("%d tasks in Redis, want 1000", n)
	}
}

// TestTaskAndDLQ works on tasks a real worker completed and dead-lettered.
// TestTaskShowsTheWorkersRetryCap: `certmail task` reads CERTMAIL_MAX_RETRY
// as the workers do, and shows a raw producer's task (asynq's MaxRetry 25)
// with the cap that applies.
func TestTaskShowsTheWorkersRetryCap(t *testing.T) {
	t.Parallel()
	e := setup(t)
	client := asynq.NewClient(e.redis.ConnOpt())
	t.Cleanup(func() { client.Close() })
	info, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": 5}`)), asynq.ProcessIn(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, `"max_retry": 12,`},
		{[]string{"--max-retry", "4"}, `"max_retry": 4,`},
		{[]string{"--max-retry", "40"}, `"max_retry": 25,`},
		{[]string{"--max-retry", "4", "-o", "table"}, `(?m)^retried:\s+0 of 4$`},
	} {
		if r := e.run(append([]string{"task", info.ID}, c.args...)...); r.code != 0 || !regexp.MustCompile(c.want).MatchString(r.stdout) {
			t.Errorf("task %v: %+v, want %q", c.args, r, c.want)
		}
	}
	if r := e.run("task", info.ID, "--max-retry=-1"); r.code != 2 || !strings.Contains(r.stderr, "--max-retry: -1: want 0 to 100") {
		t.Errorf("task --max-retry -1: %+v, want exit 2 naming CERTMAIL_MAX_RETRY", r)
	}
}

func TestTaskAndDLQ(t *testing.T) {
	t.Parallel()
	e := setup(t)
	fake, baseURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{"cli-key"}})
	fake.AddOrder(10)
	startWorker(t, e, baseURL, "cli-key")

	id := func(r result) string {
		m := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("no id in %q %q", r.stdout, r.stderr)
		}
		return m[1]
	}
	good := id(e.run("enqueue", "resend-dcv", "--order-id", "10"))
	bad := id(e.run("enqueue", "resend-dcv", "--order-id", "11"))
	state := func(id string) string {
		r := e.run("task", id)
		var st struct {
			State  string          `json:"state"`
			Result json.RawMessage `json:"result"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
			return ""
		}
		return st.State
	}
	deadline := time.Now().Add(20 * time.Second)
	for state(good) != "completed" || state(bad) != "archived" {
		if time.Now().After(deadline) {
			t.Fatalf("states %q %q", state(good), state(bad))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := e.run("task", good); !strings.Contains(r.stdout, `"outcome": "delivered"`) {
		t.Errorf("task output lacks the result: %s", r.stdout)
	}
	if r := e.run("task", "no-such-task"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("unknown task: %+v", r)
	}
	if r := e.run("dlq", "list"); r.code != 0 || !strings.Contains(r.stdout, bad) || strings.Contains(r.stdout, good) {
		t.Errorf("dlq list: %+v", r)
	}
	if r := e.run("dlq", "list", "--before", "99999999999999999999-0"); r.code != 2 || !strings.Contains(r.stderr, "cursor") ||
		strings.Contains(r.stderr, "ERR") {
		t.Errorf("dlq list --before beyond uint64: %+v, want a usage error", r)
	}
	if r := e.run("dlq", "show", bad); r.code != 0 || !strings.Contains(r.stdout, "not_found|order") {
		t.Errorf("dlq show: %+v", r)
	}
	fake.AddOrder(11) // the cause fixed
	if r := e.run("dlq", "requeue", bad); r.code != 0 {
		t.Fatalf("dlq requeue: %+v", r)
	}
	deadline = time.Now().Add(20 * time.Second)
	for state(bad) != "completed" {
		if time.Now().After(deadline) {
			t.Fatalf("requeued task: %q", state(bad))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Purge asks first; without a yes (stdin empty here) nothing goes.
	third := id(e.run("enqueue", "resend-dcv", "--order-id", "12"))
	deadline = time.Now().Add(20 * time.Second)
	for state(third) != "archived" {
		if time.Now().After(deadline) {
			t.Fatalf("third task: %q, want archived", state(third))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := e.run("dlq", "purge"); !strings.Contains(r.stdout, "[y/N]") || !strings.Contains(r.stdout, "nothing deleted") {
		t.Errorf("purge without --yes: %+v", r)
	}
	if r := e.run("dlq", "list"); !strings.Contains(r.stdout, third) {
		t.Errorf("purge without a yes deleted: %+v", r)
	}
	if r := e.run("dlq", "purge", "--yes"); r.code != 0 {
		t.Errorf("purge --yes: %+v", r)
	}
	if r := e.run("dlq", "list"); !strings.Contains(r.stdout, "no dead-lettered tasks") {
		t.Errorf("after purge: %+v", r)
	}
}

// dlq purge deletes the dead letters of the queues given and no others,
// names on stderr a queue asynq has never known, and refuses (exit 2,
// before asking) when that looks like a mistype: none of the queues given
// is known, or dead letters name a queue that is not given.
func TestDLQPurgeQueues(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(e.redis.Client())
	deadLetter := func(q string) {
		t.Helper()
		info, err := client.Enqueue(asynq.NewTask("set-emails-v2", []byte(`{}`)), asynq.Queue(q))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.inspector.ArchiveTask(q, info.ID); err != nil {
			t.Fatal(err)
		}
		entry := deadletter.Entry{TaskID: info.ID, Type: "set-emails-v2", Queue: q, ErrorCode: "unknown_type", FailedAt: time.Now()}
		if _, err := deadletter.Append(ctx, e.redis.Client(), entry, 1000); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"default", "default", "default", "bulk"} {
		deadLetter(q)
	}
	entries := func() int64 {
		n, err := e.redis.Client().XLen(ctx, deadletter.Stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	archived := func(q string) int {
		info, err := e.inspector.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		return info.Archived
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--yes", "--queues", "critical=6,defualt=3"},
			"--queues: asynq has never known queues critical, defualt (it knows: bulk, default), and 4 dead-letter entries name other queues (bulk, default); nothing deleted"},
		{[]string{"--yes", "--queues", "bulk=1,defualt=3"},
			"--queues: asynq has never known queue defualt (it knows: bulk, default), and 3 dead-letter entries name other queues (default); nothing deleted"},
		{[]string{"--queues", "bulk=1,defualt=3"}, "queue defualt"}, // refused before asking
		{[]string{"--yes", "--queues", "defualt"}, "asynq has never known queue defualt"},
		{[]string{"--yes", "--queues", "bulk,"}, `--queues: queue "": a name is 1-63 characters`},
		{[]string{"--yes", "--queues", "bulk=0"}, `--queues: queue "bulk=0": want NAME, or NAME=WEIGHT with a weight from 1 to 100`},
	} {
		r := e.run(append([]string{"dlq", "purge"}, tt.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) || strings.Contains(r.stdout, "[y/N]") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("dlq purge %v: %+v, want exit 2 with one line %q, before any question", tt.args, r, tt.want)
		}
	}
	if n, a := entries(), archived("default"); n != 4 || a != 3 {
		t.Fatalf("after refused purges: %d entries, %d archived in default; want 4 and 3", n, a)
	}

	// Known queues only, named without weights (which mean nothing to a
	// purge): default's dead letters go, bulk's stay.
	r := e.run("dlq", "purge", "--yes", "--queues", "default")
	if r.code != 0 || r.stderr != "" ||
		!strings.Contains(r.stdout, "deleted 3 dead-lettered tasks and 3 dead-letter entries of queues default ") ||
		!strings.Contains(r.stdout, "kept 1 dead-letter entry of other queues (bulk)") {
		t.Errorf("dlq purge of default: %+v", r)
	}
	if n, a, b := entries(), archived("default"), archived("bulk"); n != 1 || a != 0 || b != 1 {
		t.Errorf("after the purge of default: %d entries, %d archived in default, %d in bulk; want bulk's one left", n, a, b)
	}
	if r := e.run("dlq", "list"); r.code != 0 || !strings.Contains(r.stdout, "bulk") {
		t.Errorf("dlq list after the purge of default: %+v, want bulk's dead letter", r)
	}
	// critical has never been used: it is named, and the purge goes on.
	// CERTMAIL_QUEUES as the workers read it, with weights, is taken too.
	r = e.run("dlq", "purge", "--yes", "--queues", "critical=6,bulk=1")
	if r.code != 0 || r.stderr != "--queues: asynq has never known queue critical (it knows: bulk, default); it has no dead letters\n" ||
		!strings.Contains(r.stdout, "deleted 1 dead-lettered task and 1 dead-letter entry of queues bulk, critical ") {
		t.Errorf("dlq purge of critical and bulk: %+v", r)
	}
	if n := entries(); n != 0 {
		t.Errorf("after the purge of bulk: %d entries, want none", n)
	}
}

// dlq purge without --yes and with a stdin that is not a terminal (here
// /dev/null) has nobody to ask: it refuses, exit status 2, naming what it
// would delete, and deletes nothing, as the README says.
func TestDLQPurgeWithoutATerminal(t *testing.T) {
	t.Parallel()
	e := setup(t)
	client := asynq.NewClientFromRedisClient(e.redis.Client())
	info, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":7}`)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.inspector.ArchiveTask("default", info.ID); err != nil {
		t.Fatal(err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	const refusal = "1 dead-lettered task and 0 dead-letter entries, and stdin is not a terminal to confirm on: give --yes to purge without asking"
	r := e.runIn(null, "dlq", "purge", "--queues", "default")
	if r.code != 2 || !strings.Contains(r.stderr, refusal) || strings.Contains(r.stdout, "deleted") {
		t.Errorf("purge with stdin %s: %+v, want exit 2 and %q", os.DevNull, r, refusal)
	}
	if got, err := e.inspector.GetQueueInfo("default"); err != nil || got.Archived != 1 {
		t.Errorf("after the refusal: %+v %v, want the archived task kept", got, err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const documented = "stdin is not a terminal to confirm on: give --yes to purge without asking"
	if !strings.Contains(strings.Join(strings.Fields(string(readme)), " "), documented) {
		t.Errorf("the README does not quote the refusal %q", documented)
	}
}

// dlq purge asks about what it deletes: the archived tasks, not the stream's
// entries. The stream capped lower than the archive (12 tasks, 3 entries),
// or an archived task with no entry at all (the dashboard's Archive), are
// asked about as they are, the answer "no dead-lettered tasks" is never
// given while the archive holds some, and the purge deletes what was asked.
func TestDLQPurgeAsksAboutWhatItDeletes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name             string
		tasks, entries   int
		question, report string
	}{
		{"stream capped lower than the archive", 12, 3,
			"Delete 12 dead-lettered tasks and 3 dead-letter entries of queues default? [y/N] ",
			"deleted 12 dead-lettered tasks and 3 dead-letter entries of queues default "},
		{"an archived task without entry", 1, 0,
			"Delete 1 dead-lettered task and 0 dead-letter entries of queues default? [y/N] ",
			"deleted 1 dead-lettered task and 0 dead-letter entries of queues default "},
		{"one of each", 1, 1,
			"Delete 1 dead-lettered task and 1 dead-letter entry of queues default? [y/N] ",
			"deleted 1 dead-lettered task and 1 dead-letter entry of queues default "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			client := asynq.NewClientFromRedisClient(e.redis.Client())
			for i := range tt.tasks {
				info, err := client.Enqueue(asynq.NewTask("resend-dcv", fmt.Appendf(nil, `{"order_id":%d}`, 5000+i)))
				if err != nil {
					t.Fatal(err)
				}
				if err := e.inspector.ArchiveTask("default", info.ID); err != nil {
					t.Fatal(err)
				}
				if i < tt.entries {
					entry := deadletter.Entry{TaskID: info.ID, Type: "resend-dcv", Queue: "default", ErrorCode: "not_found|order", FailedAt: time.Now()}
					if _, err := deadletter.Append(context.Background(), e.redis.Client(), entry, 1000); err != nil {
						t.Fatal(err)
					}
				}
			}
			r := e.runIn(strings.NewReader("n\n"), "dlq", "purge", "--queues", "default")
			if r.code != 0 || r.stdout != tt.question+"nothing deleted\n" {
				t.Errorf("purge answered n: %+v, want the question %q", r, tt.question)
			}
			r = e.runIn(strings.NewReader("y\n"), "dlq", "purge", "--queues", "default")
			if r.code != 0 || !strings.HasPrefix(r.stdout, tt.question+tt.report) {
				t.Errorf("purge answered y: %+v, want the question %q, then %q", r, tt.question, tt.report)
			}
			if n := len(e.tasks()); n != 0 {
				t.Errorf("%d tasks left after the purge, want none", n)
			}
		})
	}
}

// Ctrl-C at dlq purge's question ends it at once, without waiting for a
// line: "interrupted: nothing deleted", exit status 130, the dead letter
// kept. Here the answer comes from a pipe that never gets a line.
func TestDLQPurgeQuestionInterrupted(t *testing.T) {
	t.Parallel()
	e := setup(t)
	client := asynq.NewClientFromRedisClient(e.redis.Client())
	info, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":5000}`)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.inspector.ArchiveTask("default", info.ID); err != nil {
		t.Fatal(err)
	}
	stdin, never := io.Pipe()
	t.Cleanup(func() { never.Close() }) // ends the read the question left behind
	stdout := &watchedBuffer{want: "[y/N] ", seen: make(chan struct{})}
	var stderr bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(ctx, []string{"dlq", "purge", "--queues", "default", "--redis-url", e.redis.URL()}, stdin, stdout, &stderr)
	}()
	select {
	case <-stdout.seen:
	case c := <-code:
		t.Fatalf("purge ended (exit %d) before asking: %q %q", c, stdout.String(), stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no question after 30 s: %q", stdout.String())
	}
	cancel() // Ctrl-C
	select {
	case c := <-code:
		if c != cli.ExitInterrupted || stderr.String() != "certmail dlq purge: interrupted: nothing deleted\n" {
			t.Errorf("interrupted question: exit %d, stderr %q; want %d and one line saying nothing was deleted", c, stderr.String(), cli.ExitInterrupted)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("purge still waits for an answer 10 s after its context was cancelled")
	}
	if got, err := e.inspector.GetTaskInfo("default", info.ID); err != nil || got.State != asynq.TaskStateArchived {
		t.Errorf("dead letter after the interrupted question: %v, %v; want it kept", got, err)
	}
}

// Ctrl-C while enqueue --file - waits on its input (a pipe, a terminal or a
// FIFO that has not closed) stops it: exit 130, and one line saying how many
// tasks were enqueued from the lines read.
func TestEnqueueFileInterruptedWhileReading(t *testing.T) {
	t.Parallel()
	e := setup(t)
	stdin, w := io.Pipe()
	t.Cleanup(func() { w.Close() }) // ends the read left behind
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(ctx, []string{"enqueue", "-f", "-", "--redis-url", e.redis.URL()}, stdin, &stdout, &stderr)
	}()
	if _, err := w.Write([]byte(`{"type":"resend-dcv","payload":{"order_id":1}}` + "\n")); err != nil {
		t.Fatal(err)
	}
	certmailtest.WaitFor(t, 10*time.Second, func() bool { return len(e.tasks()) == 1 },
		func() string { return "the first line's task is not in Redis" })
	cancel() // Ctrl-C, while the command waits for a second line
	select {
	case c := <-code:
		want := "certmail enqueue bulk: interrupted: 1 task enqueued from the 1 line of stdin read before stopping; later lines were not read\n"
		if c != cli.ExitInterrupted || stderr.String() != want {
			t.Errorf("interrupted read: exit %d, stderr %q; want %d and %q", c, stderr.String(), cli.ExitInterrupted, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("enqueue -f - still running 5 s after the interrupt")
	}
}

// Ctrl-C while enqueue --file waits for a FIFO's writer stops it too: the
// open of a FIFO waits until one comes.
func TestEnqueueFIFOInterruptedWhileOpening(t *testing.T) {
	t.Parallel()
	e := setup(t)
	fifo := filepath.Join(t.TempDir(), "jobs.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // ends an open still waiting for a writer
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Ctrl-C, before any writer opens the FIFO
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(ctx, []string{"enqueue", "--file", fifo, "--redis-url", e.redis.URL()}, strings.NewReader(""), &stdout, &stderr)
	}()
	select {
	case c := <-code:
		if c != cli.ExitInterrupted || stderr.String() != "certmail enqueue bulk: interrupted: nothing enqueued\n" {
			t.Errorf("interrupted open: exit %d, stderr %q; want %d and one line saying nothing was enqueued", c, stderr.String(), cli.ExitInterrupted)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("enqueue --file FIFO still waiting for a writer 5 s after the interrupt")
	}
}

// A directory given to enqueue --file is a usage error (exit 2), as a
// missing file is, before anything is read or summed up.
func TestEnqueueFileDirectoryRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	dir := t.TempDir()
	r := e.run("enqueue", "--file", dir)
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, dir+": is a directory") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("enqueue --file <directory>: exit %d, stdout %q, stderr %q; want 2, no summary and one line", r.code, r.stdout, r.stderr)
	}
}

// interruptedLine is Main's last line for an interrupted command: "interrupted",
// and what was done when it matters.
var interruptedLine = regexp.MustCompile(`: interrupted(: [^\n]+)?\n$`)

// A command stopped by Ctrl-C says it was interrupted, not "context
// canceled", and exits with status 130.
func TestInterruptedCommandSaysSo(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, args := range [][]string{{"dlq", "requeue", "a", "b"}, {"dlq", "list"}, {"dlq", "show", "a"}} {
		var out, errOut bytes.Buffer
		code := cli.Main(ctx, append(args, "--redis-url", e.redis.URL()), strings.NewReader(""), &out, &errOut)
		if code != cli.ExitInterrupted || !interruptedLine.MatchString(errOut.String()) || strings.Contains(errOut.String(), "context canceled") {
			t.Errorf("%v interrupted: exit %d, stderr %q; want %d and \"interrupted\"", args, code, errOut.String(), cli.ExitInterrupted)
		}
	}
}

// Ctrl-C while dlq requeue or delete works through its ids stops it there:
// during an id's Redis command (its answer withheld, the command stopped by
// the cancellation) or between two ids, it exits 130 with one line saying
// it was interrupted and how many tasks it did, not 1 with the id it was at
// counted as a failure ("1 of 1 tasks not requeued"), and tries no other id.
func TestDLQInterruptedAmongItsIDs(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"requeue", "delete"} {
		what := map[string]string{"requeue": "requeued", "delete": "deleted"}[cmd]
		t.Run(cmd+" during its last id", func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			proxy := e.redis.Proxy()
			proxy.WithholdAfter("xrevrange") // the lookup of the id's dead-letter entries
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				// Cancel once the lookup reached Redis: its answer never comes.
				for ctx.Err() == nil {
					info, err := e.redis.Client().Info(context.Background(), "commandstats").Result()
					if err == nil && strings.Contains(info, "cmdstat_xrevrange:") {
						cancel()
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			var out, errOut bytes.Buffer
			code := cli.Main(ctx, []string{"dlq", cmd, "abc", "--redis-url", "redis://" + proxy.Addr() + "/0"},
				strings.NewReader(""), &out, &errOut)
			// go-redis's log lines, process-wide, may come first.
			want := "certmail dlq " + cmd + ": interrupted: 0 of 1 tasks " + what + " before stopping\n"
			if code != cli.ExitInterrupted || !strings.HasSuffix(errOut.String(), want) || strings.Contains(errOut.String(), "abc:") {
				t.Errorf("exit %d, stderr %q; want %d and %q alone", code, errOut.String(), cli.ExitInterrupted, want)
			}
		})
		t.Run(cmd+" between two ids", func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Ctrl-C as the first id's failure is printed: before the second.
			errOut := &cancelOnWrite{want: "a: dead letter a:", cancel: cancel}
			var out bytes.Buffer
			code := cli.Main(ctx, []string{"dlq", cmd, "a", "b", "c", "--redis-url", e.redis.URL()}, strings.NewReader(""), &out, errOut)
			want := "a: dead letter a: not found\ncertmail dlq " + cmd + ": interrupted: 0 of 3 tasks " + what + " before stopping\n"
			if got := errOut.String(); code != cli.ExitInterrupted || !strings.HasSuffix(got, want) ||
				strings.Contains(got, "\nb:") || strings.Contains(got, "\nc:") {
				t.Errorf("exit %d, stderr %q; want %d and %q, b and c not tried", code, got, cli.ExitInterrupted, want)
			}
		})
	}
}

// cancelOnWrite is a buffer that calls cancel, within the Write, once what
// was written contains want. go-redis's log lines may be written to it from
// other goroutines.
type cancelOnWrite struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	want   string
	cancel context.CancelFunc
}

func (w *cancelOnWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.cancel()
	}
	return n, err
}

// watchedBuffer is a buffer safe for one writer and one reader that closes
// seen once what was written contains want.
type watchedBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *watchedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := strings.Contains(w.buf.String(), w.want)
	n, err := w.buf.Write(p)
	if !had && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
	}
	return n, err
}

func (w *watchedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// startWorker runs a worker against the fake CertCentral at baseURL, which
// accepts key, until the test ends.
func startWorker(t *testing.T, e *env, baseURL, key string) {
	t.Helper()
	certmailtest.StartWorker(t, e.redis.URL(), worker.Config{
		Accounts:          account.Set{"default": {Name: "default", BaseURL: baseURL, APIKey: account.Secret(key)}},
		TaskCheckInterval: 50 * time.Millisecond, ShutdownTimeout: time.Second,
		Client: digicert.Config{InitialBackoff: 10 * time.Millisecond}})
}

// --max-runs 0 is refused as other zeros are (mustBePositive): the API
// reads max_runs 0 as no limit, and a flag given 0 would quietly mean
// that. The message says how to ask for no limit; nothing is stored.
func TestScheduleAddMaxRunsZeroRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, v := range []string{"0", "-1"} {
		r := e.run("schedule", "add", "--id", "s4", "--cron", "@daily", "--type", "resend-dcv", "--payload", `{"order_id": 4}`, "--max-runs="+v)
		if r.code != 2 || !strings.Contains(r.stderr, "--max-runs: "+v+" must be positive: leave the flag out for no limit") ||
			strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("--max-runs %s: exit %d, stderr %q; want 2 and one line naming the rule", v, r.code, r.stderr)
		}
	}
	if r := e.run("schedule", "list", "-o", "json"); r.code != 0 || strings.Contains(r.stdout, `"s4"`) {
		t.Errorf("list after the refused adds: %+v; want no schedule s4", r)
	}
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.run("schedule", "add", "--id", "dcv-1", "--cron", "0 9 * * *", "--timezone", "Europe/Berlin", "--type", "resend-dcv",
		"--payload", `{"order_id": 1002}`, "--max-runs", "3")
	if r.code != 0 || !strings.Contains(r.stdout, `"next_run"`) {
		t.Fatalf("add: %+v", r)
	}
	if r := e.run("schedule", "add", "--id", "Bad Id", "--cron", "soon", "--type", "resend-dcv", "--payload", `{"order_id": 0}`); r.code != 2 ||
		!strings.Contains(r.stderr, "id:") || !strings.Contains(r.stderr, "cron:") || !strings.Contains(r.stderr, "payload.order_id:") {
		t.Errorf("invalid add: %+v", r)
	}
	if r := e.run("schedule", "add", "--id", "Bad Id", "--cron", "soon", "--type", "resend-dcv", "--payload", `{"order_id": 1}`,
		"--until", "tomorrow"); r.code != 2 || !strings.Contains(r.stderr, "until: must be an RFC 3339 time") ||
		!strings.Contains(r.stderr, "id:") || !strings.Contains(r.stderr, "cron:") {
		t.Errorf("invalid add with a bad --until: %+v, want every problem", r)
	}
	far := time.Now().AddDate(0, 6, 0) // half a year on: the first tick of its date is past an until of tomorrow
	if r := e.run("schedule", "add", "--id", "yearly", "--cron", fmt.Sprintf("0 9 %d %d *", far.Day(), far.Month()), "--type", "resend-dcv",
		"--payload", `{"order_id": 77}`, "--until", time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339)); r.code != 2 ||
		!strings.Contains(r.stderr, "until: never fires before until (first tick ") {
		t.Errorf("add that never fires before its until: %+v", r)
	}
	if r := e.run("schedule", "list"); r.code != 0 || !strings.Contains(r.stdout, "dcv-1") || !strings.Contains(r.stdout, "api") {
		t.Errorf("list: %+v", r)
	}
	if r := e.run("schedule", "add", "--id", "dcv-2", "--cron", "@daily", "--type", "resend-dcv", "--payload", `{"order_id": 1003}`,
		"--no-until-validated"); r.code != 0 || !strings.Contains(r.stdout, `"until_validated": false`) {
		t.Errorf("add --no-until-validated: %+v", r)
	}
	if r := e.run("schedule", "add", "--id", "cert-1", "--cron", "@daily", "--type", "send-cert", "--until-validated",
		"--payload", `{"certificate_id": 5, "emails": ["ops@example.com"], "certificate_collect_format": "attachment"}`); r.code != 2 ||
		!strings.Contains(r.stderr, "until_validated: only resend-dcv schedules take it") {
		t.Errorf("add send-cert --until-validated: %+v", r)
	}
	// A set-emails schedule with a sequence would repeat it on every tick.
	if r := e.run("schedule", "add", "--id", "emails-1", "--cron", "@daily", "--type", "set-emails",
		"--payload", `{"order_id": 1, "additional_emails": [], "sequence": 1}`); r.code != 2 ||
		!strings.Contains(r.stderr, "payload.sequence: a schedule must leave it out: each run is stamped when it is enqueued") {
		t.Errorf("add set-emails with a sequence: %+v", r)
	}
	// An until_validated schedule the scheduler ended says why in the list.
	if err := e.redis.Client().HSet(context.Background(), "certmail:schedule:dcv-1", "ended", "1",
		"ended_reason", "validated", "order_status", "issued", "last_task_id", "sched:dcv-1:1796186292").Err(); err != nil {
		t.Fatal(err)
	}
	if r := e.run("schedule", "list"); r.code != 0 || !strings.Contains(r.stdout, "(ended: validated, order issued)") {
		t.Errorf("list of an ended schedule: %+v", r)
	}
	if r := e.run("schedule", "list", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"ended_reason": "validated"`) ||
		!strings.Contains(r.stdout, `"state": "ended"`) || !strings.Contains(r.stdout, `"order_status": "issued"`) {
		t.Errorf("list -o json of an ended schedule: %+v", r)
	}
	// Removing a schedule leaves the tasks it enqueued, and says so.
	if r := e.run("schedule", "rm", "dcv-1"); r.code != 0 || !strings.Contains(r.stdout, "removed schedule dcv-1\n") ||
		!strings.Contains(r.stdout, "its last tick's task sched:dcv-1:1796186292 (queue bulk) stays") {
		t.Errorf("rm: %+v, want the last tick's task named", r)
	}
	if r := e.run("schedule", "rm", "dcv-1"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("rm again: %+v", r)
	}
}

// TestScheduleListSkipsWhatTheSchedulerSkips: a schedule stored as an
// earlier version took it, with ticks closer than
// CERTMAIL_SCHEDULE_MIN_INTERVAL, is not in the table or the JSON as if it
// were due: stderr names it with why the scheduler does not fire it, and a
// longer minimum interval lists it again.
func TestScheduleListSkipsWhatTheSchedulerSkips(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if err := e.redis.Client().HSet(context.Background(), "certmail:schedules", "old-resend",
		`{"id":"old-resend","cron":"@every 3s","type":"resend-dcv","payload":{"order_id":2001}}`).Err(); err != nil {
		t.Fatal(err)
	}
	const why = "skipped api schedule old-resend, which the scheduler does not fire: " +
		"cron: fires every 3s at times; the shortest interval allowed is 1m0s (CERTMAIL_SCHEDULE_MIN_INTERVAL)\n"
	for _, output := range []string{"table", "json"} {
		r := e.run("schedule", "list", "-o", output, "--schedule-min-interval", "1m")
		if r.code != 0 || strings.Contains(r.stdout, "old-resend") || r.stderr != why {
			t.Errorf("list -o %s: %+v, want old-resend only on stderr: %q", output, r, why)
		}
	}
	if r := e.run("schedule", "list", "--schedule-min-interval", "1s"); r.code != 0 || !strings.Contains(r.stdout, "old-resend") || r.stderr != "" {
		t.Errorf("list with a minimum interval of 1s: %+v, want old-resend listed", r)
	}
}

func TestAPIRefusesWithoutTokens(t *testing.T) {
	t.Parallel()
	if r := run(t, "api", "--redis-url", "redis://127.0.0.1:1/0"); r.code != 2 || !strings.Contains(r.stderr, "no API token") {
		t.Errorf("no token: %+v", r)
	}
	if r := run(t, "api", "--insecure-no-auth", "--api-tokens", "k3J9-q8Zr-77aa-b0c1", "--redis-url", "redis://127.0.0.1:1/0"); r.code != 2 ||
		!strings.Contains(r.stderr, "drop one of them") {
		t.Errorf("--insecure-no-auth with tokens: %+v", r)
	}
}

// TestAPIRefusesBadTokens: a token that is short, a placeholder shipped in
// deploy/, or followed by something other than a role stops the API (and
// the dev stack) at start with exit status 2 and one line naming where the
// token is, never the token.
func TestAPIRefusesBadTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	placeholder, err := os.ReadFile(filepath.Join("..", "..", "deploy", "compose", "secrets", "api-tokens"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		file   string // tokens file content; "" for none
		env    string // --api-tokens
		want   string
		secret string // must not be printed
	}{
		{"short in the file", "# comment\nk3J9-q8Zr-77aa-b0c1 producer\nabc123secret\n", "", "line 3: the token has 12 characters, fewer than 16", "abc123secret"},
		{"words in the file", "# comment\nhas space in-it-0123456789\n", "", "line 2:", "in-it-0123456789"},
		{"role first in the file", "producer k3J9-q8Zr-77aa-b0c1\n", "", "line 1: the role comes after the token", "k3J9-q8Zr-77aa-b0c1"},
		{"unknown role", "k3J9-q8Zr-77aa-b0c1 admin\n", "", "line 1: the word after the token is not a role", "k3J9-q8Zr-77aa-b0c1"},
		{"compose placeholder", string(placeholder), "", "placeholder shipped in deploy/", "replace-me-with-a-long-random-token"},
		{"short in the environment", "", "k3J9-q8Zr-77aa-b0c1 reader, abc123secret", "--api-tokens entry 2: the token has 12 characters", "abc123secret"},
		{"placeholder in the environment", "", "replace-with-a-long-random-token", "--api-tokens entry 1: the token is the placeholder", "replace-with-a-long-random-token"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"api", "--redis-url", "redis://127.0.0.1:1/0"}
			if tt.file != "" {
				file := filepath.Join(dir, fmt.Sprintf("tokens-%d", i))
				if err := os.WriteFile(file, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--api-tokens-file", file)
			}
			if tt.env != "" {
				args = append(args, "--api-tokens", tt.env)
			}
			r := run(t, args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want 2 and one line with %q", r.code, r.stderr, tt.want)
			}
			if strings.Contains(r.stderr+r.stdout, tt.secret) {
				t.Errorf("the output repeats the token: %q", r.stderr)
			}
			if tt.env != "" {
				r := run(t, "dev", "--api-tokens", tt.env, "--no-demo")
				if r.code != 2 || !strings.Contains(r.stderr, tt.want) || strings.Contains(r.stderr, tt.secret) {
					t.Errorf("dev: exit %d, stderr %q; want 2 with %q", r.code, r.stderr, tt.want)
				}
			}
		})
	}
}

// startAPI runs `certmail api` with args on a free loopback port until the
// test ends, and returns its base URL once it serves, and its stderr.
func startAPI(t *testing.T, args ...string) (string, *certmailtest.Output) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &certmailtest.Output{}
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(ctx, append([]string{"api", "--http-addr", "127.0.0.1:0"}, args...), strings.NewReader(""), io.Discard, stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("api exit %d: %s", c, stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "api started" {
				return "http://" + m["addr"].(string), stderr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAPIHostsSetting starts `certmail api` with CERTMAIL_API_HOSTS (the
// flag; the variable: TestSettingNamedAsGiven): it answers the names listed
// and the rebind-safe hosts, and refuses another on an open route as on one
// that needs a token.
func TestAPIHostsSetting(t *testing.T) {
	t.Parallel()
	e := setup(t)
	token := strings.Repeat("t", 20)
	base, _ := startAPI(t, "--redis-url", e.redis.URL(), "--api-tokens", token, "--api-hosts", "api.example.com, *.svc.example")
	for _, tt := range []struct {
		host, path string
		status     int
	}{
		{"api.example.com", "/v1/dead-letters", 200},
		{"x.svc.example:8080", "/healthz", 200},
		{"", "/v1/dead-letters", 200}, // 127.0.0.1:port
		{"localhost", "/healthz", 200},
		{"evil.example", "/healthz", 403},
		{"evil.example", "/v1/dead-letters", 403},
	} {
		req, err := http.NewRequest(http.MethodGet, base+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tt.host != "" {
			req.Host = tt.host
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.status {
			t.Errorf("Host %q, %s: %d, want %d", tt.host, tt.path, res.StatusCode, tt.status)
		}
	}
}

// TestAPIRefusesBadHosts: CERTMAIL_API_HOSTS holding what cannot be a host
// name stops the API and the dev stack at start, exit status 2, with one
// line naming the setting and the entry (but one too long to be a name).
func TestAPIRefusesBadHosts(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300) + ".example"
	for _, tt := range []struct{ value, want string }{
		{"*", `--api-hosts: entry 1 "*": a bare * would answer every host name`},
		{"ok.example, https://api.example.com", `--api-hosts: entry 2 "https://api.example.com": a host name, not a URL`},
		{"api.example.com:8443", `--api-hosts: entry 1 "api.example.com:8443": a host name without a port`},
		{"*.com", "two labels after *."},
		{"a b.example", "letters, digits, hyphens"},
		{long, "--api-hosts: entry 1: 308 bytes, more than 253"},
		{strings.Repeat("a.example,", 101), "--api-hosts: more than 100 entries"},
		{" , ", "--api-hosts: no host name"},
	} {
		for _, args := range [][]string{
			{"api", "--api-tokens=" + strings.Repeat("t", 20), "--redis-url", "redis://127.0.0.1:1/0"},
			{"dev", "--no-demo", "--http-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"},
		} {
			r := runFor(5*time.Second, append(args, "--api-hosts="+tt.value)...)
			if r.code != 2 || !strings.HasPrefix(r.stderr, "certmail "+args[0]+": ") || !strings.Contains(r.stderr, tt.want) ||
				strings.Count(r.stderr, "\n") != 1 || strings.Contains(r.stderr, long) {
				t.Errorf("%s --api-hosts=%.30q: exit %d, %.300q; want 2 and one line with %q", args[0], tt.value, r.code, r.stderr, tt.want)
			}
		}
	}
}

// TestAPITokenRoles starts `certmail api` with a tokens file that gives one
// token the producer role and leaves another without one: the producer may
// enqueue but not read dead letters; the other token, an operator's, may.
func TestAPITokenRoles(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const producer, operator = "prod-9f8e7d6c5b4a3210", "oper-0123456789abcdef"
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# producers\n"+producer+"   producer\n\n# full rights, as before roles\n"+operator+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, stderr := startAPI(t, "--redis-url", e.redis.URL(), "--api-tokens-file", file)
	call := func(method, path, token, body string) int {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct {
		method, path, token, body string
		status                    int
	}{
		{"POST", "/v1/tasks/resend-dcv", producer, `{"order_id": 5}`, 202},
		{"GET", "/v1/dead-letters", producer, "", 403},
		{"POST", "/v1/tasks/resend-dcv", operator, `{"order_id": 6}`, 202},
		{"GET", "/v1/dead-letters", operator, "", 200},
		{"GET", "/v1/dead-letters", "prod-9f8e7d6c5b4a3211", "", 401},
	} {
		if got := call(c.method, c.path, c.token, c.body); got != c.status {
			t.Errorf("%s %s as %.4s…: %d, want %d", c.method, c.path, c.token, got, c.status)
		}
	}
	if strings.Contains(stderr.String(), producer) || strings.Contains(stderr.String(), operator) {
		t.Errorf("the log holds a token:\n%s", stderr.String())
	}
}

// TestRedisLogsAreJSON: go-redis's own messages (here: a failed dial while
// the scheduler waits for Redis) reach stderr as zap JSON lines, not as
// go-redis's plain "redis: <date> pool.go:..." lines.
//
// Not parallel: go-redis's logger is process-wide, and a command running
// in parallel would take it over.
func TestRedisLogsAreJSON(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr certmailtest.Output
	code := make(chan int, 1)
	go func() {
		// Nothing listens on port 1 (privileged, and no test binds it); a
		// port found free a moment ago could be taken by then by another
		// test's server, which would answer the dial.
		code <- cli.Main(ctx, []string{"scheduler", "--redis-url", "redis://127.0.0.1:1/0", "--admin-addr", ""},
			strings.NewReader(""), io.Discard, &stderr)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "failed to dial") {
		if time.Now().After(deadline) {
			t.Fatalf("no go-redis dial failure logged within 30 s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Errorf("scheduler exit %d", c)
	}
	var found bool
	for _, m := range stderr.JSONLines(t) {
		if msg, _ := m["msg"].(string); strings.Contains(msg, "failed to dial") {
			found = true
			if m["logger"] != "redis" || m["level"] != "warn" || strings.HasPrefix(msg, "redis: ") || m["ts"] == nil {
				t.Errorf("go-redis line: %v", m)
			}
		}
	}
	if !found {
		t.Error("the dial failure is in no JSON line")
	}
}

// TestOneShotRedisLogsAreJSON: the operator commands (dlq, task, schedule)
// take the logging flags, and go-redis's own messages (here: the failed
// dials of a Redis that is not there) reach stderr at --log-level debug as
// zap JSON lines at DEBUG, before the command's one error line; no plain
// "redis: <date> pool.go:..." line. (At the default level the error line
// is all: cmd/certmail's TestOneShotRedisDownSaysSoInOneLine.)
//
// Not parallel: go-redis's logger is process-wide.
func TestOneShotRedisLogsAreJSON(t *testing.T) {
	for _, args := range [][]string{
		{"dlq", "list"},
		{"task", "x"},
		{"schedule", "list"},
		{"schedule", "add", "--id", "s1", "--cron", "@daily", "--type", "resend-dcv", "--payload", `{"order_id": 1}`},
		{"schedule", "rm", "s1"},
	} {
		h := run(t, append(args, "-h")...)
		for _, flag := range []string{"--log-level", "$CERTMAIL_LOG_LEVEL", "--log-format", "$CERTMAIL_LOG_FORMAT"} {
			if !strings.Contains(h.stdout, flag) {
				t.Errorf("%s -h does not list %s", strings.Join(args[:2], " "), flag)
			}
		}
		// Nothing listens on port 1 (see TestRedisLogsAreJSON).
		var stderr certmailtest.Output
		code := cli.Main(context.Background(), append(args, "--redis-url", "redis://127.0.0.1:1/0", "--log-level", "debug"),
			strings.NewReader(""), io.Discard, &stderr)
		out := strings.TrimSpace(stderr.String())
		lines := strings.Split(out, "\n")
		last := lines[len(lines)-1]
		name := "certmail " + args[0] // the command's words, not its arguments
		if args[0] != "task" {
			name += " " + args[1]
		}
		if code != 1 || !strings.HasPrefix(last, name+": ") {
			t.Errorf("%s: exit %d, stderr:\n%s", strings.Join(args[:2], " "), code, out)
			continue
		}
		dials := 0
		for _, line := range lines[:len(lines)-1] {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Errorf("%s: a line that is not JSON: %q", strings.Join(args[:2], " "), line)
				continue
			}
			if msg, _ := m["msg"].(string); m["logger"] == "redis" && strings.Contains(msg, "failed to dial") && m["level"] == "debug" {
				dials++
			}
		}
		if dials == 0 {
			t.Errorf("%s: go-redis's dial failure is in no JSON line at debug:\n%s", strings.Join(args[:2], " "), out)
		}
	}
}

// A cron spec or a time zone over its bound is a usage error of one short
// line naming the field, from schedule add and, in the schedules file, from
// the scheduler at start; nothing is stored.
func TestScheduleOverTheBounds(t *testing.T) {
	t.Parallel()
	e := setup(t)
	add := []string{"schedule", "add", "--id", "wide", "--type", "resend-dcv", "--payload", `{"order_id": 1}`}
	long := strings.Repeat(" ", 100_000)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{append(slices.Clone(add), "--cron", "@every 1h"+long), fmt.Sprintf("cron: must be at most %d bytes", schedule.MaxCronBytes)},
		{append(slices.Clone(add), "--cron", "@daily", "--timezone", "UTC"+long), fmt.Sprintf("timezone: must be at most %d bytes", schedule.MaxTimezoneBytes)},
	} {
		r := e.run(tt.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) || len(r.stderr) > 200 {
			t.Errorf("schedule add: exit %d, stderr %q; want 2 and %q", r.code, r.stderr, tt.want)
		}
	}
	if n, err := e.redis.Client().HLen(context.Background(), "certmail:schedules").Result(); err != nil || n != 0 {
		t.Errorf("%d schedules stored (%v), want none", n, err)
	}
	file := filepath.Join(t.TempDir(), "schedules.yaml")
	entry := "schedules:\n  - {id: wide, cron: \"@every 1h" + long + "\", type: resend-dcv, payload: {order_id: 1}}\n"
	if err := os.WriteFile(file, []byte(entry), 0o600); err != nil {
		t.Fatal(err)
	}
	// A scheduler that took the file would run until the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	code := cli.Main(ctx, []string{"scheduler", "--schedules-file", file, "--admin-addr", "", "--redis-url", e.redis.URL()},
		strings.NewReader(""), io.Discard, &stderr)
	want := fmt.Sprintf("schedules[0] (wide): cron: must be at most %d bytes", schedule.MaxCronBytes)
	if msg := stderr.String(); code != 2 || !strings.Contains(msg, want) || strings.Count(strings.TrimSpace(msg), "\n") > 0 || len(msg) > 300 {
		t.Errorf("scheduler: exit %d, stderr %.300q; want 2 and one line with %q", code, msg, want)
	}
}

// Every command that puts tasks or schedules in Redis knows the served
// queues (CERTMAIL_QUEUES, here --queues) and the schedules' floor
// (CERTMAIL_SCHEDULE_MIN_INTERVAL), and refuses what cannot work as a usage
// error naming the field.
func TestQueuesAndScheduleRules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	jobs := filepath.Join(t.TempDir(), "jobs.jsonl")
	if err := os.WriteFile(jobs, []byte(`{"type": "resend-dcv", "payload": {"order_id": 1}, "queue": "nobody"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sched := []string{"schedule", "add", "--id", "s1", "--type", "resend-dcv", "--payload", `{"order_id": 1}`}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--queue", "nobody"}, 2,
			"queue: no worker serves this queue; CERTMAIL_QUEUES serves bulk, critical, default"},
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--queues", "bulk=1"}, 2, "queue: the default queue default is not served"},
		{[]string{"enqueue", "resend-dcv", "--order-id", "5", "--queues", "Bad=1"}, 2, "--queues: queue \"Bad\""},
		{[]string{"enqueue", "--file", jobs}, 1, "line 1: queue: no worker serves this queue"},
		{append(sched, "--cron", "@every 10s"), 2, "cron: fires every 10s at times; the shortest interval allowed is 1m0s"},
		{append(sched, "--cron", "0 0 30 2 *"), 2, "cron: never fires"},
		{append(sched, "--cron", "@daily", "--until", "2020-01-01T00:00:00Z"), 2, "until: must be in the future"},
		{append(sched, "--cron", "@daily", "--queue", "nobody"), 2, "queue: no worker serves this queue"},
		{append(sched, "--cron", "@daily", "--queues", "critical=1"), 2, "queue: no worker serves this queue"}, // the default bulk
		{append(sched, "--cron", "@daily", "--schedule-min-interval", "0s"), 2, "--schedule-min-interval: 0s: want 1s to 43800h"},
		{append(sched, "--cron", "@daily", "--schedule-max", "0"), 2, "--schedule-max: 0: want 1 to 100000"},
		{[]string{"scheduler", "--schedule-max", "5"}, 2, "unknown flag --schedule-max"},
		{[]string{"scheduler", "--queues", "a=0"}, 2, "--queues: "},
		{[]string{"api", "--insecure-no-auth", "--queues", "a"}, 2, "--queues: "},
	} {
		r := e.run(tt.args...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, r.code, r.stderr, tt.code, tt.want)
		}
	}
	if n := len(e.tasks()); n != 0 {
		t.Errorf("%d tasks in Redis", n)
	}
	// A lower floor lets a faster schedule in.
	if r := e.run(append(sched, "--cron", "@every 10s", "--schedule-min-interval", "5s")...); r.code != 0 {
		t.Errorf("with a 5s floor: %+v", r)
	}
}

// TestDLQListMalformedPage: a page holding only malformed entries says so
// and gives the cursor to the older pages, where good entries are.
// A raw task whose id is over 256 bytes is dead-lettered under a
// shortened id that dlq list shows (nothing skipped as malformed), and that
// dlq show and dlq delete take.
func TestDLQOfALongTaskID(t *testing.T) {
	t.Parallel()
	e := setup(t)
	fake, baseURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{"cli-key"}, AnyIDExists: true})
	startWorker(t, e, baseURL, "cli-key")
	client := asynq.NewClient(e.redis.ConnOpt())
	defer client.Close()
	long := strings.Repeat("L", 5000)
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": 2001}`)), asynq.TaskID(long)); err != nil {
		t.Fatal(err)
	}
	certmailtest.WaitFor(t, 20*time.Second, func() bool {
		n, err := e.redis.Client().XLen(context.Background(), deadletter.Stream).Result()
		return err == nil && n == 1
	}, func() string { return "no dead letter" })
	if n := fake.RequestCount(); n != 0 {
		t.Errorf("fake saw %d requests", n)
	}
	bounded := deadletter.BoundedID(long)
	r := e.run("dlq", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "task_id_too_long") || strings.Contains(r.stderr, "skipped") ||
		strings.Contains(r.stdout, long[:300]) {
		t.Errorf("dlq list: exit %d, stdout %.500q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := e.run("dlq", "show", bounded); r.code != 0 || !strings.Contains(r.stdout, "task id of 5000 bytes; at most 256 are accepted") {
		t.Errorf("dlq show: exit %d, stdout %.500q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := e.run("dlq", "delete", bounded); r.code != 0 || !strings.Contains(r.stdout, "its task was not deleted: not archived under this id in queue default (the shortened form") {
		t.Errorf("dlq delete: exit %d, stdout %.500q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if n, err := e.redis.Client().XLen(context.Background(), deadletter.Stream).Result(); err != nil || n != 0 {
		t.Errorf("%d entries left (%v) after dlq delete", n, err)
	}
}

func TestDLQListMalformedPage(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rdb := e.redis.Client()
	if _, err := deadletter.Append(ctx, rdb, deadletter.Entry{TaskID: "t1", Type: "send-cert", Queue: "default",
		Payload: []byte(`{}`), ErrorCode: "not_found|order", FailedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: deadletter.Stream, Values: []any{"junk", "1"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r := e.run("dlq", "list", "-n", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "no readable dead letters on this page") ||
		!strings.Contains(r.stderr, "more: certmail dlq list --before ") || strings.Contains(r.stdout, "no dead-lettered tasks") {
		t.Fatalf("a page of malformed entries: %+v", r)
	}
	next := strings.TrimSpace(r.stderr[strings.Index(r.stderr, "--before ")+len("--before "):])
	if r := e.run("dlq", "list", "-n", "2", "--before", next); r.code != 0 || !strings.Contains(r.stdout, "t1") {
		t.Errorf("the next page: %+v", r)
	}
}

// dlq list -o json pages as the README's requeue pipeline says: the cursor
// is the JSON's next (absent on the last page), and nothing is printed on
// stderr; only the table output prints a "more:" line.
func TestDLQListJSONCursor(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, id := range []string{"t1", "t2"} {
		if _, err := deadletter.Append(context.Background(), e.redis.Client(), deadletter.Entry{TaskID: id, Type: "send-cert", Queue: "default",
			Payload: []byte(`{}`), ErrorCode: "not_found|order", FailedAt: time.Now()}, 0); err != nil {
			t.Fatal(err)
		}
	}
	type page struct {
		Entries []struct {
			TaskID string `json:"task_id"`
		} `json:"entries"`
		Next *string `json:"next"`
	}
	read := func(args ...string) page {
		t.Helper()
		r := e.run(append([]string{"dlq", "list", "-n", "1", "-o", "json"}, args...)...)
		var p page
		if r.code != 0 || r.stderr != "" || json.Unmarshal([]byte(r.stdout), &p) != nil || len(p.Entries) != 1 {
			t.Fatalf("dlq list -o json %v: %+v, want one entry and nothing on stderr", args, r)
		}
		return p
	}
	first := read()
	if first.Entries[0].TaskID != "t2" || first.Next == nil || *first.Next == "" {
		t.Fatalf("first page: %+v, want t2 and a next cursor", first)
	}
	if last := read("--before", *first.Next); last.Entries[0].TaskID != "t1" || last.Next != nil {
		t.Errorf("last page: %+v, want t1 and no next", last)
	}
	if r := e.run("dlq", "list", "-n", "1"); !strings.HasPrefix(r.stderr, "more: certmail dlq list --before "+*first.Next) {
		t.Errorf("dlq list -n 1 (table): stderr %q, want the more: line with the same cursor", r.stderr)
	}
}

// An enqueue whose first answer Redis lost (go-redis sends it again, and
// Redis answers that the task's id is taken) succeeds: the CLI printed the
// conflict as an error although the task was enqueued.
func TestEnqueueLostAnswer(t *testing.T) {
	t.Parallel()
	e := setup(t)
	proxy := e.redis.Proxy()
	url := "redis://" + proxy.Addr() + "/0"
	args := []string{"enqueue", "send-cert", "--certificate-id", "456", "--email", "ops@example.com", "--format", "plaintext", "--redis-url", url}
	if r := run(t, args...); r.code != 0 { // loads the scripts: a first EVALSHA finds none and runs nothing
		t.Fatalf("first enqueue: exit %d: %s", r.code, r.stderr)
	}
	proxy.WithholdOnce("evalsha")
	r := run(t, args...)
	id := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(r.stdout)
	if r.code != 0 || id == nil {
		t.Fatalf("enqueue with its first answer lost: exit %d, %q %q; want 0 and the task's id", r.code, r.stdout, r.stderr)
	}
	if _, err := e.inspector.GetTaskInfo("default", id[1]); err != nil {
		t.Errorf("task %s: %v", id[1], err)
	}
	if n := len(e.tasks()); n != 2 {
		t.Errorf("%d tasks, want 2", n)
	}
}

// An enqueue that Redis refused before the task was sent (asynq's
// registration of the queue, SADD, refused to an ACL user) stored nothing:
// the error does not send the operator to look the task up. One that
// failed inside the script that stores it (a key of the wrong type, after
// the task's hash was written) still does.
func TestEnqueueRefusedSaysSo(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if err := e.redis.Client().Do(context.Background(), "ACL", "SETUSER", "no-sadd", "on", ">no-sadd-pw", "~*", "&*", "+@all", "-sadd").Err(); err != nil {
		t.Fatal(err)
	}
	args := []string{"enqueue", "set-emails", "--order-id", "5", "--email", "a@example.com"}
	r := run(t, append(args, "--redis-url", "redis://no-sadd:no-sadd-pw@"+e.redis.Addr()+"/0")...)
	if r.code != 1 || !strings.Contains(r.stderr, "NOPERM") || !strings.Contains(r.stderr, "nothing enqueued") ||
		strings.Contains(r.stderr, "may have been enqueued") {
		t.Errorf("enqueue refused its queue's registration: exit %d, stderr %q; want 1, NOPERM, nothing enqueued", r.code, r.stderr)
	}
	if err := e.redis.Client().Set(context.Background(), "asynq:{default}:pending", "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r = e.run(args...)
	if r.code != 1 || !strings.Contains(r.stderr, "WRONGTYPE") || !strings.Contains(r.stderr, "may have been enqueued all the same") {
		t.Errorf("enqueue failing inside the script: exit %d, stderr %q; want 1 and the advice to look the task up", r.code, r.stderr)
	}
}

// A one-shot command whose REDIS_URL Redis refuses (a wrong password or
// ACL user: WRONGPASS; no password where Redis asks for one: NOAUTH) is
// refused before it does anything, as a configuration mistake: exit status
// 2, one line that names the setting as it was given and says what to
// check, without the URL's user or password.
func TestRedisAuthRefusedSaysWhatToCheck(t *testing.T) {
	t.Parallel()
	const password = "right-pw-6a0e"
	secured := redistest.Start(t, redistest.Options{Password: password})
	ctx := context.Background()
	if err := secured.Client().Do(ctx, "ACL", "SETUSER", "ops-user", "on", ">ops-pw-19f4", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	commands := [][]string{
		{"task", "some-id"}, {"dlq", "list"}, {"dlq", "delete", "some-id"}, {"schedule", "list"},
		{"enqueue", "set-emails", "--order-id", "5", "--email", "a@example.com"},
	}
	for _, tc := range []struct{ userinfo, want string }{
		{":wrong-pw-2c81@", "--redis-url: WRONGPASS"},
		{"ops-user:wrong-pw-2c81@", "--redis-url: WRONGPASS"},
		{"", "--redis-url: NOAUTH"},
	} {
		advice := "; Redis at redis://" + secured.Addr() + "/0 refused the user and password that --redis-url gives: check them"
		if tc.userinfo == "" {
			advice = "; Redis at redis://" + secured.Addr() + "/0 asks for a password, which --redis-url does not give: add it"
		}
		for _, args := range commands {
			r := run(t, append(args, "--redis-url", "redis://"+tc.userinfo+secured.Addr()+"/0")...)
			if r.code != 2 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, advice) ||
				strings.Contains(r.stderr, "wrong-pw") || strings.Contains(r.stderr, "ops-user") {
				t.Errorf("certmail %s as %q: exit %d, stderr %q; want 2 and one line with %q and %q, no user or password",
					strings.Join(args, " "), tc.userinfo, r.code, r.stderr, tc.want, advice)
			}
		}
	}
	if n, err := secured.Client().DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("%d keys (%v) after the refused commands, want none", n, err)
	}
}

// certmail task --queue with a queue asynq has never known (a mistyped
// name) says so and names the queues it knows, rather than only "not found".
func TestTaskInAQueueAsynqHasNeverKnown(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.run("enqueue", "resend-dcv", "--order-id", "5")
	id := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(r.stdout)
	if r.code != 0 || id == nil {
		t.Fatalf("enqueue: %+v", r)
	}
	r = e.run("task", id[1], "--queue", "nosuch")
	if r.code != 1 || !strings.HasSuffix(r.stderr, ": not found: asynq has never known queue nosuch (it knows: default)\n") {
		t.Errorf("task --queue nosuch: exit %d, stderr %q; want 1, saying asynq has never known the queue and which it knows", r.code, r.stderr)
	}
}

// Task ids and types a raw asynq producer chose reach table and text output
// escaped and quoted: no terminal escape, no newline splitting a row.
func TestDLQShowsOddNamesEscaped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rdb := e.redis.Client()
	client := asynq.NewClient(e.redis.ConnOpt())
	defer client.Close()
	const clearScreen, newline, evil = "id\x1b[2Jclear", "id-with\nnewline", "evil\x1b[31mRED\x1b[0m\ttype"
	for _, tt := range []struct{ id, typ string }{{clearScreen, "set-emails"}, {newline, evil}} {
		if _, err := client.Enqueue(asynq.NewTask(tt.typ, []byte(`{}`)), asynq.TaskID(tt.id)); err != nil {
			t.Fatal(err)
		}
		if err := e.inspector.ArchiveTask("default", tt.id); err != nil {
			t.Fatal(err)
		}
		if _, err := deadletter.Append(ctx, rdb, deadletter.Entry{TaskID: tt.id, Type: tt.typ, Queue: "default",
			Payload: []byte(`{}`), ErrorCode: "unknown_type", FailedAt: time.Now()}, 0); err != nil {
			t.Fatal(err)
		}
	}
	clean := func(what string, r result, want ...string) {
		t.Helper()
		if r.code != 0 || strings.Contains(r.stdout, "\x1b") || strings.Contains(r.stderr, "\x1b") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want no escape", what, r.code, r.stdout, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%s: stdout %q lacks %s", what, r.stdout, w)
			}
		}
	}
	r := e.run("dlq", "list")
	clean("dlq list", r, strconv.Quote(clearScreen), strconv.Quote(newline), strconv.Quote(evil))
	if lines := strings.Count(r.stdout, "\n"); lines != 3 {
		t.Errorf("dlq list: %d lines, want a heading and 2 rows: %q", lines, r.stdout)
	}
	clean("dlq show", e.run("dlq", "show", newline, "-o", "table"), strconv.Quote(newline), strconv.Quote(evil))
	clean("task", e.run("task", newline, "-o", "table"), strconv.Quote(newline), strconv.Quote(evil))
	clean("dlq requeue", e.run("dlq", "requeue", clearScreen), "requeued "+strconv.Quote(clearScreen)+" (set-emails, queue default)")
	clean("dlq delete", e.run("dlq", "delete", newline), "deleted "+strconv.Quote(newline))
	// JSON output stays JSON: the ids as they are, escaped by JSON.
	if r := e.run("task", clearScreen); !strings.Contains(r.stdout, `"id": "id\u001b[2Jclear"`) {
		t.Errorf("task -o json: %q", r.stdout)
	}
}

// A task id that no task the command acts on can have is a usage mistake
// (exit status 2), refused before Redis is opened, the same way by every
// command that takes one: an empty id, and for the dead-letter commands an
// id over 256 bytes, which no dead letter has (a longer id's is kept under
// its shortened form). certmail task takes a longer id: a raw producer's
// task keeps it whole in asynq.
func TestMalformedTaskIDIsAUsageError(t *testing.T) {
	t.Parallel()
	over := strings.Repeat("b", 257)
	down := "redis://127.0.0.1:1/0" // never reached: a lookup would fail with exit status 1
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"task", ""}, `certmail task: task id "": empty; give the id enqueue printed`},
		{[]string{"dlq", "show", ""}, `certmail dlq show: task id "": empty; give the id dlq list shows`},
		{[]string{"dlq", "requeue", "ok-id", ""}, `certmail dlq requeue: task id "": empty; give the id dlq list shows`},
		{[]string{"dlq", "delete", "", "ok-id"}, `certmail dlq delete: task id "": empty; give the id dlq list shows`},
		{[]string{"dlq", "show", over}, `certmail dlq show: task id "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"… (257 bytes): longer than 256 bytes, ` +
			`which no dead letter's id is; give the id dlq list shows (a longer one shortened)`},
		{[]string{"dlq", "requeue", "ok-id", over}, `(257 bytes): longer than 256 bytes`},
		{[]string{"dlq", "delete", over}, `(257 bytes): longer than 256 bytes`},
	} {
		r := run(t, append(tt.args, "--redis-url", down)...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
			t.Errorf("certmail %.80q: exit %d, stdout %q, stderr %q; want 2 and one line with %q", tt.args, r.code, r.stdout, r.stderr, tt.want)
		}
	}
	e := setup(t)
	client := asynq.NewClient(e.redis.ConnOpt())
	defer client.Close()
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id": 7}`)), asynq.TaskID(over)); err != nil {
		t.Fatal(err)
	}
	if r := e.run("task", over); r.code != 0 || !strings.Contains(r.stdout, `"state": "pending"`) {
		t.Errorf("task of a raw producer's %d-byte id: exit %d, stdout %.300q, stderr %q; want 0 and the task", len(over), r.code, r.stdout, r.stderr)
	}
}

// A long id or flag value is never echoed back in full: certmail's own
// errors name a task id or schedule id by its first 32 bytes, kong's are
// cut, and neither writes a control character it was given.
func TestLongIDsNotEchoed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	long := strings.Repeat("a", 100000)
	named := `"` + long[:32] + `"… (100000 bytes)`
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq", "requeue", "ok-id", long}, 2, "task id " + named + ": longer than 256 bytes"},
		{[]string{"dlq", "delete", long}, 2, "task id " + named + ": longer than 256 bytes"},
		{[]string{"task", long}, 1, "task " + named + ": not found"},
		{[]string{"schedule", "rm", long}, 1, named + ": schedule not found"},
		{[]string{"task", ""}, 2, `task id "": empty`},
		{[]string{"dlq", long}, 2, "unexpected argument aaaa"},
		{[]string{"--" + long}, 2, "unknown flag --aaaa"},
		{[]string{"enqueue", "set-emails", "--order-id", long}, 2, "--order-id"},
		{[]string{"dlq", "list", "-o", long}, 2, "--output"},
		{[]string{"dlq", "x\x1b[2Jy\xff"}, 2, `unexpected argument x\x1b[2Jy\xff`},
	}
	for _, tt := range tests {
		r := e.run(tt.args...)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) || len(r.stderr) > 1024 || strings.Contains(r.stderr, "\x1b") {
			t.Errorf("%.60q: exit %d, stderr (%d bytes) %.300q; want exit %d, under 1 KiB, with %.80q", tt.args, r.code, len(r.stderr), r.stderr, tt.code, tt.want)
		}
	}
}

// The reviewer's dup-4: one id dead-lettered in critical and alive in
// default. dlq delete deletes the dead letter's task, in critical, and says
// so; a delete that finds the task alive again deletes the entry alone and
// says it left the task.
func TestDLQDeleteInTheDeadLettersQueue(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	client := asynq.NewClient(e.redis.ConnOpt())
	defer client.Close()
	for _, q := range []string{"default", "critical"} {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":999}`)), asynq.TaskID("dup-4"), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.inspector.ArchiveTask("critical", "dup-4"); err != nil {
		t.Fatal(err)
	}
	entry := deadletter.Entry{TaskID: "dup-4", Type: "resend-dcv", Queue: "critical", ErrorCode: "not_found|order", FailedAt: time.Now()}
	if _, err := deadletter.Append(ctx, e.redis.Client(), entry, 0); err != nil {
		t.Fatal(err)
	}
	if r := e.run("dlq", "delete", "dup-4"); r.code != 0 || r.stdout != "deleted dup-4 (resend-dcv, queue critical)\n" {
		t.Errorf("dlq delete dup-4: %+v", r)
	}
	if _, err := e.inspector.GetTaskInfo("critical", "dup-4"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("dup-4 in critical after dlq delete: %v, want it gone", err)
	}
	if info, err := e.inspector.GetTaskInfo("default", "dup-4"); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("dup-4 in default after dlq delete: %v, %v; want it left pending", info, err)
	}

	// Dead-lettered in critical again, then run again from the dashboard.
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":999}`)), asynq.TaskID("dup-4"), asynq.Queue("critical")); err != nil {
		t.Fatal(err)
	}
	if err := e.inspector.ArchiveTask("critical", "dup-4"); err != nil {
		t.Fatal(err)
	}
	if err := e.inspector.RunTask("critical", "dup-4"); err != nil {
		t.Fatal(err)
	}
	if _, err := deadletter.Append(ctx, e.redis.Client(), entry, 0); err != nil {
		t.Fatal(err)
	}
	r := e.run("dlq", "delete", "dup-4")
	if want := "deleted 1 dead-letter entry of dup-4; its task was not deleted: no longer archived in queue critical (it is pending now)\n"; r.code != 0 || r.stdout != want {
		t.Errorf("dlq delete of a task run again: %+v, want stdout %q", r, want)
	}
}

// TestTaskOfAnIDInTwoQueues: one id in two queues (a producer's own
// asynq.TaskID sent to both). `certmail task` shows the first queue asynq
// lists and names the other, in JSON and, escaped, in the table; --queue
// looks in one queue only, and refuses a name certmail does not take.
func TestTaskOfAnIDInTwoQueues(t *testing.T) {
	t.Parallel()
	e := setup(t)
	client := asynq.NewClient(e.redis.ConnOpt())
	defer client.Close()
	const odd = "odd\x1b[2Jqueue" // a raw producer may name a queue so
	holders := []string{"default", odd}
	for i, q := range holders {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", fmt.Appendf(nil, `{"order_id":%d}`, i+1)), asynq.TaskID("dup-9"), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	queues, err := e.inspector.Queues()
	if err != nil || len(queues) != 2 {
		t.Fatalf("queues %q, %v", queues, err)
	}
	first, other := queues[0], queues[1]

	r := e.run("task", "dup-9")
	var st ops.TaskStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("task dup-9: %+v, %v", r, err)
	}
	if st.Queue != first || !slices.Equal(st.OtherQueues, []string{other}) || st.OtherQueuesCount != 1 {
		t.Errorf("task dup-9: queue %q, other queues %q (%d); want %q and [%q]", st.Queue, st.OtherQueues, st.OtherQueuesCount, first, other)
	}
	r = e.run("task", "dup-9", "-o", "table")
	row := regexp.MustCompile(`(?m)^also in queue:\s+(.*)$`).FindStringSubmatch(r.stdout)
	if want := ops.ShowName(other) + " (pick one with --queue)"; r.code != 0 || row == nil || row[1] != want || strings.Contains(r.stdout, "\x1b") {
		t.Errorf("task dup-9 -o table: %+v; want the row %q, no escape", r, "also in queue: "+want)
	}
	// --queue picks one: that queue's task, no other named.
	for i, q := range holders {
		r := e.run("task", "dup-9", "--queue", q)
		if q == odd { // not a name certmail takes: the dashboard shows that one
			if r.code != 2 || !strings.Contains(r.stderr, "--queue: a queue name is 1-63 characters") || strings.Contains(r.stderr, "\x1b") {
				t.Errorf("task --queue %q: %+v; want exit 2 naming --queue, the name not echoed", q, r)
			}
			continue
		}
		var st ops.TaskStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil || st.Queue != q ||
			!strings.Contains(string(st.Payload), fmt.Sprintf(`"order_id": %d`, i+1)) || st.OtherQueues != nil || strings.Contains(r.stdout, "other_queues") {
			t.Errorf("task dup-9 --queue %s: %+v, %v; want the task of %s alone", q, r, err, q)
		}
	}
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":3}`)), asynq.Queue("critical")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		queue string
		code  int
		want  string
	}{
		{"critical", 1, "task dup-9 in queue critical: not found"}, // a queue asynq knows that does not hold it
		{"nowhere", 1, "task dup-9 in queue nowhere: not found"},   // a queue asynq does not know
		{"", 2, "--queue: a queue name is"},
		{"Default", 2, "--queue: a queue name is"},
		{strings.Repeat("q", 100000), 2, "--queue: a queue name is"},
	} {
		r := e.run("task", "dup-9", "--queue", tt.queue)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 || len(r.stderr) > 256 {
			t.Errorf("task --queue %.20q: %+v; want exit %d, one short line with %q", tt.queue, r, tt.code, tt.want)
		}
	}
	// A task in one queue has no such row.
	if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":3}`)), asynq.TaskID("alone")); err != nil {
		t.Fatal(err)
	}
	if r := e.run("task", "alone", "-o", "table"); r.code != 0 || strings.Contains(r.stdout, "also in") {
		t.Errorf("task alone -o table: %+v; want no other queue named", r)
	}
	if r := e.run("task", "alone"); r.code != 0 || strings.Contains(r.stdout, "other_queues") {
		t.Errorf("task alone: %+v; want no other_queues", r)
	}
}

// A command's own errors name a setting the way it was given, as kong's do
// (TestEnumSettingNamedAsGiven): by its flag when the flag was typed, by its
// variable when the value came from the environment; a flag typed over the
// variable is named as the flag.
func TestSettingNamedAsGiven(t *testing.T) {
	// Not parallel: t.Setenv.
	e := setup(t)
	sched := []string{"schedule", "add", "--id", "s1", "--type", "resend-dcv", "--payload", `{"order_id": 1}`, "--cron", "@daily"}
	for _, tt := range []struct {
		env, value string
		flag       string // the flag that gives value
		args       []string
	}{
		{"CERTMAIL_QUEUES", "Default", "--queues", []string{"enqueue", "resend-dcv", "--order-id", "5"}},
		{"CERTMAIL_QUEUES", "Default", "--queues", sched},
		{"CERTMAIL_QUEUES", "Bad!", "--queues", []string{"dlq", "purge", "--yes"}},
		{"CERTMAIL_CONCURRENCY", "0", "--concurrency", []string{"worker", "--digicert-api-key=k", "--admin-addr="}},
		{"DIGICERT_TIMEOUT", "25s", "--digicert-timeout", []string{"worker", "--digicert-api-key=k", "--admin-addr="}},
		{"DIGICERT_BASE_URL", "ftp://x", "--digicert-base-url", []string{"worker", "--digicert-api-key=k", "--admin-addr="}},
		{"CERTMAIL_SCHEDULER_LEASE", "100ms", "--lease", []string{"scheduler", "--admin-addr="}},
		{"CERTMAIL_HTTP_ADDR", "8080", "--http-addr", []string{"api", "--insecure-no-auth"}},
		{"CERTMAIL_ADMIN_ADDR", "garbage", "--admin-addr", []string{"scheduler"}},
		{"CERTMAIL_API_TOKENS", "short", "--api-tokens", []string{"api", "--http-addr=127.0.0.1:0"}},
		{"CERTMAIL_API_HOSTS", "*", "--api-hosts", []string{"api", "--api-tokens=" + strings.Repeat("t", 20), "--http-addr=127.0.0.1:0"}},
		{"CERTMAIL_API_HOSTS", "api.example.com:8443", "--api-hosts", []string{"dev", "--no-demo", "--http-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}},
		{"CERTMAIL_MAX_RETRY", "-1", "--max-retry", []string{"task", "some-id"}},
		{"CERTMAIL_RESULT_RETENTION", "1s", "--result-retention", []string{"enqueue", "resend-dcv", "--order-id", "5"}},
		{"CERTMAIL_SCHEDULE_MIN_INTERVAL", "0s", "--schedule-min-interval", []string{"schedule", "list"}},
	} {
		t.Run(tt.env+"="+tt.value+" "+tt.args[0], func(t *testing.T) {
			check := func(how string, r result, want string) {
				t.Helper()
				prefix := "certmail " + strings.Join(commandWords(tt.args), " ") + ": " + want
				if r.code != 2 || !strings.HasPrefix(r.stderr, prefix) || strings.Count(r.stderr, "\n") != 1 {
					t.Errorf("%s: exit %d, %q; want 2 and one line starting %q", how, r.code, r.stderr, prefix)
				}
				if tt.env == "CERTMAIL_API_TOKENS" && strings.Contains(r.stderr, tt.value) {
					t.Errorf("%s: the error shows the token: %q", how, r.stderr)
				}
			}
			t.Setenv(tt.env, tt.value)
			check("from the environment", e.run(tt.args...), tt.env)
			os.Unsetenv(tt.env)
			check("typed", e.run(append(slices.Clone(tt.args), tt.flag+"="+tt.value)...), tt.flag)
		})
	}
	// A value kong itself cannot read ("--concurrency: expected …", written
	// before the command is known) is named the same way.
	args := []string{"worker", "--digicert-api-key=k", "--admin-addr="}
	t.Setenv("CERTMAIL_CONCURRENCY", "abc")
	if r := e.run(args...); r.code != 2 || !strings.Contains(r.stderr, ": CERTMAIL_CONCURRENCY: expected") {
		t.Errorf("CERTMAIL_CONCURRENCY=abc: exit %d, %q; want 2 and the variable named", r.code, r.stderr)
	}
	os.Unsetenv("CERTMAIL_CONCURRENCY")
	if r := e.run(append(args, "--concurrency=abc")...); r.code != 2 || !strings.Contains(r.stderr, ": --concurrency: expected") {
		t.Errorf("--concurrency=abc: exit %d, %q; want 2 and the flag named", r.code, r.stderr)
	}
}

// TestReservedQueueNameRefused: every command that reads CERTMAIL_QUEUES as
// the served queues refuses one named as the queue metrics' label of the
// unserved queues, with exit status 2 and one line saying why, before it
// touches Redis; dlq purge, which serves none, takes it.
func TestReservedQueueNameRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	list := "--queues=default=3," + queues.Reserved + "=1"
	for _, args := range [][]string{
		{"worker", "--digicert-api-key=k", "--admin-addr="},
		{"scheduler", "--admin-addr="},
		{"api", "--insecure-no-auth"},
		{"enqueue", "resend-dcv", "--order-id", "5"},
	} {
		r := e.run(append(slices.Clone(args), list)...)
		want := `--queues: queue "other": the name is reserved for the metrics of the queues no process serves`
		if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s %s: exit %d, %q; want 2 and one line saying %q", strings.Join(args, " "), list, r.code, r.stderr, want)
		}
	}
	// dlq purge serves no queue: it takes the name, for a raw producer's
	// queue of that name.
	if r := e.run("dlq", "purge", "--yes", list); r.code != 0 || strings.Contains(r.stderr, "reserved") {
		t.Errorf("dlq purge --yes %s: exit %d, %q; want 0", list, r.code, r.stderr)
	}
}

// commandWords are the words of args that name a command: those before the
// first flag or argument that is not a command word.
func commandWords(args []string) []string {
	words := []string{args[0]}
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") && (args[0] == "enqueue" || args[0] == "schedule" || args[0] == "dlq") {
		words = append(words, args[1])
	}
	return words
}

// A setting set but empty where empty has no meaning of its own is refused
// in one line naming it (the variable, or the flag typed), exit 2: an EU
// deployment whose DIGICERT_BASE_URL rendered empty sent its key to the US
// instance, and an empty CERTMAIL_HTTP_ADDR listened on every interface.
// CERTMAIL_ADMIN_ADDR empty means none, and is accepted.
func TestEmptySettingRefused(t *testing.T) {
	// Not parallel: t.Setenv. Accepted, a command would wait for Redis (the
	// deadline ends the wait) or fail to reach it (exit 1).
	const noRedis = "--redis-url=redis://127.0.0.1:1/0"
	token := "--api-tokens=" + strings.Repeat("t", 20)
	for _, tt := range []struct {
		env, flag string
		args      []string
	}{
		{"DIGICERT_BASE_URL", "--digicert-base-url", []string{"worker", "--digicert-api-key=k", "--admin-addr=", noRedis}},
		{"DIGICERT_BASE_URL", "--digicert-base-url", []string{"api", token, "--http-addr=127.0.0.1:0", noRedis}},
		{"DIGICERT_BASE_URL", "--digicert-base-url", []string{"scheduler", "--admin-addr=", noRedis}},
		{"DIGICERT_BASE_URL", "--digicert-base-url", []string{"enqueue", "set-emails", "--order-id=1", "--email=a@example.com", noRedis}},
		{"CERTMAIL_HTTP_ADDR", "--http-addr", []string{"api", token, noRedis}},
		{"CERTMAIL_HTTP_ADDR", "--http-addr", []string{"dev", "--admin-addr=127.0.0.1:0"}},
		{"CERTMAIL_API_HOSTS", "--api-hosts", []string{"api", token, "--http-addr=127.0.0.1:0", noRedis}},
		{"CERTMAIL_API_HOSTS", "--api-hosts", []string{"dev", "--no-demo", "--http-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0"}},
	} {
		for _, value := range []string{"", "  "} {
			t.Setenv(tt.env, value)
			r := runFor(2*time.Second, tt.args...)
			if r.code != 2 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, ": "+tt.env+": empty; give ") ||
				!strings.Contains(r.stderr, "or unset it for the default") {
				t.Errorf("%s with %s=%q: exit %d, %q; want 2 and one line naming the setting", tt.args[0], tt.env, value, r.code, r.stderr)
			}
		}
		os.Unsetenv(tt.env)
		r := runFor(2*time.Second, append(slices.Clone(tt.args), tt.flag+"=")...)
		if r.code != 2 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, ": "+tt.flag+": empty; give ") {
			t.Errorf("%s %s=: exit %d, %q; want 2 and one line naming the flag", tt.args[0], tt.flag, r.code, r.stderr)
		}
	}
	t.Setenv("CERTMAIL_ADMIN_ADDR", "")
	if r := runFor(2*time.Second, "worker", "--digicert-api-key=k", noRedis); r.code == 2 || strings.Contains(r.stderr, "CERTMAIL_ADMIN_ADDR") {
		t.Errorf("worker with CERTMAIL_ADMIN_ADDR=\"\": exit %d, %q; want it accepted (no admin listener)", r.code, r.stderr)
	}
}

// A base URL the worker's client cannot call (credentials, a query, a
// fragment) is refused at start by every command that reads it, not by
// the worker alone, in one line naming the setting and not the secret the
// URL holds, exit 2 (account's TestBaseURLJudgedAlike holds the rules).
func TestBaseURLRefusedByEveryCommand(t *testing.T) {
	t.Parallel()
	// Accepted, a command would wait for Redis (the deadline ends the wait)
	// or fail to reach it (exit 1).
	const noRedis = "--redis-url=redis://127.0.0.1:1/0"
	const secret = "s3cret-in-the-url"
	token := "--api-tokens=" + strings.Repeat("t", 20)
	for _, url := range []string{
		"https://user:" + secret + "@www.digicert.com/services/v2",
		"https://www.digicert.com/services/v2?key=" + secret,
		"https://www.digicert.com/services/v2#" + secret,
	} {
		for _, args := range [][]string{
			{"worker", "--digicert-api-key=k", "--admin-addr="},
			{"api", token, "--http-addr=127.0.0.1:0"},
			{"scheduler", "--admin-addr="},
			{"enqueue", "set-emails", "--order-id=1", "--email=a@example.com"},
		} {
			r := runFor(2*time.Second, append(args, noRedis, "--digicert-base-url="+url)...)
			want := "certmail " + strings.Join(commandWords(args), " ") + ": --digicert-base-url: "
			if r.code != 2 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 || strings.Contains(r.stderr, secret) {
				t.Errorf("%s with %q: exit %d, %q; want 2 and one line starting %q, without the secret", args[0], url, r.code, r.stderr, want)
			}
		}
	}
}

// dlq list refuses a --limit outside its range in the words every other
// ranged setting is refused with (it had a wording of its own), exit 2, in
// one line, before it opens Redis.
func TestDLQListLimitRefused(t *testing.T) {
	t.Parallel()
	top := strconv.Itoa(ops.MaxDeadLetterLimit)
	for _, v := range []string{"0", "-1", strconv.Itoa(ops.MaxDeadLetterLimit + 1)} {
		r := run(t, "dlq", "list", "--limit="+v, "--redis-url=redis://127.0.0.1:1/0")
		want := "certmail dlq list: --limit: " + v + ": want 1 to " + top + "\n"
		if r.code != 2 || r.stderr != want {
			t.Errorf("dlq list --limit=%s: exit %d, %q; want 2 and %q", v, r.code, r.stderr, want)
		}
	}
}

// TestAPIStandardLogIsJSON: asynqmon, served by the API under /monitoring/,
// reports a failed batch action through the standard library's log.Printf
// (here: deleting a task that does not exist); `certmail api` carries it to
// its zap log, so that every stderr line is one JSON object, and hands the
// standard logger back once it stops.
//
// Not parallel: the standard logger is process-wide.
func TestAPIStandardLogIsJSON(t *testing.T) {
	e := setup(t)
	token := strings.Repeat("t", 20)
	before := log.Writer()
	base, stderr := startAPI(t, "--redis-url", e.redis.URL(), "--api-tokens", token)
	req, err := http.NewRequest(http.MethodPost, base+"/monitoring/api/queues/default/pending_tasks:batch_delete",
		strings.NewReader(`{"task_ids":["nosuch-1","nosuch-2"]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("anyone", token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("batch delete: %d", res.StatusCode)
	}
	var found, held bool
	for _, m := range stderr.JSONLines(t) { // fails on a line that is not JSON
		msg, _ := m["msg"].(string)
		switch {
		case strings.Contains(msg, `could not delete task with id "nosuch-1"`):
			found = m["logger"] == "stdlog" && m["level"] == "warn"
		case strings.Contains(msg, "nosuch-2"):
			held = true
		}
	}
	if !found {
		t.Errorf("asynqmon's failed delete is in no WARN line of the logger stdlog:\n%s", stderr.String())
	}
	if held {
		t.Errorf("the repeat of asynqmon's line was not held back:\n%s", stderr.String())
	}
	if log.Writer() == before {
		t.Error("the standard logger was not redirected while the API ran")
	}
}
