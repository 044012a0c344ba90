package cli

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
	"github.com/certmail/certmail/internal/worker"
)

// rangedSettings are the settings with a range, each with the bounds its
// check uses: the README's configuration table (TestReadmeStatesRanges)
// and the flag's --help (TestHelpStatesRanges) say "LO to HI".
var rangedSettings = []struct {
	env      string // the setting's variable; "" for a flag that has none
	flag     string // the flag, for one without a variable
	lo, hi   string
	helpOnly bool // the README words it otherwise (a range within a list)
}{
	{env: "CERTMAIL_CONCURRENCY", lo: "1", hi: strconv.Itoa(worker.MaxConcurrency)},
	{env: "CERTMAIL_MAX_RETRY", lo: "0", hi: strconv.Itoa(maxMaxRetry)},
	{env: "CERTMAIL_DEADLETTER_MAXLEN", lo: "1", hi: strconv.Itoa(maxDeadLetterMaxLen)},
	{env: "CERTMAIL_SHUTDOWN_TIMEOUT", lo: ranges.Duration(minShutdownTimeout), hi: ranges.Duration(maxShutdownTimeout)},
	{env: "CERTMAIL_AUTH_PROBE_INTERVAL", lo: ranges.Duration(worker.MinAuthProbeInterval), hi: ranges.Duration(worker.MaxAuthProbeInterval)},
	{env: "CERTMAIL_RATE_LIMIT_PAUSE", lo: ranges.Duration(worker.MinRateLimitPause), hi: ranges.Duration(worker.MaxRateLimitPause)},
	{env: "DIGICERT_TIMEOUT", lo: ranges.Duration(digicert.MinTimeout), hi: ranges.Duration(digicert.DefaultMaxElapsed)},
	{env: "CERTMAIL_RESULT_RETENTION", lo: ranges.Duration(scheduler.MinResultRetention), hi: ranges.Duration(maxResultRetention)},
	{env: "CERTMAIL_SCHEDULER_LEASE", lo: ranges.Duration(scheduler.MinLease), hi: ranges.Duration(scheduler.MaxLease)},
	{env: "CERTMAIL_SCHEDULE_MIN_INTERVAL", lo: ranges.Duration(minScheduleMinInterval), hi: ranges.Duration(schedule.MaxEvery)},
	{env: "CERTMAIL_SCHEDULE_MAX", lo: "1", hi: strconv.Itoa(maxScheduleMax)},
	{env: "CERTMAIL_TASK_CHECK_INTERVAL", lo: ranges.Duration(worker.MinTaskCheckInterval), hi: ranges.Duration(worker.MaxTaskCheckInterval)},
	{env: "CERTMAIL_QUEUES", lo: "1", hi: strconv.Itoa(queues.MaxWeight), helpOnly: true},
	{env: "DIGICERT_RATE_LIMITS", lo: "1", hi: strconv.Itoa(ratelimit.MaxLimit), helpOnly: true},
	{env: "DIGICERT_RATE_LIMITS", lo: ranges.Duration(ratelimit.MinPeriod), hi: ranges.Duration(ratelimit.MaxPeriod), helpOnly: true},
	{flag: "rate-limits", lo: "1", hi: strconv.Itoa(ratelimit.MaxLimit), helpOnly: true},
	{flag: "rate-limits", lo: ranges.Duration(ratelimit.MinPeriod), hi: ranges.Duration(ratelimit.MaxPeriod), helpOnly: true},
	{flag: "limit", lo: "1", hi: strconv.Itoa(ops.MaxDeadLetterLimit), helpOnly: true},
}

// TestHelpStatesRanges: the --help of every command states the range of
// each of its flags that has one, as "LO to HI" from the constants its
// check uses; only some did.
func TestHelpStatesRanges(t *testing.T) {
	t.Parallel()
	checked := 0
	for _, cmd := range leafCommands(t) {
		path := strings.Fields(cmd.Path())
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), append(path, "--help"), strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("%s --help: exit %d, %s", cmd.Path(), code, errOut.String())
		}
		entries := helpEntries(out.String())
		for _, group := range cmd.AllFlags(true) {
			for _, f := range group {
				for _, tt := range rangedSettings {
					if !ranged(f, tt.env, tt.flag) {
						continue
					}
					checked++
					want := tt.lo + " to " + tt.hi
					if e, ok := entries[f.Name]; !ok || !strings.Contains(e, want) {
						t.Errorf("certmail %s --help: --%s does not say %q: %q", cmd.Path(), f.Name, want, e)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no ranged flag found: the walk is broken")
	}
}

// ranged reports whether f is the setting of env, or, env empty, the flag
// named flag.
func ranged(f *kong.Flag, env, flag string) bool {
	if env != "" {
		return slices.Contains(f.Envs, env)
	}
	return f.Name == flag
}

// helpFlag starts a flag's entry in kong's help: "  -n, --limit=25  …".
var helpFlag = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)`)

// helpEntries splits help text by flag: each flag's name to its entry, the
// flag's line and the lines of its help that follow, white space made one
// space.
func helpEntries(help string) map[string]string {
	entries := map[string]string{}
	var name string
	var lines []string
	flush := func() {
		if name != "" {
			entries[name] = strings.Join(strings.Fields(strings.Join(lines, " ")), " ")
		}
	}
	for line := range strings.Lines(help) {
		if m := helpFlag.FindStringSubmatch(line); m != nil {
			flush()
			name, lines = m[1], nil
		} else if strings.TrimSpace(line) == "" {
			flush()
			name, lines = "", nil
		}
		lines = append(lines, line)
	}
	flush()
	return entries
}
