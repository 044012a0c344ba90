package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestInterval(t *testing.T) {
	t.Parallel()
	// Wilson score intervals at 95 %, as the textbooks give them.
	tests := []struct {
		killed, n int
		lo, hi    float64
	}{
		{8, 10, 49.0, 94.3},
		{0, 10, 0, 27.8},
		{10, 10, 72.2, 100},
		{34, 40, 70.9, 92.9},
		{0, 0, 0, 100},
	}
	for _, tt := range tests {
		lo, hi := interval(tt.killed, tt.n)
		if math.Abs(lo-tt.lo) > 0.05 || math.Abs(hi-tt.hi) > 0.05 {
			t.Errorf("interval(%d, %d) = %.2f–%.2f, want %.1f–%.1f", tt.killed, tt.n, lo, hi, tt.lo, tt.hi)
		}
	}
}

// mutantsOf returns count mutants in each file.
func mutantsOf(counts map[string]int) []mutant {
	var ms []mutant
	for file, n := range counts {
		for i := range n {
			ms = append(ms, mutant{File: file, Line: i + 1, Column: 1, Type: "ARITHMETIC_BASE", Status: "RUNNABLE"})
		}
	}
	return ms
}

func key(m mutant) string { return fmt.Sprintf("%s:%d:%d %s", m.File, m.Line, m.Column, m.Type) }

func keys(ms []mutant) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = key(m)
	}
	return out
}

func TestDrawOrder(t *testing.T) {
	t.Parallel()
	counts := map[string]int{"p/a.go": 200, "p/b.go": 100, "p/c.go": 50, "p/d.go": 10}
	ms := mutantsOf(counts)
	order := drawOrder(ms, 1)

	sorted := slices.Sorted(slices.Values(keys(order)))
	if want := slices.Sorted(slices.Values(keys(ms))); !slices.Equal(sorted, want) {
		t.Fatalf("the order is no permutation of the mutants: %d of %d", len(sorted), len(want))
	}
	reversed := slices.Clone(ms)
	slices.Reverse(reversed)
	if !slices.Equal(keys(drawOrder(reversed, 1)), keys(order)) {
		t.Error("the same mutants listed in another order draw another sample")
	}
	if slices.Equal(keys(drawOrder(ms, 2)), keys(order)) {
		t.Error("another seed draws the same sample")
	}

	// Any prefix holds each file in proportion to its mutants, to within
	// one mutant.
	for _, n := range []int{10, 36, 100, 250} {
		per := map[string]int{}
		for _, m := range order[:n] {
			per[m.File]++
		}
		for file, c := range counts {
			want := float64(n) * float64(c) / float64(len(ms))
			if math.Abs(float64(per[file])-want) > 1 {
				t.Errorf("the first %d hold %d of %s, want about %.1f", n, per[file], file, want)
			}
		}
	}
	// Within a file the order is shuffled, not by line.
	var lines []int
	for _, m := range order {
		if m.File == "p/a.go" {
			lines = append(lines, m.Line)
		}
	}
	if slices.IsSorted(lines) {
		t.Error("a file's mutants are drawn in the order of their lines")
	}
}

func TestSampleReport(t *testing.T) {
	t.Parallel()
	s := sampleResult{name: "internal/worker", population: 400, want: 5, seed: 3, took: 95 * time.Second, load: "1.00 2.00 3.00",
		tested: []mutant{
			{File: "internal/worker/a.go", Line: 9, Column: 2, Type: "ARITHMETIC_BASE", Status: statusKilled},
			{File: "internal/worker/a.go", Line: 3, Column: 2, Type: "CONDITIONALS_BOUNDARY", Status: statusLived},
			{File: "internal/worker/b.go", Line: 4, Column: 9, Type: "ARITHMETIC_BASE", Status: statusNotViable},
			{File: "internal/worker/b.go", Line: 5, Column: 9, Type: "CONDITIONALS_NEGATION", Status: statusTimedOut},
		}}
	if n, killed, notViable := s.tally(); n != 3 || killed != 2 || notViable != 1 {
		t.Errorf("tally = %d, %d killed, %d not viable; want 3, 2, 1", n, killed, notViable)
	}
	want := "== internal/worker: SAMPLE of 3 of the 400 mutants gremlins lists (seed 3, 5 asked for): 2 killed, 66.7 %, " +
		"95 % interval 20.8–93.9 % of all mutants; 1 not viable left out; 1m35s; load average 1.00 2.00 3.00\n" +
		"   LIVED       CONDITIONALS_BOUNDARY internal/worker/a.go:3:2\n"
	if got := s.report(); got != want {
		t.Errorf("report:\n%s\nwant\n%s", got, want)
	}
	if s.underMin(85) || !s.underMin(95) {
		t.Errorf("underMin: 85 %% %v, 95 %% %v; want false, true (the interval reaches 93.9 %%)", s.underMin(85), s.underMin(95))
	}
}

// TestSample draws a sample larger than testdata/calc has mutants: every
// mutant is tested once, as the full run tests it (calcWant), the one that
// does not compile is left out of the count, and the report says the
// sample is smaller than asked.
func TestSample(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "calc")
	if err := copyModule("testdata/calc", root); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	m := &measurer{root: root, scratch: filepath.Join(work, "module"), work: work, coefficient: 10, minTimeout: 20 * time.Second,
		gremlins: "github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0", log: io.Discard}
	if err := copyModule(root, m.scratch); err != nil {
		t.Fatal(err)
	}
	results, err := m.sample(context.Background(), ".", 20, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 {
		t.Fatalf("%d results, want one package", len(results))
	}
	s := results[0]
	if s.population != len(calcWant) || len(s.tested) != len(calcWant) {
		t.Errorf("%d listed, %d tested; want %d each", s.population, len(s.tested), len(calcWant))
	}
	seen := map[string]bool{}
	for _, mu := range s.tested {
		k := strings.TrimPrefix(mu.File, "./") + ":" + strconv.Itoa(mu.Line) + ":" + strconv.Itoa(mu.Column) + " " + mu.Type
		if seen[k] {
			t.Errorf("%s tested twice", k)
		}
		seen[k] = true
		if want := strings.TrimSuffix(calcWant[k], " (re-run)"); mu.Status != want {
			t.Errorf("%s: %q, want %q as in the full run", k, mu.Status, want)
		}
	}
	if n, killed, notViable := s.tally(); n != 12 || killed != 11 || notViable != 1 {
		t.Errorf("tally = %d, %d killed, %d not viable; want 12, 11, 1", n, killed, notViable)
	}
	if r := s.report(); !strings.HasPrefix(r, "== .: SAMPLE of 12 of the 13 mutants gremlins lists (seed 1, 20 asked for): 11 killed, 91.7 %, 95 % interval 64.6–98.5 %") {
		t.Errorf("report: %s", r)
	}
	src, err := os.ReadFile(filepath.Join(m.scratch, "calc.go"))
	if err != nil {
		t.Fatal(err)
	}
	if orig, _ := os.ReadFile("testdata/calc/calc.go"); string(src) != string(orig) {
		t.Error("the scratch copy was left mutated")
	}
}
