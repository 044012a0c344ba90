package main

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"time"
)

// z95 is the standard normal quantile of a two-sided 95 % interval.
const z95 = 1.959964

// sampleResult is the outcome of testing a sample of one Go package's
// mutants.
type sampleResult struct {
	name       string   // the package's directory, relative to the module root
	population int      // every mutant gremlins lists for the package
	tested     []mutant // in the order drawn; the not viable ones included
	want       int      // the sample's size asked for
	seed       uint64
	took       time.Duration // listing the mutants and testing the sample
	load       string        // the machine's load averages when it was done
}

// tally counts the sample's mutants that compile, and those killed.
func (s sampleResult) tally() (n, killed, notViable int) {
	for _, m := range s.tested {
		switch {
		case m.Status == statusNotViable:
			notViable++
		case m.counted():
			n++
			if m.killed() {
				killed++
			}
		}
	}
	return n, killed, notViable
}

// interval returns the 95 % Wilson score interval, in percent, of the share
// of the package's mutants killed, from the sample's n mutants of which
// killed were killed. It treats the sample as drawn with replacement, which
// only makes it wider than a sample without replacement needs.
func interval(killed, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 100
	}
	nf, p := float64(n), float64(killed)/float64(n)
	denom := 1 + z95*z95/nf
	centre := (p + z95*z95/(2*nf)) / denom
	half := z95 / denom * math.Sqrt(p*(1-p)/nf+z95*z95/(4*nf*nf))
	return 100 * max(0, centre-half), 100 * min(1, centre+half)
}

// report is s's summary line, labelled as a sample, and the mutants of the
// sample that were not killed.
func (s sampleResult) report() string {
	n, killed, notViable := s.tally()
	lo, hi := interval(killed, n)
	var b strings.Builder
	fmt.Fprintf(&b, "== %s: SAMPLE of %d of the %d mutants gremlins lists (seed %d", s.name, n, s.population, s.seed)
	if n < s.want {
		fmt.Fprintf(&b, ", %d asked for", s.want)
	}
	fmt.Fprintf(&b, "): %d killed, %.1f %%, 95 %% interval %.1f–%.1f %% of all mutants; %d not viable left out; %s%s\n",
		killed, percent(killed, n), lo, hi, notViable, s.took.Round(time.Second), loadNote(s.load))
	for _, m := range s.tested {
		if m.counted() && !m.killed() {
			fmt.Fprintf(&b, "   %-11s %-21s %s:%d:%d\n", m.Status, m.Type, m.File, m.Line, m.Column)
		}
	}
	return b.String()
}

// underMin reports whether the sample shows, at 95 %, that the package's
// tests kill less than least percent of its mutants: the interval lies below
// least.
func (s sampleResult) underMin(least float64) bool {
	n, killed, _ := s.tally()
	_, hi := interval(killed, n)
	return hi < least
}

// drawOrder returns the mutants in the order a sample takes them: each
// file's mutants shuffled by seed and the files interleaved in proportion to
// their number of mutants, so that the first n of the order spread over the
// files as the mutants do. The same mutants and seed give the same order.
func drawOrder(mutants []mutant, seed uint64) []mutant {
	byFile := map[string][]mutant{}
	for _, m := range mutants {
		byFile[m.File] = append(byFile[m.File], m)
	}
	type drawn struct {
		m   mutant
		key float64
	}
	var all []drawn
	for _, file := range slices.Sorted(maps.Keys(byFile)) {
		ms := byFile[file]
		slices.SortFunc(ms, func(a, b mutant) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column), cmp.Compare(a.Type, b.Type))
		})
		h := fnv.New64a()
		_, _ = h.Write([]byte(file))
		r := rand.New(rand.NewPCG(seed, h.Sum64()))
		r.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		offset := r.Float64()
		for i, m := range ms {
			all = append(all, drawn{m, (float64(i) + offset) / float64(len(ms))})
		}
	}
	slices.SortStableFunc(all, func(a, b drawn) int { return cmp.Compare(a.key, b.key) })
	out := make([]mutant, len(all))
	for i, d := range all {
		out[i] = d.m
	}
	return out
}

// sample lists the mutants of dir (a package directory and those below it)
// with a dry run of gremlins and, for each Go package, tests mutants in the
// order drawOrder gives until n of them compile, and returns one result per
// package, sorted by name.
func (m *measurer) sample(ctx context.Context, dir string, n int, seed uint64) ([]sampleResult, error) {
	start := time.Now()
	fmt.Fprintf(m.log, "== %s: listing the mutants (gremlins --dry-run)...\n", dir)
	mutants, err := m.runGremlins(ctx, dir, "--dry-run")
	if err != nil {
		return nil, err
	}
	listing := time.Since(start)
	byPkg := map[string][]mutant{}
	for _, mu := range mutants {
		if mu.counted() {
			byPkg[path.Dir(mu.File)] = append(byPkg[path.Dir(mu.File)], mu)
		}
	}
	var results []sampleResult
	for _, pkg := range slices.Sorted(maps.Keys(byPkg)) {
		pkgStart := time.Now()
		res := sampleResult{name: pkg, population: len(byPkg[pkg]), want: n, seed: seed}
		if err := m.testSample(ctx, &res, drawOrder(byPkg[pkg], seed)); err != nil {
			return nil, fmt.Errorf("%s: %w", pkg, err)
		}
		res.took = listing + time.Since(pkgStart)
		res.load = loadAverage()
		results = append(results, res)
	}
	return results, nil
}

// testSample tests the mutants of order, one at a time, until res.want of
// them compile, and records them in res.
func (m *measurer) testSample(ctx context.Context, res *sampleResult, order []mutant) error {
	timeout, err := m.testTimeout(ctx, res.name)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.log, "   %s: testing a sample of %d of its %d mutants, each within %s...\n",
		res.name, res.want, res.population, timeout.Round(time.Second))
	counted := 0
	for _, mu := range order {
		if counted == res.want {
			break
		}
		if err := m.rerun(ctx, &mu, timeout); err != nil {
			return err
		}
		if mu.Note != "" {
			continue // a type the driver cannot apply: not drawn
		}
		res.tested = append(res.tested, mu)
		if mu.counted() {
			counted++
		}
	}
	return nil
}
