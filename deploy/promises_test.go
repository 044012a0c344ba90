package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// promiseSection is the README section that lists each promise with the
// tests that hold it.
const promiseSection = "### Promises and the tests that hold them"

var (
	testGroup = regexp.MustCompile("^`([a-z0-9/]+)`: (Test[A-Za-z0-9_]+(?:, Test[A-Za-z0-9_]+)*)$")
	testFunc  = regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`)
)

// TestPromiseTable keeps the README's promise table current: every row
// names at least one test, every test it names exists in the directory it
// names, and every metric an alert or the Grafana dashboard reads has a row.
func TestPromiseTable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n"+promiseSection+"\n")
	if !ok {
		t.Fatalf("README has no section %q", promiseSection)
	}
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}

	defined := map[string]map[string]bool{} // directory → test functions
	testsIn := func(dir string) map[string]bool {
		if names, ok := defined[dir]; ok {
			return names
		}
		names := map[string]bool{}
		files, err := filepath.Glob(filepath.Join(repo, dir, "*_test.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range testFunc.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
		}
		defined[dir] = names
		return names
	}

	rows := 0
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| promise |") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 2 {
			t.Errorf("row %q: want two cells, the promise and its tests", line)
			continue
		}
		rows++
		for _, group := range strings.Split(cells[1], "; ") {
			m := testGroup.FindStringSubmatch(group)
			if m == nil {
				t.Errorf("row %q: %q is not \"`directory`: TestA, TestB\"", cells[0], group)
				continue
			}
			if len(testsIn(m[1])) == 0 {
				t.Errorf("row %q: directory %s has no tests", cells[0], m[1])
			}
			for _, name := range strings.Split(m[2], ", ") {
				if !testsIn(m[1])[name] {
					t.Errorf("row %q: %s has no test %s", cells[0], m[1], name)
				}
			}
		}
	}
	if rows < 30 {
		t.Errorf("the promise table has %d rows; the README makes more promises than that", rows)
	}

	// Every metric the alerts and the dashboard read.
	var exprs []string
	rules := docs(t, "monitoring/prometheusrule.yaml")[0]
	for _, g := range toAnySlice(get(rules, "spec", "groups")) {
		for _, r := range toAnySlice(get(g, "rules")) {
			exprs = append(exprs, get(r, "expr").(string))
		}
	}
	dash, err := os.ReadFile("grafana/certmail.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatal(err)
	}
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				m = strings.TrimSuffix(m, suffix)
			}
			if !seen[m] && !strings.Contains(section, "`"+m+"`") {
				t.Errorf("%s is read by an alert or the dashboard and has no row in the promise table", m)
			}
			seen[m] = true
		}
	}
	if len(seen) == 0 {
		t.Error("no metric found in the alerts and the dashboard: the check would prove nothing")
	}
}
