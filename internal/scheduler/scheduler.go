// Package scheduler fires certmail's periodic tasks, from schedules in a
// YAML file (CERTMAIL_SCHEDULES_FILE, reloaded when it changes) and from
// Redis (added through the API or the CLI), with any number of replicas.
// The schedules themselves, their validation and their state are package
// schedule's; this package holds the leader lease and fires.
//
// asynq's own Scheduler is not used: it enqueues every tick once per
// process and fixes the task at registration. Here one replica holds a leader
// lease in Redis and fires; each tick becomes one task with the id
// sched:<schedule id>:<tick unix seconds>, enqueued through ops, so a tick
// enqueued by a leader that died before recording it is recognised (asynq
// refuses the same task id) instead of enqueued twice. Each schedule's state
// (last tick, runs, ended) lives in Redis and is only advanced by the lease
// holder: every write is fenced by the lease's token, and made only while the
// schedule exists, so that a tick fired as its schedule is deleted does not
// bring the state back.
//
// Ticks missed while no scheduler ran are caught up when they are at most
// CatchUp old (one minute by default); older ones are skipped.
//
// A round with nothing due costs next to nothing, however many schedules
// there are: the leader re-reads the API's schedules every second but
// judges again only those whose JSON changed (the Store keeps its last
// verdicts), remembers when each schedule is next due (never, once ended),
// reads the states of those that need a look in one round trip, and reads
// them all again only after a schedule was added or deleted. The lease is
// renewed during a round too, so a long round does not lose it, and the
// schedules file is read and parsed again beside the leader's loop (see
// watchFile), so a large file does not hold up the renewal either.
//
// So that the asynq dashboard's Schedulers tab lists the schedules, the
// leader writes asynq's scheduler records (package asynqsched): every
// Heartbeat (and after each tick) the list of running schedules with their
// next and previous run, expiring after two heartbeats and cleared when it
// stops leading; and one enqueue event per tick in the schedule's history,
// whose entry id is the schedule id, so the history outlives a failover
// (the store writes it with the tick's record, in one step).
//
// A resend-dcv schedule is until_validated unless it says otherwise: its
// ticks carry only_if_pending, the leader does not enqueue a tick while the
// previous tick's task is outstanding, and the first not_pending outcome in
// that task's result ends the schedule (see settle).
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/buildinfo"
	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
)

// Defaults of Config.
const (
	DefaultLease          = 5 * time.Second
	DefaultCatchUp        = schedule.DefaultCatchUp
	DefaultReloadInterval = 2 * time.Second
	// pollInterval is how often the leader looks for due ticks; ticks are
	// whole seconds, so a tick is enqueued within this much of its time.
	pollInterval = 200 * time.Millisecond
	// refreshInterval is how often the leader re-reads the API's schedules.
	refreshInterval = time.Second
	// maxFiresPerRound bounds the catch-up of one schedule in one round.
	maxFiresPerRound = 100
	// firstLook and lastLook bound how often the leader looks at the
	// outstanding task of an until_validated schedule's last tick: first
	// after firstLook, then twice as long each time, up to lastLook.
	firstLook = 500 * time.Millisecond
	lastLook  = 30 * time.Second
	// MinResultRetention is the shortest CERTMAIL_RESULT_RETENTION that
	// works with the scheduler: the result of an until_validated tick's
	// task must outlive the longest pause between the leader's looks at it
	// (lastLook), with as much again for a late round and clock skew
	// between the worker and the leader. A result that expires unseen
	// counts as settled, so with a shorter retention the schedule would
	// never see its not_pending outcome and never end.
	MinResultRetention = 2 * lastLook
	// firstRetry and maxRetry bound how often the leader tries a schedule
	// again whose firing failed on a write (Redis refusing writes): first
	// after firstRetry, then twice as long each time, up to maxRetry.
	firstRetry = 500 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// MinLease is the shortest Config.Lease that Validate accepts: the leader
// renews its lease every third of it, a Redis round trip each time.
const MinLease = time.Second

// MaxLease is the longest Config.Lease that Validate accepts: a leader that
// dies holds its lease to the end, and no schedule fires until then, so a
// longer lease only lengthens the gap (a minute is the shortest interval
// schedules may have by default).
const MaxLease = time.Minute

// leaderKey is the leader lease.
const leaderKey = "certmail:scheduler:leader"

// Config configures a Scheduler. Zero values take the defaults noted.
type Config struct {
	// Redis holds the leader lease and the dashboard's records (required);
	// the Scheduler does not close its client.
	Redis *redisconn.Conn
	// Ops enqueues the ticks (with the retries and retention it gives every
	// task) and looks at their tasks (required); the Scheduler does not close
	// it.
	Ops *ops.Service
	// Store holds the schedules, the rules they are judged by and their
	// state (required).
	Store *schedule.Store
	// File is CERTMAIL_SCHEDULES_FILE; "" for none.
	File string

	Lease          time.Duration // leader lease; default DefaultLease
	CatchUp        time.Duration // how old a missed tick may be and still be enqueued; default DefaultCatchUp
	ReloadInterval time.Duration // how often the file is checked for changes; default DefaultReloadInterval
	Heartbeat      time.Duration // how often the leader rewrites the dashboard's entries; default DefaultHeartbeat
	AdminAddr      string        // /healthz, /readyz, /metrics; "" for none

	Logger   *zap.Logger          // required
	Registry *prometheus.Registry // default admin.NewRegistry()
}

// WithDefaults returns c with zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	c.Lease = cmp.Or(c.Lease, DefaultLease)
	c.CatchUp = cmp.Or(c.CatchUp, DefaultCatchUp)
	c.ReloadInterval = cmp.Or(c.ReloadInterval, DefaultReloadInterval)
	c.Heartbeat = cmp.Or(c.Heartbeat, DefaultHeartbeat)
	if c.Registry == nil {
		c.Registry = admin.NewRegistry()
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Redis == nil:
		return errors.New("no Redis configured")
	case c.Ops == nil:
		return errors.New("no queue operations service")
	case c.Store == nil:
		return errors.New("no schedule store")
	case c.Logger == nil:
		return errors.New("no logger")
	case c.Lease < MinLease || c.Lease > MaxLease:
		return fmt.Errorf("lease %s: want %s", ranges.Duration(c.Lease), ranges.Of(MinLease, MaxLease))
	case c.CatchUp < 0 || c.ReloadInterval < 0 || c.Heartbeat < 0:
		return errors.New("durations must not be negative")
	}
	return nil
}

// Scheduler fires schedules while it holds the leader lease.
type Scheduler struct {
	cfg     Config
	rdb     redis.UniversalClient
	ops     *ops.Service
	store   *schedule.Store
	log     *zap.Logger
	metrics *metrics
	lease   *lease.Lease // the leader lease; its token fences every write of a leader

	leader    bool
	renewedAt time.Time
	// leasing is Redis refusing the commands of the lease (leaseTrouble);
	// refusal is its error for /readyz, which another goroutine reads (nil
	// while none lasts).
	leasing trouble
	refusal atomic.Pointer[error]
	// file reads the schedules file (nil without one); firstFile is the
	// version New read, until Run takes it in.
	file        *fileReader
	firstFile   *fileVersion
	fileScheds  []*schedule.Compiled
	mirrored    bool
	apiScheds   []*schedule.Compiled
	refreshedAt time.Time
	warned      map[string]string // schedule id → problem already logged
	// publishing and reading are the failures to publish the file's
	// schedules and to read the API's, logged once while they last.
	publishing, reading trouble
	// due is when each schedule next needs a look, so that rounds do not
	// read Redis for schedules with nothing due (never for an ended one).
	// A schedule whose definition changes is a new *schedule.Compiled, so
	// its entry goes (see changed); all are cleared when the leadership
	// changes, or when a schedule was added or deleted (see refreshAPI).
	due map[*schedule.Compiled]time.Time
	// states are the schedules' states as the dashboard's last write read
	// them, of the schedules not looked at since (only the leader writes
	// them, when it fires), so that heartbeats read only the others.
	// Cleared as due is.
	states map[*schedule.Compiled]schedule.State
	// changes is schedule.Store.Changes at the last refresh.
	changes int64
	hb      heartbeat // the dashboard's entries (heartbeat.go)
	// series are the schedule ids with metric series; the series of a
	// schedule deleted are removed, those of a schedule ended
	// keepEndedSeries later (see endedSeries), so that their number follows
	// the schedules that exist.
	series map[string]bool
	// dropAt is, per ended schedule id with series, when they are removed.
	dropAt map[string]time.Time
	// skipCounted is how many skipped ticks the round counted so far (see
	// noteSkipped).
	skipCounted int
	// awaiting is, per until_validated schedule id, what the leader knows
	// of its last tick's task (see settle). Cleared when the leadership
	// changes; it only spares lookups, Redis holds the truth.
	awaiting map[string]*awaiting
	// retrying is, per schedule id whose firing failed, when it is tried
	// again and what was reported (see failed). Cleared when the
	// leadership changes.
	retrying map[string]*retrying
	// notes is what the leader reported of ticks skipped and of ticks'
	// tasks no worker serves (fire.go). Cleared when the leadership is lost.
	notes tickNotes
}

// awaiting is the last tick's task of an until_validated schedule.
type awaiting struct {
	taskID  string
	settled bool          // its outcome is known and does not end the schedule
	next    time.Time     // when to look at it again while it is outstanding
	every   time.Duration // the pause before the look after next
}

// New builds a Scheduler from cfg (after WithDefaults and Validate); the
// file, when given, must be a regular file of at most MaxFileBytes that
// parses as YAML (invalid entries are reported and skipped by Run, which
// takes in the version read here without parsing it again).
func New(cfg Config) (*Scheduler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var file *fileReader
	var first *fileVersion
	if cfg.File != "" {
		file = newFileReader(cfg.File, cfg.Store.Rules())
		switch first = file.look(); {
		case first.err != nil && first.parse:
			return nil, fmt.Errorf("schedules file %s: %w", cfg.File, first.err)
		case first.err != nil:
			return nil, fmt.Errorf("schedules file: %w", first.err)
		}
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &Scheduler{
		file:       file,
		firstFile:  first,
		cfg:        cfg,
		rdb:        cfg.Redis.Client,
		ops:        cfg.Ops,
		store:      cfg.Store,
		log:        cfg.Logger,
		metrics:    m,
		lease:      lease.New(cfg.Redis.Client, leaderKey, cfg.Lease),
		leasing:    leaseTrouble,
		publishing: publishTrouble,
		reading:    readTrouble,
		warned:     map[string]string{},
		due:        map[*schedule.Compiled]time.Time{},
		states:     map[*schedule.Compiled]schedule.State{},
		series:     map[string]bool{},
		dropAt:     map[string]time.Time{},
		awaiting:   map[string]*awaiting{},
		retrying:   map[string]*retrying{},
	}, nil
}

// Run serves the admin endpoints, waits for Redis, then schedules until ctx
// is done, then gives up the lease (so another replica takes over at once).
// While it waits for Redis, /healthz answers 200 (the process is alive: a
// liveness probe must not restart it) and /readyz 503; /readyz answers 200
// once it schedules and Redis answers, except while Redis refuses the
// commands of the leader lease (see leaseTrouble): then this replica
// cannot lead, whoever holds the lease, and PING alone would not say so.
// started, when not nil, is called with the admin address (nil without
// one) once it schedules.
func (s *Scheduler) Run(ctx context.Context, started func(net.Addr)) error {
	var running atomic.Bool
	ready := func(ctx context.Context) error {
		if !running.Load() {
			return errWaiting
		}
		if err := s.refusal.Load(); err != nil {
			return fmt.Errorf("cannot lead: %w", *err)
		}
		return s.rdb.Ping(ctx).Err()
	}
	adm, err := admin.Start(s.cfg.AdminAddr, ready, s.cfg.Registry, s.log)
	if err != nil {
		return err
	}
	adminAddr := adm.Addr()
	if err := s.cfg.Redis.Wait(ctx, s.log.With(zap.String("admin_addr", addrString(adminAddr)))); err != nil {
		stopErr := adm.Stop(5 * time.Second)
		if ctx.Err() != nil {
			return stopErr
		}
		return errors.Join(err, stopErr)
	}
	s.cfg.Redis.CheckEviction(ctx, s.log, evictionRisk)
	defer s.cfg.Redis.WatchOutages(s.log)()
	running.Store(true)
	s.log.Info("scheduler started", zap.String("redis", s.cfg.Redis.Target), zap.String("file", s.cfg.File), zap.Duration("lease", s.cfg.Lease),
		zap.String("admin_addr", addrString(adminAddr)), zap.String("version", buildinfo.Version),
		zap.String("replica", s.lease.Token()))
	if started != nil {
		started(adminAddr)
	}

	var versions chan *fileVersion // nil without a file: never ready
	if s.file != nil {
		s.reloadFile()
		versions = make(chan *fileVersion)
		wctx, stop := context.WithCancel(ctx)
		watching := make(chan struct{})
		go func() {
			defer close(watching)
			s.watchFile(wctx, versions)
		}()
		defer func() { stop(); <-watching }()
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case v := <-versions:
			s.takeFile(v)
		default:
		}
		now := time.Now()
		s.lead(ctx, now)
		if s.leader {
			s.round(ctx)
		}
		s.beat(ctx, now)
		select {
		case <-ctx.Done():
			s.resign()
			err := adm.Stop(5 * time.Second)
			s.log.Info("scheduler stopped")
			return err
		case <-adm.Done():
			s.resign()
			return adm.Err()
		case <-t.C:
		}
	}
}

// evictionRisk is what a scheduler gets wrong when Redis evicts its keys.
const evictionRisk redisconn.EvictionRisk = "an evicted leader lease lets two schedulers lead at once; " +
	"the state of a schedule that left the file is lost"

// errWaiting is /readyz's cause before the scheduler schedules: it is still
// waiting for Redis.
var errWaiting = errors.New("waiting for Redis")

// lead takes, renews or loses the leader lease.
func (s *Scheduler) lead(ctx context.Context, now time.Time) {
	if s.leader && now.Sub(s.renewedAt) < s.cfg.Lease/3 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Lease/3)
	defer cancel()
	var ok bool
	var err error
	if s.leader {
		ok, err = s.lease.Renew(rctx)
	} else {
		ok, err = s.lease.Acquire(rctx)
	}
	if ctx.Err() != nil {
		return
	}
	s.noteLease(err)
	if s.leader && err != nil && now.Sub(s.renewedAt) < s.cfg.Lease*2/3 {
		return // a Redis hiccup: the lease is still ours for a while
	}
	switch {
	case ok && !s.leader:
		s.log.Info("became the scheduler leader")
		s.mirrored, s.refreshedAt = false, time.Time{}
	case !ok && s.leader:
		s.log.Warn("lost the scheduler leadership", zap.Error(err))
	}
	if ok {
		s.renewedAt = now
	}
	if ok != s.leader {
		clear(s.due)
		clear(s.states)
		clear(s.awaiting)
		clear(s.retrying)
	}
	s.leader = ok
	s.metrics.setLeader(ok)
}

// leaseTrouble is Redis refusing the commands of the leader lease: an
// answer that lasts until someone acts (WRONGTYPE: another application's
// key of that name, which refuses every replica; NOPERM: an ACL user
// without certmail:*; READONLY: a replica of Redis), not an outage. A
// replica it refuses tries again at each round and cannot lead meanwhile.
var leaseTrouble = trouble{
	msg:     "Redis refuses the scheduler leader lease: this scheduler cannot lead",
	cleared: "Redis no longer refuses the scheduler leader lease",
}

// noteLease notes err, the outcome of a try to take or renew the lease
// (nil: Redis answered, whether or not the lease is this replica's), as
// leasing and for /readyz.
func (s *Scheduler) noteLease(err error) {
	if err != nil {
		err = fmt.Errorf("%w%s", err, redisconn.KeyAdvice(err, leaderKey))
	}
	s.leasing.note(s.log, err, zap.String("key", leaderKey))
	if err := s.leasing.lasting(); err != nil {
		s.refusal.Store(&err)
	} else {
		s.refusal.Store(nil)
	}
}

// resign clears the dashboard's entries and gives up the lease.
func (s *Scheduler) resign() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if s.hb.written {
		s.clearEntries(ctx)
	}
	if !s.leader {
		return
	}
	if _, err := s.lease.Release(ctx); err != nil {
		s.log.Warn("could not release the leader lease; another scheduler takes over when it expires", zap.Error(err))
	}
	s.leader = false
	s.metrics.setLeader(false)
}

// lostLeadership notes that a fenced write found another leader.
func (s *Scheduler) lostLeadership(id string) {
	s.leader = false
	clear(s.due)
	clear(s.states)
	clear(s.awaiting)
	clear(s.retrying)
	s.metrics.setLeader(false)
	s.log.Warn("lost the scheduler leadership while firing", zap.String("schedule", id))
}

// renewal is the renewal of the leader lease while a round runs (see
// keepLeading).
type renewal struct {
	quit, done chan struct{}
	at         atomic.Int64 // when the last renewal that kept the lease was sent, Unix nanoseconds; 0 for none
	gone       atomic.Bool  // a renewal found the lease no longer this replica's
}

// keepLeading renews the leader lease in the background until stopKeeping,
// a third of the lease after the last renewal (a tenth after one that
// failed), as lead does between rounds: a round that lasts longer than the
// lease (the first after a start judges and reads every schedule; a slow
// Redis) must not let it expire, or another replica takes over mid-round
// and the leadership passes back and forth. The writes of the round stay
// fenced by the lease's token. gone tells the round to stop: another
// replica leads.
func (s *Scheduler) keepLeading() *renewal {
	r := &renewal{quit: make(chan struct{}), done: make(chan struct{})}
	wait := time.Until(s.renewedAt.Add(s.cfg.Lease / 3))
	go func() {
		defer close(r.done)
		t := time.NewTimer(max(wait, 0))
		defer t.Stop()
		for {
			select {
			case <-r.quit:
				return
			case <-t.C:
			}
			sent := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Lease/3)
			ok, err := s.lease.Renew(ctx)
			cancel()
			switch {
			case err != nil:
				t.Reset(s.cfg.Lease / 10) // a Redis hiccup: lead decides when it is lost
			case !ok:
				r.gone.Store(true)
				return
			default:
				r.at.Store(sent.UnixNano())
				t.Reset(s.cfg.Lease / 3)
			}
		}
	}()
	return r
}

// stopKeeping ends r's renewals, waits for them, and notes the last, so
// that lead renews a third of the lease after it.
func (s *Scheduler) stopKeeping(r *renewal) {
	close(r.quit)
	<-r.done
	if at := r.at.Load(); at != 0 {
		s.renewedAt = time.Unix(0, at)
	}
}

// addrString is a listen address for logs; "none" without an admin server.
func addrString(a net.Addr) string {
	if a == nil {
		return "none"
	}
	return a.String()
}
