package cli

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/ratelimit"
)

// fakeShutdownTimeout is how long the fake lets open requests finish on
// SIGTERM unless told otherwise.
const fakeShutdownTimeout = 5 * time.Second

// fakeRecordLimit is how many requests the standalone fake keeps
// (digicerttest.Config.RecordLimit). Nothing reads them from outside the
// process, but unbounded they would grow for as long as the compose
// sandbox runs; a thousand keep a debugger's view cheap (`certmail dev`,
// whose tests read them, keeps ten thousand).
const fakeRecordLimit = 1000

// FakeDigicertCmd serves the fake CertCentral over HTTP.
type FakeDigicertCmd struct {
	Addr         string        `default:"${fake_addr}" help:"Listen address."`
	APIKey       []string      `name:"api-key" env:"DIGICERT_API_KEY" help:"Accepted API key (repeat the flag or separate with commas for several)."`
	APIKeyFile   string        `name:"api-key-file" env:"DIGICERT_API_KEY_FILE" type:"file" help:"File holding an accepted API key (as the workers' DIGICERT_API_KEY_FILE)."`
	AnyID        bool          `name:"any-id" help:"Every order, certificate and domain id exists (demo mode); an order known without more is a pending DV order with one domain of its id."`
	Orders       []int64       `help:"Order ids that exist (comma separated)."`
	Certs        []int64       `help:"Certificate ids that exist (comma separated)."`
	RateLimits   string        `name:"rate-limits" default:"${digicert_rate_limits}" help:"Windows per key, as DigiCert enforces them (LIMIT/PERIOD,..., LIMIT ${window_limit_range}, PERIOD ${window_period_range}); empty for none."`
	BlockFor     time.Duration `name:"block-for" default:"${fake_block_for}" help:"How long a key that went over a window is answered 429."`
	Latency      time.Duration `help:"Delay added before every answer."`
	ErrorRate    float64       `name:"error-rate" help:"Share of requests answered 502/503 with an HTML body (0 to 1)."`
	ResetRate    float64       `name:"reset-rate" help:"Share of requests whose connection is reset (0 to 1)."`
	ShutdownFor  time.Duration `name:"shutdown-timeout" default:"${fake_shutdown_timeout}" help:"How long to let open requests finish on SIGTERM."`
	ApproveAfter int           `name:"approve-after" help:"Approve a domain validated by email once this many DCV resends reached it, and issue an order once all its domains are (0: never), so that schedules can be watched ending."`
}

// config is the fake's configuration.
func (c *FakeDigicertCmd) config(keys []string, windows []ratelimit.Window) digicerttest.Config {
	cfg := digicerttest.Config{APIKeys: keys, AnyIDExists: c.AnyID, BlockFor: c.BlockFor, ApproveAfter: c.ApproveAfter,
		RecordLimit: fakeRecordLimit}
	for _, w := range windows {
		cfg.RateLimits = append(cfg.RateLimits, digicerttest.Window{Limit: w.Limit, Period: w.Period})
	}
	return cfg
}

// Run serves until the process is told to stop.
func (c *FakeDigicertCmd) Run(env *Env) error {
	var windows []ratelimit.Window // --rate-limits= : none, as its help says
	if strings.TrimSpace(c.RateLimits) != "" {
		var err error
		if windows, err = ratelimit.ParseWindows(c.RateLimits); err != nil {
			return usagef("--rate-limits: %v", err)
		}
	}
	if err := checkListenAddr("--addr", c.Addr); err != nil {
		return err
	}
	if c.ApproveAfter < 0 {
		return usagef("--approve-after: %d must not be negative", c.ApproveAfter)
	}
	for name, rate := range map[string]float64{"--error-rate": c.ErrorRate, "--reset-rate": c.ResetRate} {
		if rate < 0 || rate > 1 {
			return usagef("%s: %v is not between 0 and 1", name, rate)
		}
	}
	keys := c.APIKey
	if c.APIKeyFile != "" {
		b, err := account.ReadSecretFile("--api-key-file", c.APIKeyFile)
		if err != nil {
			return usageError{err}
		}
		if k := strings.TrimSpace(string(b)); k != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return usagef("no API key: give --api-key or --api-key-file (DIGICERT_API_KEY or DIGICERT_API_KEY_FILE)")
	}
	fake := digicerttest.New(c.config(keys, windows))
	fake.AddOrder(c.Orders...)
	fake.AddCertificate(c.Certs...)
	fake.SetFaults(digicerttest.Faults{Latency: c.Latency, ErrorRate: c.ErrorRate, ResetRate: c.ResetRate})

	// /healthz for container healthchecks; everything else is CertCentral.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("/", fake)
	// It writes no log of its own; net/http's messages are JSON lines at the
	// default level and format, as every certmail server's are.
	log, err := logging.New(logging.DefaultLevel, logging.DefaultFormat, env.Stderr)
	if err != nil {
		return err
	}
	return admin.Serve(env.Ctx, c.Addr, admin.NewServer(mux, admin.Limits{}, log), admin.Shutdown{Timeout: c.ShutdownFor}, func(a net.Addr) {
		fmt.Fprintf(env.Stdout, "fake CertCentral (not DigiCert: nothing is emailed) at http://%s/services/v2\n", a)
		fmt.Fprintf(env.Stdout, "  point workers at it with DIGICERT_BASE_URL=http://%s/services/v2\n", a)
		if c.AnyID {
			fmt.Fprintln(env.Stdout, "  every order, certificate and domain id exists")
		}
		if c.ApproveAfter > 0 {
			fmt.Fprintf(env.Stdout, "  a domain validated by email is approved after %d DCV resends reached it\n", c.ApproveAfter)
		}
	})
}
