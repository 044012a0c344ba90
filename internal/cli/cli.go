// Package cli is certmail's command line: one binary, one subcommand per role
// (worker, scheduler, api, dev) and per operator tool (enqueue, task, dlq,
// schedule). Flags and environment variables are declared once, on the
// command structs below, through kong, their defaults read from the
// packages' constants (defaults); each command then opens what its role
// needs (Redis, an ops service, a schedule store), builds the package that
// does the work, runs it, and closes what it opened.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/alecthomas/kong"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/dev"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// Env is what every command receives: the process context (cancelled on
// SIGINT/SIGTERM) and the standard streams.
type Env struct {
	Ctx    context.Context
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	log      *zap.Logger          // the command's logger, once built (LogFlags.logger)
	named    func(string) string  // asGiven for the command line parsed, once parsed
	redisLog *logging.RedisLogger // go-redis's messages, from the opening of Redis until the command returns
	// redisLevel is the level of go-redis's messages: WARN for the
	// processes that run until stopped, DEBUG for the one-shot commands,
	// whose failure is their own one line (redisLogLevel).
	redisLevel zapcore.Level
	// oneShot is set for the commands that stop at their first failure
	// (all but services), whose Redis commands are bounded
	// (RedisFlags.open).
	oneShot bool
	// redisConn is the Redis the command opened, for the line of a command
	// that could not reach it (advice).
	redisConn *redisconn.Conn
	// interrupt is what the command closes when Ctrl-C comes
	// (closeOnInterrupt), and interrupted tells that it did.
	interrupt   func() bool
	interrupted atomic.Bool
}

// newEnv is the Env of a command. The command's logger writes to stderr
// from go-redis's goroutines too (a dial that fails in the background)
// while the command writes its own lines there: Env.Stderr takes one write
// at a time.
func newEnv(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) *Env {
	return &Env{Ctx: ctx, Stdin: stdin, Stdout: stdout, Stderr: zapcore.Lock(zapcore.AddSync(stderr)), redisLevel: zapcore.WarnLevel}
}

// services are the commands that run until stopped. Their go-redis
// messages are WARN lines of their log, as a Redis outage is news to
// whoever watches them; those of every other command, which stops at its
// first failure and says so in one line, are DEBUG lines.
var services = map[string]bool{"worker": true, "scheduler": true, "api": true, "dev": true}

// redisLogLevel is the level of go-redis's messages for the command named
// name (commandName).
func redisLogLevel(name string) zapcore.Level {
	if services[name] {
		return zapcore.WarnLevel
	}
	return zapcore.DebugLevel
}

// commandName is the command kctx runs as its errors name it: its words
// without the placeholders of its arguments ("dlq requeue", not "dlq
// requeue <task-id>").
func commandName(kctx *kong.Context) string {
	var words []string
	for w := range strings.FieldsSeq(kctx.Command()) {
		if !strings.HasPrefix(w, "<") {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

// logRedisTo sends go-redis's own log output (process-wide) to log, at
// e.redisLevel, until the command returns: JSON lines stay JSON lines. Commands call it as they
// open Redis, not before: a command refused before that has no Redis
// client, and no go-redis line, of another command running in the same
// process (tests run many), can reach its stderr.
func (e *Env) logRedisTo(log *zap.Logger) {
	if log == nil {
		return // no logger built: go-redis keeps the last command's
	}
	if e.redisLog != nil {
		e.redisLog.Detach()
	}
	e.redisLog = logging.NewRedisLoggerAt(log.Named("redis"), e.redisLevel, nil)
	redis.SetLogger(e.redisLog)
}

// closeOnInterrupt has a one-shot command call closeAll (close what it
// opened on Redis) as soon as e.Ctx is done (Ctrl-C, SIGTERM), rather than
// when its Redis calls return: asynq's inspector and client take no
// context, and go-redis ends only a wait for a connection when a context
// is cancelled, not a read, so a Redis that takes commands in and does not
// answer (a paused server, a partition) held Ctrl-C for a read timeout at
// each call. Closed, the calls in flight fail at once, and Main reports
// the command interrupted (e.interrupted) whatever error they returned.
// Main's done stops the watch. Not for the services: their shutdown needs
// Redis.
func (e *Env) closeOnInterrupt(closeAll func()) {
	e.interrupt = context.AfterFunc(e.Ctx, func() {
		e.interrupted.Store(true)
		closeAll()
	})
}

// advice is what the failure line of a command adds when err says the
// Redis it opened could not be reached, its sentinels did not give the
// master, or TLS failed (redisconn.Conn.Advice): where it looked, and what
// to check. "" otherwise.
func (e *Env) advice(err error) string {
	if e.redisConn == nil {
		return ""
	}
	return e.redisConn.Advice(err, e.setting("REDIS_URL"))
}

// setting is how a command's line names the setting read from variable:
// by its flag when the flag was typed (asGiven).
func (e *Env) setting(variable string) string {
	if e.named == nil {
		return variable
	}
	return e.named(variable)
}

// done detaches the command's go-redis logger, so that nothing is written to
// its streams after Main returns.
func (e *Env) done() {
	if e.interrupt != nil {
		e.interrupt()
	}
	if e.redisLog != nil {
		e.redisLog.Detach()
	}
}

// CLI is the command tree.
type CLI struct {
	Worker       WorkerCmd       `cmd:"" help:"Consume tasks and perform them against DigiCert."`
	Dev          DevCmd          `cmd:"" help:"Run everything in one process on an embedded Redis and a fake DigiCert: a local demo."`
	Scheduler    SchedulerCmd    `cmd:"" help:"Enqueue periodic tasks from the schedules file and the API (several replicas are safe)."`
	API          APICmd          `cmd:"" name:"api" help:"Serve the HTTP API, the asynq dashboard and the probes."`
	FakeDigicert FakeDigicertCmd `cmd:"" name:"fake-digicert" help:"Serve a fake CertCentral API for tests and demos."`
	Enqueue      EnqueueCmd      `cmd:"" help:"Enqueue tasks: one from flags, or many from a JSON Lines file (--file)."`
	Task         TaskCmd         `cmd:"" help:"Show the state, retries and result of a task."`
	DLQ          DLQCmd          `cmd:"" name:"dlq" help:"List, show, requeue, delete or purge dead-lettered tasks."`
	Schedule     ScheduleCmd     `cmd:"" help:"List, add or remove periodic schedules."`
	Version      VersionCmd      `cmd:"" help:"Print the version."`
}

// Main runs the command line args and returns the process exit status: 0
// when done, 1 on a failure, 2 on a usage error, and ExitInterrupted when
// the cancellation of ctx (SIGINT/SIGTERM) stopped the command.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := newEnv(ctx, stdin, stdout, stderr)
	stderr = env.Stderr
	var root CLI
	args = helpArgs(args)
	exitCode, exited := 0, false
	empty := map[*kong.Value]bool{} // the file settings given empty (fileSetting)
	parser, err := kong.New(&root,
		kong.NamedMapper(fileSettingType, fileSetting(empty)),
		kong.Name("certmail"),
		kong.Description("certmail performs DigiCert CertCentral email operations from a Redis-backed task queue."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exitCode, exited = code, true }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.UsageOnError(),
		defaults(),
	)
	if err != nil {
		fmt.Fprintf(stderr, "certmail: %s\n", oneLine(err.Error()))
		return 2
	}
	kctx, err := parser.Parse(args)
	if exited { // --help, or kong gave up on its own
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "certmail: %s\n", parseErrorText(err))
		return 2
	}
	for _, f := range kctx.Flags() { // the command's own: kong reads every command's variables
		if empty[f.Value] && f.Target.String() == "" { // not replaced by a flag given after
			fmt.Fprintf(stderr, "certmail %s: %s: empty; give a file, or unset it\n", commandName(kctx), settingName(kctx, f.Value))
			return 2
		}
	}
	env.named = func(msg string) string { return asGiven(kctx, msg) }
	env.redisLevel = redisLogLevel(commandName(kctx))
	env.oneShot = !services[commandName(kctx)]
	err = kctx.Run(env)
	env.done()
	if err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || env.interrupted.Load()) {
		// Ctrl-C or SIGTERM: say so, rather than "context canceled".
		var in interruptedError
		if !errors.As(err, &in) {
			in = interruptedError{err: err}
		}
		fmt.Fprintf(stderr, "certmail %s: %s\n", commandName(kctx), oneLine(in.Error()))
		return ExitInterrupted
	}
	var dbErr *redisconn.DatabaseError
	if errors.As(err, &dbErr) { // a setting, whether met at start or once a waited-for Redis answered
		err = usageError{dbErr}
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			printError(stderr, commandName(kctx), asGiven(kctx, err.Error()), err)
			return 2
		}
		printError(stderr, commandName(kctx), err.Error()+env.advice(err), err)
		return 1
	}
	return 0
}

// maxParseError is the most bytes of kong's error that Main prints: kong
// repeats the argument or flag value it refuses, whatever its length.
const maxParseError = 512

// maxErrorLine is the most bytes of an error's text that a command prints
// on one line (oneLine): an error may repeat a value it refuses, and
// go-redis's, under Sentinel, holds one error per sentinel.
const maxErrorLine = 1024

// parseErrorText is kong's error err as one bounded line (printable). Some
// errors are explained (parseErrorMessage).
func parseErrorText(err error) string {
	return printable(parseErrorMessage(err), maxParseError)
}

// lineBreaks are what oneLine replaces, with what.
var lineBreaks = strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ")

// oneLine is the text s of an error as one line of at most about
// maxErrorLine bytes: each line break as "; " (go-redis joins the errors
// of the sentinels it could not reach with newlines), then printable.
func oneLine(s string) string {
	return printable(lineBreaks.Replace(strings.TrimRight(s, "\r\n")), maxErrorLine)
}

// printable is s with anything not printable (a control character, an
// invalid byte) escaped as Go escapes it in a quoted string, and cut to
// about limit bytes.
func printable(s string, limit int) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if b.Len() >= limit {
			b.WriteString("…")
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// printError writes the line of command name that failed with err: text,
// err's text as the user reads it (asGiven, a hint added), as one line
// (oneLine). When text ends with a problemsError err holds, its heading
// and each of its problems get a line of their own instead.
func printError(w io.Writer, name, text string, err error) {
	var pe problemsError
	if errors.As(err, &pe) {
		if before, ok := strings.CutSuffix(text, pe.Error()); ok {
			fmt.Fprintf(w, "certmail %s: %s\n", name, oneLine(before+pe.head+":"))
			for _, p := range pe.problems {
				fmt.Fprintf(w, "  %s\n", oneLine(p))
			}
			return
		}
	}
	fmt.Fprintf(w, "certmail %s: %s\n", name, oneLine(text))
}

// problemsError is an error that lists several problems (a task's or a
// schedule's fields), which Main prints one per line under head. err is
// what it explains, for errors.As; its list is bounded where it is built
// (tasks.ValidationError).
type problemsError struct {
	head     string
	problems []string
	err      error
}

func (e problemsError) Error() string {
	return e.head + ":\n  " + strings.Join(e.problems, "\n  ")
}

func (e problemsError) Unwrap() error { return e.err }

// helpArgs reads "certmail help [command...]" as "certmail [command...]
// --help": kong knows only the flag.
func helpArgs(args []string) []string {
	if len(args) == 0 || args[0] != "help" {
		return args
	}
	return append(slices.Clone(args[1:]), "--help")
}

// parseErrorMessage is the text of kong's error err, explained where kong's
// own words mislead: a command that needs a subcommand points to its
// --help, enqueue without a subcommand or --file lists the task types (bulk
// is the default subcommand, so kong asks for --file), and so does enqueue
// given a word that is not a task type (kong reads it as an argument of
// bulk, which takes none), --queue given to
// enqueue --file says that each line names its queue, an unexpected
// argument (certmail help nosuch) points to the --help of the command it
// was given to, and so does a missing one (certmail dlq show), and a setting given in the environment is named by its
// variable (fromEnvironment).
func parseErrorMessage(err error) string {
	s := err.Error()
	var pe *kong.ParseError
	if !errors.As(err, &pe) || pe.Context == nil {
		return s
	}
	ctx := pe.Context
	cmd := ctx.Command()
	bulk := cmd == "enqueue bulk" || cmd == "enqueue" // kong picks the default subcommand after the flags
	switch {
	case bulk && strings.HasPrefix(s, "missing flags: --file") && !slices.Contains(ctx.Args, "bulk"):
		return "enqueue: " + giveTaskType()
	case bulk && strings.HasPrefix(s, "unexpected argument ") && !slices.Contains(ctx.Args, "bulk") && !fileGiven(ctx):
		return "enqueue: " + strings.TrimPrefix(s, "unexpected argument ") + " is not a task type; " + giveTaskType()
	case bulk && (s == "unknown flag --queue" || strings.HasPrefix(s, "unknown flag --queue,")):
		return `--queue: enqueue --file takes each task's queue from its line ({"type": ..., "payload": ..., "queue": "bulk"}; ` +
			`the default queue when it names none); the task-type subcommands take --queue`
	case strings.HasPrefix(s, "expected one of "):
		return s + "; " + strings.TrimSpace("certmail "+cmd) + " --help lists them"
	case strings.HasPrefix(s, `expected "<`): // a missing argument: expected "<task-id> ..."
		return s + "; " + commandPath(cmd) + " --help says what it takes"
	case strings.HasPrefix(s, "unexpected argument ") && cmd == "":
		return s + "; certmail --help lists the commands"
	case strings.HasPrefix(s, "unexpected argument "):
		return s + "; " + commandPath(cmd) + " --help says what it takes"
	}
	return fromEnvironment(ctx, s)
}

// commandPath is "certmail" and the words of kong's command cmd without its
// arguments ("task <id>" is certmail task): the command whose --help helps.
func commandPath(cmd string) string {
	words := []string{"certmail"}
	for _, w := range strings.Fields(cmd) {
		if !strings.HasPrefix(w, "<") {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

// giveTaskType is what enqueue asks for when it is given neither a task
// type nor --file.
func giveTaskType() string {
	return "give a task type (" + strings.Join(tasks.Types(), ", ") +
		"), or --file FILE to enqueue the lines of a JSON Lines file; certmail enqueue --help says more"
}

// fileGiven reports whether the command line of ctx gives enqueue's --file.
func fileGiven(ctx *kong.Context) bool {
	for _, f := range ctx.Flags() {
		if f.Name == "file" && typed(ctx, f.Value) {
			return true
		}
	}
	return false
}

// fromEnvironment is s, kong's error text, naming by its variable a
// setting whose value came from the environment rather than the command
// line of ctx: kong says "--log-format must be one of ..." of
// CERTMAIL_LOG_FORMAT=text although no flag was typed. (Other values kong
// reads from a variable it names itself: "(from envar ...)".)
func fromEnvironment(ctx *kong.Context, s string) string {
	for _, f := range ctx.Flags() {
		flag := "--" + f.Name
		// kong writes "--concurrency must be …" and "--concurrency: expected …".
		if (!strings.HasPrefix(s, flag+" ") && !strings.HasPrefix(s, flag+":")) || typed(ctx, f.Value) {
			continue
		}
		for _, env := range f.Tag.Envs { // kong reads the first one set
			if _, ok := os.LookupEnv(env); ok {
				return env + strings.TrimPrefix(s, flag)
			}
		}
	}
	return s
}

// typed reports whether the command line of ctx gives the flag of v.
func typed(ctx *kong.Context, v *kong.Value) bool {
	for _, p := range ctx.Path {
		if p.Flag != nil && p.Flag.Value == v {
			return true
		}
	}
	return false
}

// fileSettingType is the kong type of a setting that names a file
// (type:"file"), read by fileSetting.
const fileSettingType = "file"

// fileSetting maps a setting that names a file as kong's type:"path" does
// (a leading ~ expanded, a relative path made absolute), except for an
// empty or blank value: type:"path" makes "" the working directory, so that
// DIGICERT_ACCOUNTS_FILE= (a manifest's ${…} with the variable unset) would
// be read as a directory. Such a value is recorded in empty and left
// empty, for Main to refuse when the command reads the setting and no
// other value took its place (kong maps a flag before the variable it
// overrides, so the order of the calls does not tell).
func fileSetting(empty map[*kong.Value]bool) kong.MapperFunc {
	return func(ctx *kong.DecodeContext, target reflect.Value) error {
		var path string
		if err := ctx.Scan.PopValueInto("file", &path); err != nil {
			return err
		}
		if strings.TrimSpace(path) == "" {
			empty[ctx.Value] = true
			target.SetString("")
			return nil
		}
		target.SetString(kong.ExpandPath(path))
		return nil
	}
}

// settingName is how an error names setting v: by its flag when the
// command line of ctx gives it or it has no variable, else by its variable.
func settingName(ctx *kong.Context, v *kong.Value) string {
	if len(v.Tag.Envs) > 0 && !typed(ctx, v) {
		return v.Tag.Envs[0]
	}
	return "--" + v.Name
}

// asGiven is msg, a command's usage error, naming its setting the way it
// was given: the commands name a setting by its variable
// ("CERTMAIL_QUEUES: ..."), which asGiven replaces by the flag when the
// command line of ctx typed it ("--queues: ..."). A flag that reads no
// variable but whose value a package's errors name by one (dev's
// --redis-url: redisconn says REDIS_URL) lists that name in its
// errorsName tag. The mirror of fromEnvironment, for the errors of the
// commands rather than kong's.
// errorsName is the tag of a flag without a variable that names the
// variable its value's errors are written with (asGiven).
const errorsName = "errors-name"

func asGiven(ctx *kong.Context, msg string) string {
	for _, f := range ctx.Flags() {
		if !typed(ctx, f.Value) {
			continue
		}
		for _, env := range slices.Concat(f.Tag.Envs, f.Tag.GetAll(errorsName)) {
			if rest, ok := strings.CutPrefix(msg, env); ok && (rest == "" || strings.HasPrefix(rest, ":") || strings.HasPrefix(rest, " ")) {
				return "--" + f.Name + rest
			}
		}
	}
	return msg
}

// defaults are the flags' defaults (default:"${name}" in the command
// structs), each read from the constant of the package it configures, so
// that a default has one source; and the list of task types that help
// texts name (${task_types}), read from tasks.Types().
func defaults() kong.Vars {
	return kong.Vars{
		"task_types":                  strings.Join(tasks.Types(), ", "),
		"redis_url":                   redisconn.DefaultURL,
		"log_level":                   logging.DefaultLevel,
		"log_format":                  logging.DefaultFormat,
		"dev_log_format":              dev.DefaultLogFormat,
		"digicert_base_url":           account.DefaultBaseURL,
		"digicert_rate_limits":        ratelimit.DefaultWindows,
		"digicert_timeout":            ranges.Duration(digicert.DefaultTimeout),
		"max_rate_limit_pause":        ranges.Duration(worker.MaxRateLimitPause),
		"shutdown_timeout_range":      ranges.Of(minShutdownTimeout, maxShutdownTimeout),
		"schedule_min_interval_range": ranges.Of(minScheduleMinInterval, schedule.MaxEvery),
		"dlq_limit_range":             ranges.Of(1, ops.MaxDeadLetterLimit),
		"window_period_range":         ranges.Of(ratelimit.MinPeriod, ratelimit.MaxPeriod),
		"window_limit_range":          ranges.Of(1, ratelimit.MaxLimit),
		"queue_weight_range":          ranges.Of(1, queues.MaxWeight),
		"task_check_interval_range":   ranges.Of(worker.MinTaskCheckInterval, worker.MaxTaskCheckInterval),
		"guard_replicas_range":        ranges.Of(0, worker.MaxGuardReplicas),
		"guard_replicas_timeout":      ranges.Duration(worker.GuardReplicasTimeout),
		"guard_replicas_bound":        ranges.Duration(worker.GuardReplicasWaitBound),
		"schedule_max_range":          ranges.Of(1, maxScheduleMax),
		"max_retry_range":             ranges.Of(0, maxMaxRetry),
		"result_retention_range":      ranges.Of(scheduler.MinResultRetention, maxResultRetention),
		"scheduler_lease_range":       ranges.Of(scheduler.MinLease, scheduler.MaxLease),
		"concurrency_range":           ranges.Of(1, worker.MaxConcurrency),
		"deadletter_maxlen_range":     ranges.Of(1, maxDeadLetterMaxLen),
		"auth_probe_interval_range":   ranges.Of(worker.MinAuthProbeInterval, worker.MaxAuthProbeInterval),
		"rate_limit_pause_range":      ranges.Of(worker.MinRateLimitPause, worker.MaxRateLimitPause),
		"digicert_timeout_range":      ranges.Of(digicert.MinTimeout, digicert.DefaultMaxElapsed),
		"queues":                      queues.Default,
		"max_retry":                   strconv.Itoa(tasks.DefaultMaxRetry),
		"result_retention":            ranges.Duration(tasks.DefaultRetention),
		"schedule_min_interval":       ranges.Duration(schedule.DefaultMinInterval),
		"schedule_max":                strconv.Itoa(schedule.DefaultMaxSchedules),
		"scheduler_lease":             ranges.Duration(scheduler.DefaultLease),
		"admin_addr":                  admin.DefaultAddr,
		"api_addr":                    api.DefaultAddr,
		"api_shutdown_timeout":        ranges.Duration(api.DefaultShutdownTimeout),
		"max_api_hosts":               strconv.Itoa(api.MaxHosts),
		"dev_http_addr":               dev.DefaultHTTPAddr,
		"dev_admin_addr":              dev.DefaultAdminAddr,
		"concurrency":                 strconv.Itoa(worker.DefaultConcurrency),
		"worker_shutdown_timeout":     ranges.Duration(worker.DefaultShutdownTimeout),
		"deadletter_maxlen":           strconv.Itoa(deadletter.DefaultMaxLen),
		"auth_probe_interval":         ranges.Duration(worker.DefaultAuthProbeInterval),
		"rate_limit_pause":            ranges.Duration(worker.DefaultRateLimitPause),
		"task_check_interval":         ranges.Duration(worker.DefaultTaskCheckInterval),
		"dlq_limit":                   strconv.Itoa(ops.DefaultDeadLetterLimit),
		"fake_addr":                   digicerttest.DefaultAddr,
		"fake_block_for":              ranges.Duration(digicerttest.DefaultBlockFor),
		"fake_shutdown_timeout":       ranges.Duration(fakeShutdownTimeout),
	}
}

// ExitInterrupted is the exit status of a command that Ctrl-C or SIGTERM
// (Main's ctx cancelled) stopped before it was done: 128 + SIGINT, as
// shells report it.
const ExitInterrupted = 130

// interruptedError is the error of a command stopped by the cancellation of
// Main's ctx, with what the operator needs to know of what was done:
// "interrupted: nothing deleted". err wraps context.Canceled.
type interruptedError struct {
	done string // what was done, or not; "" says nothing more
	err  error
}

func (e interruptedError) Error() string {
	if e.done == "" {
		return "interrupted"
	}
	return "interrupted: " + e.done
}
func (e interruptedError) Unwrap() error { return e.err }

// usageError marks a configuration mistake (exit status 2) as opposed to a
// failure while running (exit status 1).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }
