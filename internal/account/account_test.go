package account

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/ratelimit"
)

// dir writes files (name → content) into a fresh directory and returns it.
func dir(t *testing.T, files map[string]string) string {
	t.Helper()
	d := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

const twoAccounts = `accounts:
  - name: us
    api_key_file: us.key
  - name: eu
    base_url: https://certcentral.digicert.eu/services/v2
    api_key_file: /ABS/eu.key
    rate_limits: 50/5s
`

func TestLoad(t *testing.T) {
	t.Parallel()
	defaultLimits := []ratelimit.Window{{Limit: 100, Period: 5 * time.Second}, {Limit: 1000, Period: 3 * time.Minute}}
	d := dir(t, map[string]string{"us.key": "us-secret\n", "eu.key": " eu-secret ", "default.key": "file-secret"})
	accounts := filepath.Join(d, "accounts.yaml")
	if err := os.WriteFile(accounts, []byte(strings.ReplaceAll(twoAccounts, "/ABS", d)), 0o600); err != nil {
		t.Fatal(err)
	}

	type want struct {
		name, baseURL, key string
		limits             []ratelimit.Window
	}
	tests := []struct {
		name     string
		def      Default
		file     string
		needKeys bool
		want     []want
	}{
		{
			name:     "environment only",
			def:      Default{APIKey: " env-secret ", RateLimits: "100/5s,1000/3m"},
			needKeys: true,
			want:     []want{{"default", DefaultBaseURL, "env-secret", defaultLimits}},
		},
		{
			name:     "key file and base URL",
			def:      Default{APIKeyFile: filepath.Join(d, "default.key"), BaseURL: "http://127.0.0.1:8443/services/v2", RateLimits: "100/5s,1000/3m"},
			needKeys: true,
			want:     []want{{"default", "http://127.0.0.1:8443/services/v2", "file-secret", defaultLimits}},
		},
		{
			name:     "names only need no key",
			def:      Default{RateLimits: "100/5s,1000/3m"},
			needKeys: false,
			want:     []want{{"default", DefaultBaseURL, "", defaultLimits}},
		},
		{
			name:     "file accounts, relative and absolute key files, own limits",
			def:      Default{RateLimits: "100/5s,1000/3m"},
			file:     accounts,
			needKeys: true,
			want: []want{
				{"eu", "https://certcentral.digicert.eu/services/v2", "eu-secret", []ratelimit.Window{{Limit: 50, Period: 5 * time.Second}}},
				{"us", DefaultBaseURL, "us-secret", defaultLimits},
			},
		},
		{
			name:     "file plus the environment's default account",
			def:      Default{APIKey: "env-secret", RateLimits: "100/5s,1000/3m"},
			file:     accounts,
			needKeys: true,
			want: []want{
				{"default", DefaultBaseURL, "env-secret", defaultLimits},
				{"eu", "https://certcentral.digicert.eu/services/v2", "eu-secret", []ratelimit.Window{{Limit: 50, Period: 5 * time.Second}}},
				{"us", DefaultBaseURL, "us-secret", defaultLimits},
			},
		},
		{
			name:     "file names only, no default without a key setting",
			def:      Default{RateLimits: "100/5s,1000/3m"},
			file:     accounts,
			needKeys: false,
			want: []want{
				{"eu", "https://certcentral.digicert.eu/services/v2", "", []ratelimit.Window{{Limit: 50, Period: 5 * time.Second}}},
				{"us", DefaultBaseURL, "", defaultLimits},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := Load(tt.def, tt.file, tt.needKeys)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var names []string
			for _, w := range tt.want {
				names = append(names, w.name)
			}
			if got := fmt.Sprint(set.Names()); got != fmt.Sprint(names) {
				t.Fatalf("names = %s, want %s", got, fmt.Sprint(names))
			}
			for _, w := range tt.want {
				a := set[w.name]
				if a.Name != w.name || a.BaseURL != w.baseURL || a.APIKey.Reveal() != w.key || fmt.Sprint(a.RateLimits) != fmt.Sprint(w.limits) {
					t.Errorf("%s = {%q %q %q %v}, want {%q %q %q %v}", w.name, a.Name, a.BaseURL, a.APIKey.Reveal(), a.RateLimits,
						w.name, w.baseURL, w.key, w.limits)
				}
			}
		})
	}
}

// An account's rate_limits left out, empty or blank takes the windows of
// DIGICERT_RATE_LIMITS; blank text is never "no limit".
func TestLoadFileEmptyRateLimitsTakeTheDefault(t *testing.T) {
	t.Parallel()
	d := dir(t, map[string]string{"k1.key": "k1", "k2.key": "k2", "k3.key": "k3", "accounts.yaml": `accounts:
  - name: absent
    api_key_file: k1.key
  - name: empty
    api_key_file: k2.key
    rate_limits: ""
  - name: blank
    api_key_file: k3.key
    rate_limits: "  "
`})
	set, err := Load(Default{RateLimits: "10/1s"}, filepath.Join(d, "accounts.yaml"), true)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, name := range []string{"absent", "empty", "blank"} {
		if got := fmt.Sprint(set[name].RateLimits); got != "[10/1s]" {
			t.Errorf("account %s: rate limits %s, want DIGICERT_RATE_LIMITS's [10/1s]", name, got)
		}
	}
}

// urlSecret is a password in a base URL's user part, which errors never show.
const urlSecret = "pa55-in-the-url"

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	d := dir(t, map[string]string{
		"empty.key":        " \n",
		"ok.key":           "k",
		"compose.key":      "replace-me-with-the-digicert-api-key\n",
		"overlay.key":      "replace-with-the-digicert-api-key\n",
		"oldcompose.key":   "sandbox-key-replace-me\n",
		"placeholder.yaml": "accounts:\n  - name: us\n    api_key_file: overlay.key\n",
		"unknown.yaml":     "accounts:\n  - name: us\n    api_key: inline\n",
		"badname.yaml":     "accounts:\n  - name: US East\n    api_key_file: ok.key\n",
		"dup.yaml":         "accounts:\n  - name: us\n    api_key_file: ok.key\n  - name: us\n    api_key_file: ok.key\n",
		"nokey.yaml":       "accounts:\n  - name: us\n",
		"emptykey.yaml":    "accounts:\n  - name: us\n    api_key_file: empty.key\n",
		"badurl.yaml":      "accounts:\n  - name: us\n    base_url: ftp://x\n    api_key_file: ok.key\n",
		"badrate.yaml":     "accounts:\n  - name: us\n    rate_limits: lots\n    api_key_file: ok.key\n",
		"emptyurl.yaml":    "accounts:\n  - name: eu\n    base_url: \"\"\n    api_key_file: ok.key\n",
		"blankurl.yaml":    "accounts:\n  - name: eu\n    base_url: \" \"\n    api_key_file: ok.key\n",
		"nullurl.yaml":     "accounts:\n  - name: eu\n    base_url:\n    api_key_file: ok.key\n",
		"badport.yaml":     "accounts:\n  - name: eu\n    base_url: https://certcentral.digicert.eu:99999/services/v2\n    api_key_file: ok.key\n",
		"none.yaml":        "accounts: []\n",
		"garbage.yaml":     "accounts: [\n",
	})
	limits := "100/5s,1000/3m"
	tests := []struct {
		name  string
		def   Default
		file  string
		want  string
		errIs error
	}{
		{name: "no key", def: Default{RateLimits: limits}, want: "set DIGICERT_API_KEY or DIGICERT_API_KEY_FILE", errIs: ErrNoKey},
		{name: "key and key file", def: Default{APIKey: "a", APIKeyFile: filepath.Join(d, "ok.key"), RateLimits: limits}, want: "not both"},
		{name: "missing key file", def: Default{APIKeyFile: filepath.Join(d, "absent.key"), RateLimits: limits}, want: "DIGICERT_API_KEY_FILE: cannot read the file: no such file or directory", errIs: fs.ErrNotExist},
		{name: "empty key file", def: Default{APIKeyFile: filepath.Join(d, "empty.key"), RateLimits: limits}, want: "is empty", errIs: ErrNoKey},
		// The keys shipped in deploy/ (deploy's TestKeyPlaceholdersRefused reads them).
		{name: "compose placeholder key", def: Default{APIKeyFile: filepath.Join(d, "compose.key"), RateLimits: limits}, want: "DIGICERT_API_KEY_FILE: the key is the placeholder shipped in deploy/"},
		{name: "overlay placeholder key", def: Default{APIKeyFile: filepath.Join(d, "overlay.key"), RateLimits: limits}, want: "DIGICERT_API_KEY_FILE: the key is the placeholder shipped in deploy/"},
		{name: "earlier compose placeholder key", def: Default{APIKeyFile: filepath.Join(d, "oldcompose.key"), RateLimits: limits}, want: "the key is the placeholder shipped in deploy/"},
		{name: "placeholder key in the environment", def: Default{APIKey: " replace-with-the-digicert-api-key", RateLimits: limits}, want: "DIGICERT_API_KEY: the key is the placeholder shipped in deploy/"},
		{name: "bad base URL", def: Default{APIKey: "a", BaseURL: "www.digicert.com", RateLimits: limits}, want: "DIGICERT_BASE_URL"},
		{name: "bad rate limits", def: Default{APIKey: "a", RateLimits: "100 per 5s"}, want: "DIGICERT_RATE_LIMITS"},
		// Blank would have meant no limit at all; "" is the table's "not given".
		{name: "blank rate limits", def: Default{APIKey: "a", RateLimits: " \t"}, want: "DIGICERT_RATE_LIMITS: empty; give windows such as 100/5s,1000/3m, or unset it for the default"},
		{name: "unknown field", file: "unknown.yaml", want: "field api_key not found"},
		{name: "bad name", file: "badname.yaml", want: "accounts[0]: name"},
		{name: "duplicate name", file: "dup.yaml", want: "accounts[1] (us): name listed twice"},
		{name: "no key file", file: "nokey.yaml", want: "accounts[0] (us): no DigiCert API key: api_key_file is required", errIs: ErrNoKey},
		{name: "empty key file in accounts", file: "emptykey.yaml", want: "accounts[0] (us): no DigiCert API key: api_key_file", errIs: ErrNoKey},
		{name: "bad account URL", file: "badurl.yaml", want: "accounts[0] (us): base_url"},
		{name: "bad account limits", file: "badrate.yaml", want: "accounts[0] (us): rate_limits"},
		// An EU account whose template rendered empty would send its key to the US instance.
		{name: "empty account URL", file: "emptyurl.yaml", want: "accounts[0] (eu): base_url: empty; give a CertCentral base URL, or leave it out for https://www.digicert.com/services/v2"},
		{name: "blank account URL", file: "blankurl.yaml", want: "accounts[0] (eu): base_url: empty"},
		{name: "null account URL", file: "nullurl.yaml", want: "accounts[0] (eu): base_url: empty"},
		{name: "account URL port", file: "badport.yaml", want: `accounts[0] (eu): base_url: port "99999" of host "certcentral.digicert.eu:99999": want a number from 1 to 65535`},
		// A port no call can reach: every delivery would fail and be retried for a day.
		{name: "base URL port too high", def: Default{APIKey: "a", BaseURL: "http://127.0.0.1:99999/services/v2"}, want: `DIGICERT_BASE_URL: port "99999" of host "127.0.0.1:99999": want a number from 1 to 65535`},
		{name: "base URL port zero", def: Default{APIKey: "a", BaseURL: "http://127.0.0.1:0/services/v2"}, want: `DIGICERT_BASE_URL: port "0"`},
		{name: "base URL port empty", def: Default{APIKey: "a", BaseURL: "http://127.0.0.1:/services/v2"}, want: `DIGICERT_BASE_URL: port ""`},
		{name: "base URL port signed", def: Default{APIKey: "a", BaseURL: "http://127.0.0.1:+80/services/v2"}, want: `DIGICERT_BASE_URL`},
		// A user part's password never shows in the error.
		{name: "password with a bad port", def: Default{APIKey: "a", BaseURL: "http://u:" + urlSecret + "@127.0.0.1:99999/v2"}, want: `port "99999" of host "127.0.0.1:99999"`},
		{name: "password in a URL not http", def: Default{APIKey: "a", BaseURL: "ftp://u:" + urlSecret + "@h/v2"}, want: `"ftp://u:xxxxx@h/v2" is not an absolute http(s) URL`},
		{name: "password in a URL that does not parse", def: Default{APIKey: "a", BaseURL: "http://u:" + urlSecret + "@h:x%zz/v2"}, want: "the value is not an absolute http(s) URL"},
		{name: "placeholder key in accounts", file: "placeholder.yaml", want: "accounts[0] (us): api_key_file: the key is the placeholder shipped in deploy/"},
		{name: "no accounts", file: "none.yaml", want: "no accounts listed"},
		{name: "not YAML", file: "garbage.yaml", want: "parse"},
		{name: "missing file", file: "absent.yaml", want: "DIGICERT_ACCOUNTS_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def := tt.def
			if def.RateLimits == "" {
				def.RateLimits = limits
			}
			file := ""
			if tt.file != "" {
				file = filepath.Join(d, tt.file)
			}
			_, err := Load(def, file, true)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), urlSecret) {
				t.Errorf("Load error %q shows the URL's password", err)
			}
			if tt.errIs != nil && !errors.Is(err, tt.errIs) {
				t.Errorf("error %v is not %v", err, tt.errIs)
			}
		})
	}
}

// DigiCert limits and blocks a key, not an account: two accounts with the
// same key at the same instance would go over its windows together, and one
// would keep sending while the other cools down after a 429. Load refuses
// them in one line naming both, never the key; the same key at another
// instance (a different base URL) is another key there.
func TestLoadRefusesSharedKey(t *testing.T) {
	t.Parallel()
	const key = "shared-k3y-that-must-not-leak"
	d := dir(t, map[string]string{
		"a.key": key + "\n", "b.key": " " + key, "other.key": "another-key",
		"shared.yaml": "accounts:\n  - name: us\n    api_key_file: a.key\n  - name: alias\n    api_key_file: b.key\n",
		"default.yaml": "accounts:\n  - name: us\n    api_key_file: other.key\n  - name: backup\n" +
			"    base_url: https://www.digicert.com/services/v2/\n    api_key_file: a.key\n",
		"eu.yaml": "accounts:\n  - name: us\n    api_key_file: a.key\n  - name: eu\n" +
			"    base_url: https://certcentral.digicert.eu/services/v2\n    api_key_file: b.key\n",
	})
	limits := "100/5s,1000/3m"
	for _, tt := range []struct {
		name  string
		def   Default
		file  string
		names [2]string // the accounts the error names, or none
	}{
		{name: "two file accounts", file: "shared.yaml", names: [2]string{"alias", "us"}},
		{name: "the environment's default and a file account", def: Default{APIKey: key}, file: "default.yaml", names: [2]string{"backup", "default"}},
		{name: "another instance", file: "eu.yaml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def := tt.def
			def.RateLimits = limits
			_, err := Load(def, filepath.Join(d, tt.file), true)
			if tt.names[0] == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Load accepted two accounts with the same key and base URL")
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%q and %q", tt.names[0], tt.names[1])) || strings.Contains(msg, key) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %q and %q, without the key", msg, tt.names[0], tt.names[1])
			}
		})
	}
	// Without keys (the API, the scheduler) there is nothing to compare.
	if _, err := Load(Default{RateLimits: limits}, filepath.Join(d, "shared.yaml"), false); err != nil {
		t.Errorf("names only: %v", err)
	}
}

// TestSecretRedacted checks every way a key could be printed.
func TestSecretRedacted(t *testing.T) {
	t.Parallel()
	const key = "k3y-that-must-not-leak"
	a := Account{Name: "default", APIKey: Secret(key)}
	core, logs := observer.New(zap.DebugLevel)
	zap.New(core).Info("account", zap.Any("account", a), zap.Stringer("key", a.APIKey))
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":     fmt.Sprintf("%v", a),
		"%+v":    fmt.Sprintf("%+v", a),
		"%#v":    fmt.Sprintf("%#v", a),
		"Sprint": fmt.Sprint(a.APIKey),
		"json":   string(js),
		"zap":    fmt.Sprint(logs.All()[0].ContextMap()),
	}
	for how, out := range outputs {
		if strings.Contains(out, key) || !strings.Contains(out, redacted) {
			t.Errorf("%s printed %q", how, out)
		}
	}
	if a.APIKey.Reveal() != key {
		t.Errorf("Reveal = %q", a.APIKey.Reveal())
	}
}

// A worker reads its key file again before each probe of a paused account:
// a placeholder written there later is refused as at start, and the key in
// use kept.
func TestReadKeyFileRefusesPlaceholder(t *testing.T) {
	t.Parallel()
	d := dir(t, map[string]string{"k": "  replace-me-with-the-digicert-api-key\n", "ok": "a-real-looking-key\n"})
	if _, err := ReadKeyFile(filepath.Join(d, "k")); err == nil || !strings.Contains(err.Error(), "key file: the key is the placeholder shipped in deploy/") {
		t.Errorf("ReadKeyFile(placeholder) error = %v, want the placeholder refused", err)
	}
	if k, err := ReadKeyFile(filepath.Join(d, "ok")); err != nil || k.Reveal() != "a-real-looking-key" {
		t.Errorf("ReadKeyFile(ok) = %v, %v", k.Reveal(), err)
	}
}

// Every process judges a base URL alike: the API, the scheduler and the
// CLI through Load (DIGICERT_BASE_URL, or an accounts file's base_url,
// with or without keys), the worker through Load and then digicert.New.
// What one refuses, all refuse at start, with a line naming the setting,
// never the URL's password, query or fragment.
func TestBaseURLJudgedAlike(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-in-the-url"
	tests := []struct {
		url string
		ok  bool
	}{
		{DefaultBaseURL, true},
		{EUBaseURL + "/", true},
		{"http://127.0.0.1:8443/services/v2", true},
		{"https://[::1]:443/services/v2", true},
		{"HTTPS://www.digicert.com/services/v2", true},
		{"www.digicert.com/services/v2", false},
		{"/services/v2", false},
		{"ftp://www.digicert.com/services/v2", false},
		{"https:///services/v2", false},
		{"https://exa mple.com/services/v2", false},
		{"https://www.digicert.com:0/services/v2", false},
		{"https://www.digicert.com:65536/services/v2", false},
		{"https://www.digicert.com:/services/v2", false},
		{"https://user:" + secret + "@www.digicert.com/services/v2", false},
		{"https://" + secret + "@www.digicert.com/services/v2", false},
		{"https://www.digicert.com/services/v2?key=" + secret, false},
		{"https://www.digicert.com/services/v2?", false},
		{"https://www.digicert.com/services/v2#" + secret, false},
	}
	for i, tt := range tests {
		t.Run(strconv.Itoa(i), func(t *testing.T) { // not the URL: the temporary directory's name holds the test's
			t.Parallel()
			d := dir(t, map[string]string{
				"eu.key":        "an-api-key-of-eu",
				"accounts.yaml": fmt.Sprintf("accounts:\n  - name: eu\n    base_url: %q\n    api_key_file: eu.key\n", tt.url),
			})
			def := Default{APIKey: "an-api-key", BaseURL: tt.url, RateLimits: ratelimit.DefaultWindows}
			judged := map[string]error{}
			for _, needKeys := range []bool{false, true} {
				set, err := Load(def, "", needKeys)
				judged[fmt.Sprintf("DIGICERT_BASE_URL (keys %t)", needKeys)] = err
				if err == nil && needKeys { // the worker then builds its client
					_, err = digicert.New(digicert.Config{APIKey: set["default"].APIKey.Reveal(), BaseURL: set["default"].BaseURL})
					judged["the worker's client"] = err
				}
				_, err = Load(Default{RateLimits: ratelimit.DefaultWindows}, filepath.Join(d, "accounts.yaml"), needKeys)
				judged[fmt.Sprintf("base_url (keys %t)", needKeys)] = err
			}
			for by, err := range judged {
				if (err == nil) != tt.ok {
					t.Errorf("%s %q: %v, want accepted %t", by, tt.url, err, tt.ok)
				}
				if err == nil {
					continue
				}
				if msg := err.Error(); !strings.HasPrefix(msg, "DIGICERT_BASE_URL: ") && !strings.Contains(msg, "accounts[0] (eu): base_url: ") {
					t.Errorf("%s: %q names no setting", by, msg)
				} else if strings.Contains(msg, secret) {
					t.Errorf("%s: %q shows the secret", by, msg)
				}
			}
		})
	}
}
