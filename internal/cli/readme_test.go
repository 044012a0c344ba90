package cli

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/internal/scheduler"
)

// TestConfigurationUsedBy: the "used by" cell of these rows of the README's
// configuration table names exactly the commands that read the variable,
// each as its name (dlq purge) or as its group's when every command of the
// group reads it (enqueue), or says "all" when every command does.
func TestConfigurationUsedBy(t *testing.T) {
	t.Parallel()
	readers, commands := commandsReading(t)
	table := readmeConfiguration(t)
	for _, row := range []string{"`CERTMAIL_QUEUES`", "`CERTMAIL_LOG_LEVEL` / `CERTMAIL_LOG_FORMAT`"} {
		usedBy, ok := table[row]
		if !ok {
			t.Errorf("the README's configuration table has no row %s", row)
			continue
		}
		named := commandsNamed(usedBy, commands)
		for _, v := range regexp.MustCompile("[A-Z_]+").FindAllString(row, -1) {
			for _, c := range slices.Sorted(maps.Keys(readers[v])) {
				if !named[c] {
					t.Errorf("%s: %s reads it, but used by %q does not name it", v, c, usedBy)
				}
			}
			for _, c := range slices.Sorted(maps.Keys(named)) {
				if !readers[v][c] {
					t.Errorf("%s: used by %q names %s, which does not read it", v, usedBy, c)
				}
			}
		}
	}
}

// TestSchedulerLeaseMinimum: the help of --lease says the shortest and the
// longest lease the scheduler accepts (the README: TestReadmeStatesRanges).
func TestSchedulerLeaseMinimum(t *testing.T) {
	t.Parallel()
	want := ranges.Duration(scheduler.MinLease) + " to " + ranges.Duration(scheduler.MaxLease)
	var lease *kong.Flag
	for _, c := range leafCommands(t) {
		for _, group := range c.AllFlags(false) {
			for _, f := range group {
				if slices.Contains(f.Envs, "CERTMAIL_SCHEDULER_LEASE") {
					lease = f
				}
			}
		}
	}
	if lease == nil {
		t.Fatal("no flag reads CERTMAIL_SCHEDULER_LEASE")
	}
	if !strings.Contains(lease.Help, want) {
		t.Errorf("--lease help %q does not say %q", lease.Help, want)
	}
}

// leafCommands are the commands of the CLI that run, as kong sees them.
func leafCommands(t *testing.T) []*kong.Node {
	t.Helper()
	parser, err := kong.New(&CLI{}, kong.Name("certmail"), kong.NamedMapper(fileSettingType, fileSetting(map[*kong.Value]bool{})), defaults())
	if err != nil {
		t.Fatal(err)
	}
	var leaves []*kong.Node
	var walk func(*kong.Node)
	walk = func(n *kong.Node) {
		sub := false
		for _, c := range n.Children {
			if c.Type == kong.CommandNode {
				sub = true
				walk(c)
			}
		}
		if !sub && n.Type == kong.CommandNode {
			leaves = append(leaves, n)
		}
	}
	walk(parser.Model.Node)
	if len(leaves) < 15 {
		t.Fatalf("%d commands found: the walk is broken", len(leaves))
	}
	return leaves
}

// commandsReading maps each variable to the commands (dlq purge) that read
// it, and lists every command that reads one (not version).
func commandsReading(t *testing.T) (readers map[string]map[string]bool, commands []string) {
	t.Helper()
	readers = map[string]map[string]bool{}
	for _, c := range leafCommands(t) {
		name, reads := strings.TrimSpace(c.Path()), false
		for _, group := range c.AllFlags(false) {
			for _, f := range group {
				for _, v := range f.Envs {
					if readers[v] == nil {
						readers[v] = map[string]bool{}
					}
					readers[v][name], reads = true, true
				}
			}
		}
		if reads {
			commands = append(commands, name)
		}
	}
	return readers, commands
}

// commandsNamed returns the commands of all that text names, by their
// name or their group's (the first word of theirs); "all" names every one.
func commandsNamed(text string, all []string) map[string]bool {
	named := map[string]bool{}
	if strings.TrimSpace(text) == "all" {
		for _, c := range all {
			named[c] = true
		}
		return named
	}
	word := func(name string) *regexp.Regexp {
		return regexp.MustCompile(`(^|[^a-z-])` + regexp.QuoteMeta(name) + `($|[^a-z-])`)
	}
	for _, c := range all {
		if word(c).MatchString(text) {
			named[c] = true
			text = word(c).ReplaceAllString(text, "$1$2")
		}
	}
	for _, c := range all {
		group, _, _ := strings.Cut(c, " ")
		if word(group).MatchString(text) {
			named[c] = true
		}
	}
	return named
}

// readmeConfiguration maps the first cell of each row of the README's
// configuration table to its second, "used by".
func readmeConfiguration(t *testing.T) map[string]string {
	t.Helper()
	rows := map[string]string{}
	for _, m := range configurationRow.FindAllStringSubmatch(readmeSection(t), -1) {
		rows[m[1]] = m[2]
	}
	return rows
}

var configurationRow = regexp.MustCompile("(?m)^\\| (`[A-Z_]+`(?: / `[A-Z_]+`)*) \\| ([^|]*) \\|")

// readmeRow returns the row of the README's configuration table whose first
// cell is first.
func readmeRow(t *testing.T, first string) string {
	t.Helper()
	for _, line := range strings.Split(readmeSection(t), "\n") {
		if strings.HasPrefix(line, "| "+first+" |") {
			return line
		}
	}
	return ""
}

// readmeSection returns the README's Configuration section.
func readmeSection(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	return section
}

// TestREADMENamesDLQListColumns: each column of certmail dlq list that the
// README sends the operator to is one the table has.
func TestREADMENamesDLQListColumns(t *testing.T) {
	t.Parallel()
	text := readmeWords(t)
	named := regexp.MustCompile("`([^`]+)` column of `certmail dlq list`").FindAllStringSubmatch(text, -1)
	if len(named) == 0 {
		t.Fatal("the README names no column of `certmail dlq list`: the pattern is broken")
	}
	for _, m := range named {
		if !slices.Contains(dlqListColumns, m[1]) {
			t.Errorf("the README names the column %q of certmail dlq list, which has %q", m[1], dlqListColumns)
		}
	}
}

// TestREADMEStoppingWorkerLine: the README quotes the not-ready line of a
// stopping worker with the field that holds its cause, as the worker
// writes it (internal/worker's TestReadyzWhileStopping reads the same
// field): admin logs every /readyz failure's cause under "error".
func TestREADMEStoppingWorkerLine(t *testing.T) {
	t.Parallel()
	const line = "WARN `not ready` with `\"error\":\"stopping\"`"
	if !strings.Contains(readmeWords(t), line) {
		t.Errorf("the README does not quote a stopping worker's line as %s", line)
	}
}

// TestReadmeStatesRanges: the README's configuration table states the
// range of each bounded setting, as its error does.
func TestReadmeStatesRanges(t *testing.T) {
	t.Parallel()
	for _, tt := range rangedSettings {
		if tt.helpOnly {
			continue
		}
		want := "`" + tt.lo + "` to `" + tt.hi + "`"
		if row := readmeRow(t, "`"+tt.env+"`"); !strings.Contains(row, want) {
			t.Errorf("the README's row of %s does not say %s: %q", tt.env, want, row)
		}
	}
}

// TestReadmeDefaultsMatchFlags: the default cell of each row of the
// README's configuration table gives, in backquotes, the default of every
// flag that reads the row's variable (the flag's own, which kong takes from
// the package constant), so that a changed default cannot leave the table
// stale. A command whose default differs is named before it in parentheses,
// "`30s` (api `10s`)"; a row of several variables gives theirs in the same
// order, "`info` / `json` (dev `console`)". A boolean flag defaults to
// `false`; a flag without a default (a key, a file) is not checked.
func TestReadmeDefaultsMatchFlags(t *testing.T) {
	t.Parallel()
	_, commands := commandsReading(t)
	cells := readmeDefaults(t, commands)
	wrong := map[string][]string{} // the message: the commands it is about
	for _, c := range leafCommands(t) {
		name := strings.TrimSpace(c.Path())
		for _, group := range c.AllFlags(false) {
			for _, f := range group {
				def := f.Default
				if def == "" && f.IsBool() {
					def = "false"
				}
				for _, env := range f.Envs {
					cell, ok := cells[env]
					switch {
					case !ok:
						t.Errorf("%s (read by %s): the README's configuration table has no row", env, name)
					case def != "" && cell.of(name) != def:
						msg := fmt.Sprintf("%s: the default is %q, the README's default cell %q says %q", env, def, cell.text, cell.of(name))
						wrong[msg] = append(wrong[msg], name)
					}
				}
			}
		}
	}
	for _, msg := range slices.Sorted(maps.Keys(wrong)) {
		t.Errorf("%s (for %s)", msg, strings.Join(wrong[msg], ", "))
	}
}

// defaultCell is one variable's part of a default cell of the README's
// configuration table: its default, and the commands whose default differs.
type defaultCell struct {
	text   string
	value  string
	except map[string]string
}

// of returns the default the cell gives for command.
func (d defaultCell) of(command string) string {
	if v, ok := d.except[command]; ok {
		return v
	}
	return d.value
}

var (
	defaultValue  = regexp.MustCompile("^`([^`]*)`")
	defaultExcept = regexp.MustCompile("([a-z][a-z -]*) `([^`]*)`")
)

// readmeDefaults maps each variable of the README's configuration table to
// its part of its row's default cell (the last). Commands named in
// parentheses are resolved as TestConfigurationUsedBy resolves them.
func readmeDefaults(t *testing.T, commands []string) map[string]defaultCell {
	t.Helper()
	cells := map[string]defaultCell{}
	for first := range readmeConfiguration(t) {
		row := strings.TrimSuffix(strings.TrimSpace(readmeRow(t, first)), " |")
		last := row[strings.LastIndex(row, " | ")+3:]
		envs := regexp.MustCompile("[A-Z_]+").FindAllString(first, -1)
		parts := strings.Split(last, " / ")
		if len(parts) != len(envs) {
			parts = slices.Repeat([]string{last}, len(envs))
		}
		for i, env := range envs {
			cell := defaultCell{text: parts[i], except: map[string]string{}}
			if m := defaultValue.FindStringSubmatch(parts[i]); m != nil {
				cell.value = m[1]
			}
			if _, paren, ok := strings.Cut(parts[i], "("); ok {
				for _, m := range defaultExcept.FindAllStringSubmatch(paren, -1) {
					for c := range commandsNamed(m[1], commands) {
						cell.except[c] = m[2]
					}
				}
			}
			cells[env] = cell
		}
	}
	return cells
}

// readmeWords is the README with every run of white space made one space,
// so that a quote matches however the README wraps it.
func readmeWords(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(readme)), " ")
}
