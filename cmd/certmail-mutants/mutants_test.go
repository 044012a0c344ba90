package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMutate(t *testing.T) {
	t.Parallel()
	src := "package p\n\nfunc f(a, b int) bool {\n\tx := -a + b*2\n\tx++\n\treturn a <= b && a != x\n}\n"
	tests := []struct {
		line, column int
		typ          string
		want         string // the mutated line, or the error's text
	}{
		{4, 7, "INVERT_NEGATIVES", "\tx := +a + b*2"},
		{4, 10, "ARITHMETIC_BASE", "\tx := -a - b*2"},
		{4, 13, "ARITHMETIC_BASE", "\tx := -a + b/2"},
		{5, 3, "INCREMENT_DECREMENT", "\tx--"},
		{6, 11, "CONDITIONALS_BOUNDARY", "\treturn a < b && a != x"},
		{6, 11, "CONDITIONALS_NEGATION", "\treturn a > b && a != x"},
		{6, 21, "CONDITIONALS_NEGATION", "\treturn a <= b && a == x"},

		{6, 21, "CONDITIONALS_BOUNDARY", "!= at 6:21 is no CONDITIONALS_BOUNDARY mutant"},
		{6, 12, "CONDITIONALS_BOUNDARY", "no token at 6:12"},
		{9, 1, "ARITHMETIC_BASE", "no token at 9:1"},
		{6, 16, "INVERT_LOGICAL", "mutant type INVERT_LOGICAL not supported"},
	}
	for _, tt := range tests {
		out, err := mutate([]byte(src), tt.line, tt.column, tt.typ)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = strings.Split(string(out), "\n")[tt.line-1]
			if strings.Count(string(out), "\n") != strings.Count(src, "\n") || len(out) > len(src)+1 || len(out) < len(src)-1 {
				t.Errorf("%s at %d:%d changed more than the operator:\n%s", tt.typ, tt.line, tt.column, out)
			}
		}
		if got != tt.want {
			t.Errorf("%s at %d:%d = %q, want %q", tt.typ, tt.line, tt.column, got, tt.want)
		}
	}
}

func TestTallyAndReport(t *testing.T) {
	t.Parallel()
	p := pkgResult{name: "tasks", gremlins: 90 * time.Second, rerun: 30 * time.Second, load: "3.93 2.50 2.86", mutants: []mutant{
		{File: "tasks/a.go", Line: 1, Column: 2, Type: "ARITHMETIC_BASE", Status: statusKilled},
		{File: "tasks/a.go", Line: 2, Column: 2, Type: "ARITHMETIC_BASE", Status: statusTimedOut},
		{File: "tasks/a.go", Line: 3, Column: 2, Type: "CONDITIONALS_BOUNDARY", Status: statusLived},
		{File: "tasks/a.go", Line: 4, Column: 9, Type: "CONDITIONALS_NEGATION", Status: statusKilled, Rerun: true},
		{File: "tasks/a.go", Line: 5, Column: 9, Type: "CONDITIONALS_NEGATION", Status: statusLived, Rerun: true},
		{File: "tasks/a.go", Line: 6, Column: 9, Type: "ARITHMETIC_BASE", Status: statusNotViable, Rerun: true},
		{File: "tasks/a.go", Line: 7, Column: 9, Type: "INVERT_LOGICAL", Status: statusNotCovered, Note: "mutant type INVERT_LOGICAL not supported"},
		{File: "tasks/a.go", Line: 8, Column: 9, Type: "ARITHMETIC_BASE", Status: statusSkipped},
	}}
	all, killed, covered, coveredKilled, notViable, rerun := p.tally()
	if all != 6 || killed != 3 || covered != 3 || coveredKilled != 2 || notViable != 1 || rerun != 2 {
		t.Errorf("tally = all %d, killed %d, covered %d, covered killed %d, not viable %d, re-run %d; want 6, 3, 3, 2, 1, 2",
			all, killed, covered, coveredKilled, notViable, rerun)
	}
	if got := p.shareOfAll(); got != 50 {
		t.Errorf("shareOfAll = %v, want 50", got)
	}
	want := "== tasks: 3 of 6 mutants killed: 50.0 % of all, 66.7 % of the 3 gremlins covered (2 killed); 2 re-run, 1 not viable; gremlins 1m30s, re-run 30s; load average 3.93 2.50 2.86\n" +
		"   LIVED       CONDITIONALS_BOUNDARY tasks/a.go:3:2\n" +
		"   LIVED       CONDITIONALS_NEGATION tasks/a.go:5:9 (re-run)\n" +
		"   NOT COVERED INVERT_LOGICAL        tasks/a.go:7:9 (not re-run: mutant type INVERT_LOGICAL not supported)\n"
	if got := p.report(); got != want {
		t.Errorf("report:\n%s\nwant\n%s", got, want)
	}
	if got := (pkgResult{name: "empty"}).shareOfAll(); got != 100 {
		t.Errorf("a package without mutants: %v %%, want 100", got)
	}
}

// TestMeasure runs gremlins over testdata/calc, whose switch cases and
// constants gremlins reports as not covered, and checks that the second
// pass kills those mutants, leaves out the one that does not compile, and
// counts every other mutant as gremlins does.
func TestMeasure(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "calc")
	if err := copyModule("testdata/calc", root); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	// gremlins gives each mutant coefficient times its coverage run, about
	// 0.3 s here: 30 times keeps a killed mutant whose build is slow on a
	// loaded machine from reading as TIMED OUT.
	m := &measurer{root: root, scratch: filepath.Join(work, "module"), work: work, coefficient: 30, minTimeout: 20 * time.Second,
		gremlins: "github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0", log: io.Discard}
	if err := copyModule(root, m.scratch); err != nil {
		t.Fatal(err)
	}
	results, err := m.measure(context.Background(), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 {
		t.Fatalf("%d results, want one package", len(results))
	}
	got := map[string]string{}
	for _, mu := range results[0].mutants {
		key := strings.TrimPrefix(mu.File, "./") + ":" + strconv.Itoa(mu.Line) + ":" + strconv.Itoa(mu.Column) + " " + mu.Type
		got[key] = mu.Status
		if mu.Rerun {
			got[key] += " (re-run)"
		}
	}
	want := calcWant
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d mutants, want %d: %v", len(got), len(want), got)
	}
	if share := results[0].shareOfAll(); share < 91.6 || share > 91.7 {
		t.Errorf("share of all = %.2f %%, want 11 of 12", share)
	}
	src, err := os.ReadFile(filepath.Join(m.scratch, "calc.go"))
	if err != nil {
		t.Fatal(err)
	}
	if orig, _ := os.ReadFile("testdata/calc/calc.go"); string(src) != string(orig) {
		t.Error("the scratch copy was left mutated")
	}
}

// calcWant is each mutant of testdata/calc and what a full run makes of it.
var calcWant = map[string]string{
	"calc.go:8:9 CONDITIONALS_BOUNDARY":   "KILLED (re-run)",
	"calc.go:8:9 CONDITIONALS_NEGATION":   "KILLED (re-run)",
	"calc.go:9:10 INVERT_NEGATIVES":       "KILLED",
	"calc.go:9:10 ARITHMETIC_BASE":        "KILLED",
	"calc.go:10:9 CONDITIONALS_BOUNDARY":  "KILLED (re-run)",
	"calc.go:10:9 CONDITIONALS_NEGATION":  "KILLED (re-run)",
	"calc.go:17:28 ARITHMETIC_BASE":       "NOT VIABLE (re-run)",
	"calc.go:20:17 ARITHMETIC_BASE":       "KILLED (re-run)",
	"calc.go:24:25 ARITHMETIC_BASE":       "LIVED",
	"calc.go:26:22 ARITHMETIC_BASE":       "KILLED",
	"calc.go:34:16 CONDITIONALS_BOUNDARY": "KILLED",
	"calc.go:34:16 CONDITIONALS_NEGATION": "KILLED",
	"calc.go:34:22 INCREMENT_DECREMENT":   "TIMED OUT",
}
