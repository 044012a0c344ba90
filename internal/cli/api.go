package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/logging"
)

// APICmd serves the HTTP API, the dashboard and the probes.
type APICmd struct {
	ProducerFlags
	ScheduleCapFlags
	HTTPAddr       string `name:"http-addr" env:"CERTMAIL_HTTP_ADDR" default:"${api_addr}" help:"Listen address of the API."`
	Tokens         string `name:"api-tokens" env:"CERTMAIL_API_TOKENS" help:"Accepted bearer tokens, comma separated, each optionally followed by a space and its role: producer, reader or operator (the default). Prefer the _FILE form: flags show in ps." group:"Authentication"`
	TokensFile     string `name:"api-tokens-file" env:"CERTMAIL_API_TOKENS_FILE" type:"file" help:"File of accepted bearer tokens, one per line, each optionally followed by its role (producer, reader, operator: the default); # starts a comment." group:"Authentication"`
	InsecureNoAuth bool   `name:"insecure-no-auth" help:"Serve the API and the dashboard without any token (local development only); requests must then be addressed to an IP address, localhost, *.localhost, a host name without dots or one of --api-hosts." group:"Authentication"`
	APIHostFlags
	DashboardReadOnly bool          `name:"dashboard-readonly" env:"CERTMAIL_DASHBOARD_READONLY" help:"Dashboard users can look but not delete, run, archive or pause, and no token may change dead letters or schedules through /v1."`
	ShutdownTimeout   time.Duration `name:"shutdown-timeout" env:"CERTMAIL_SHUTDOWN_TIMEOUT" default:"${api_shutdown_timeout}" help:"Time in-flight requests get to finish on SIGTERM (${shutdown_timeout_range})."`
}

// Run serves the API until SIGTERM/SIGINT.
func (c *APICmd) Run(env *Env) (err error) {
	tokens, err := c.tokens()
	if err != nil {
		return err
	}
	switch {
	case len(tokens) == 0 && !c.InsecureNoAuth:
		return usagef("no API token: set CERTMAIL_API_TOKENS or CERTMAIL_API_TOKENS_FILE (or pass --insecure-no-auth for local development)")
	case len(tokens) > 0 && c.InsecureNoAuth:
		return usagef("--insecure-no-auth given while API tokens are configured: drop one of them")
	}
	hosts, err := c.hosts()
	if err != nil {
		return err
	}
	if err := c.checkMax(); err != nil {
		return err
	}
	if err := inRange("CERTMAIL_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, minShutdownTimeout, maxShutdownTimeout); err != nil {
		return err
	}
	if err := notEmpty("CERTMAIL_HTTP_ADDR", c.HTTPAddr, "host:port such as :8080 or 127.0.0.1:8080"); err != nil {
		return err
	}
	if err := checkListenAddr("CERTMAIL_HTTP_ADDR", c.HTTPAddr); err != nil {
		return err
	}
	p, err := c.producer(env, c.MaxSchedules)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.close()) }()
	// asynqmon's handlers call the standard library's log.Printf.
	defer logging.RedirectStdLog(p.log.Named("stdlog"), nil)()
	srv, err := api.New(api.Config{
		Ops:               p.ops,
		Redis:             p.conn,
		Schedules:         p.store,
		Tokens:            tokens,
		InsecureNoAuth:    c.InsecureNoAuth,
		Hosts:             hosts,
		DashboardReadOnly: c.DashboardReadOnly,
		Addr:              c.HTTPAddr,
		ShutdownTimeout:   c.ShutdownTimeout,
		Logger:            p.log,
	})
	if err != nil {
		return usageError{err}
	}
	defer func() { err = errors.Join(err, srv.Close()) }()
	return srv.Run(env.Ctx, nil)
}

// APIHostFlags name the host names the API answers besides the rebind-safe
// ones: those of certmail api, and of certmail dev's API. Not a string: a
// setting set but empty is told apart from one unset, and refused.
type APIHostFlags struct {
	Hosts *string `name:"api-hosts" env:"CERTMAIL_API_HOSTS" placeholder:"HOSTS" help:"Host names the API answers besides IP addresses, localhost, *.localhost and names without dots, comma separated; *.example.com is any name under example.com (at most ${max_api_hosts}). Set, a request addressed to any other host is refused (403) on every route, before its token is looked at, which stops DNS rebinding; unset, any host is answered." group:"Authentication"`
}

// hosts reads the host names of CERTMAIL_API_HOSTS, nil when it is unset.
func (f APIHostFlags) hosts() ([]string, error) {
	if f.Hosts == nil {
		return nil, nil
	}
	if err := notEmpty("CERTMAIL_API_HOSTS", *f.Hosts, "host names such as api.example.com,*.example.com"); err != nil {
		return nil, err
	}
	hosts, err := api.ParseHosts(*f.Hosts)
	if err != nil {
		return nil, usagef("CERTMAIL_API_HOSTS: %v", err)
	}
	return hosts, nil
}

// tokens gathers the tokens of CERTMAIL_API_TOKENS and of the file
// CERTMAIL_API_TOKENS_FILE, in that order; a token given twice with the same
// role counts once. Errors name the entry or line, never the token.
func (c *APICmd) tokens() ([]api.Token, error) {
	tokens, err := parseTokenList(c.Tokens)
	if err != nil {
		return nil, usagef("CERTMAIL_API_TOKENS %v", err)
	}
	if c.TokensFile != "" {
		b, err := account.ReadSecretFile("CERTMAIL_API_TOKENS_FILE", c.TokensFile)
		if err != nil {
			return nil, usageError{err}
		}
		fromFile, err := parseTokenFile(b)
		if err != nil {
			return nil, usagef("CERTMAIL_API_TOKENS_FILE %s: %v", c.TokensFile, err)
		}
		tokens = append(tokens, fromFile...)
	}
	out := tokens[:0]
	for _, t := range tokens {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// parseTokenList reads CERTMAIL_API_TOKENS: entries separated by commas,
// each a token optionally followed by white space and its role; empty
// entries are skipped.
func parseTokenList(s string) ([]api.Token, error) {
	var tokens []api.Token
	for i, entry := range strings.Split(s, ",") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		t, err := api.ParseToken(entry)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		tokens = append(tokens, t)
	}
	return tokens, nil
}

// parseTokenFile reads one token per line, optionally followed by white
// space and its role; blank lines and lines starting with # are skipped.
// Errors name the line by number only.
func parseTokenFile(b []byte) ([]api.Token, error) {
	var tokens []api.Token
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t, err := api.ParseToken(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		tokens = append(tokens, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return tokens, nil
}
