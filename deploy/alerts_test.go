package deploy

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// exporters says which process serves the metrics each package registers.
// A metric defined in a package missing here fails TestAlertsCoverAbsence,
// so that a new package's metrics are placed.
var exporters = map[string]string{
	"internal/worker":     "worker",
	"internal/queuestats": "worker",
	"internal/scheduler":  "scheduler",
	"internal/api":        "api",
}

// definedMetrics maps every metric the code registers to the directory of
// the package that registers it (relative to the repository).
func definedMetrics(t *testing.T) map[string]string {
	t.Helper()
	defined := map[string]string{}
	definition := regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(certmail_[a-z0-9_]+)"`)
	err := filepath.WalkDir(filepath.Join(repo, "internal"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		dir, _ := filepath.Rel(repo, filepath.Dir(p))
		for _, m := range definition.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = filepath.ToSlash(dir)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(defined) < 10 {
		t.Fatalf("%d metrics found in internal: the search is broken", len(defined))
	}
	return defined
}

// alertRule is one alerting rule of the PrometheusRule.
type alertRule struct{ name, expr string }

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var out []alertRule
	rules := docs(t, "monitoring/prometheusrule.yaml")[0]
	for _, g := range toAnySlice(get(rules, "spec", "groups")) {
		for _, r := range toAnySlice(get(g, "rules")) {
			name, _ := get(r, "alert").(string)
			expr, _ := get(r, "expr").(string)
			out = append(out, alertRule{name, expr})
		}
	}
	return out
}

var absentMetric = regexp.MustCompile(`absent\(\s*(certmail_[a-z0-9_]+)`)

// TestAlertsCoverAbsence: an alert on a metric only reads it while some
// process exports it. When every worker (or every scheduler) is gone, in
// CrashLoopBackOff on a bad setting, an expression such as
// `max(certmail_queue_latency_seconds) > 900` is empty and its alert stays
// silent. So for every process whose metrics an alert reads, another alert
// fires on absent() of one of that process's metrics.
func TestAlertsCoverAbsence(t *testing.T) {
	t.Parallel()
	defined := definedMetrics(t)
	alerts := alertRules(t)
	absentFor := map[string][]string{} // process → alerts firing when none of it is scraped
	for _, a := range alerts {
		for _, m := range absentMetric.FindAllStringSubmatch(a.expr, -1) {
			if p := exporters[defined[m[1]]]; p != "" {
				absentFor[p] = append(absentFor[p], a.name)
			}
		}
	}
	read := 0
	for _, a := range alerts {
		for _, m := range metricName.FindAllString(a.expr, -1) {
			dir, ok := defined[m]
			if !ok {
				continue // TestMetricsExist reports it
			}
			p, ok := exporters[dir]
			if !ok {
				t.Errorf("alert %s reads %s, registered in %s, which exporters does not place in a process", a.name, m, dir)
				continue
			}
			read++
			if len(absentFor[p]) == 0 {
				t.Errorf("alert %s reads %s, which only the %s exports: when every %s is gone it stays silent, and no alert fires on absent() of a %s metric",
					a.name, m, p, p, p)
			}
		}
	}
	if read == 0 {
		t.Fatal("no alert reads a certmail metric: the check would prove nothing")
	}
	for _, p := range []string{"worker", "scheduler"} {
		if len(absentFor[p]) == 0 {
			t.Errorf("no alert fires when every %s is gone", p)
		}
	}
}

// TestAlertRules runs promtool on the PrometheusRule's groups: `promtool
// check rules` on them as they are, and `promtool test rules` with
// testdata/alerts.promtool.yaml (its cases leave out the annotations, which
// are checked by `check rules`). It skips where promtool is not installed
// (`make test` installs it as root: .ci/test-deps).
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed: the rules' behaviour is not checked (TestAlertsCoverAbsence checks the expressions)")
	}
	spec, _ := get(docs(t, "monitoring/prometheusrule.yaml")[0], "spec").(map[string]any)
	if len(toAnySlice(spec["groups"])) == 0 {
		t.Fatal("the PrometheusRule has no groups")
	}
	dir := t.TempDir()
	writeBytes := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(name string, v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return writeBytes(name, b)
	}
	run := func(args ...string) {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("check", "rules", write("rules.yaml", spec))

	var bare []any // the groups without annotations
	for _, g := range toAnySlice(spec["groups"]) {
		var rules []any
		for _, r := range toAnySlice(get(g, "rules")) {
			r, _ := r.(map[string]any)
			r = maps.Clone(r)
			delete(r, "annotations")
			rules = append(rules, r)
		}
		g, _ := g.(map[string]any)
		g = maps.Clone(g)
		g["rules"] = rules
		bare = append(bare, g)
	}
	write("rules-bare.yaml", map[string]any{"groups": bare})

	b, err := os.ReadFile("testdata/alerts.promtool.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tests map[string]any
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(toStrings(tests["rule_files"]), []string{"rules-bare.yaml"}) {
		t.Fatalf("testdata/alerts.promtool.yaml: rule_files %v, want [rules-bare.yaml] (the file this test writes)", tests["rule_files"])
	}
	// Every alert has at least one case.
	tested := map[string]bool{}
	for _, tc := range toAnySlice(tests["tests"]) {
		for _, c := range toAnySlice(get(tc, "alert_rule_test")) {
			name, _ := get(c, "alertname").(string)
			tested[name] = true
		}
	}
	for _, a := range alertRules(t) {
		if !tested[a.name] {
			t.Errorf("testdata/alerts.promtool.yaml has no case for %s", a.name)
		}
	}
	// The file as it is: decoded and encoded again, "0x10" would become 16.
	run("test", "rules", writeBytes("alerts.promtool.yaml", b))
}

// TestDashboardShowsAFirstDeadLetter runs the Grafana dashboard's dead-letter
// expression through promtool. A worker creates a {type,error_code} series
// with the first dead letter of that kind, at 1, so increase() alone never
// counts it: a single unknown_account task would never show on the panel.
// The expression counts a series born within the hour by its value, one
// older by its increase. It skips where promtool is not installed.
func TestDashboardShowsAFirstDeadLetter(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed: the dashboard's expressions are not evaluated")
	}
	dash, err := os.ReadFile("grafana/certmail.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatal(err)
	}
	var expr string
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			if strings.Contains(tg.Expr, "certmail_dead_letters_total") {
				expr = tg.Expr
			}
		}
	}
	if expr == "" {
		t.Fatal("no dashboard panel reads certmail_dead_letters_total")
	}
	sample := func(kind string, v int) map[string]any {
		return map[string]any{"labels": `{type="` + kind + `",error_code="x"}`, "value": v}
	}
	at := func(minutes int, samples ...map[string]any) map[string]any {
		return map[string]any{"expr": expr, "eval_time": strconv.Itoa(minutes) + "m", "exp_samples": samples}
	}
	cases := map[string]any{
		"rule_files":          []string{},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval": "1m",
			"input_series": []any{
				// A series older than the hour, steady.
				map[string]any{"series": `certmail_dead_letters_total{instance="w0",type="old",error_code="x"}`, "values": "3x200"},
				// The first dead letter of its kind, at 80m.
				map[string]any{"series": `certmail_dead_letters_total{instance="w1",type="new",error_code="x"}`, "values": "_x80 1x120"},
			},
			// (Exact values only: increase() extrapolates a rise to the
			// window's edges.)
			"promql_expr_test": []any{
				at(100, sample("old", 0), sample("new", 1)),
				at(135, sample("old", 0), sample("new", 1)),
				at(150, sample("old", 0), sample("new", 0)), // out of the hour
			},
		}},
	}
	b, err := yaml.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "dashboard.promtool.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", p).CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
}

// alertRunbook is an entry of the README's Alerts list (Operations): a line
// "- `<alert>`: ...", where the entry starts.
var alertRunbook = regexp.MustCompile("(?m)^- `(Certmail[A-Za-z0-9]+)`: ")

// TestAlertRunbooks: every alert carries a summary and a description, and
// the README's Operations section has a runbook entry for it in its Alerts
// list (what it means, what to look at, what to do), and no entry for an
// alert that does not exist: an on-call paged at 3 a.m. finds the page.
func TestAlertRunbooks(t *testing.T) {
	t.Parallel()
	rules := docs(t, "monitoring/prometheusrule.yaml")[0]
	alerts := map[string]bool{}
	for _, g := range toAnySlice(get(rules, "spec", "groups")) {
		for _, r := range toAnySlice(get(g, "rules")) {
			name, _ := get(r, "alert").(string)
			alerts[name] = true
			for _, a := range []string{"summary", "description"} {
				if s, _ := get(r, "annotations", a).(string); strings.TrimSpace(s) == "" {
					t.Errorf("alert %s has no %s annotation", name, a)
				}
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alert found: the check would prove nothing")
	}
	ops := readmeSection(t, "Operations")
	_, list, ok := strings.Cut(ops, "\n**Alerts**")
	if !ok {
		t.Fatal("README Operations has no **Alerts** paragraph")
	}
	list, _, _ = strings.Cut(list, "\n\n**") // up to the next paragraph of the section
	entries := alertRunbook.FindAllStringSubmatchIndex(list, -1)
	found := map[string]bool{}
	for i, m := range entries {
		name := list[m[2]:m[3]]
		end := len(list)
		if i+1 < len(entries) {
			end = entries[i+1][0]
		}
		found[name] = true
		if !alerts[name] {
			t.Errorf("the README's Alerts list has an entry for %s, which is not an alert", name)
		}
		if words := len(strings.Fields(list[m[1]:end])); words < 40 {
			t.Errorf("the README's runbook for %s has %d words: say what it means, what to look at and what to do", name, words)
		}
	}
	for name := range alerts {
		if !found[name] {
			t.Errorf("alert %s has no runbook entry in the README's Alerts list (Operations)", name)
		}
	}
}
