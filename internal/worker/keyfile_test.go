package worker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

// Replacing the key file of a paused account is enough, in both file
// forms: the next probe reads the file again, sends the new key, ends the
// pause and delivers, with no restart; neither key reaches the log.
func TestReplacedKeyFileResumesWithoutRestart(t *testing.T) {
	t.Parallel()
	for _, form := range []string{"DIGICERT_API_KEY_FILE", "api_key_file"} {
		t.Run(form, func(t *testing.T) {
			t.Parallel()
			testReplacedKeyFile(t, form)
		})
	}
}

func testReplacedKeyFile(t *testing.T, form string) {
	const wrongKey = "wrong-key-5e0c8d1a7b"
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "api-key")
	writeFile(t, keyPath, wrongKey+"\n")
	def, accountsFile := account.Default{APIKeyFile: keyPath, BaseURL: b.baseURL, RateLimits: ratelimit.DefaultWindows}, ""
	if form == "api_key_file" {
		def, accountsFile = account.Default{RateLimits: ratelimit.DefaultWindows}, filepath.Join(dir, "accounts.yaml")
		writeFile(t, accountsFile, "accounts:\n  - name: default\n    base_url: "+b.baseURL+"\n    api_key_file: api-key\n")
	}
	accounts, err := account.Load(def, accountsFile, true)
	if err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.Accounts = accounts }})

	id := b.enqueue(t, "resend-dcv", `{"order_id": 1}`)
	// Rejected, then probed at least once with the file unchanged: still paused.
	waitFor(t, 30*time.Second, func() bool { return b.fake.StatusCount(403) >= 2 }, func() string { return "fewer than 2 rejections" })
	if n := len(b.fake.DCVSends(1)); n != 0 {
		t.Fatalf("%d DCV sends with the wrong key", n)
	}
	paused, _ := sum(b.scrape(t, 0), "certmail_account_paused", "account", "default")
	if paused != 1 {
		t.Fatalf("certmail_account_paused = %v while the key is rejected, want 1", paused)
	}

	writeFile(t, keyPath, testKey+"\n") // as the kubelet does: a new file in place of the old
	info := b.waitState(t, id, asynq.TaskStateCompleted, 30*time.Second)
	if r := result(t, info); r.Outcome != taskresult.Delivered {
		t.Errorf("outcome %q, want delivered", r.Outcome)
	}
	if n := len(b.fake.DCVSends(1)); n != 1 {
		t.Errorf("%d DCV sends, want 1", n)
	}
	reqs := b.fake.Requests()
	if last := reqs[len(reqs)-1]; !last.KeyValid {
		t.Errorf("last request %v: want the new key", last)
	}
	if paused, _ := sum(b.scrape(t, 0), "certmail_account_paused", "account", "default"); paused != 0 {
		t.Errorf("certmail_account_paused = %v after the probe, want 0", paused)
	}
	if n := len(b.logs.Lines("info", "the API key file holds a new key; calls use it from now on")); n != 1 {
		t.Errorf("%d lines saying the key file changed, want 1", n)
	}
	if n := len(b.logs.Lines("info", "DigiCert accepts the API key again; account resumed")); n != 1 {
		t.Errorf("%d resume lines, want 1", n)
	}
	if text := b.logs.Text(); strings.Contains(text, wrongKey) || strings.Contains(text, testKey) {
		t.Error("a key appears in the worker's log")
	}
}

// writeFile replaces path with a file holding content, by a rename.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
