// Package account describes the DigiCert accounts certmail may act for: each
// has a name that tasks refer to ("default" unless a task says otherwise), a
// CertCentral base URL, an API key and its own rate-limit windows. Accounts
// come from DIGICERT_API_KEY/DIGICERT_BASE_URL (the account "default") and
// from the YAML file DIGICERT_ACCOUNTS_FILE. A base URL is judged by the
// client's own rules (baseurl.Check), so that the processes that
// only name accounts refuse what the worker would. No two accounts may have
// the same key at the same base URL, since DigiCert limits a key, not an
// account.
package account

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/certmail/certmail/internal/digicert/baseurl"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/tasks"
)

// Secret is an API key. It prints as "[redacted]" in every format, JSON and
// YAML, so that it cannot reach a log line or an error by accident; Reveal
// returns the key itself for the one place that sends it.
type Secret string

const redacted = "[redacted]"

// Reveal returns the key.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return redacted }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (zap and YAML use it).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Account is one DigiCert account.
type Account struct {
	Name       string
	BaseURL    string
	APIKey     Secret
	KeyFile    string // the file APIKey was read from, for ReadKeyFile; "" for a key given directly
	RateLimits []ratelimit.Window
}

// Set is the configured accounts, by name.
type Set map[string]Account

// Names lists the account names in order.
func (s Set) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ErrNoKey is returned by Load when an account has no API key and keys are required.
var ErrNoKey = errors.New("no DigiCert API key")

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Default describes the account "default" as given by the environment.
type Default struct {
	APIKey     string // DIGICERT_API_KEY
	APIKeyFile string // DIGICERT_API_KEY_FILE
	BaseURL    string // DIGICERT_BASE_URL
	RateLimits string // DIGICERT_RATE_LIMITS; required: empty is refused, never "no limit"
}

// Load builds the account set from the default account's settings and, when
// file is not empty, the accounts file. With needKeys, every account must have
// a key (the worker); without, keys are not read at all (the API and the
// scheduler only need the names). A file entry named "default" overrides the
// environment; otherwise "default" comes from the environment, and exists
// when there is no file or when DIGICERT_API_KEY or DIGICERT_API_KEY_FILE is
// set, so that every process sharing the configuration agrees on the names.
// With needKeys it refuses two accounts with the same key and base URL.
func Load(def Default, file string, needKeys bool) (Set, error) {
	set := Set{}
	if strings.TrimSpace(def.RateLimits) == "" {
		return nil, fmt.Errorf("DIGICERT_RATE_LIMITS: empty; give windows such as %s, or unset it for the default",
			ratelimit.DefaultWindows)
	}
	limits, err := ratelimit.ParseWindows(def.RateLimits)
	if err != nil {
		return nil, fmt.Errorf("DIGICERT_RATE_LIMITS: %w", err)
	}
	if def.BaseURL == "" {
		def.BaseURL = DefaultBaseURL
	}
	if err := baseurl.Check(def.BaseURL); err != nil {
		return nil, fmt.Errorf("DIGICERT_BASE_URL: %w", err)
	}
	defAcct := Account{Name: tasks.DefaultAccount, BaseURL: def.BaseURL, RateLimits: limits}
	if needKeys {
		key, err := readKey(def.APIKey, def.APIKeyFile, "DIGICERT_API_KEY_FILE")
		if err != nil {
			return nil, err
		}
		defAcct.APIKey, defAcct.KeyFile = key, def.APIKeyFile
	}
	if file != "" {
		fromFile, err := loadFile(file, limits, needKeys)
		if err != nil {
			return nil, fmt.Errorf("DIGICERT_ACCOUNTS_FILE %s: %w", file, err)
		}
		for name, a := range fromFile {
			set[name] = a
		}
	}
	if _, inFile := set[tasks.DefaultAccount]; !inFile {
		envKey := def.APIKey != "" || def.APIKeyFile != ""
		switch {
		case file == "" || envKey:
			if needKeys && defAcct.APIKey == "" {
				return nil, fmt.Errorf("%w: set DIGICERT_API_KEY or DIGICERT_API_KEY_FILE", ErrNoKey)
			}
			set[tasks.DefaultAccount] = defAcct
		}
	}
	if needKeys {
		if err := checkKeysDistinct(set); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// checkKeysDistinct refuses two accounts with the same key at the same
// instance. DigiCert counts and blocks a key, not an account, while
// certmail limits and cools down per account: two such accounts would go
// over the key's windows together, and one would keep sending while the
// other waits out a 429. The keys are compared by hash, never printed.
func checkKeysDistinct(set Set) error {
	seen := map[[sha256.Size]byte]string{} // hash of base URL and key → the first account
	for _, name := range set.Names() {
		a := set[name]
		id := sha256.Sum256([]byte(sameInstance(a.BaseURL) + "\x00" + a.APIKey.Reveal()))
		if first, dup := seen[id]; dup {
			return fmt.Errorf("DigiCert accounts %q and %q have the same API key and base URL: DigiCert limits a key, not an account, so list the key under one account only", first, name)
		}
		seen[id] = name
	}
	return nil
}

// sameInstance returns a base URL in the form that compares equal for the
// same instance: scheme and host in lower case, no trailing slash.
func sameInstance(baseURL string) string {
	u, err := url.Parse(baseURL)
	if err != nil { // checked by Load already
		return baseURL
	}
	u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	return strings.TrimRight(u.String(), "/")
}

// DefaultBaseURL is the US CertCentral instance.
const DefaultBaseURL = "https://www.digicert.com/services/v2"

// EUBaseURL is the European CertCentral instance.
const EUBaseURL = "https://certcentral.digicert.eu/services/v2"

// placeholderKeys are the DigiCert API keys shipped in deploy/ for the
// operator to replace (a test in deploy/ reads every key file there, so that
// a new one cannot be missed here). A worker given one refuses to start:
// DigiCert would answer 401, and the account would pause minutes later
// rather than the deployment fail at once. The compose sandbox's key, which
// only its fake CertCentral accepts, is not one of them.
func placeholderKeys() []string {
	return []string{
		"replace-me-with-the-digicert-api-key", // deploy/compose/secrets/digicert-api-key
		"replace-with-the-digicert-api-key",    // deploy/overlays/example/secrets/digicert-api-key
		"sandbox-key-replace-me",               // deploy/compose/secrets/digicert-api-key before it had its own
	}
}

// readKey returns the key given directly or read from file; what names the
// file in errors (the variable or the YAML field). A placeholder shipped in
// deploy/ is refused.
func readKey(key, file, what string) (Secret, error) {
	switch {
	case key != "" && file != "":
		return "", errors.New("set DIGICERT_API_KEY or DIGICERT_API_KEY_FILE, not both")
	case file != "":
		b, err := ReadSecretFile(what, file)
		if err != nil {
			return "", err
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("%w: %s %s is empty", ErrNoKey, what, file)
		}
		return refusePlaceholder(Secret(k), what)
	default:
		return refusePlaceholder(Secret(strings.TrimSpace(key)), "DIGICERT_API_KEY")
	}
}

// refusePlaceholder returns key, or an error naming where it came from (what)
// when it is a placeholder shipped in deploy/.
func refusePlaceholder(key Secret, what string) (Secret, error) {
	for _, p := range placeholderKeys() {
		if key.Reveal() == p {
			return "", fmt.Errorf("%s: the key is the placeholder shipped in deploy/: replace it with the account's DigiCert API key", what)
		}
	}
	return key, nil
}

// ReadSecretFile reads the file a secret's setting names (DIGICERT_API_KEY_FILE,
// api_key_file, CERTMAIL_API_TOKENS_FILE, ...); setting names it in errors.
// An error gives the setting and the reason ("no such file or directory",
// "permission denied", "is a directory"), never the path: the secret itself
// put in the setting by mistake is a common slip, and the error goes to the
// process's log.
func ReadSecretFile(setting, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		reason := errors.New("unreadable")
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			reason = pe.Err // the cause alone: the path is in pe.Path
		}
		return nil, fmt.Errorf("%s: cannot read the file: %w", setting, reason)
	}
	return b, nil
}

// ReadKeyFile reads a key file again (an Account's KeyFile), as Load does:
// surrounding white space removed, empty or a placeholder refused. Errors
// name the file, never what it holds.
func ReadKeyFile(path string) (Secret, error) {
	return readKey("", path, "key file")
}

type fileEntry struct {
	Name       string `yaml:"name"`
	BaseURL    string `yaml:"base_url"`
	APIKeyFile string `yaml:"api_key_file"`
	RateLimits string `yaml:"rate_limits"`
}

type fileDoc struct {
	Accounts []fileEntry `yaml:"accounts"`
}

// givenKeys returns, for each entry of the accounts file raw, the keys it
// gives, null ones included ("base_url:" decodes as "", as if left out).
func givenKeys(raw []byte) ([]map[string]bool, error) {
	var doc struct {
		Accounts []map[string]yaml.Node `yaml:"accounts"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	given := make([]map[string]bool, len(doc.Accounts))
	for i, entry := range doc.Accounts {
		given[i] = map[string]bool{}
		for k := range entry {
			given[i][k] = true
		}
	}
	return given, nil
}

func loadFile(path string, defLimits []ratelimit.Window, needKeys bool) (Set, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(doc.Accounts) == 0 {
		return nil, errors.New("no accounts listed under the accounts key")
	}
	var given []map[string]bool
	if given, err = givenKeys(raw); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	set := Set{}
	for i, e := range doc.Accounts {
		where := fmt.Sprintf("accounts[%d]", i)
		if !namePattern.MatchString(e.Name) {
			return nil, fmt.Errorf("%s: name %q must match %s", where, e.Name, namePattern)
		}
		where = fmt.Sprintf("accounts[%d] (%s)", i, e.Name)
		if _, dup := set[e.Name]; dup {
			return nil, fmt.Errorf("%s: name listed twice", where)
		}
		a := Account{Name: e.Name, BaseURL: e.BaseURL, RateLimits: defLimits}
		if given[i]["base_url"] && strings.TrimSpace(e.BaseURL) == "" {
			// Given empty, it most likely came from a template whose
			// variable was not filled in: the US instance would get the key.
			return nil, fmt.Errorf("%s: base_url: empty; give a CertCentral base URL, or leave it out for %s", where, DefaultBaseURL)
		}
		if a.BaseURL == "" {
			a.BaseURL = DefaultBaseURL
		}
		if err := baseurl.Check(a.BaseURL); err != nil {
			return nil, fmt.Errorf("%s: base_url: %w", where, err)
		}
		if strings.TrimSpace(e.RateLimits) != "" { // empty or blank: DIGICERT_RATE_LIMITS's
			if a.RateLimits, err = ratelimit.ParseWindows(e.RateLimits); err != nil {
				return nil, fmt.Errorf("%s: rate_limits: %w", where, err)
			}
		}
		if needKeys {
			if e.APIKeyFile == "" {
				return nil, fmt.Errorf("%s: %w: api_key_file is required", where, ErrNoKey)
			}
			keyPath := e.APIKeyFile
			if !filepath.IsAbs(keyPath) {
				keyPath = filepath.Join(filepath.Dir(path), keyPath)
			}
			if a.APIKey, err = readKey("", keyPath, "api_key_file"); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			a.KeyFile = keyPath
		}
		set[e.Name] = a
	}
	return set, nil
}
