package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// TestDockerContextLeavesOutSecrets: `docker compose up --build` (and
// `docker build .`) sends the repository as the build context, and the
// Dockerfile's `COPY . .` puts it into the build stage's layer, which stays
// in the builder's cache. So .dockerignore must leave out every place the
// README tells users to put a key or token: every secrets/ directory under
// deploy/, every file docker-compose.yml mounts as a secret and every file a
// kustomization turns into a Secret. It must keep what the build needs.
func TestDockerContextLeavesOutSecrets(t *testing.T) {
	t.Parallel()
	f, err := os.Open(filepath.Join(repo, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	excluded := func(rel string) bool {
		t.Helper()
		ok, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			t.Fatalf(".dockerignore on %s: %v", rel, err)
		}
		return ok
	}

	var secrets []string // relative to the repository
	err = filepath.WalkDir(".", func(p string, _ fs.DirEntry, err error) error {
		if err == nil && slices.Contains(strings.Split(filepath.ToSlash(p), "/"), "secrets") {
			secrets = append(secrets, filepath.Join("deploy", p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	compose := docs(t, filepath.Join(repo, "docker-compose.yml"))[0]
	for _, s := range get(compose, "secrets").(map[string]any) {
		if file, _ := get(s, "file").(string); file != "" {
			secrets = append(secrets, filepath.Clean(file))
		}
	}
	err = filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "kustomization.yaml" {
			return err
		}
		for _, gen := range toAnySlice(docs(t, p)[0]["secretGenerator"]) {
			for _, f := range toStrings(get(gen, "files")) {
				if _, file, found := strings.Cut(f, "="); found {
					f = file
				}
				secrets = append(secrets, filepath.Join("deploy", filepath.Dir(p), f))
			}
			for _, f := range toStrings(get(gen, "envs")) {
				secrets = append(secrets, filepath.Join("deploy", filepath.Dir(p), f))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// An overlay of one's own, made from the example, keeps its keys beside it.
	secrets = append(secrets, "deploy/overlays/production/secrets/digicert-api-key")
	slices.Sort(secrets)
	secrets = slices.Compact(secrets)
	if len(secrets) < 7 {
		t.Fatalf("found %d secret paths (%v), want at least compose's and the example overlay's directories and files: the search is broken", len(secrets), secrets)
	}
	for _, s := range secrets {
		if !excluded(s) {
			t.Errorf("%s goes into the Docker build context: add it to .dockerignore", s)
		}
	}
	for _, need := range []string{"go.mod", "go.sum", "cmd/certmail/main.go", "internal/worker/worker.go", "tasks"} {
		if excluded(need) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", need)
		}
	}
}
