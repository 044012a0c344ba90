package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/scanner"
	"go/token"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Mutant statuses, as gremlins writes them.
const (
	statusKilled     = "KILLED"
	statusLived      = "LIVED"
	statusTimedOut   = "TIMED OUT"
	statusNotCovered = "NOT COVERED"
	statusNotViable  = "NOT VIABLE"
	statusSkipped    = "SKIPPED"
)

// defaultMinTimeout is the least time a mutant's tests get in the second
// pass, so that a fast package on a loaded machine does not time out
// spuriously.
const defaultMinTimeout = 30 * time.Second

// mutant is one mutant of a package.
type mutant struct {
	File   string // slash-separated, relative to the module root
	Line   int
	Column int
	Type   string // gremlins' type, e.g. CONDITIONALS_NEGATION
	Status string
	Rerun  bool   // gremlins reported it not covered and the second pass tested it
	Note   string // why the second pass could not test it
}

func (m mutant) killed() bool { return m.Status == statusKilled || m.Status == statusTimedOut }

// counted reports whether m is a mutant at all: one that compiles, in the
// code gremlins was asked to mutate.
func (m mutant) counted() bool { return m.Status != statusNotViable && m.Status != statusSkipped }

// coveredByGremlins reports whether gremlins ran m's tests itself.
func (m mutant) coveredByGremlins() bool {
	return !m.Rerun && (m.killed() || m.Status == statusLived)
}

// pkgResult is the outcome for one Go package.
type pkgResult struct {
	name     string // the package's directory, relative to the module root
	mutants  []mutant
	gremlins time.Duration // gremlins' run over the directory it was part of
	rerun    time.Duration // the second pass over this package's mutants
	load     string        // the machine's load averages when it was done
}

// tally counts p's mutants.
func (p pkgResult) tally() (all, killed, covered, coveredKilled, notViable, rerun int) {
	for _, m := range p.mutants {
		if m.Status == statusNotViable {
			notViable++
		}
		if !m.counted() {
			continue
		}
		all++
		if m.killed() {
			killed++
		}
		if m.coveredByGremlins() {
			covered++
			if m.killed() {
				coveredKilled++
			}
		}
		if m.Rerun {
			rerun++
		}
	}
	return all, killed, covered, coveredKilled, notViable, rerun
}

// shareOfAll is the percentage of p's mutants killed; 100 for none.
func (p pkgResult) shareOfAll() float64 {
	all, killed, _, _, _, _ := p.tally()
	return percent(killed, all)
}

func percent(n, of int) float64 {
	if of == 0 {
		return 100
	}
	return 100 * float64(n) / float64(of)
}

// report is p's summary line and the mutants that were not killed.
func (p pkgResult) report() string {
	all, killed, covered, coveredKilled, notViable, rerun := p.tally()
	var b strings.Builder
	fmt.Fprintf(&b, "== %s: %d of %d mutants killed: %.1f %% of all, %.1f %% of the %d gremlins covered (%d killed)",
		p.name, killed, all, percent(killed, all), percent(coveredKilled, covered), covered, coveredKilled)
	fmt.Fprintf(&b, "; %d re-run, %d not viable; gremlins %s, re-run %s%s\n",
		rerun, notViable, p.gremlins.Round(time.Second), p.rerun.Round(time.Second), loadNote(p.load))
	for _, m := range p.mutants {
		if !m.counted() || m.killed() {
			continue
		}
		how := ""
		switch {
		case m.Note != "":
			how = " (not re-run: " + m.Note + ")"
		case m.Rerun:
			how = " (re-run)"
		}
		fmt.Fprintf(&b, "   %-11s %-21s %s:%d:%d%s\n", m.Status, m.Type, m.File, m.Line, m.Column, how)
	}
	return b.String()
}

// loadAverage returns the machine's 1, 5 and 15 minute load averages, or ""
// where /proc/loadavg cannot be read.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(data)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

// loadNote is load as the end of a report line.
func loadNote(load string) string {
	if load == "" {
		return ""
	}
	return "; load average " + load
}

// measurer runs the two passes.
type measurer struct {
	root        string // the module
	scratch     string // a copy of the module the second pass mutates
	work        string // gremlins' reports and logs
	gremlins    string
	coefficient int           // a mutant's tests time out after coefficient times the unmutated tests' time
	minTimeout  time.Duration // but never sooner than this
	log         io.Writer     // progress
}

// measure runs gremlins over dir (a package directory and those below it),
// tests the mutants it reports as not covered, and returns one result per Go
// package, sorted by name.
func (m *measurer) measure(ctx context.Context, dir string) ([]pkgResult, error) {
	start := time.Now()
	fmt.Fprintf(m.log, "== %s: gremlins...\n", dir)
	mutants, err := m.runGremlins(ctx, dir)
	if err != nil {
		return nil, err
	}
	gremlinsTime := time.Since(start)
	byPkg := map[string][]mutant{}
	for _, mu := range mutants {
		pkg := path.Dir(mu.File)
		byPkg[pkg] = append(byPkg[pkg], mu)
	}
	var results []pkgResult
	for _, pkg := range slices.Sorted(maps.Keys(byPkg)) {
		res := pkgResult{name: pkg, mutants: byPkg[pkg], gremlins: gremlinsTime}
		rerunStart := time.Now()
		if err := m.rerunNotCovered(ctx, pkg, res.mutants); err != nil {
			return nil, fmt.Errorf("%s: %w", pkg, err)
		}
		res.rerun = time.Since(rerunStart)
		res.load = loadAverage()
		slices.SortFunc(res.mutants, func(a, b mutant) int {
			return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column), cmp.Compare(a.Type, b.Type))
		})
		results = append(results, res)
	}
	return results, nil
}

// runGremlins runs gremlins over dir with one worker and reads its report;
// with extra "--dry-run" it only lists the mutants, as RUNNABLE or NOT
// COVERED.
func (m *measurer) runGremlins(ctx context.Context, dir string, extra ...string) ([]mutant, error) {
	name := strings.ReplaceAll(dir, "/", "_")
	if name == "." {
		name = "module"
	}
	base := filepath.Join(m.work, name)
	logFile, err := os.Create(base + ".log")
	if err != nil {
		return nil, err
	}
	defer func() { _ = logFile.Close() }()
	args := append([]string{"run", m.gremlins, "unleash", "--workers", "1",
		"--timeout-coefficient", strconv.Itoa(m.coefficient), "-o", base + ".json"}, extra...)
	cmd := exec.CommandContext(ctx, "go", append(args, "./"+dir)...)
	cmd.Dir = m.root
	cmd.Stdout, cmd.Stderr = logFile, logFile
	killGroup(cmd) // go run's child, gremlins, and its go test with it
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("gremlins: %w (its output: %s.log, kept with -keep)", err, base)
	}
	data, err := os.ReadFile(base + ".json")
	if err != nil {
		return nil, fmt.Errorf("gremlins' report: %w", err)
	}
	return parseReport(data, dir)
}

// parseReport reads gremlins' JSON report of a run over dir.
func parseReport(data []byte, dir string) ([]mutant, error) {
	var r struct {
		Files []struct {
			Name      string `json:"file_name"`
			Mutations []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
				Line   int    `json:"line"`
				Column int    `json:"column"`
			} `json:"mutations"`
		} `json:"files"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("gremlins' report: %w", err)
	}
	var out []mutant
	for _, f := range r.Files {
		for _, mu := range f.Mutations {
			out = append(out, mutant{File: path.Join(dir, filepath.ToSlash(f.Name)), Line: mu.Line, Column: mu.Column,
				Type: mu.Type, Status: mu.Status})
		}
	}
	return out, nil
}

// rerunNotCovered tests the mutants of pkg gremlins did not run, in place.
func (m *measurer) rerunNotCovered(ctx context.Context, pkg string, mutants []mutant) error {
	var todo []*mutant
	for i := range mutants {
		if mutants[i].Status == statusNotCovered {
			todo = append(todo, &mutants[i])
		}
	}
	if len(todo) == 0 {
		return nil
	}
	fmt.Fprintf(m.log, "   %s: testing the %d mutants gremlins reports as not covered...\n", pkg, len(todo))
	timeout, err := m.testTimeout(ctx, pkg)
	if err != nil {
		return err
	}
	for _, mu := range todo {
		if err := m.rerun(ctx, mu, timeout); err != nil {
			return err
		}
	}
	return nil
}

// testTimeout runs pkg's tests unmutated and returns how long a mutant's
// tests may take: coefficient times as long, and at least minTimeout.
func (m *measurer) testTimeout(ctx context.Context, pkg string) (time.Duration, error) {
	start := time.Now()
	if out, err := m.goTest(ctx, 0, pkg, "-failfast"); err != nil {
		return 0, fmt.Errorf("the unmutated tests fail: %w\n%s", err, out)
	}
	return max(time.Duration(m.coefficient)*time.Since(start), m.minTimeout), nil
}

// rerun applies mu in the scratch module, runs its package's tests and
// records the outcome; the file is restored afterwards.
func (m *measurer) rerun(ctx context.Context, mu *mutant, timeout time.Duration) error {
	file := filepath.Join(m.scratch, filepath.FromSlash(mu.File))
	orig, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	mutated, err := mutate(orig, mu.Line, mu.Column, mu.Type)
	if err != nil {
		mu.Note = err.Error()
		return nil
	}
	if err := os.WriteFile(file, mutated, 0o644); err != nil {
		return err
	}
	defer func() { _ = os.WriteFile(file, orig, 0o644) }()
	mu.Rerun = true
	pkg := path.Dir(mu.File)
	if _, err := m.goTest(ctx, 0, pkg, "-vet=off", "-run", "^$"); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mu.Status = statusNotViable
		return nil
	}
	_, err = m.goTest(ctx, timeout, pkg, "-failfast")
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		mu.Status = statusTimedOut
	case err != nil:
		mu.Status = statusKilled
	default:
		mu.Status = statusLived
	}
	return nil
}

// goTest runs `go test -count=1 args ./pkg` in the scratch module, within
// timeout when it is not 0, and returns its output. The tests' processes
// (redis-server included) are killed with it.
func (m *measurer) goTest(ctx context.Context, timeout time.Duration, pkg string, args ...string) ([]byte, error) {
	runCtx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		args = append(args, "-timeout", (timeout + 10*time.Second).String())
	}
	cmd := exec.CommandContext(runCtx, "go", append(append([]string{"test", "-count=1"}, args...), "./"+pkg)...)
	cmd.Dir = m.scratch
	killGroup(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil && runCtx.Err() != nil {
		return out, runCtx.Err()
	}
	return out, err
}

// killGroup makes cmd's context end cmd's whole process group, not only cmd:
// the programs go run and go test start, and the servers tests start.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
}

// swaps returns the token replacements of gremlins' mutant type typ, for
// the types gremlins enables by default; nil for another type.
func swaps(typ string) map[token.Token]token.Token {
	switch typ {
	case "ARITHMETIC_BASE":
		return map[token.Token]token.Token{token.ADD: token.SUB, token.SUB: token.ADD, token.MUL: token.QUO, token.QUO: token.MUL, token.REM: token.MUL}
	case "CONDITIONALS_BOUNDARY":
		return map[token.Token]token.Token{token.GTR: token.GEQ, token.GEQ: token.GTR, token.LSS: token.LEQ, token.LEQ: token.LSS}
	case "CONDITIONALS_NEGATION":
		return map[token.Token]token.Token{token.EQL: token.NEQ, token.NEQ: token.EQL, token.GTR: token.LEQ, token.LEQ: token.GTR, token.LSS: token.GEQ, token.GEQ: token.LSS}
	case "INCREMENT_DECREMENT":
		return map[token.Token]token.Token{token.INC: token.DEC, token.DEC: token.INC}
	case "INVERT_NEGATIVES":
		return map[token.Token]token.Token{token.SUB: token.ADD}
	}
	return nil
}

// mutate returns src with the operator at line:column (1-based, in bytes,
// as go/token counts) replaced the way gremlins' mutant type typ replaces it.
func mutate(src []byte, line, column int, typ string) ([]byte, error) {
	swap := swaps(typ)
	if swap == nil {
		return nil, fmt.Errorf("mutant type %s not supported", typ)
	}
	fset := token.NewFileSet()
	f := fset.AddFile("", fset.Base(), len(src))
	var s scanner.Scanner
	s.Init(f, src, nil, 0)
	for {
		pos, tok, _ := s.Scan()
		p := f.Position(pos)
		if tok != token.EOF && (p.Line < line || p.Line == line && p.Column < column) {
			continue
		}
		if tok == token.EOF || p.Line != line || p.Column != column {
			return nil, fmt.Errorf("no token at %d:%d", line, column)
		}
		to, ok := swap[tok]
		if !ok {
			return nil, fmt.Errorf("%s at %d:%d is no %s mutant", tok, line, column, typ)
		}
		off := f.Offset(pos)
		return slices.Concat(src[:off], []byte(to.String()), src[off+len(tok.String()):]), nil
	}
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := string(bytes.TrimSpace(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// copyModule copies the module at root to dst, without version control,
// build output and artifacts.
func copyModule(root, dst string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.Name() == ".git" && !d.IsDir(): // a worktree's pointer to its repository
			return nil
		case d.IsDir() && (d.Name() == ".git" || rel == "bin" || rel == "artifacts" || d.Name() == "node_modules"):
			return filepath.SkipDir
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case !d.Type().IsRegular():
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, info.Mode().Perm())
	})
}
