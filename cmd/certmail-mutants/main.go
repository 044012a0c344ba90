// Command certmail-mutants is the mutation testing driver behind
// `make mutants`. For each package directory named on the command line it
// runs gremlins over it (one worker: the tests of one mutant at a time), then
// tests itself the mutants gremlins reports as not covered, and prints, for
// each Go package, the share of its mutants the tests kill.
//
// Why a second pass: gremlins v0.6.0 decides from Go's coverage profile
// which mutants to run, and the profile has no block for the conditions of
// a switch's cases or for constant declarations, so gremlins reports them
// as not covered although the tests run them (go-gremlins/gremlins#298).
// The second pass applies each of them the way gremlins would (one operator
// token swapped) in a scratch copy of the module and runs the package's
// tests: a failure kills it, a build failure means it is no mutant.
//
// Counting: a mutant that does not compile is left out; one whose tests
// fail or run past their timeout is killed. "Of all" is killed over every
// other mutant, the gate; "of covered" is gremlins' own view, killed over
// the mutants gremlins found covered and ran. Every mutant that lives is
// listed, so that the README's list of equivalent mutants can be kept true.
// It exits 1 when a package's share of all mutants killed is under -min.
//
// With -sample N it tests, for each Go package, only N mutants that
// compile, drawn by -seed from the list a dry run of gremlins gives, each
// file's share of the sample as its share of the mutants; it tests them as
// the second pass does and prints the share killed with its 95 % (Wilson)
// interval, labelled as a sample. It then exits 1 only when the whole
// interval is under -min. The same code and seed draw the same sample.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	var o options
	flag.StringVar(&o.gremlins, "gremlins", "github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0", "the gremlins command, as `go run` takes it")
	flag.Float64Var(&o.min, "min", 85, "the least share of all mutants killed, in percent, for each package")
	flag.IntVar(&o.coefficient, "timeout-coefficient", 10, "a mutant's tests time out after this many times the unmutated tests' time")
	flag.IntVar(&o.sample, "sample", 0, "test only a sample of this many mutants of each package, drawn by -seed and spread over its files, and print the share killed with its 95 % interval (0: every mutant)")
	flag.Uint64Var(&o.seed, "seed", 1, "the seed that draws the -sample")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (gremlins' logs and reports, the scratch copy)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: certmail-mutants [flags] package-dir...  (e.g. tasks internal/digicert)")
		flag.PrintDefaults()
	}
	flag.Parse()
	o.dirs = flag.Args()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "certmail-mutants:", err)
		os.Exit(1)
	}
}

// options are the driver's flags and arguments.
type options struct {
	gremlins    string
	min         float64
	coefficient int
	sample      int
	seed        uint64
	keep        bool
	dirs        []string
}

// run measures each directory and fails when a package is under o.min.
func run(ctx context.Context, o options) error {
	if len(o.dirs) == 0 {
		return fmt.Errorf("no package directory given")
	}
	if o.coefficient < 1 {
		return fmt.Errorf("-timeout-coefficient %d: want 1 or more", o.coefficient)
	}
	if o.sample < 0 {
		return fmt.Errorf("-sample %d: want 0 (every mutant) or more", o.sample)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "certmail-mutants-")
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	if o.keep {
		fmt.Println("work directory:", work)
	} else {
		defer func() { _ = os.RemoveAll(work) }()
	}
	scratch := work + "/module"
	if err := copyModule(root, scratch); err != nil {
		return err
	}
	m := &measurer{root: root, scratch: scratch, work: work, gremlins: o.gremlins, coefficient: o.coefficient,
		minTimeout: defaultMinTimeout, log: os.Stdout}
	var under []string
	for _, dir := range o.dirs {
		dir = strings.Trim(strings.TrimPrefix(dir, "./"), "/")
		var u []string
		if o.sample > 0 {
			u, err = sampleDir(ctx, m, dir, o)
		} else {
			u, err = measureDir(ctx, m, dir, o.min)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		under = append(under, u...)
	}
	switch {
	case len(under) > 0 && o.sample > 0:
		return fmt.Errorf("under %.0f %% of all mutants killed, the whole 95 %% interval of the sample: %s", o.min, strings.Join(under, ", "))
	case len(under) > 0:
		return fmt.Errorf("under %.0f %% of all mutants killed: %s", o.min, strings.Join(under, ", "))
	}
	return nil
}

// measureDir tests every mutant of dir's packages, prints their reports and
// returns those under least percent killed.
func measureDir(ctx context.Context, m *measurer, dir string, least float64) ([]string, error) {
	pkgs, err := m.measure(ctx, dir)
	if err != nil {
		return nil, err
	}
	var under []string
	for _, p := range pkgs {
		fmt.Print(p.report())
		if p.shareOfAll() < least {
			under = append(under, fmt.Sprintf("%s (%.1f %%)", p.name, p.shareOfAll()))
		}
	}
	return under, nil
}

// sampleDir tests a sample of the mutants of each of dir's packages, prints
// their reports and returns those whose whole interval is under o.min.
func sampleDir(ctx context.Context, m *measurer, dir string, o options) ([]string, error) {
	samples, err := m.sample(ctx, dir, o.sample, o.seed)
	if err != nil {
		return nil, err
	}
	var under []string
	for _, s := range samples {
		fmt.Print(s.report())
		if s.underMin(o.min) {
			n, killed, _ := s.tally()
			lo, hi := interval(killed, n)
			under = append(under, fmt.Sprintf("%s (%.1f–%.1f %%)", s.name, lo, hi))
		}
	}
	return under, nil
}
