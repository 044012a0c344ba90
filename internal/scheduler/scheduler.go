package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/buildinfo"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// Defaults of Config.
const (
	DefaultLease          = 5 * time.Second
	DefaultCatchUp        = time.Minute
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
)

// Config configures a Scheduler. Zero values take the defaults noted.
type Config struct {
	Redis    *redisconn.Conn // required; the Scheduler closes its client when Run returns
	File     string          // CERTMAIL_SCHEDULES_FILE; "" for none
	Accounts account.Set     // names of the configured accounts (keys not needed)

	MaxRetry       int           // retries of the tasks enqueued; 0 means tasks.DefaultMaxRetry, negative none
	Retention      time.Duration // result retention of the tasks; default tasks.DefaultRetention
	Lease          time.Duration // leader lease; default DefaultLease
	CatchUp        time.Duration // how old a missed tick may be and still be enqueued; default DefaultCatchUp
	ReloadInterval time.Duration // how often the file is checked for changes; default DefaultReloadInterval
	Heartbeat      time.Duration // how often the leader rewrites the dashboard's entries; default DefaultHeartbeat
	AdminAddr      string        // /healthz, /readyz, /metrics; "" for none
	// Queues are the queues the workers serve (CERTMAIL_QUEUES); a schedule
	// for another is invalid. Nil means those of queues.Default.
	Queues []string
	// MinInterval is the shortest time allowed between two ticks of a
	// schedule (CERTMAIL_SCHEDULE_MIN_INTERVAL); default DefaultMinInterval.
	MinInterval time.Duration

	Logger   *zap.Logger          // required
	Registry *prometheus.Registry // default admin.NewRegistry()
}

func (c Config) withDefaults() Config {
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.CatchUp == 0 {
		c.CatchUp = DefaultCatchUp
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = DefaultReloadInterval
	}
	if c.MinInterval == 0 {
		c.MinInterval = DefaultMinInterval
	}
	if c.Retention == 0 {
		c.Retention = tasks.DefaultRetention
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.MaxRetry == 0 {
		c.MaxRetry = tasks.DefaultMaxRetry
	} else if c.MaxRetry < 0 {
		c.MaxRetry = 0
	}
	if c.Registry == nil {
		c.Registry = admin.NewRegistry()
	}
	return c
}

// Scheduler fires schedules while it holds the leader lease.
type Scheduler struct {
	cfg     Config
	rdb     redis.UniversalClient
	ops     *ops.Service
	store   *Store
	client  *asynq.Client
	log     *zap.Logger
	metrics *metrics
	lease   *lease.Lease // the leader lease; its token fences every write of a leader

	leader      bool
	renewedAt   time.Time
	fileHash    string
	fileScheds  []*compiled
	mirrored    bool
	apiScheds   []*compiled
	refreshedAt time.Time
	warned      map[string]string // schedule id → problem already logged
	// due is when each schedule next needs a look, so that rounds do not
	// read Redis for schedules with nothing due. Cleared whenever the
	// schedules or the leadership change.
	due map[*compiled]time.Time
	hb  heartbeat // the dashboard's entries (heartbeat.go)
	// series are the schedule ids with metric series; the series of a
	// schedule deleted or ended are removed, so that their number follows
	// the schedules that exist.
	series map[string]bool
	// awaiting is, per until_validated schedule id, what the leader knows
	// of its last tick's task (see settle). Cleared when the leadership
	// changes; it only spares lookups, Redis holds the truth.
	awaiting map[string]*awaiting
}

// awaiting is the last tick's task of an until_validated schedule.
type awaiting struct {
	taskID  string
	settled bool          // its outcome is known and does not end the schedule
	next    time.Time     // when to look at it again while it is outstanding
	every   time.Duration // the pause before the look after next
}

// New builds a Scheduler; the file, when given, must be readable and parse
// as YAML (invalid entries are reported and skipped by Run).
func New(cfg Config) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Redis == nil:
		return nil, errors.New("no Redis configured")
	case cfg.Logger == nil:
		return nil, errors.New("no logger")
	case cfg.Lease < time.Second:
		return nil, fmt.Errorf("lease %v: want at least 1s", cfg.Lease)
	case cfg.CatchUp < 0 || cfg.ReloadInterval < 0 || cfg.Retention < 0 || cfg.Heartbeat < 0 || cfg.MinInterval < 0:
		return nil, errors.New("durations must not be negative")
	}
	if cfg.File != "" {
		data, err := os.ReadFile(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("schedules file: %w", err)
		}
		if _, _, err := ParseFile(data, nil, cfg.MinInterval); err != nil {
			return nil, fmt.Errorf("schedules file %s: %w", cfg.File, err)
		}
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	svc := ops.New(cfg.Redis, ops.Options{Rules: enqueue.Rules{Accounts: cfg.Accounts.Names(), Queues: cfg.Queues},
		MaxRetry: cfg.MaxRetry, Retention: cfg.Retention, Logger: cfg.Logger})
	return &Scheduler{
		cfg:      cfg,
		rdb:      cfg.Redis.Client,
		ops:      svc,
		store:    NewStore(StoreConfig{Redis: cfg.Redis.Client, Checker: svc, MinInterval: cfg.MinInterval, Logger: cfg.Logger}),
		client:   asynq.NewClientFromRedisClient(cfg.Redis.Client),
		log:      cfg.Logger,
		metrics:  m,
		lease:    lease.New(cfg.Redis.Client, leaderKey, cfg.Lease),
		warned:   map[string]string{},
		due:      map[*compiled]time.Time{},
		series:   map[string]bool{},
		awaiting: map[string]*awaiting{},
	}, nil
}

// Run schedules until ctx is done, then gives up the lease (so another
// replica takes over at once) and closes its Redis client. started, when
// not nil, is called with the admin address (nil without one).
func (s *Scheduler) Run(ctx context.Context, started func(net.Addr)) (err error) {
	defer func() { err = errors.Join(err, s.ops.Close(), s.rdb.Close()) }()
	if err := s.cfg.Redis.Wait(ctx, s.log); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	adm, err := admin.Start(s.cfg.AdminAddr, func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }, s.cfg.Registry, s.log)
	if err != nil {
		return err
	}
	adminAddr := adm.Addr()
	s.log.Info("scheduler started", zap.String("file", s.cfg.File), zap.Duration("lease", s.cfg.Lease),
		zap.String("admin_addr", addrString(adminAddr)), zap.String("version", buildinfo.Version))
	if started != nil {
		started(adminAddr)
	}

	var reloadedAt time.Time
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		now := time.Now()
		if s.cfg.File != "" && now.Sub(reloadedAt) >= s.cfg.ReloadInterval {
			s.reloadFile()
			reloadedAt = now
		}
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
		if err != nil && now.Sub(s.renewedAt) < s.cfg.Lease*2/3 {
			return // a Redis hiccup: the lease is still ours for a while
		}
	} else {
		ok, err = s.lease.Acquire(rctx)
	}
	if ctx.Err() != nil {
		return
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
		clear(s.awaiting)
	}
	s.leader = ok
	s.metrics.setLeader(ok)
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

// reloadFile re-reads the schedules file when its content changed. Invalid
// entries are reported once per version of the file; an unreadable file
// keeps the last good version.
func (s *Scheduler) reloadFile() {
	data, err := os.ReadFile(s.cfg.File)
	if err != nil {
		if s.fileHash != "unreadable" {
			s.log.Error("cannot read the schedules file; keeping its last good version", zap.String("file", s.cfg.File), zap.Error(err))
			s.fileHash = "unreadable"
		}
		return
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	if hash == s.fileHash {
		return
	}
	s.fileHash = hash
	good, bad, err := parseFile(data, s.rules())
	if err != nil {
		s.log.Error("cannot parse the schedules file; keeping its last good version", zap.String("file", s.cfg.File), zap.Error(err))
		return
	}
	for _, e := range bad {
		s.log.Error("invalid schedule skipped", zap.String("file", s.cfg.File), zap.String("schedule", e.ID),
			zap.String("position", fmt.Sprintf("schedules[%d]", e.Index)), zap.Error(e.Err))
	}
	s.fileScheds, s.mirrored = good, false
	clear(s.due)
	s.forgetSeries()
	s.forgetRemoved()
	s.metrics.schedules.WithLabelValues(SourceFile).Set(float64(len(good)))
	s.log.Info("schedules file loaded", zap.String("file", s.cfg.File), zap.Int("schedules", len(good)), zap.Int("invalid", len(bad)))
}

// round is one pass of the leader: refresh the schedules, fire what is due.
func (s *Scheduler) round(ctx context.Context) {
	if !s.mirrored && s.cfg.File != "" {
		if err := s.store.mirrorFile(ctx, s.fileScheds); err != nil {
			s.log.Warn("could not publish the file's schedules", zap.Error(err))
		} else {
			s.mirrored = true
		}
	}
	if time.Since(s.refreshedAt) >= refreshInterval {
		if err := s.refreshAPI(ctx); err != nil {
			s.log.Warn("could not read the API's schedules", zap.Error(err))
		} else {
			s.refreshedAt = time.Now()
		}
	}
	fileIDs := map[string]bool{}
	for _, c := range s.fileScheds {
		fileIDs[c.ID] = true
		if !s.fire(ctx, c) {
			return
		}
	}
	for _, c := range s.apiScheds {
		if fileIDs[c.ID] {
			s.warnOnce(c.ID, "an API schedule has the id of a file schedule; the file's runs")
			continue
		}
		if !s.fire(ctx, c) {
			return
		}
	}
}

// refreshAPI re-reads the API's schedules, validating each payload again
// (an account may have been removed since).
func (s *Scheduler) refreshAPI(ctx context.Context) error {
	raw, err := s.rdb.HGetAll(ctx, apiSchedulesKey).Result()
	if err != nil {
		return err
	}
	var out []*compiled
	for id, js := range raw {
		var sc Schedule
		c, err := func() (*compiled, error) {
			if err := json.Unmarshal([]byte(js), &sc); err != nil {
				return nil, err
			}
			return compile(sc, SourceAPI, s.rules())
		}()
		if err != nil {
			s.warnOnce(id, "invalid API schedule skipped: "+err.Error())
			continue
		}
		out = append(out, c)
	}
	for id := range s.warned {
		if _, ok := raw[id]; !ok {
			delete(s.warned, id) // deleted since: forget it
		}
	}
	s.apiScheds = out
	clear(s.due)
	s.forgetSeries()
	s.forgetRemoved()
	s.metrics.schedules.WithLabelValues(SourceAPI).Set(float64(len(out)))
	return nil
}

// forgetRemoved drops what awaiting holds for schedules that are gone.
func (s *Scheduler) forgetRemoved() {
	ids := map[string]bool{}
	for _, c := range s.fileScheds {
		ids[c.ID] = true
	}
	for _, c := range s.apiScheds {
		ids[c.ID] = true
	}
	for id := range s.awaiting {
		if !ids[id] {
			delete(s.awaiting, id)
		}
	}
}

func (s *Scheduler) warnOnce(id, problem string) {
	if s.warned[id] == problem {
		return
	}
	s.warned[id] = problem
	s.log.Error(problem, zap.String("schedule", fmt.Sprintf("%.128s", id)))
}

// rules are the rules the scheduler judges schedules by.
func (s *Scheduler) rules() rules {
	return rules{checker: s.ops, minInterval: s.cfg.MinInterval}
}

// forgetSeries removes the metric series of schedules that are no longer
// known (deleted from the API or the file).
func (s *Scheduler) forgetSeries() {
	known := map[string]bool{}
	for _, c := range s.fileScheds {
		known[c.ID] = true
	}
	for _, c := range s.apiScheds {
		known[c.ID] = true
	}
	for id := range s.series {
		if !known[id] {
			s.dropSeries(id)
		}
	}
}

// dropSeries removes the metric series of schedule id.
func (s *Scheduler) dropSeries(id string) {
	s.metrics.ticks.DeleteLabelValues(id)
	s.metrics.failed.DeleteLabelValues(id)
	delete(s.series, id)
}

// recordScript advances a schedule's state to a fired tick, only for the
// lease holder and only forwards; it ends the schedule at max_runs.
// Returns 1 recorded, 2 recorded and ended, 0 already recorded, -1 not the
// leader.
var recordScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = tonumber(redis.call('HGET', KEYS[2], 'last_tick') or '0')
if tonumber(ARGV[2]) <= last then return 0 end
local runs = redis.call('HINCRBY', KEYS[2], 'runs', 1)
redis.call('HSET', KEYS[2], 'last_tick', ARGV[2], 'last_run_at', ARGV[3], 'last_task_id', ARGV[4])
local max = tonumber(ARGV[5])
if max > 0 and runs >= max and redis.call('HGET', KEYS[2], 'ended') ~= '1' then
  redis.call('HSET', KEYS[2], 'ended', '1', 'ended_reason', 'max_runs', 'ended_at', ARGV[3])
  return 2
end
return 1`)

// endScript ends a schedule for the reason ARGV[2] at ARGV[3] (Unix
// seconds), recording the order status ARGV[4] when not empty, only for
// the lease holder. Returns 1 when it ended it, 0 when it had ended
// already, -1 not the leader.
var endScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[2], 'ended') == '1' then return 0 end
redis.call('HSET', KEYS[2], 'ended', '1', 'ended_reason', ARGV[2], 'ended_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'order_status', ARGV[4]) end
return 1`)

// intentScript names the task of the tick an until_validated schedule is
// about to enqueue, before it is enqueued, so that a leader taking over
// after a crash in between waits for that task too. Only for the lease
// holder: 1 done, -1 not the leader.
var intentScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[2], 'last_task_id', ARGV[2])
return 1`)

// fire enqueues the due ticks of one schedule. It returns false when the
// leadership was lost (the round stops).
func (s *Scheduler) fire(ctx context.Context, c *compiled) bool {
	key := stateKey(c.ID)
	now := time.Now()
	if due, ok := s.due[c]; ok && now.Before(due) {
		return true // nothing due: no need to ask Redis
	}
	state, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return true // Redis trouble: try again next round
	}
	if state["ended"] == "1" {
		if s.series[c.ID] {
			s.dropSeries(c.ID)
		}
		return true
	}
	if state["since"] == "" { // first seen: ticks count from now
		if err := s.rdb.HSetNX(ctx, key, "since", now.Unix()).Err(); err != nil {
			return true
		}
		state["since"] = strconv.FormatInt(now.Unix(), 10)
	}
	if c.untilValidated() {
		switch s.settle(ctx, c, state, now) {
		case settleWait, settleEnded:
			return true
		case settleLost:
			return false
		}
	}
	runs, _ := strconv.Atoi(state["runs"])
	base := unixField(state, "last_tick")
	if base.IsZero() {
		base = unixField(state, "since")
	}
	if oldest := now.Add(-s.cfg.CatchUp); base.Before(oldest) {
		base = oldest // ticks older than CatchUp are skipped
	}
	last := base // the latest tick handled
	for tick, n := c.next(base), 0; !tick.After(now) && n < maxFiresPerRound; tick, n = c.next(tick), n+1 {
		if c.Until != nil && tick.After(*c.Until) {
			break
		}
		if c.MaxRuns > 0 && runs >= c.MaxRuns {
			break
		}
		if c.untilValidated() && s.laterTickDue(c, tick, now, n) {
			continue // one task at a time: only the latest due tick fires
		}
		taskID := fmt.Sprintf("sched:%s:%d", c.ID, tick.Unix())
		if c.untilValidated() {
			res, err := intentScript.Run(ctx, s.rdb, []string{leaderKey, key}, s.lease.Token(), taskID).Int()
			switch {
			case err != nil:
				s.log.Warn("could not record the tick about to be enqueued; trying again", zap.String("schedule", c.ID), zap.Error(err))
				return true
			case res < 0:
				s.lostLeadership(c.ID)
				return false
			}
		}
		if !s.enqueue(ctx, c, taskID, tick) {
			return true
		}
		res, err := recordScript.Run(ctx, s.rdb, []string{leaderKey, key}, s.lease.Token(), tick.Unix(), time.Now().Unix(),
			taskID, c.MaxRuns).Int()
		switch {
		case err != nil:
			s.log.Warn("could not record a fired tick; it is recognised by its task id next round", zap.String("schedule", c.ID), zap.Error(err))
			return true
		case res < 0:
			s.lostLeadership(c.ID)
			return false
		case res == 2:
			runs++
			s.recordRun(ctx, c, taskID, time.Now())
			s.log.Info("schedule ended", zap.String("schedule", c.ID), zap.String("reason", EndedMaxRuns), zap.Int("runs", runs))
		case res == 1:
			runs++
			s.recordRun(ctx, c, taskID, time.Now())
		}
		last = tick
		if c.untilValidated() {
			s.awaiting[c.ID] = &awaiting{taskID: taskID, next: now.Add(firstLook), every: 2 * firstLook}
			break
		}
	}
	s.due[c] = c.next(last)
	if a := s.awaiting[c.ID]; a != nil && !a.settled && a.next.Before(s.due[c]) {
		s.due[c] = a.next // look at the tick's task before the next tick
	}
	if c.Until != nil && c.next(maxTime(base, unixField(state, "last_tick"))).After(*c.Until) ||
		c.MaxRuns > 0 && runs >= c.MaxRuns {
		reason := EndedUntil
		if c.MaxRuns > 0 && runs >= c.MaxRuns {
			reason = EndedMaxRuns
		}
		if res, err := endScript.Run(ctx, s.rdb, []string{leaderKey, key}, s.lease.Token(), reason, time.Now().Unix(), "").Int(); err == nil && res == 1 {
			s.log.Info("schedule ended", zap.String("schedule", c.ID), zap.String("reason", reason), zap.Int("runs", runs))
		}
	}
	return true
}

// lostLeadership notes that a fenced write found another leader.
func (s *Scheduler) lostLeadership(id string) {
	s.leader = false
	clear(s.due)
	clear(s.awaiting)
	s.metrics.setLeader(false)
	s.log.Warn("lost the scheduler leadership while firing", zap.String("schedule", id))
}

// laterTickDue reports whether a tick after tick (the n-th of this round)
// is due by now and may still fire.
func (s *Scheduler) laterTickDue(c *compiled, tick, now time.Time, n int) bool {
	next := c.next(tick)
	return !next.After(now) && n+1 < maxFiresPerRound && (c.Until == nil || !next.After(*c.Until))
}

// settle verdicts.
type settleVerdict int

const (
	settleGo    settleVerdict = iota // no task outstanding: due ticks may fire
	settleWait                       // the last tick's task is outstanding (or cannot be looked at now)
	settleEnded                      // its outcome ended the schedule
	settleLost                       // the leadership was lost
)

// settle looks at the task of an until_validated schedule's last tick,
// state's last_task_id (named before the task is enqueued, see
// intentScript). While it is pending, scheduled, active or in retry (parked
// included) no tick fires; it is looked at again after a pause that doubles
// up to lastLook. Completed with the outcome not_pending, it ends the
// schedule (reason validated, DigiCert's order status kept) with one log
// line. Completed otherwise, dead-lettered, or gone (its result expired,
// or its enqueue never happened), it is settled and the next due tick
// fires: that tick reads the order's status again, so at worst it costs
// one validation read, never an email to a validated order.
func (s *Scheduler) settle(ctx context.Context, c *compiled, state map[string]string, now time.Time) settleVerdict {
	taskID := state["last_task_id"]
	if taskID == "" {
		return settleGo
	}
	a := s.awaiting[c.ID]
	if a == nil || a.taskID != taskID {
		a = &awaiting{taskID: taskID, every: firstLook}
		s.awaiting[c.ID] = a
	}
	switch {
	case a.settled:
		return settleGo
	case now.Before(a.next):
		s.due[c] = a.next
		return settleWait
	}
	st, err := s.ops.TaskInQueue(ctx, c.Queue, taskID)
	switch {
	case errors.Is(err, ops.ErrNotFound):
		a.settled = true
		return settleGo
	case err != nil:
		s.log.Warn("could not look at the last tick's task; trying again", zap.String("schedule", c.ID),
			zap.String("task_id", taskID), zap.Error(err))
		return settleWait
	}
	switch st.State {
	case asynq.TaskStateCompleted.String():
		res, err := taskresult.Decode(st.Result)
		if err != nil || res.Outcome != taskresult.NotPending {
			a.settled = true
			return settleGo
		}
		return s.endValidated(ctx, c, taskID, taskresult.CleanOrderStatus(res.OrderStatus), state)
	case asynq.TaskStateArchived.String():
		a.settled = true
		s.log.Info("the last tick's task was dead-lettered; the next tick tries again", zap.String("schedule", c.ID),
			zap.String("task_id", taskID))
		return settleGo
	}
	a.next, a.every = now.Add(a.every), min(2*a.every, lastLook)
	s.due[c] = a.next
	return settleWait
}

// endValidated ends an until_validated schedule whose last tick found its
// order validated.
func (s *Scheduler) endValidated(ctx context.Context, c *compiled, taskID, orderStatus string, state map[string]string) settleVerdict {
	res, err := endScript.Run(ctx, s.rdb, []string{leaderKey, stateKey(c.ID)}, s.lease.Token(), EndedValidated, time.Now().Unix(), orderStatus).Int()
	switch {
	case err != nil:
		s.log.Warn("could not end a validated schedule; trying again", zap.String("schedule", c.ID), zap.Error(err))
		return settleWait
	case res < 0:
		s.lostLeadership(c.ID)
		return settleLost
	case res == 1:
		runs, _ := strconv.Atoi(state["runs"])
		s.log.Info("schedule ended: the order no longer waits for validation by email", zap.String("schedule", c.ID),
			zap.String("reason", EndedValidated), zap.String("order_status", orderStatus), zap.String("task_id", taskID),
			zap.Int("runs", runs))
	}
	delete(s.awaiting, c.ID)
	return settleEnded
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// enqueue enqueues one tick's task; true when it is in the queue (now or
// from an earlier leader).
func (s *Scheduler) enqueue(ctx context.Context, c *compiled, taskID string, tick time.Time) bool {
	p, err := c.tickPayload()
	if err != nil {
		s.warnOnce(c.ID, "schedule payload no longer valid: "+err.Error())
		return false
	}
	opts := []asynq.Option{asynq.TaskID(taskID), asynq.Queue(c.Queue), asynq.MaxRetry(s.cfg.MaxRetry), asynq.Retention(s.cfg.Retention)}
	task, err := tasks.NewTask(p, opts...)
	if err == nil {
		_, err = s.client.EnqueueContext(ctx, task)
	}
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		s.log.Info("tick already enqueued by an earlier leader", zap.String("schedule", c.ID), zap.String("task_id", taskID))
		return true
	case err != nil:
		s.series[c.ID] = true
		s.metrics.failed.WithLabelValues(c.ID).Inc()
		s.log.Warn("could not enqueue a tick; trying again", zap.String("schedule", c.ID), zap.String("task_id", taskID), zap.Error(err))
		return false
	}
	s.series[c.ID] = true
	s.metrics.ticks.WithLabelValues(c.ID).Inc()
	s.log.Info("tick enqueued", zap.String("schedule", c.ID), zap.String("task_id", taskID), zap.String("task_type", c.Type),
		zap.String("queue", c.Queue), zap.Time("tick", tick))
	return true
}

// addrString is a listen address for logs; "none" without an admin server.
func addrString(a net.Addr) string {
	if a == nil {
		return "none"
	}
	return a.String()
}
