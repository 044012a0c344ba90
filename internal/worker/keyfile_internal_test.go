package worker

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// A key file that cannot be read, or holds no valid key, leaves the key in
// use alone; each try is logged at WARN, naming the file and never what it
// holds. A valid new key is taken at once.
func TestKeyFileReloadKeepsTheOldKeyOnABadFile(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "old-key-7f3a9c1e", "new-key-2b8d4e6f"
	var mu sync.Mutex
	var sent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, r.Header.Get("X-DC-DEVKEY"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	client, err := digicert.New(digicert.Config{BaseURL: srv.URL, APIKey: oldKey, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	keySent := func() string {
		t.Helper()
		if _, err := client.ResendDCVEmails(t.Context(), 1, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return sent[len(sent)-1]
	}
	core, logs := zapobserver.New(zapcore.DebugLevel)
	var text bytes.Buffer
	jsonCore := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&text), zapcore.DebugLevel)
	path := filepath.Join(t.TempDir(), "api-key")
	k := &keyFile{account: "default", path: path, client: client, log: zap.New(zapcore.NewTee(core, jsonCore)), key: oldKey}

	steps := []struct {
		name    string
		content string // "-" removes the file
		warns   int    // WARN lines after the step, in all
		want    string // the key sent after it
	}{
		{name: "unchanged", content: oldKey + "\n", warns: 0, want: oldKey},
		{name: "missing", content: "-", warns: 1, want: oldKey},
		{name: "empty", content: " \n\t\n", warns: 2, want: oldKey},
		{name: "a space inside", content: "bad kEy 2b8d4e6f", warns: 3, want: oldKey},
		{name: "not ASCII", content: "bad-key-\u00e9\u00e8\u00ea", warns: 4, want: oldKey},
		{name: "a control character", content: "bad-key\x7f2b8d", warns: 5, want: oldKey},
		{name: "valid", content: newKey + "\n", warns: 5, want: newKey},
		{name: "bad again keeps the new key", content: "a b", warns: 6, want: newKey},
		{name: "unchanged again", content: newKey, warns: 6, want: newKey},
	}
	for _, s := range steps {
		if s.content == "-" {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(path, []byte(s.content), 0o600); err != nil {
			t.Fatal(err)
		}
		k.reload()
		if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != s.warns {
			t.Errorf("%s: %d WARN lines in all, want %d", s.name, n, s.warns)
		}
		if got := keySent(); got != s.want {
			t.Errorf("%s: the client sends %q, want %q", s.name, got, s.want)
		}
	}
	for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if e.ContextMap()["key_file"] != path || e.ContextMap()["account"] != "default" {
			t.Errorf("WARN line %q %v: want the account and the file named", e.Message, e.ContextMap())
		}
	}
	if n := logs.FilterMessage("the API key file holds a new key; calls use it from now on").Len(); n != 1 {
		t.Errorf("%d lines saying the key changed, want 1", n)
	}
	for _, s := range steps {
		for _, leak := range strings.Fields(s.content) {
			if len(leak) > 3 && strings.Contains(text.String(), leak) {
				t.Errorf("the log holds %q from the file (%s)", leak, s.name)
			}
		}
	}
}

// A call DigiCert refuses for the key makes the worker read the key file
// again: when it holds a new key (another worker's probe may have ended the
// pause with it), the task waits a moment and goes again with it, and the
// account is not paused again.
func TestRejectionReadsTheKeyFileAgain(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "old-key-7f3a9c1e", "new-key-2b8d4e6f"
	r := redistest.Start(t)
	conn, err := redisconn.Open(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Client.Close() })
	fake, baseURL := digicerttest.NewTestServer(t, digicerttest.Config{APIKeys: []string{newKey}, AnyIDExists: true})
	path := filepath.Join(t.TempDir(), "api-key")
	if err := os.WriteFile(path, []byte(oldKey), 0o600); err != nil {
		t.Fatal(err)
	}
	accounts, err := account.Load(account.Default{APIKeyFile: path, BaseURL: baseURL, RateLimits: ratelimit.DefaultWindows}, "", true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Redis: conn, Accounts: accounts, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	// The key is replaced after this worker read it, and before its next call.
	if err := os.WriteFile(path, []byte(newKey), 0o600); err != nil {
		t.Fatal(err)
	}
	acct := w.proc.accounts["default"]
	resend := func(ctx context.Context) (digicert.Result, error) {
		return acct.client.ResendDCVEmails(ctx, 1, []byte(`{}`))
	}
	d := &delivery{account: acct, report: &report{}, attempt: 1, ticket: acct.limiter.NewTicket()}
	_, err = w.proc.send(t.Context(), d, gateGo, 0, resend)
	var te *taskError
	if !errors.As(err, &te) || te.class != classWait || te.failure || te.retryAfter > 2*keyChangedWait {
		t.Fatalf("a call refused for a key since replaced: %#v; want a short wait that uses no retry", err)
	}
	if fake.StatusCount(403) != 1 {
		t.Fatalf("%d refusals, want 1", fake.StatusCount(403))
	}
	if n, err := conn.Client.Exists(t.Context(), pausedKey("default"), brokenKey("default")).Result(); err != nil || n != 0 {
		t.Errorf("the account's pause keys: %d, %v; want the account not paused again", n, err)
	}
	if _, err := resend(t.Context()); err != nil {
		t.Errorf("the call after the refusal: %v; want the new key, read from the file", err)
	}
}
