// Package dev runs the whole of certmail in one process for a newcomer
// (`certmail dev`, run by `make run`): an embedded Redis (miniredis, its clock
// advanced in real time), the fake CertCentral in "any id exists" mode
// approving a domain after a few DCV resends, a worker, a scheduler with a
// demo schedule that ends itself once its order is approved, the HTTP API
// and the dashboard, plus demo tasks in every state. Nothing it runs is fit
// for production: the Redis keeps everything in memory and the fake emails
// nobody.
package dev

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
	"github.com/certmail/certmail/internal/worker"
)

// Defaults of Config.
const (
	DefaultHTTPAddr  = "127.0.0.1:8080"
	DefaultAdminAddr = "127.0.0.1:9090"
)

// MissingID is the order and certificate id the dev fake does not know: the
// demo's permanently failing task uses it.
const MissingID = 404404

// Config configures the dev stack. Zero values take the defaults noted.
type Config struct {
	// RedisURL, when set, is used instead of the embedded Redis.
	RedisURL string
	// RedisAddr is where the embedded Redis listens; default a free
	// loopback port.
	RedisAddr string
	// HTTPAddr is the API and dashboard address; default DefaultHTTPAddr.
	HTTPAddr string
	// AdminAddr serves the worker's /healthz, /readyz and /metrics; default
	// DefaultAdminAddr.
	AdminAddr string
	// Tokens are the API tokens; default one operator token generated at
	// start. The first one is printed in the banner.
	Tokens []api.Token
	// NoDemo skips the demo tasks and schedule.
	NoDemo bool
	// DemoEvery is how often the demo schedule fires; default
	// DefaultDemoEvery. Whole seconds. The fake approves the demo order after
	// as many reminders as take about a minute, DemoApproveAfter at least.
	DemoEvery time.Duration
	// Queues are the weighted queues the worker serves and the API, the
	// scheduler and the demo accept (CERTMAIL_QUEUES); default those of
	// queues.Default.
	Queues map[string]int
	// ScheduleMinInterval is the shortest time allowed between two ticks
	// of a schedule; default schedule.DefaultMinInterval. With the demo,
	// it is lowered to the demo schedule's interval (DemoEvery,
	// DefaultDemoEvery) when that is shorter, so that the demo schedule is
	// accepted.
	ScheduleMinInterval time.Duration
	// Stdout receives the banner (URLs, token, curl commands).
	Stdout io.Writer
	// Logger receives the components' logs (required).
	Logger *zap.Logger
}

// Stack is the running dev stack, as Run reports it once everything serves.
type Stack struct {
	APIURL    string // http://host:port
	AdminURL  string // the worker's admin server
	RedisURL  string
	Token     string
	Embedded  bool // Redis is the in-memory miniredis
	FakeURL   string
	fake      *digicerttest.Server
	dashboard string
}

// Fake returns the fake CertCentral, for tests that assert its effects.
func (s *Stack) Fake() *digicerttest.Server { return s.fake }

// Run starts every component, prints the banner, enqueues the demo tasks and
// serves until ctx is done; then it stops everything and returns. started,
// when not nil, is called once everything serves.
func Run(ctx context.Context, cfg Config, started func(*Stack)) (err error) {
	if cfg.Logger == nil {
		return errors.New("no logger")
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	demo, every := DemoSchedule, DefaultDemoEvery
	if cfg.DemoEvery != 0 {
		if cfg.DemoEvery < time.Second || cfg.DemoEvery%time.Second != 0 {
			return fmt.Errorf("demo schedule every %v: want whole seconds", cfg.DemoEvery)
		}
		every = cfg.DemoEvery
		demo.Cron = "@every " + every.String()
	}
	if !cfg.NoDemo && every < cmp.Or(cfg.ScheduleMinInterval, schedule.DefaultMinInterval) {
		// The demo schedule reminds a fake DigiCert: let it fire as often
		// as it is set to, whatever the interval guarding the real one.
		cfg.ScheduleMinInterval = every
	}
	approveAfter := demoApprovals(every)
	if cfg.Queues == nil {
		qs, err := queues.Parse(queues.Default)
		if err != nil {
			return err
		}
		cfg.Queues = qs
	}
	queueNames := queues.Names(cfg.Queues)
	log := cfg.Logger
	st := &Stack{RedisURL: cfg.RedisURL}
	if len(cfg.Tokens) == 0 {
		cfg.Tokens = []api.Token{{Secret: account.Secret("dev-" + randomHex(16)), Role: api.RoleOperator}}
	}
	st.Token = cfg.Tokens[0].Secret.Reveal()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	// run starts a component; its failure stops the whole stack.
	run := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	var mr *miniredis.Miniredis
	defer func() {
		cancel()
		wg.Wait()
		if mr != nil {
			mr.Close()
		}
		close(errs)
		for e := range errs {
			err = errors.Join(err, e)
		}
	}()

	// Redis.
	if st.RedisURL == "" {
		mr, err = startMiniredis(ctx, cfg.RedisAddr, &wg)
		if err != nil {
			return err
		}
		st.Embedded = true
		st.RedisURL = "redis://" + mr.Addr() + "/0"
	}

	// The fake CertCentral, with a key that never leaves the process.
	key := randomHex(24)
	windows, err := ratelimit.ParseWindows(ratelimit.DefaultWindows)
	if err != nil {
		return err
	}
	var fakeWindows []digicerttest.Window
	for _, w := range windows {
		fakeWindows = append(fakeWindows, digicerttest.Window{Limit: w.Limit, Period: w.Period})
	}
	st.fake = digicerttest.New(digicerttest.Config{APIKeys: []string{key}, AnyIDExists: true,
		Missing: []int64{MissingID}, RateLimits: fakeWindows, RecordLimit: 10000, ApproveAfter: approveAfter})
	fakeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("fake CertCentral: %w", err)
	}
	st.FakeURL = "http://" + fakeLn.Addr().String() + "/services/v2"
	fakeSrv := admin.NewServer(st.fake, admin.Limits{})
	// Its shutdown is part of its run, so that Run returns only once the
	// fake's connections are closed.
	run("fake CertCentral", func() error {
		served := make(chan error, 1)
		go func() { served <- fakeSrv.Serve(fakeLn) }()
		select {
		case err := <-served:
			return err // Serve failed before the stack stopped
		case <-ctx.Done():
		}
		st.fake.Close() // releases any request it holds
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := fakeSrv.Shutdown(sctx); err != nil {
			_ = fakeSrv.Close()
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})

	accounts := account.Set{"default": {Name: "default", BaseURL: st.FakeURL, APIKey: account.Secret(key), RateLimits: windows}}

	// The worker, on its own connection.
	wconn, err := redisconn.Open(st.RedisURL)
	if err != nil {
		return err
	}
	if err := wconn.Wait(ctx, log); err != nil {
		_ = wconn.Client.Close()
		return err
	}
	w, err := worker.New(worker.Config{Redis: wconn, Accounts: accounts, AdminAddr: cfg.AdminAddr, Queues: cfg.Queues,
		ShutdownTimeout: 5 * time.Second, Logger: log.Named("worker")})
	if err != nil {
		_ = wconn.Client.Close()
		return err
	}
	workerUp := make(chan net.Addr, 1)
	run("worker", func() error {
		return errors.Join(w.Run(ctx, func(a net.Addr) { workerUp <- a }), wconn.Client.Close())
	})

	// The API and the dashboard.
	aconn, err := redisconn.Open(st.RedisURL)
	if err != nil {
		return err
	}
	rules := enqueue.Rules{Accounts: accounts.Names(), Queues: queueNames}
	svc := ops.New(aconn, ops.Options{Rules: rules, Logger: log.Named("api")})
	store, err := schedule.NewStore(schedule.Config{Redis: aconn.Client,
		Rules: schedule.Rules{Enqueue: rules, MinInterval: cfg.ScheduleMinInterval}, Logger: log.Named("api")})
	if err != nil {
		return errors.Join(err, svc.Close(), aconn.Client.Close())
	}
	srv, err := api.New(api.Config{Ops: svc, Redis: aconn, Schedules: store, Tokens: cfg.Tokens, Addr: cfg.HTTPAddr,
		ShutdownTimeout: 5 * time.Second, Logger: log.Named("api")})
	if err != nil {
		return errors.Join(err, svc.Close(), aconn.Client.Close())
	}
	apiUp := make(chan net.Addr, 1)
	run("api", func() error {
		err := srv.Run(ctx, func(a net.Addr) { apiUp <- a })
		return errors.Join(err, srv.Close(), svc.Close(), aconn.Client.Close())
	})

	// The scheduler, on its own connection too.
	sconn, err := redisconn.Open(st.RedisURL)
	if err != nil {
		return err
	}
	ssvc := ops.New(sconn, ops.Options{Rules: rules, Logger: log.Named("scheduler")})
	sstore, err := schedule.NewStore(schedule.Config{Redis: sconn.Client,
		Rules: schedule.Rules{Enqueue: rules, MinInterval: cfg.ScheduleMinInterval}, Logger: log.Named("scheduler")})
	if err != nil {
		return errors.Join(err, ssvc.Close(), sconn.Client.Close())
	}
	sch, err := scheduler.New(scheduler.Config{Redis: sconn, Ops: ssvc, Store: sstore, Logger: log.Named("scheduler")})
	if err != nil {
		return errors.Join(err, ssvc.Close(), sconn.Client.Close())
	}
	run("scheduler", func() error { return errors.Join(sch.Run(ctx, nil), ssvc.Close(), sconn.Client.Close()) })

	for range 2 {
		select {
		case a := <-workerUp:
			st.AdminURL = "http://" + a.String()
		case a := <-apiUp:
			st.APIURL = "http://" + a.String()
		case <-ctx.Done():
			return nil
		}
	}
	st.dashboard = st.APIURL + api.DashboardPath + "/"
	printBanner(cfg.Stdout, st, demo, approveAfter)
	if started != nil {
		started(st)
	}
	if !cfg.NoDemo {
		run("demo", func() error {
			return enqueueDemo(ctx, svc, store, demo, approveAfter, st.fake, log.Named("demo"))
		})
	}
	<-ctx.Done()
	return nil
}

// startMiniredis starts the embedded Redis and a goroutine (counted in wg)
// that moves its clock with the wall clock until ctx is done: miniredis only
// expires keys when told time passed, and asynq's leases, heartbeats and
// retention depend on expiry. The caller closes it once everything stopped.
func startMiniredis(ctx context.Context, addr string, wg *sync.WaitGroup) (*miniredis.Miniredis, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded Redis on %s: %w", addr, err)
	}
	mr.SetTime(time.Now())
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				mr.SetTime(now)
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return mr, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}
