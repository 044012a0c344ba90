// Package deploy holds certmail's deployment files (Kubernetes manifests,
// alert rules, the Grafana dashboard, compose secrets) and the tests that
// keep them, the repository's docker-compose.yml and its Dockerfile
// consistent with the code.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/queuestats"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/worker"
)

// repo is the repository root, seen from this package's directory.
const repo = ".."

// docs parses every YAML document of a file.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
}

// get walks a parsed YAML value along keys (string) and indexes (int).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	d := docs(t, filepath.Join(repo, "docker-compose.yml"))[0]
	services, _ := d["services"].(map[string]any)
	for name, svc := range services {
		if get(svc, "healthcheck") == nil {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	redisCmd := strings.Join(toStrings(get(services, "redis", "command")), " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec"} {
		if !strings.Contains(redisCmd, want) {
			t.Errorf("redis command %q lacks %q", redisCmd, want)
		}
	}
	if get(services, "redis", "volumes", 0) != "redis-data:/data" {
		t.Errorf("redis data is not on the named volume: %v", get(services, "redis", "volumes"))
	}
	for _, name := range []string{"worker", "worker-sandbox", "scheduler", "scheduler-sandbox"} {
		if r, _ := get(services, name, "deploy", "replicas").(int); r != 2 {
			t.Errorf("%s replicas = %v, want 2", name, get(services, name, "deploy", "replicas"))
		}
	}
	composeKeys(t, d)
	for name, s := range get(d, "secrets").(map[string]any) {
		if _, err := os.Stat(filepath.Join(repo, get(s, "file").(string))); err != nil {
			t.Errorf("secret %s: %v", name, err)
		}
	}
	composeGracePeriods(t, services)

	// `docker compose up` runs the workers that call DigiCert (the .env file
	// turns their profile on); `docker compose --profile sandbox up` runs the
	// fake and workers that call it instead, and nothing that calls DigiCert.
	defaults := composeDefaultProfiles(t)
	const fakeURL = "http://fake-digicert:8443/services/v2"
	runs := []struct {
		profiles []string
		want     []string
		baseURL  map[string]string // worker service: where it calls DigiCert
	}{
		{defaults, []string{"api", "redis", "scheduler", "worker"},
			map[string]string{"worker": "https://www.digicert.com/services/v2"}},
		{[]string{"sandbox"}, []string{"api", "fake-digicert", "redis", "scheduler-sandbox", "worker-sandbox"},
			map[string]string{"worker-sandbox": fakeURL}},
	}
	if !strings.Contains(strings.Join(toStrings(get(services, "fake-digicert", "command")), " "), "0.0.0.0:8443") {
		t.Errorf("fake-digicert does not listen where %s points: %v", fakeURL, get(services, "fake-digicert", "command"))
	}
	for _, r := range runs {
		if got := activeServices(services, r.profiles); !slices.Equal(got, r.want) {
			t.Errorf("profiles %v start %v, want %v", r.profiles, got, r.want)
		}
		schedulers := 0
		for _, name := range r.want {
			if cmd := toStrings(get(services, name, "command")); len(cmd) == 0 || cmd[0] != "scheduler" {
				continue
			}
			schedulers++
			n := len(composeSchedules(t, services, name))
			if sandbox := slices.Equal(r.profiles, []string{"sandbox"}); !sandbox && n != 0 {
				t.Errorf("%s, which runs with DigiCert, reads %d schedules: ship it none (schedules: []), the demo is the sandbox's", name, n)
			}
		}
		if schedulers != 1 {
			t.Errorf("profiles %v run %d scheduler services, want 1", r.profiles, schedulers)
		}
		for name, want := range r.baseURL {
			if got, _ := get(services, name, "environment", "DIGICERT_BASE_URL").(string); !strings.Contains(got, want) {
				t.Errorf("%s calls DigiCert at %q, want %q", name, got, want)
			}
		}
	}

	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err != nil {
		t.Logf("docker compose config not run: the compose plugin is not installed here (%s)", strings.TrimSpace(string(out)))
		return
	}
	for _, r := range runs {
		args := []string{"compose"}
		if !slices.Equal(r.profiles, defaults) {
			for _, p := range r.profiles {
				args = append(args, "--profile", p)
			}
		}
		cmd := exec.Command("docker", append(args, "config", "--format", "json")...)
		cmd.Dir = repo
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "COMPOSE_PROFILES=") })
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("docker %s: %v", strings.Join(cmd.Args[1:], " "), err)
			continue
		}
		var cfg struct {
			Services map[string]struct {
				Environment map[string]string `json:"environment"`
			} `json:"services"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatalf("docker compose config: %v", err)
		}
		var got []string
		for name := range cfg.Services {
			got = append(got, name)
		}
		slices.Sort(got)
		if !slices.Equal(got, r.want) {
			t.Errorf("docker %s: services %v, want %v", strings.Join(cmd.Args[1:], " "), got, r.want)
		}
		for name, want := range r.baseURL {
			if got := cfg.Services[name].Environment["DIGICERT_BASE_URL"]; got != want {
				t.Errorf("docker %s: %s calls DigiCert at %q, want %q", strings.Join(cmd.Args[1:], " "), name, got, want)
			}
		}
	}
}

// composeKeys: the workers that call DigiCert read the key file
// deploy/compose/secrets/digicert-api-key, whose placeholder they refuse;
// the sandbox's workers read a key of their own, which the fake accepts and
// the workers do too, and which no worker that calls DigiCert is given.
func composeKeys(t *testing.T, d map[string]any) {
	t.Helper()
	services, _ := d["services"].(map[string]any)
	keyFile := func(service string) (secret, file string) {
		p, _ := get(services, service, "environment", "DIGICERT_API_KEY_FILE").(string)
		secret, ok := strings.CutPrefix(p, "/run/secrets/")
		if !ok || !slices.Contains(toStrings(get(services, service, "secrets")), secret) {
			t.Errorf("%s reads its key from %q, not from one of its secrets %v", service, p, get(services, service, "secrets"))
		}
		file, _ = get(d, "secrets", secret, "file").(string)
		return secret, filepath.Join(repo, file)
	}
	prod, prodFile := keyFile("worker")
	if prod != "digicert-api-key" {
		t.Errorf("worker reads the secret %s, want digicert-api-key (the README's)", prod)
	}
	if _, err := account.ReadKeyFile(prodFile); err == nil || !strings.Contains(err.Error(), "placeholder shipped in deploy/") {
		t.Errorf("%s: the worker that calls DigiCert starts on the shipped key (%v); add it to the placeholders of internal/account", prodFile, err)
	}
	sandbox, sandboxFile := keyFile("worker-sandbox")
	if sandbox == prod {
		t.Errorf("worker-sandbox reads the secret %s of the workers that call DigiCert: it would start on the placeholder", sandbox)
	}
	if _, err := account.ReadKeyFile(sandboxFile); err != nil {
		t.Errorf("%s: the sandbox's worker refuses its key: %v", sandboxFile, err)
	}
	fake := strings.Join(toStrings(get(services, "fake-digicert", "command")), " ")
	if !strings.Contains(fake, "--api-key-file /run/secrets/"+sandbox) || !slices.Contains(toStrings(get(services, "fake-digicert", "secrets")), sandbox) {
		t.Errorf("fake-digicert does not accept the sandbox workers' key %s: %s", sandbox, fake)
	}
	for name := range services {
		ps := toStrings(get(services, name, "profiles"))
		if !slices.Contains(ps, "sandbox") && slices.Contains(toStrings(get(services, name, "secrets")), sandbox) {
			t.Errorf("service %s, outside the sandbox, is given the sandbox's key", name)
		}
	}
}

// TestKeyPlaceholdersRefused reads every DigiCert key file shipped under a
// secrets/ directory of deploy/ (the compose sandbox's aside, which only
// its fake CertCentral accepts): each is a placeholder that the worker
// refuses to start with, so that a deployment fails at once rather than
// pause its account on DigiCert's 401 minutes later.
func TestKeyPlaceholdersRefused(t *testing.T) {
	t.Parallel()
	var shipped []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(path)) == "secrets" &&
			strings.Contains(d.Name(), "key") && path != filepath.Join("compose", "secrets", "sandbox-api-key") {
			shipped = append(shipped, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(shipped) < 2 {
		t.Fatalf("found %d shipped key files (%v), want the compose and the example overlay's: the search is broken", len(shipped), shipped)
	}
	for _, p := range shipped {
		if _, err := account.ReadKeyFile(p); err == nil || !strings.Contains(err.Error(), "placeholder shipped in deploy/") {
			t.Errorf("%s: the shipped key is accepted (%v); add it to the placeholders of internal/account", p, err)
		}
	}
}

// composeSchedules returns the schedules a compose scheduler service reads:
// CERTMAIL_SCHEDULES_FILE, in a directory the service mounts from the
// repository. A directory, not the file: a bind mount of a file keeps the
// file it was made on, so a save that writes a new file and renames it (sed
// -i, git checkout, most editors) would never reach the scheduler.
func composeSchedules(t *testing.T, services map[string]any, name string) []*schedule.Compiled {
	t.Helper()
	file, _ := get(services, name, "environment", "CERTMAIL_SCHEDULES_FILE").(string)
	for _, v := range toStrings(get(services, name, "volumes")) {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		rel, err := filepath.Rel(parts[1], file)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		host := filepath.Join(repo, parts[0])
		if fi, err := os.Stat(host); err != nil || !fi.IsDir() || rel == "." {
			t.Errorf("%s mounts %s: want the directory that holds its schedules file (%v)", name, v, err)
			return nil
		}
		b, err := os.ReadFile(filepath.Join(host, rel))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return nil
		}
		good, bad, err := schedule.ParseFile(b, schedule.Rules{})
		if err != nil || len(bad) > 0 {
			t.Errorf("%s: %s: %v %v", name, v, err, bad)
		}
		return good
	}
	t.Errorf("%s: CERTMAIL_SCHEDULES_FILE %q is in none of its volumes %v", name, file, get(services, name, "volumes"))
	return nil
}

// composeDefaultProfiles reads COMPOSE_PROFILES from the .env file docker
// compose loads from the repository.
func composeDefaultProfiles(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "COMPOSE_PROFILES="); ok {
			return strings.Split(v, ",")
		}
	}
	t.Fatal(".env sets no COMPOSE_PROFILES")
	return nil
}

// activeServices lists, sorted, the services compose starts with profiles
// on: those without profiles and those with one of them.
func activeServices(services map[string]any, profiles []string) []string {
	var out []string
	for name := range services {
		ps := toStrings(get(services, name, "profiles"))
		if len(ps) == 0 || slices.ContainsFunc(ps, func(p string) bool { return slices.Contains(profiles, p) }) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestKustomize checks that every resource a kustomization names exists,
// that no ConfigMap generator sets REDIS_URL (it may carry the Redis
// password) and that every Deployment is production-ready.
func TestKustomize(t *testing.T) {
	t.Parallel()
	var kustomizations []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			kustomizations = append(kustomizations, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(kustomizations) < 3 {
		t.Fatalf("kustomizations %v: want base, monitoring and an overlay", kustomizations)
	}
	deployments := map[string]map[string]any{}
	pdbs := map[string]bool{}
	for _, k := range kustomizations {
		dir := filepath.Dir(k)
		kd := docs(t, k)[0]
		var refs []string
		refs = append(refs, toStrings(kd["resources"])...)
		for _, gen := range append(toAnySlice(kd["configMapGenerator"]), toAnySlice(kd["secretGenerator"])...) {
			for _, f := range toStrings(get(gen, "files")) {
				_, file, found := strings.Cut(f, "=")
				if !found {
					file = f
				}
				refs = append(refs, file)
			}
			refs = append(refs, toStrings(get(gen, "envs"))...)
		}
		for _, gen := range toAnySlice(kd["configMapGenerator"]) {
			if redisURLIn(t, dir, gen) {
				t.Errorf("%s: the ConfigMap %s holds REDIS_URL, which may carry the Redis password: put it in the Secret certmail-redis", k, get(gen, "name"))
			}
		}
		for _, r := range refs {
			p := filepath.Join(dir, r)
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s: %s: %v", k, r, err)
				continue
			}
			if strings.HasSuffix(p, ".yaml") && filepath.Base(filepath.Dir(p)) != "secrets" {
				for _, d := range docs(t, p) {
					name, _ := get(d, "metadata", "name").(string)
					switch d["kind"] {
					case "Deployment":
						deployments[name] = d
					case "PodDisruptionBudget":
						pdbs[name] = true
					}
				}
			}
		}
	}
	for _, name := range []string{"certmail-worker", "certmail-scheduler", "certmail-api"} {
		d, ok := deployments[name]
		if !ok {
			t.Errorf("Deployment %s missing", name)
			continue
		}
		if !pdbs[name] {
			t.Errorf("no PodDisruptionBudget for %s", name)
		}
		spec := get(d, "spec", "template", "spec")
		c := get(spec, "containers", 0)
		if get(c, "livenessProbe", "httpGet", "path") != "/healthz" || get(c, "readinessProbe", "httpGet", "path") != "/readyz" {
			t.Errorf("%s probes: %v %v", name, get(c, "livenessProbe"), get(c, "readinessProbe"))
		}
		// The kubelet's default 1 s would give up before /readyz answers
		// 503 on a Redis that never answers (admin.ReadyTimeout).
		if secs, _ := get(c, "readinessProbe", "timeoutSeconds").(int); time.Duration(secs)*time.Second <= admin.ReadyTimeout {
			t.Errorf("%s readinessProbe timeoutSeconds %d, want over /readyz's %v", name, secs, admin.ReadyTimeout)
		}
		if get(c, "resources", "requests") == nil || get(c, "resources", "limits", "memory") == nil {
			t.Errorf("%s has no resource requests or memory limit", name)
		}
		if !memLimitFromContainer(c) {
			t.Errorf("%s: no GOMEMLIMIT taken from its container's limits.memory: the Go heap may grow into an OOM kill", name)
		}
		if get(spec, "securityContext", "runAsNonRoot") != true || get(c, "securityContext", "readOnlyRootFilesystem") != true {
			t.Errorf("%s is not non-root with a read-only root filesystem", name)
		}
	}
	if r := get(deployments["certmail-scheduler"], "spec", "replicas"); r != 2 {
		t.Errorf("scheduler replicas %v, want 2", r)
	}
	deploymentGracePeriods(t, deployments)
}

// memLimitFromContainer reports whether container c sets GOMEMLIMIT from its
// own memory limit, in bytes (the downward API's default divisor: Go reads
// a bare number as bytes, so a divisor such as 1Mi would make it 256 bytes).
func memLimitFromContainer(c any) bool {
	for _, e := range toAnySlice(get(c, "env")) {
		if get(e, "name") != "GOMEMLIMIT" {
			continue
		}
		ref := get(e, "valueFrom", "resourceFieldRef")
		other, _ := get(ref, "containerName").(string)
		divisor := get(ref, "divisor")
		return get(ref, "resource") == "limits.memory" && (other == "" || other == get(c, "name")) &&
			(divisor == nil || divisor == "1" || divisor == 1)
	}
	return false
}

// lameDuck is the least time the API's preStop hook must keep it serving
// after Kubernetes takes it out of the Service's endpoints, for kube-proxy
// and ingress controllers to stop sending it new connections.
const lameDuck = 5 * time.Second

// deploymentGracePeriods: the API's pods have a preStop sleep of at least
// lameDuck (it closes its listener at SIGTERM, which the kubelet sends only
// once the hook has run), run by a command the image has; and every
// Deployment whose command finishes in-flight work on SIGTERM has a grace
// period longer than its preStop plus its CERTMAIL_SHUTDOWN_TIMEOUT (its
// own or the command's default), both of which the kubelet counts in it.
func deploymentGracePeriods(t *testing.T, deployments map[string]map[string]any) {
	t.Helper()
	defaults := map[string]time.Duration{"worker": worker.DefaultShutdownTimeout, "api": api.DefaultShutdownTimeout}
	checked := 0
	for name, d := range deployments {
		spec := get(d, "spec", "template", "spec")
		c := get(spec, "containers", 0)
		preStop := preStopSleep(t, name, c)
		if name == "certmail-api" && preStop < lameDuck {
			t.Errorf("%s: preStop sleeps %v, want at least %v: new connections routed to a stopping pod are refused", name, preStop, lameDuck)
		}
		shutdown, ok := defaults[toStrings(get(c, "args"))[0]]
		if !ok {
			continue
		}
		checked++
		for _, e := range toAnySlice(get(c, "env")) {
			if get(e, "name") == "CERTMAIL_SHUTDOWN_TIMEOUT" {
				var err error
				if shutdown, err = time.ParseDuration(get(e, "value").(string)); err != nil {
					t.Errorf("%s: CERTMAIL_SHUTDOWN_TIMEOUT: %v", name, err)
				}
			}
		}
		grace, _ := get(spec, "terminationGracePeriodSeconds").(int)
		if time.Duration(grace)*time.Second <= preStop+shutdown {
			t.Errorf("%s: terminationGracePeriodSeconds %d is not longer than its preStop %v and its shutdown timeout %v", name, grace, preStop, shutdown)
		}
	}
	if checked < 2 {
		t.Errorf("%d Deployments run a worker or the API: the search is broken", checked)
	}
}

// preStopSleep returns how long a container's preStop hook waits: the
// seconds of a sleep action, or of an exec of sleep, which the image's
// alpine base has (busybox); 0 without a hook.
func preStopSleep(t *testing.T, name string, c any) time.Duration {
	t.Helper()
	hook := get(c, "lifecycle", "preStop")
	if hook == nil {
		return 0
	}
	if secs, ok := get(hook, "sleep", "seconds").(int); ok {
		return time.Duration(secs) * time.Second
	}
	cmd := toStrings(get(hook, "exec", "command"))
	if len(cmd) != 2 || (cmd[0] != "sleep" && cmd[0] != "/bin/sleep") {
		t.Errorf("%s: preStop %v: want a sleep action or an exec of sleep N", name, hook)
		return 0
	}
	secs, err := strconv.Atoi(cmd[1])
	if err != nil {
		t.Errorf("%s: preStop %v: %v", name, cmd, err)
	}
	df, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(string(df), -1)
	if len(froms) == 0 || !strings.HasPrefix(froms[len(froms)-1][1], "alpine:") {
		t.Errorf("%s: preStop runs %s, which the image's base %v may not have (alpine's busybox does)", name, cmd[0], froms)
	}
	return time.Duration(secs) * time.Second
}

// redisURLIn reports whether a generator of the kustomization in dir sets
// REDIS_URL, in a literal or in one of its env files.
func redisURLIn(t *testing.T, dir string, gen any) bool {
	t.Helper()
	lines := toStrings(get(gen, "literals"))
	for _, f := range toStrings(get(gen, "envs")) {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue // reported as a missing file
		}
		lines = append(lines, strings.Split(string(b), "\n")...)
	}
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "REDIS_URL=") })
}

// composeGracePeriods: each service whose command finishes in-flight work
// on SIGTERM, within CERTMAIL_SHUTDOWN_TIMEOUT (its own or the command's
// default), has a stop_grace_period longer than that: compose's default of
// 10 s would kill it midway.
func composeGracePeriods(t *testing.T, services map[string]any) {
	t.Helper()
	defaults := map[string]time.Duration{"worker": worker.DefaultShutdownTimeout, "api": api.DefaultShutdownTimeout}
	checked := 0
	for name, svc := range services {
		command := toStrings(get(svc, "command"))
		if len(command) == 0 {
			continue
		}
		shutdown, ok := defaults[command[0]]
		if !ok {
			continue
		}
		checked++
		if v, set := get(svc, "environment", "CERTMAIL_SHUTDOWN_TIMEOUT").(string); set {
			var err error
			if shutdown, err = time.ParseDuration(v); err != nil {
				t.Errorf("service %s: CERTMAIL_SHUTDOWN_TIMEOUT: %v", name, err)
				continue
			}
		}
		period, _ := get(svc, "stop_grace_period").(string)
		if grace, err := time.ParseDuration(period); err != nil || grace <= shutdown {
			t.Errorf("service %s: stop_grace_period %q is not longer than its shutdown timeout %v", name, period, shutdown)
		}
	}
	if checked < 3 {
		t.Errorf("%d services run a worker or the API: the search is broken", checked)
	}
}

// TestKustomizeBuild renders the kustomizations with kustomize (or kubectl
// kustomize) where one is installed, and checks that every Secret and
// ConfigMap a Deployment names exists in the output under its final, hashed
// name (in the base, Secrets excepted: an overlay or the cluster provides
// them), and that REDIS_URL, which may carry the Redis password, comes from
// a Secret and is in no ConfigMap.
func TestKustomizeBuild(t *testing.T) {
	t.Parallel()
	build := kustomizeCommand(t)
	for _, dir := range []string{"base", "monitoring", "overlays/example"} {
		objs, err := render(build, dir)
		if err != nil {
			t.Error(err)
			continue
		}
		have := map[string]bool{}
		for _, o := range objs {
			have[o["kind"].(string)+"/"+get(o, "metadata", "name").(string)] = true
			if o["kind"] == "ConfigMap" && get(o, "data", "REDIS_URL") != nil {
				t.Errorf("%s: the ConfigMap %s holds REDIS_URL, which may carry the Redis password: anyone who may read ConfigMaps reads it", dir, get(o, "metadata", "name"))
			}
		}
		deployments := 0
		for _, o := range objs {
			if o["kind"] != "Deployment" {
				continue
			}
			deployments++
			if get(o, "spec", "template", "spec", "automountServiceAccountToken") != false {
				t.Errorf("%s: Deployment %s mounts a service account token, which certmail never uses", dir, get(o, "metadata", "name"))
			}
			for _, c := range toAnySlice(get(o, "spec", "template", "spec", "containers")) {
				if !redisURLFromSecret(c) {
					t.Errorf("%s: Deployment %s, container %s: REDIS_URL does not come from a Secret", dir, get(o, "metadata", "name"), get(c, "name"))
				}
			}
			for _, ref := range objectRefs(get(o, "spec", "template", "spec")) {
				// The base names Secrets the cluster or an overlay provides; the overlay must provide them.
				if !have[ref] && (dir != "base" || !strings.HasPrefix(ref, "Secret/")) {
					t.Errorf("%s: Deployment %s refers to %s, which the build does not contain", dir, get(o, "metadata", "name"), ref)
				}
			}
		}
		if dir != "monitoring" && deployments != 3 {
			t.Errorf("%s renders %d Deployments, want 3", dir, deployments)
		}
		unblockedPorts(t, dir, objs)
	}
}

// TestOverlayAPIHosts: the example overlay's API sets CERTMAIL_API_HOSTS
// to a list certmail accepts, which answers the names of the API's Service
// in the overlay's namespace: producers in other namespaces reach it by
// them, and a namespace changed without the list would refuse them.
func TestOverlayAPIHosts(t *testing.T) {
	t.Parallel()
	objs, err := render(kustomizeCommand(t), "overlays/example")
	if err != nil {
		t.Fatal(err)
	}
	var list string
	var names []string
	for _, o := range objs {
		name, _ := get(o, "metadata", "name").(string)
		switch {
		case o["kind"] == "Deployment" && name == "certmail-api":
			for _, e := range toAnySlice(get(o, "spec", "template", "spec", "containers", 0, "env")) {
				if get(e, "name") == "CERTMAIL_API_HOSTS" {
					list, _ = get(e, "value").(string)
				}
			}
		case o["kind"] == "Service" && get(o, "metadata", "labels", "app.kubernetes.io/component") == "api":
			ns, _ := get(o, "metadata", "namespace").(string)
			names = append(names, name+"."+ns, name+"."+ns+".svc", name+"."+ns+".svc.cluster.local")
		}
	}
	hosts, err := api.ParseHosts(list)
	if err != nil {
		t.Fatalf("certmail-api's CERTMAIL_API_HOSTS %q: %v", list, err)
	}
	if len(names) == 0 {
		t.Fatal("no Service of the API rendered: the search is broken")
	}
	for _, n := range names {
		if !slices.ContainsFunc(hosts, func(h string) bool {
			base, wild := strings.CutPrefix(h, "*.")
			return h == n || wild && strings.HasSuffix(n, "."+base)
		}) {
			t.Errorf("CERTMAIL_API_HOSTS %q does not answer the Service's name %s", list, n)
		}
	}
}

// unblockedPorts: every port a Deployment's container declares is opened
// by some ingress rule of each NetworkPolicy that selects its pods, so that
// a policy does not cut off its probes, its scrapes or its API. An overlay
// with a policy must select every Deployment's pods with one.
func unblockedPorts(t *testing.T, dir string, objs []map[string]any) {
	t.Helper()
	var policies []map[string]any
	for _, o := range objs {
		if o["kind"] == "NetworkPolicy" {
			policies = append(policies, o)
		}
	}
	if len(policies) == 0 {
		return
	}
	for _, o := range objs {
		if o["kind"] != "Deployment" {
			continue
		}
		labels, _ := get(o, "spec", "template", "metadata", "labels").(map[string]any)
		selected := false
		for _, p := range policies {
			if !selects(get(p, "spec", "podSelector", "matchLabels"), labels) {
				continue
			}
			selected = true
			for _, c := range toAnySlice(get(o, "spec", "template", "spec", "containers")) {
				for _, port := range toAnySlice(get(c, "ports")) {
					if !opens(p, port) {
						t.Errorf("%s: NetworkPolicy %s closes port %v of Deployment %s", dir, get(p, "metadata", "name"), get(port, "name"), get(o, "metadata", "name"))
					}
				}
			}
		}
		if !selected {
			t.Errorf("%s: no NetworkPolicy selects the pods of Deployment %s", dir, get(o, "metadata", "name"))
		}
	}
}

// selects reports whether matchLabels match labels (every pair present).
func selects(matchLabels any, labels map[string]any) bool {
	m, _ := matchLabels.(map[string]any)
	for k, v := range m {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// opens reports whether an ingress rule of policy p opens a container port
// (by its name or its number).
func opens(p map[string]any, port any) bool {
	for _, rule := range toAnySlice(get(p, "spec", "ingress")) {
		for _, rp := range toAnySlice(get(rule, "ports")) {
			if v := get(rp, "port"); v == get(port, "name") || v == get(port, "containerPort") {
				return true
			}
		}
	}
	return false
}

// redisURLFromSecret reports whether a container's REDIS_URL comes from a
// Secret's key (env wins over envFrom, so a ConfigMap's cannot override it).
func redisURLFromSecret(c any) bool {
	for _, e := range toAnySlice(get(c, "env")) {
		if get(e, "name") == "REDIS_URL" {
			return get(e, "valueFrom", "secretKeyRef", "key") != nil
		}
	}
	return false
}

// kustomizeCommand returns the command line that renders a kustomization
// (kustomize build, or kubectl kustomize), or skips the test when neither
// is installed.
func kustomizeCommand(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("kustomize"); err == nil {
		return []string{p, "build"}
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return []string{p, "kustomize"}
	}
	t.Skip("neither kustomize nor kubectl is installed: rendering not checked (TestKustomize checks the files)")
	return nil
}

// render renders the kustomization in dir with build and returns its objects.
func render(build []string, dir string) ([]map[string]any, error) {
	out, err := exec.Command(build[0], append(build[1:], dir)...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", strings.Join(build, " "), dir, err)
	}
	var objs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		objs = append(objs, o)
	}
}

// objectRefs lists the Secrets and ConfigMaps a pod spec refers to, as
// "Kind/name".
func objectRefs(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			switch k {
			case "secretKeyRef", "secretRef":
				out = append(out, "Secret/"+get(x, "name").(string))
			case "configMapKeyRef", "configMapRef":
				out = append(out, "ConfigMap/"+get(x, "name").(string))
			case "secret":
				out = append(out, "Secret/"+get(x, "secretName").(string))
			case "configMap":
				out = append(out, "ConfigMap/"+get(x, "name").(string))
			}
			out = append(out, objectRefs(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, objectRefs(x)...)
		}
	}
	return out
}

func toAnySlice(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestRunbooksForGeneratedNames: the example overlay generates the DigiCert
// key's Secret and the schedules' ConfigMap with a hash of their content in
// their names, so they cannot be edited in place under the names the base
// gives them. The runbooks that say how to change them (the README's
// paused-account paragraph, the CertmailAccountPaused alert, the base's
// schedules file) must say to apply the overlay again, and how an object
// updated in place under a fixed name is picked up.
func TestRunbooksForGeneratedNames(t *testing.T) {
	t.Parallel()
	k := docs(t, "overlays/example/kustomization.yaml")[0]
	if get(k, "generatorOptions", "disableNameSuffixHash") == true {
		t.Skip("the example overlay generates fixed names: the runbooks' apply -k case does not apply")
	}
	generated := map[string]bool{}
	for _, g := range append(toAnySlice(k["secretGenerator"]), toAnySlice(k["configMapGenerator"])...) {
		generated[get(g, "name").(string)] = true
	}
	for _, name := range []string{"certmail-digicert", "certmail-schedules"} {
		if !generated[name] {
			t.Errorf("the example overlay no longer generates %s: the runbooks naming it are to be checked", name)
		}
	}

	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var paused string
	for _, p := range strings.Split(string(readme), "\n\n") {
		if strings.Contains(p, "(`CertmailAccountPaused`) dead-letters nothing") {
			paused = p
		}
	}
	var alert string
	for _, g := range toAnySlice(get(docs(t, "monitoring/prometheusrule.yaml")[0], "spec", "groups")) {
		for _, r := range toAnySlice(get(g, "rules")) {
			if get(r, "alert") == "CertmailAccountPaused" {
				alert, _ = get(r, "annotations", "description").(string)
			}
		}
	}
	schedules, err := os.ReadFile("base/schedules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, rb := range []struct{ where, text string }{
		{"the README's paused-account paragraph", paused},
		{"the CertmailAccountPaused alert's description", alert},
		{"base/schedules.yaml", string(schedules)},
	} {
		if rb.text == "" {
			t.Errorf("%s: not found", rb.where)
			continue
		}
		for _, want := range []string{"apply -k", "in place under a fixed name"} {
			if !strings.Contains(strings.Join(strings.Fields(rb.text), " "), want) {
				t.Errorf("%s does not say %q", rb.where, want)
			}
		}
	}
}

// workersFirst is the label selector of the upgrade procedure (the README's
// Upgrading paragraph, the example overlay): applied with it, the overlay
// changes the workers and creates the ConfigMaps and Secrets they use, and
// leaves the scheduler's and the API's objects as they are, so that no
// earlier worker is left when a new scheduler or API enqueues what only new
// workers read.
const workersFirst = "app.kubernetes.io/component notin (scheduler,api)"

// componentLabel is the label the manifests give each object of one process.
const componentLabel = "app.kubernetes.io/component"

// TestWorkersRollFirst: the README and the example overlay tell operators
// to apply workersFirst before the rest, and on the rendered overlay that
// selector picks the worker's Deployment with every ConfigMap and Secret it
// refers to, and none of the objects of the scheduler or the API (those
// labelled so, or selecting their pods).
func TestWorkersRollFirst(t *testing.T) {
	t.Parallel()
	sel := regexp.MustCompile(`^(\S+) notin \(([a-z,-]+)\)$`).FindStringSubmatch(workersFirst)
	if sel == nil || sel[1] != componentLabel {
		t.Fatalf("workersFirst %q: want %s notin (...)", workersFirst, componentLabel)
	}
	later := strings.Split(sel[2], ",")
	command := "kubectl apply -k deploy/overlays/example -l '" + workersFirst + "'"
	overlay, err := os.ReadFile("overlays/example/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for where, text := range map[string]string{
		"the README's Running in production":  readmeSection(t, "Running in production"),
		"overlays/example/kustomization.yaml": string(overlay),
	} {
		if !strings.Contains(text, command) {
			t.Errorf("%s does not say %q", where, command)
		}
	}

	objs, err := render(kustomizeCommand(t), "overlays/example")
	if err != nil {
		t.Fatal(err)
	}
	selected := map[string]bool{}
	var worker map[string]any
	for _, o := range objs {
		kind, name := o["kind"].(string), get(o, "metadata", "name").(string)
		own, _ := get(o, "metadata", "labels", componentLabel).(string)
		selected[kind+"/"+name] = !slices.Contains(later, own)
		for _, m := range podSelectors(o) {
			if slices.Contains(later, own) {
				continue
			}
			switch c, _ := m[componentLabel].(string); {
			case slices.Contains(later, c):
				t.Errorf("%s %s selects the %s's pods without the label %s=%s: the workers' step would apply it", kind, name, c, componentLabel, c)
			case c == "" && kind != "Deployment":
				t.Errorf("%s %s selects every component's pods (%v) and is applied with the workers: the scheduler's and the API's pods would change before their step", kind, name, m)
			}
		}
		if kind == "Deployment" && name == "certmail-worker" {
			worker = o
		}
		if kind == "Deployment" && name != "certmail-worker" && selected[kind+"/"+name] {
			t.Errorf("Deployment %s is applied with the workers", name)
		}
	}
	if worker == nil || !selected["Deployment/certmail-worker"] {
		t.Fatal("the selector leaves out the worker's Deployment")
	}
	for _, ref := range objectRefs(get(worker, "spec", "template", "spec")) {
		if !selected[ref] {
			t.Errorf("the worker refers to %s, which the selector leaves out: its new pods could not start", ref)
		}
	}
}

// podSelectors returns the label selectors by which object o picks pods:
// a Deployment's or a PodDisruptionBudget's spec.selector.matchLabels, a
// Service's spec.selector, a NetworkPolicy's spec.podSelector.matchLabels.
// Other kinds select no pods (a ServiceMonitor selects Services).
func podSelectors(o map[string]any) []map[string]any {
	var sel any
	switch o["kind"] {
	case "Deployment", "PodDisruptionBudget":
		sel = get(o, "spec", "selector", "matchLabels")
	case "Service":
		sel = get(o, "spec", "selector")
	case "NetworkPolicy":
		sel = get(o, "spec", "podSelector", "matchLabels")
	}
	if m, ok := sel.(map[string]any); ok {
		return []map[string]any{m}
	}
	return nil
}

// TestSchedulesFilesValid parses the example schedules with the scheduler's
// own validation.
func TestSchedulesFilesValid(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"compose/schedules/schedules.yaml", "compose/schedules-sandbox/schedules.yaml", "base/schedules.yaml", "overlays/example/schedules.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, bad, err := schedule.ParseFile(b, schedule.Rules{}); err != nil || len(bad) > 0 {
			t.Errorf("%s: %v %v", p, err, bad)
		}
	}
}

var metricName = regexp.MustCompile(`certmail_[a-z0-9_]+`)

// TestMetricsTable: the README's Metrics table names every metric the code
// registers, and none that it does not.
func TestMetricsTable(t *testing.T) {
	t.Parallel()
	_, table, ok := strings.Cut(readmeSection(t, "Operations"), "**Metrics**")
	if !ok {
		t.Fatal("README Operations has no **Metrics** paragraph")
	}
	_, table, _ = strings.Cut(table, "\n|")
	table, _, _ = strings.Cut(table, "\n\n")
	listed := map[string]bool{}
	for _, m := range metricName.FindAllString(table, -1) {
		listed[m] = true
	}
	sameRows(t, "Metrics", listed, definedMetrics(t), "a metric the code registers")
}

// TestScrapeTimeoutOverBudget: the ServiceMonitor gives every /metrics
// endpoint a timeout of at least twice the queue figures' budget, so that a
// worker's scrape during a stalled Redis arrives (with
// certmail_queue_stats_up 0) rather than time out and leave every worker
// series stale, which fires CertmailWorkersAbsent instead of
// CertmailQueueStatsDown.
func TestScrapeTimeoutOverBudget(t *testing.T) {
	t.Parallel()
	endpoints := toAnySlice(get(docs(t, "monitoring/servicemonitor.yaml")[0], "spec", "endpoints"))
	if len(endpoints) == 0 {
		t.Fatal("the ServiceMonitor has no endpoints")
	}
	for _, e := range endpoints {
		s, _ := get(e, "scrapeTimeout").(string)
		d, err := time.ParseDuration(s)
		if err != nil || d < 2*queuestats.DefaultBudget {
			t.Errorf("endpoint %v: scrapeTimeout %q, want at least %v (twice queuestats.DefaultBudget)", get(e, "port"), s, 2*queuestats.DefaultBudget)
		}
		if i, err := time.ParseDuration(fmt.Sprint(get(e, "interval"))); err != nil || d > i {
			t.Errorf("endpoint %v: scrapeTimeout %q longer than the interval %v", get(e, "port"), s, get(e, "interval"))
		}
	}
}

// TestHeaderLimitRow: the README's Limits row for the request headers gives
// admin.DefaultMaxHeaderBytes and where a new connection gets 431, which is
// 4 KiB further (net/http's read-ahead; internal/admin's
// TestDefaultHeaderLimit pins it).
func TestHeaderLimitRow(t *testing.T) {
	t.Parallel()
	_, row, ok := strings.Cut(readmeSection(t, "Security model"), "\n| request line and headers |")
	if !ok {
		t.Fatal("README Security model has no Limits row for the request line and headers")
	}
	row, _, _ = strings.Cut(row, "\n")
	for _, want := range []string{
		fmt.Sprintf("at most %d KiB", admin.DefaultMaxHeaderBytes>>10),
		fmt.Sprintf("431 from about %d KiB", (admin.DefaultMaxHeaderBytes+4<<10)>>10),
	} {
		if !strings.Contains(row, want) {
			t.Errorf("the README's Limits row for the headers does not say %q:%s", want, row)
		}
	}
}

// TestMetricsExist: every metric the alerts and the dashboard use is one
// the code registers.
func TestMetricsExist(t *testing.T) {
	t.Parallel()
	defined := definedMetrics(t)
	dash, err := os.ReadFile("grafana/certmail.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &board); err != nil || len(board.Panels) == 0 {
		t.Fatalf("Grafana dashboard: %v", err)
	}
	var exprs []string
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	rules := docs(t, "monitoring/prometheusrule.yaml")[0]
	alerts := map[string]bool{}
	for _, g := range toAnySlice(get(rules, "spec", "groups")) {
		for _, r := range toAnySlice(get(g, "rules")) {
			alerts[get(r, "alert").(string)] = true
			exprs = append(exprs, get(r, "expr").(string))
		}
	}
	for _, want := range []string{"CertmailDeadLettersGrowing", "CertmailAccountPaused", "CertmailQueueLatencyHigh", "CertmailDigiCert429", "CertmailNoSchedulerLeader",
		"CertmailWorkersAbsent", "CertmailSchedulersAbsent", "CertmailSchedulerTicksSkipped"} {
		if !alerts[want] {
			t.Errorf("alert %s missing", want)
		}
	}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			base := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if _, ok := defined[base]; !ok {
				t.Errorf("%q uses %s, which no code registers", e, m)
			}
		}
	}
}

// TestDockerfileBuildsLikeMake: the Dockerfile's go build uses the flags of
// `make build`, and that command line builds a binary that reports the
// injected version.
func TestDockerfileBuildsLikeMake(t *testing.T) {
	t.Parallel()
	mk, err := os.ReadFile(filepath.Join(repo, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ldflags := regexp.MustCompile(`(?m)^LDFLAGS\s*:=\s*(.+)$`).FindSubmatch(mk)
	makeBuild := regexp.MustCompile(`(?m)^\tCGO_ENABLED=0 \$\(GO\) build (.+) -o \$\(BIN\) (\S+)$`).FindSubmatch(mk)
	dockerBuild := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build (.+) -o /out/certmail (\S+))$`).FindSubmatch(df)
	if ldflags == nil || makeBuild == nil || dockerBuild == nil {
		t.Fatalf("build lines not found (Makefile LDFLAGS %v, build %v; Dockerfile %v)", ldflags != nil, makeBuild != nil, dockerBuild != nil)
	}
	makeFlags := strings.ReplaceAll(string(makeBuild[1]), "$(LDFLAGS)", strings.ReplaceAll(string(ldflags[1]), "$(VERSION)", "${VERSION}"))
	if makeFlags != string(dockerBuild[2]) || string(makeBuild[2]) != string(dockerBuild[3]) {
		t.Fatalf("flags differ:\n  make:   %s %s\n  docker: %s %s", makeFlags, makeBuild[2], dockerBuild[2], dockerBuild[3])
	}
	if !strings.Contains(string(df), "USER 10001") || !strings.Contains(string(df), `ENTRYPOINT ["certmail"]`) ||
		!strings.Contains(string(df), "ca-certificates") {
		t.Error("the final image must run certmail as a non-root user with CA certificates")
	}
	if testing.Short() {
		return
	}
	out := filepath.Join(t.TempDir(), "certmail")
	line := strings.ReplaceAll(string(dockerBuild[1]), "/out/certmail", out)
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "VERSION=v9.8.7-deploytest")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, b)
	}
	v, err := exec.Command(out, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "v9.8.7-deploytest") {
		t.Errorf("certmail version = %q (%v), want the injected version", v, err)
	}
}

// TestTokenPlaceholdersRefused reads every API token shipped with the
// repository (the token files under a secrets/ directory of deploy/, and any
// CERTMAIL_API_TOKENS value in deploy/ or docker-compose.yml): each is a
// placeholder that certmail refuses to start with, so that a deployment
// never runs on a token anyone who read the repository knows.
func TestTokenPlaceholdersRefused(t *testing.T) {
	t.Parallel()
	var shipped []string // "file:line: token"
	envValue := regexp.MustCompile(`CERTMAIL_API_TOKENS["']?\s*(?::|=|,\s*value:)\s*["']?([^"'\s}]+)`)
	check := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tokenFile := slices.Contains(strings.Split(filepath.ToSlash(path), "/"), "secrets") && strings.Contains(filepath.Base(path), "token")
		for n, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if tokenFile && line != "" && !strings.HasPrefix(line, "#") {
				shipped = append(shipped, fmt.Sprintf("%s:%d: %s", path, n+1, line))
			}
			if m := envValue.FindStringSubmatch(line); m != nil && !tokenFile {
				for _, entry := range strings.Split(m[1], ",") {
					shipped = append(shipped, fmt.Sprintf("%s:%d: %s", path, n+1, entry))
				}
			}
		}
	}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			check(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	check(filepath.Join(repo, "docker-compose.yml"))
	if len(shipped) < 2 {
		t.Fatalf("found %d shipped tokens, want the compose and the example overlay's: the search is broken", len(shipped))
	}
	for _, s := range shipped {
		where, entry, _ := strings.Cut(s, ": ")
		if _, err := api.ParseToken(entry); err == nil {
			t.Errorf("%s: the shipped token is accepted; add it to the placeholders of internal/api", where)
		}
	}
}
