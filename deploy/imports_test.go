package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/certmail/certmail/"

// sides are the roles that meet only in Redis: the producers and operators
// (ops, the API, the scheduler) and the consumer (the worker). Neither side
// imports the other, and the records they share (sharedRecords) import
// neither.
var (
	producers     = []string{"internal/ops", "internal/api", "internal/scheduler"}
	consumers     = []string{"internal/worker", "internal/digicert"}
	sharedRecords = []string{"internal/deadletter", "internal/schedule", "internal/taskresult", "internal/asynqsched",
		"internal/enqueue", "internal/lease", "internal/queues"}
)

// maxImportDepth is the longest chain of certmail packages allowed, the
// importing package and the imported one included (cmd/certmail → cli →
// dev → scheduler → ops → enqueue → queues → tasks: roles side by side,
// wiring on top, the public tasks package, which imports nothing of
// certmail's, at the bottom: queues takes the rule of a queue name from it).
// Before the roles were set side by side it was 9.
const maxImportDepth = 8

// TestImportGraph holds the packages to their roles: no import from the
// producer side into the consumer side or back, the shared records
// importing neither, the public tasks package importing nothing internal,
// and no chain of imports deeper than maxImportDepth.
func TestImportGraph(t *testing.T) {
	t.Parallel()
	pkgs := listPackages(t)
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages: the check would prove nothing", len(pkgs))
	}
	forbid := func(from, to []string, why string) {
		for _, f := range from {
			p, ok := pkgs[f]
			if !ok {
				t.Errorf("package %s is not in the module", f)
				continue
			}
			for _, dep := range p.Deps {
				if slices.Contains(to, strings.TrimPrefix(dep, module)) {
					t.Errorf("%s depends on %s: %s", f, strings.TrimPrefix(dep, module), why)
				}
			}
		}
	}
	forbid(producers, consumers, "the producer side must not build the worker or the DigiCert client")
	forbid(consumers, producers, "the worker must not import the producer side")
	forbid(sharedRecords, append(slices.Clone(producers), consumers...), "a shared record imports neither side")
	for _, dep := range pkgs["tasks"].Deps {
		if strings.HasPrefix(dep, module+"internal/") {
			t.Errorf("tasks depends on %s: the public package imports nothing internal", dep)
		}
	}
	if chain := longestChain(pkgs); len(chain) > maxImportDepth {
		t.Errorf("import chain of %d packages, at most %d allowed: %s", len(chain), maxImportDepth, strings.Join(chain, " → "))
	}
}

// goPackage is what go list says of a package.
type goPackage struct {
	ImportPath string
	Imports    []string // direct, production code only
	Deps       []string // transitive, production code only
}

// listPackages returns the module's packages by path relative to the module.
func listPackages(t *testing.T) map[string]goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = repo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(p.ImportPath, module)] = p
	}
	return pkgs
}

// longestChain returns the longest chain of imports between the module's
// packages.
func longestChain(pkgs map[string]goPackage) []string {
	memo := map[string][]string{}
	var from func(string) []string
	from = func(p string) []string {
		if c, ok := memo[p]; ok {
			return c
		}
		var best []string
		for _, imp := range pkgs[p].Imports {
			if rel, ok := strings.CutPrefix(imp, module); ok {
				if c := from(rel); len(c) > len(best) {
					best = c
				}
			}
		}
		memo[p] = append([]string{p}, best...)
		return memo[p]
	}
	var longest []string
	for p := range pkgs {
		if c := from(p); len(c) > len(longest) {
			longest = c
		}
	}
	return longest
}

// readmeSection returns the README's section "## title", up to the next.
func readmeSection(t *testing.T, title string) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## "+title+"\n")
	if !ok {
		t.Fatalf("README has no %s section", title)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	return section
}

// TestArchitectureTable: the README's Architecture table lists every
// package of the module, and no package that is not one.
func TestArchitectureTable(t *testing.T) {
	t.Parallel()
	section := readmeSection(t, "Architecture")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| [a-z, ]+ \\| `([a-z0-9/-]+?)/?` \\|").FindAllStringSubmatch(section, -1) {
		listed[m[1]] = true
	}
	sameRows(t, "Architecture", listed, listPackages(t), "a package")
}

// TestConfigurationTable: the README's Configuration table has a row for
// every environment variable a command reads, and none for a variable no
// command reads.
func TestConfigurationTable(t *testing.T) {
	t.Parallel()
	section := readmeSection(t, "Configuration")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| (`[A-Z_]+`(?: / `[A-Z_]+`)*) \\|").FindAllStringSubmatch(section, -1) {
		for _, v := range regexp.MustCompile("[A-Z_]+").FindAllString(m[1], -1) {
			listed[v] = true
		}
	}
	sources, err := filepath.Glob(filepath.Join(repo, "internal", "cli", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	read := map[string]bool{}
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`env:"([A-Z_]+)"`).FindAllSubmatch(src, -1) {
			read[string(m[1])] = true
		}
	}
	if len(read) < 20 {
		t.Fatalf("%d variables found in internal/cli: the search is broken", len(read))
	}
	sameRows(t, "Configuration", listed, read, "a variable a command reads")
}

// sameRows reports each name of have that the README's table (its heading)
// does not list, and each name it lists that have lacks: what names, as a
// message says it.
func sameRows[V any](t *testing.T, table string, listed map[string]bool, have map[string]V, what string) {
	t.Helper()
	for name := range have {
		if !listed[name] {
			t.Errorf("%s has no row in the README's %s table", name, table)
		}
	}
	for name := range listed {
		if _, ok := have[name]; !ok {
			t.Errorf("the README's %s table lists %s, which is not %s", table, name, what)
		}
	}
}
