package cli_test

import (
	"strings"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// Every task type has its enqueue subcommand.
func TestEnqueueOffersEveryType(t *testing.T) {
	t.Parallel()
	for _, typ := range tasks.Types() {
		r := run(t, "enqueue", typ, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: certmail enqueue "+typ+" ") {
			t.Errorf("certmail enqueue %s --help: exit %d, stderr %q; want the usage of an enqueue %s subcommand", typ, r.code, r.stderr, typ)
		}
	}
}

// schedule add --help names every task type in the help of --type.
func TestScheduleAddHelpNamesEveryType(t *testing.T) {
	t.Parallel()
	r := run(t, "schedule", "add", "--help")
	_, help, ok := strings.Cut(r.stdout, "\n      --type=STRING")
	if r.code != 0 || !ok {
		t.Fatalf("certmail schedule add --help: exit %d, no --type in %q", r.code, r.stdout)
	}
	help, _, _ = strings.Cut(help, "\n      --") // up to the next flag
	help = strings.Join(strings.Fields(help), " ")
	for _, typ := range tasks.Types() {
		if !strings.Contains(help, " "+typ+",") && !strings.HasSuffix(help, " "+typ+".") {
			t.Errorf("--type help %q does not name %s", help, typ)
		}
	}
}
