package cli

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
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
	ViewOnlyKey  []string      `name:"view-only-key" help:"Accepted API key restricted to View Only, as CertCentral can restrict one: it reads the validation status, and every PUT it sends is answered 403 access_denied|missing_permission (repeat the flag or separate with commas for several; a key --api-key gives too is refused)."`
	ViewOnlyFile string        `name:"view-only-key-file" type:"file" help:"File holding a View Only key (as --view-only-key)."`
	AnyID        bool          `name:"any-id" help:"Every order, certificate and domain id exists (demo mode); an order known without more is a pending DV order with one domain of its id."`
	Orders       []int64       `help:"Order ids that exist (comma separated), each a pending DV order with one domain of its id waiting for validation by email."`
	OVOrders     []int64       `name:"ov-orders" help:"OV order ids that exist (comma separated), each pending with one domain of its id waiting for validation by email (its DCV emails are resent through PUT /domain/{id}/dcv/emails)."`
	EVOrders     []int64       `name:"ev-orders" help:"EV order ids that exist (comma separated), each as an --ov-orders order."`
	Domains      []int64       `help:"Domain ids that exist on their own, as submitted for pre-validation (comma separated), for resend-domain-dcv; not an id of --orders, --ov-orders or --ev-orders, whose domains have the order's id."`
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
func (c *FakeDigicertCmd) config(keys fakeKeys, windows []ratelimit.Window) digicerttest.Config {
	cfg := digicerttest.Config{APIKeys: keys.full, ViewOnlyKeys: keys.viewOnly, AnyIDExists: c.AnyID, BlockFor: c.BlockFor,
		ApproveAfter: c.ApproveAfter, RecordLimit: fakeRecordLimit}
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
	if err := c.checkIDs(); err != nil {
		return err
	}
	keys, err := c.keys()
	if err != nil {
		return err
	}
	fake := digicerttest.New(c.config(keys, windows))
	c.load(fake)
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
		c.notes(env.Stdout, keys)
	})
}

// fakeKeys are the keys the fake accepts: full ones and View Only ones.
type fakeKeys struct {
	full, viewOnly []string
}

// keys reads the keys of the flags and files. It refuses a key given as
// both full and View Only (which would it be?), and none at all.
func (c *FakeDigicertCmd) keys() (fakeKeys, error) {
	full, err := withKeyFile(c.APIKey, "--api-key-file", c.APIKeyFile)
	if err != nil {
		return fakeKeys{}, err
	}
	fromFile, err := withKeyFile(nil, "--view-only-key-file", c.ViewOnlyFile)
	if err != nil {
		return fakeKeys{}, err
	}
	fromFlag, _ := withKeyFile(c.ViewOnlyKey, "", "") // no file: no error
	for _, src := range []struct {
		flag string
		keys []string
	}{{"--view-only-key", fromFlag}, {"--view-only-key-file", fromFile}} {
		for _, k := range src.keys {
			if slices.Contains(full, k) { // named without the key: it is a secret like any other
				return fakeKeys{}, usagef("%s: a key --api-key or --api-key-file gives too; a key is either full or View Only", src.flag)
			}
		}
	}
	viewOnly := append(fromFlag, fromFile...)
	if len(full) == 0 && len(viewOnly) == 0 {
		return fakeKeys{}, usagef("no API key: give --api-key or --api-key-file (DIGICERT_API_KEY or DIGICERT_API_KEY_FILE), or --view-only-key")
	}
	return fakeKeys{full: full, viewOnly: viewOnly}, nil
}

// withKeyFile returns keys without empty ones, and the key the file flag
// names when it names one.
func withKeyFile(keys []string, flag, path string) ([]string, error) {
	out := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == "" })
	if path == "" {
		return out, nil
	}
	b, err := account.ReadSecretFile(flag, path)
	if err != nil {
		return nil, usageError{err}
	}
	if k := strings.TrimSpace(string(b)); k != "" {
		out = append(out, k)
	}
	return out, nil
}

// idFlag is a flag's list of ids.
type idFlag struct {
	name string
	ids  []int64
}

// checkIDs refuses an id that is not positive, and an id given to two of
// --orders, --ov-orders, --ev-orders and --domains: an order is of one type,
// and each of these orders has a domain of the order's id, which a domain
// on its own would then be too. Certificate ids are of their own kind.
func (c *FakeDigicertCmd) checkIDs() error {
	seen := map[int64]string{}
	for _, f := range []idFlag{{"--orders", c.Orders}, {"--ov-orders", c.OVOrders}, {"--ev-orders", c.EVOrders},
		{"--domains", c.Domains}, {"--certs", c.Certs}} {
		for _, id := range f.ids {
			if id <= 0 {
				return usagef("%s: %d is not an id (a positive integer)", f.name, id)
			}
			if f.name == "--certs" {
				continue
			}
			if other, ok := seen[id]; ok && other != f.name {
				return usagef("%s: %d is given to %s too", f.name, id, other)
			}
			seen[id] = f.name
		}
	}
	return nil
}

// load makes the orders, domains and certificates of the flags known.
func (c *FakeDigicertCmd) load(fake *digicerttest.Server) {
	fake.AddOrder(c.Orders...)
	for _, id := range c.OVOrders {
		fake.SetOrder(digicerttest.SingleDomainOrder(id, digicerttest.OrderOV))
	}
	for _, id := range c.EVOrders {
		fake.SetOrder(digicerttest.SingleDomainOrder(id, digicerttest.OrderEV))
	}
	fake.AddDomain(c.Domains...)
	fake.AddCertificate(c.Certs...)
}

// notes prints, under the address, what the flags made the fake do beyond
// the plain, never a key.
func (c *FakeDigicertCmd) notes(w io.Writer, keys fakeKeys) {
	if c.AnyID {
		fmt.Fprintln(w, "  every order, certificate and domain id exists")
	}
	if c.ApproveAfter > 0 {
		fmt.Fprintf(w, "  a domain validated by email is approved after %d DCV resends reached it\n", c.ApproveAfter)
	}
	for _, o := range []idFlag{{"OV", c.OVOrders}, {"EV", c.EVOrders}} {
		if len(o.ids) > 0 {
			fmt.Fprintf(w, "  %s orders %s: pending, each with one domain of the order's id waiting for validation by email\n",
				o.name, idList(o.ids))
		}
	}
	if len(c.Domains) > 0 {
		fmt.Fprintf(w, "  domains on their own (resend-domain-dcv): %s\n", idList(c.Domains))
	}
	if n := len(keys.viewOnly); n > 0 {
		fmt.Fprintf(w, "  %d View Only key(s): every PUT they send is answered 403 access_denied|missing_permission\n", n)
	}
}

// maxNotedIDs is how many ids of one flag the notes print.
const maxNotedIDs = 10

// idList returns ids as "1, 2, 3", the first maxNotedIDs and how many more.
func idList(ids []int64) string {
	parts := make([]string, 0, min(len(ids), maxNotedIDs))
	for _, id := range ids[:min(len(ids), maxNotedIDs)] {
		parts = append(parts, strconv.FormatInt(id, 10))
	}
	text := strings.Join(parts, ", ")
	if more := len(ids) - maxNotedIDs; more > 0 {
		text += fmt.Sprintf(" and %d more", more)
	}
	return text
}
