package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// outcome is how a step of firing ended.
type outcome int

const (
	goOn    outcome = iota // done: go on
	retry                  // a write failed or the tick's task is outstanding: look again next round
	stopped                // the schedule ended
	lost                   // the leadership was lost: the round stops
)

// tickTimeout bounds the writes of one tick, which a stopping replica
// finishes (see fireTick), or two thirds of the lease if that is shorter:
// the writes are fenced by the lease.
const tickTimeout = 5 * time.Second

// never is when an ended schedule is due: it is looked at again only when
// its definition changes (a new *schedule.Compiled) or the store changes
// (see refreshAPI).
var never = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// needsLook reports whether c may have something due at now: it is not
// known to have nothing due before a later time, and is not waiting to be
// tried again after a failed write.
func (s *Scheduler) needsLook(c *schedule.Compiled, now time.Time) bool {
	if due, ok := s.due[c]; ok && now.Before(due) {
		return false // nothing due: no need to ask Redis
	}
	if r := s.retrying[c.ID]; r != nil && now.Before(r.at) {
		return false // a write failed: tried again after a pause
	}
	return true
}

// fire enqueues the due ticks of one schedule, reading its state first
// when it needs a look. It returns false when the leadership was lost
// (the round stops).
func (s *Scheduler) fire(ctx context.Context, c *schedule.Compiled) bool {
	if !s.needsLook(c, time.Now()) {
		return true
	}
	state, err := s.store.State(ctx, c.ID)
	if err != nil {
		return true // Redis trouble: try again next round
	}
	return s.fireWith(ctx, c, state)
}

// fireWith enqueues the due ticks of one schedule that needs a look, whose
// state is state. It returns false when the leadership was lost (the round
// stops).
func (s *Scheduler) fireWith(ctx context.Context, c *schedule.Compiled, state schedule.State) bool {
	delete(s.states, c) // firing may change it: the dashboard reads it again
	out := s.fireSchedule(ctx, c, state, time.Now())
	if r := s.retrying[c.ID]; r != nil && (out == goOn || out == stopped) {
		s.resolve(c.ID, r) // everything due was done
	}
	return out != lost
}

// fireSchedule is fire's work once the schedule needs a look, given its
// state: goOn when everything due was done (the schedule may have ended),
// retry when it is to be tried again, stopped when it ended now, lost when
// the leadership was lost.
func (s *Scheduler) fireSchedule(ctx context.Context, c *schedule.Compiled, state schedule.State, now time.Time) outcome {
	if state.Ended {
		s.endedSeries(c.ID, now)
		s.notes.forget(c.ID)
		s.due[c] = never
		return goOn
	}
	// Not ended (or edited since it ended): its series go on.
	delete(s.dropAt, c.ID)
	if state.Since.IsZero() { // first seen: ticks count from now
		err := s.store.Begin(ctx, s.lease, c.ID, now)
		if out := s.written(c, time.Time{}, err, stepBegin); out != goOn {
			return out
		}
		state.Since = time.Unix(now.Unix(), 0)
	}
	if c.EndsWhenValidated() {
		if out := s.settle(ctx, c, state, now); out != goOn {
			return out
		}
	}
	base := c.TickBase(state, now, s.cfg.CatchUp) // ticks older than CatchUp are skipped
	s.noteSkipped(c, state, base)
	last, runs, out := s.fireDue(ctx, c, base, state.Runs, now)
	if out != goOn {
		return out
	}
	s.due[c] = c.Next(last)
	if a := s.awaiting[c.ID]; a != nil && !a.settled {
		// No tick fires while the tick's task is outstanding, so the only
		// thing worth waking for is the next look at it.
		s.due[c] = a.next
	}
	s.endIfOver(ctx, c, maxTime(base, state.LastTick), runs, state.Since)
	return goOn
}

// fireDue fires the ticks of c due by now after base, as far as its until
// and max_runs allow; runs is how many it has fired before. It returns the
// latest tick handled and the runs after it. An until_validated schedule
// fires only the latest due tick, and no more until its task is settled.
func (s *Scheduler) fireDue(ctx context.Context, c *schedule.Compiled, base time.Time, runs int, now time.Time) (time.Time, int, outcome) {
	last := base // the latest tick handled
	for tick, n := c.Next(base), 0; !tick.After(now) && n < maxFiresPerRound; tick, n = c.Next(tick), n+1 {
		if ctx.Err() != nil { // stopping: no tick begins
			break
		}
		if c.Until != nil && tick.After(*c.Until) {
			break
		}
		if c.MaxRuns > 0 && runs >= c.MaxRuns {
			break
		}
		if c.EndsWhenValidated() && s.laterTickDue(c, tick, now, n) {
			continue // one task at a time: only the latest due tick fires
		}
		taskID := fmt.Sprintf("sched:%s:%d", c.ID, tick.Unix())
		recorded, out := s.fireTick(ctx, c, tick, taskID, runs)
		if out != goOn {
			return last, runs, out
		}
		if recorded {
			runs++
		}
		last = tick
		if c.EndsWhenValidated() {
			s.awaiting[c.ID] = &awaiting{taskID: taskID, next: now.Add(firstLook), every: 2 * firstLook}
			break
		}
	}
	return last, runs, goOn
}

// fireTick enqueues one tick's task as taskID and records the tick; for an
// until_validated schedule it names the task in the state first, so that a
// leader taking over after a crash in between waits for that task too.
// recorded is false when an earlier leader had recorded the tick.
func (s *Scheduler) fireTick(ctx context.Context, c *schedule.Compiled, tick time.Time, taskID string, runs int) (recorded bool, out outcome) {
	// A tick begun is finished even when this replica is stopping, so that
	// a stop leaves the schedule's runs and last task true rather than one
	// tick behind its queue until the next leader's round.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(tickTimeout, s.cfg.Lease*2/3))
	defer cancel()
	if c.EndsWhenValidated() {
		err := s.store.NoteTask(ctx, s.lease, c.ID, taskID)
		if out := s.written(c, tick, err, stepNote); out != goOn {
			return false, out
		}
	}
	if out := s.enqueue(ctx, c, taskID, tick); out != goOn {
		return false, out
	}
	recorded, ended, err := s.store.RecordTick(ctx, s.lease, c.ID, tick, time.Now(), taskID, c.MaxRuns)
	if out := s.written(c, tick, err, stepRecord); out != goOn {
		return false, out
	}
	if r := s.retrying[c.ID]; r != nil && r.tick.Equal(tick) {
		r.fired = true
	}
	if recorded {
		s.hb.soon = true // the dashboard shows the new previous run at the end of this round
	}
	if ended {
		s.notes.forget(c.ID)
		s.log.Info("schedule ended", zap.String("schedule", c.ID), zap.String("reason", schedule.EndedMaxRuns), zap.Int("runs", runs+1))
	}
	return recorded, goOn
}

// endIfOver ends c once its until is past the tick after last, or it has
// run max_runs times. since is when c's ticks began to count.
func (s *Scheduler) endIfOver(ctx context.Context, c *schedule.Compiled, last time.Time, runs int, since time.Time) {
	reason := ""
	switch {
	case c.MaxRuns > 0 && runs >= c.MaxRuns:
		reason = schedule.EndedMaxRuns
	case c.Until != nil && c.Next(last).After(*c.Until):
		reason = schedule.EndedUntil
	default:
		return
	}
	ended, err := s.store.End(ctx, s.lease, c.ID, reason, time.Now(), "")
	if err == nil && ended {
		s.notes.forget(c.ID)
	}
	switch {
	case err != nil || !ended:
	case runs == 0 && reason == schedule.EndedUntil && c.Next(since).After(*c.Until):
		// A schedule added through the store that would never fire is
		// refused; a file entry is not judged so (see schedule.ParseFile).
		s.log.Warn("schedule ended without firing: its first tick comes after its until", zap.String("schedule", c.ID),
			zap.Time("first_tick", c.Next(since)), zap.Time("until", *c.Until))
	default: // with no run too when its ticks were missed (no leader, or older than the catch-up)
		s.log.Info("schedule ended", zap.String("schedule", c.ID), zap.String("reason", reason), zap.Int("runs", runs))
	}
}

// laterTickDue reports whether a tick after tick (the n-th of this round)
// is due by now and may still fire.
func (s *Scheduler) laterTickDue(c *schedule.Compiled, tick, now time.Time, n int) bool {
	next := c.Next(tick)
	return !next.After(now) && n+1 < maxFiresPerRound && (c.Until == nil || !next.After(*c.Until))
}

// settle looks at the task of an until_validated schedule's last tick,
// state's LastTaskID (named before the task is enqueued, see fireTick).
// While it is pending, scheduled, active or in retry (parked included) no
// tick fires (retry); it is looked at again after a pause that doubles up
// to lastLook. Completed with the outcome not_pending, it ends the schedule
// (reason validated, DigiCert's order status kept) with one log line
// (stopped). Completed otherwise, dead-lettered, or gone (its result
// expired, or its enqueue never happened), it is settled and the next due
// tick fires (goOn): that tick reads the order's status again, so at worst
// it costs one validation read, never an email to a validated order.
func (s *Scheduler) settle(ctx context.Context, c *schedule.Compiled, state schedule.State, now time.Time) outcome {
	taskID := state.LastTaskID
	if taskID == "" {
		return goOn
	}
	a := s.awaiting[c.ID]
	if a == nil || a.taskID != taskID {
		a = &awaiting{taskID: taskID, every: firstLook}
		s.awaiting[c.ID] = a
	}
	switch {
	case a.settled:
		return goOn
	case now.Before(a.next):
		s.due[c] = a.next
		return retry
	}
	st, err := s.ops.TaskInQueue(ctx, c.Queue, taskID)
	switch {
	case errors.Is(err, ops.ErrNotFound):
		a.settled = true
		return goOn
	case err != nil:
		return s.failed(c, time.Time{}, stepLook, err)
	}
	switch st.State {
	case asynq.TaskStateCompleted.String():
		res, err := taskresult.Decode(st.Result)
		if err != nil || res.Outcome != taskresult.NotPending {
			a.settled = true
			return goOn
		}
		return s.endValidated(ctx, c, taskID, taskresult.CleanOrderStatus(res.OrderStatus), state.Runs)
	case asynq.TaskStateArchived.String():
		a.settled = true
		s.log.Info("the last tick's task was dead-lettered or archived by an operator; the next tick tries again", zap.String("schedule", c.ID),
			zap.String("task_id", taskID))
		return goOn
	}
	s.notes.outstanding(c.ID, now)
	if st.State == asynq.TaskStatePending.String() {
		s.checkServed(ctx, c, taskID, now)
	}
	a.next, a.every = now.Add(a.every), min(2*a.every, lastLook)
	s.due[c] = a.next
	return retry
}

// endValidated ends an until_validated schedule whose last tick found its
// order validated.
func (s *Scheduler) endValidated(ctx context.Context, c *schedule.Compiled, taskID, orderStatus string, runs int) outcome {
	ended, err := s.store.End(ctx, s.lease, c.ID, schedule.EndedValidated, time.Now(), orderStatus)
	if out := s.written(c, time.Time{}, err, stepEnd); out != goOn {
		return out
	}
	if ended {
		s.log.Info("schedule ended: the order no longer waits for validation by email", zap.String("schedule", c.ID),
			zap.String("reason", schedule.EndedValidated), zap.String("order_status", orderStatus), zap.String("task_id", taskID),
			zap.Int("runs", runs))
	}
	delete(s.awaiting, c.ID)
	s.notes.forget(c.ID)
	return stopped
}

// written says how a fenced write of c's state, step of tick (zero for a
// step before any tick), went: lost when another scheduler leads (this one
// gives up the leadership); retry when c is not in Redis, deleted since the
// leader read it or its file's mirror gone (nothing was written; the
// schedules are read and the file published again at once), or when the
// write failed otherwise (see failed); goOn when it was written.
func (s *Scheduler) written(c *schedule.Compiled, tick time.Time, err error, st step) outcome {
	switch {
	case errors.Is(err, schedule.ErrNotLeader):
		s.lostLeadership(c.ID)
		return lost
	case errors.Is(err, schedule.ErrNotFound):
		// Deleted through the API since the leader read it, or the file's
		// mirror is gone from Redis: read the API's schedules and publish
		// the file's again before the next round fires.
		s.log.Info("schedule not found in Redis as it fired; nothing recorded", zap.String("schedule", c.ID))
		s.refreshedAt, s.mirrored = time.Time{}, false
		return retry
	case err != nil:
		return s.failed(c, tick, st, err)
	}
	return goOn
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// enqueue enqueues one tick's task through ops, under taskID: goOn when it
// is in the queue (now or from an earlier leader); retry otherwise, a
// payload no longer valid reported once, a failed enqueue as failed says.
func (s *Scheduler) enqueue(ctx context.Context, c *schedule.Compiled, taskID string, tick time.Time) outcome {
	p, err := c.TickPayload()
	var payload []byte
	if err == nil {
		payload, err = json.Marshal(p)
	}
	var ve *tasks.ValidationError
	if err == nil {
		_, _, err = s.ops.Enqueue(ctx, enqueue.Request{Type: c.Type, Payload: payload, Queue: c.Queue, TaskID: taskID})
	}
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		s.log.Info("tick already enqueued by an earlier leader", zap.String("schedule", c.ID), zap.String("task_id", taskID))
		return goOn
	case errors.As(err, &ve), errors.Is(err, tasks.ErrUnknownType):
		s.warnOnce(c.ID, "schedule payload no longer valid: "+err.Error())
		return retry
	case err != nil:
		return s.failed(c, tick, stepEnqueue, err)
	}
	s.series[c.ID] = true
	s.metrics.ticks.WithLabelValues(c.ID).Inc()
	s.log.Info("tick enqueued", zap.String("schedule", c.ID), zap.String("task_id", taskID), zap.String("task_type", c.Type),
		zap.String("queue", c.Queue), zap.Time("tick", tick))
	return goOn
}

// step is a write of a schedule's firing (or the read of its last tick's
// task) that is tried again when it fails; its value is the WARN line that
// reports the failure, once per tick.
type step string

// The steps of firing.
const (
	stepBegin   step = "could not record when a schedule's ticks begin; trying again"
	stepLook    step = "could not look at the last tick's task; trying again"
	stepEnd     step = "could not end a validated schedule; trying again"
	stepNote    step = "could not record the tick about to be enqueued; trying again"
	stepEnqueue step = "could not enqueue a tick; trying again"
	stepRecord  step = "could not record a fired tick; it is recognised by its task id when tried again"
)

// beforeEnqueue reports whether st comes before the tick's task is
// enqueued: a tick failing there was not enqueued at the first try.
func (st step) beforeEnqueue() bool { return st == stepNote || st == stepEnqueue }

// retrying is a schedule whose firing failed, tried again after a pause
// that doubles from firstRetry up to maxRetry. Only the schedule waits:
// the others fire on time.
type retrying struct {
	tick   time.Time     // the tick that failed; zero for a step before any tick
	tries  int           // failed tries
	pause  time.Duration // the last pause
	at     time.Time     // the next try
	fired  bool          // the tick was enqueued and recorded since
	logged []step        // the failures reported
}

// failed notes that step st of tick (zero for a step before any tick) of c
// failed with err, and returns retry: c is tried again after a pause,
// firstRetry, then twice as long each time up to maxRetry. A tick whose
// first failure comes before its task is enqueued counts once in
// certmail_scheduler_enqueue_errors_total; each kind of failure is logged
// once per tick, with the pause.
func (s *Scheduler) failed(c *schedule.Compiled, tick time.Time, st step, err error) outcome {
	r := s.retrying[c.ID]
	newTick := !tick.IsZero()
	switch {
	case r != nil && (tick.IsZero() || r.tick.Equal(tick)):
		r.pause, newTick = min(2*r.pause, maxRetry), false
	case r != nil && r.tick.IsZero(): // a tick fails after a step before it did
		r.tick, r.pause = tick, min(2*r.pause, maxRetry)
	default: // the first failure, or one of a later tick than the one that failed
		if r != nil {
			s.resolve(c.ID, r)
		}
		r = &retrying{tick: tick, pause: firstRetry}
		s.retrying[c.ID] = r
	}
	if newTick && st.beforeEnqueue() {
		s.series[c.ID] = true
		s.metrics.failed.WithLabelValues(c.ID).Inc()
	}
	r.tries++
	r.at = time.Now().Add(r.pause)
	if !slices.Contains(r.logged, st) {
		r.logged = append(r.logged, st)
		fields := []zap.Field{zap.String("schedule", c.ID)}
		if !tick.IsZero() {
			fields = append(fields, zap.Time("tick", tick))
		}
		s.log.Warn(string(st), append(fields, zap.Duration("retry_in", r.pause), zap.Error(err))...)
	}
	return retry
}

// resolve ends the retries of schedule id, r, with one line: its tick
// fired, its state was written, or its tick was given up (no longer due:
// older than the catch-up, a later one superseded it, or the schedule
// ended).
func (s *Scheduler) resolve(id string, r *retrying) {
	delete(s.retrying, id)
	fields := []zap.Field{zap.String("schedule", id), zap.Int("failed_tries", r.tries)}
	switch {
	case r.fired:
		s.log.Info("tick fired after failed tries", append(fields, zap.Time("tick", r.tick))...)
	case r.tick.IsZero():
		s.log.Info("schedule state written after failed tries", fields...)
	default:
		s.log.Warn("tick given up after failed tries; the ticks after it fire", append(fields, zap.Time("tick", r.tick))...)
	}
}

// tickNotes is what the leader noted of ticks that did not fire as they
// fell due, so that each is reported once. It lives in memory only: a new
// leader may report again what the one before it reported.
type tickNotes struct {
	// skippedTo is, per schedule id, the last tick reported as skipped.
	skippedTo map[string]time.Time
	// outstandingAt is, per until_validated schedule id, when the leader
	// last saw its last tick's task outstanding: the ticks that fell due
	// until then were skipped by design, not lost (see noteSkipped).
	outstandingAt map[string]time.Time
	// pending is, per until_validated schedule id, its last tick's task
	// while it is pending (see checkServed).
	pending map[string]*pendingTask
	// served is the set of queues live asynq servers (workers) listed at
	// servedAt; nil before the first look.
	served    map[string]bool
	servedAt  time.Time
	inspector *asynq.Inspector
}

// pendingTask is an until_validated schedule's last tick's task, pending.
type pendingTask struct {
	taskID string
	since  time.Time // when the leader first saw it pending
	warned bool      // its queue was reported as served by no worker
}

// outstanding notes that the last tick's task of schedule id was
// outstanding at now.
func (n *tickNotes) outstanding(id string, now time.Time) {
	if n.outstandingAt == nil {
		n.outstandingAt = map[string]time.Time{}
	}
	n.outstandingAt[id] = now
}

// forget drops the notes of schedule id, deleted or ended: nothing of it
// is reported any more.
func (n *tickNotes) forget(id string) {
	delete(n.skippedTo, id)
	delete(n.outstandingAt, id)
	delete(n.pending, id)
}

// keep drops the notes of the schedule ids that known does not hold.
func (n *tickNotes) keep(known map[string]bool) {
	maps.DeleteFunc(n.skippedTo, func(id string, _ time.Time) bool { return !known[id] })
	maps.DeleteFunc(n.outstandingAt, func(id string, _ time.Time) bool { return !known[id] })
	maps.DeleteFunc(n.pending, func(id string, _ *pendingTask) bool { return !known[id] })
}

// maxSkippedCounted bounds how many skipped ticks of one schedule are
// counted one by one at a time (a week of ticks a minute apart), and
// maxSkippedPerRound how many in all in one round (the first after an
// outage, or a new leader's, may find every schedule with ticks skipped:
// counting them all would hold back the ticks due meanwhile, for minutes
// with thousands of schedules). Beyond either the count is a lower bound
// (at least 1 for each schedule), said so in the log line.
const (
	maxSkippedCounted  = 10_000
	maxSkippedPerRound = 2 * maxSkippedCounted
)

// noteSkipped reports the ticks of c that fell due after its last tick (or
// since it began, or the last skipped tick already reported) and up to
// base, which TickBase skipped as older than the catch-up window (Redis out
// of reach or no leader for longer than it): one WARN line with their count
// and the first and last of them, and certmail_scheduler_ticks_skipped_total.
// Ticks after c's until are not counted, nor those beyond the runs its
// max_runs leaves (they would not have fired), nor, for an until_validated
// schedule, those that fell due while the leader saw its last tick's task
// outstanding (they are skipped by design).
func (s *Scheduler) noteSkipped(c *schedule.Compiled, state schedule.State, base time.Time) {
	from := state.LastTick
	if from.IsZero() {
		from = state.Since
	}
	from = maxTime(from, s.notes.skippedTo[c.ID])
	if c.EndsWhenValidated() {
		from = maxTime(from, s.notes.outstandingAt[c.ID])
	}
	to := base
	if c.Until != nil && c.Until.Before(to) {
		to = *c.Until
	}
	limit := max(1, min(maxSkippedCounted, maxSkippedPerRound-s.skipCounted))
	runsLeft := false
	if c.MaxRuns > 0 && c.MaxRuns-state.Runs <= limit {
		limit, runsLeft = c.MaxRuns-state.Runs, true
	}
	if limit <= 0 {
		return // no run left: none would have fired
	}
	n, first, last, more := countTicks(c, from, to, limit)
	s.skipCounted += n
	if n == 0 {
		return
	}
	reported := last // the ticks after it up to to are not reported again
	if more {
		reported = lastTickBy(c, last, to)
	}
	if !runsLeft {
		last = reported
	}
	if s.notes.skippedTo == nil {
		s.notes.skippedTo = map[string]time.Time{}
	}
	s.notes.skippedTo[c.ID] = reported
	s.series[c.ID] = true
	s.metrics.skipped.WithLabelValues(c.ID).Add(float64(n))
	fields := []zap.Field{zap.String("schedule", c.ID), zap.Int("skipped", n), zap.Time("first_tick", first),
		zap.Time("last_tick", last), zap.Duration("catch_up", s.cfg.CatchUp)}
	if more && !runsLeft {
		fields = append(fields, zap.Bool("skipped_counted_up_to_a_bound", true))
	}
	s.log.Warn("ticks skipped: they fell due longer ago than the catch-up window (Redis out of reach or no leader meanwhile)", fields...)
}

// skippedTicks counts the ticks of c after from and at or before to, up to
// maxSkippedCounted (more is true when there are more), and returns the
// first and last of them all.
func skippedTicks(c *schedule.Compiled, from, to time.Time) (n int, first, last time.Time, more bool) {
	n, first, last, more = countTicks(c, from, to, maxSkippedCounted)
	if more {
		last = lastTickBy(c, last, to)
	}
	return n, first, last, more
}

// countTicks counts the ticks of c after from and at or before to, one by
// one up to limit (at least 1), and returns the first and last counted;
// more is true when there are more.
func countTicks(c *schedule.Compiled, from, to time.Time, limit int) (n int, first, last time.Time, more bool) {
	first = c.Next(from)
	if first.IsZero() || first.After(to) {
		return 0, time.Time{}, time.Time{}, false
	}
	for t := first; !t.IsZero() && !t.After(to); t = c.Next(t) {
		if n == limit {
			return n, first, last, true
		}
		n, last = n+1, t
	}
	return n, first, last, false
}

// lastTickBy returns the last tick of c at or before to, given a tick
// after at or before to. It looks from ever earlier points before to, a
// minute, then twice as long each time, so that it walks through few ticks
// however far after is.
func lastTickBy(c *schedule.Compiled, after, to time.Time) time.Time {
	for w := time.Minute; ; w *= 2 {
		from := to.Add(-w)
		if !from.After(after) {
			from = after
		}
		if t := c.Next(from); !t.IsZero() && !t.After(to) {
			for next := c.Next(t); !next.IsZero() && !next.After(to); next = c.Next(next) {
				t = next
			}
			return t
		}
		if from.Equal(after) {
			return after
		}
	}
}

// unservedAfter is how long an until_validated schedule's last tick's task
// stays pending before the leader asks whether any worker serves its
// queue; servedFor is how long the answer is reused, for every schedule,
// so that asking costs at most one listing of the asynq servers a minute.
const (
	unservedAfter = time.Minute
	servedFor     = time.Minute
)

// checkServed notes that taskID, the last tick's task of the
// until_validated schedule c, is pending at now. Once it has been pending
// for unservedAfter, it logs one WARN line when no live asynq server
// (worker) lists its queue: no tick of c fires until the task is settled,
// so c would stop without a word while it shows "active". One line per
// task, not per look.
func (s *Scheduler) checkServed(ctx context.Context, c *schedule.Compiled, taskID string, now time.Time) {
	if s.notes.pending == nil {
		s.notes.pending = map[string]*pendingTask{}
	}
	p := s.notes.pending[c.ID]
	if p == nil || p.taskID != taskID {
		s.notes.pending[c.ID] = &pendingTask{taskID: taskID, since: now}
		return
	}
	if p.warned || now.Sub(p.since) < unservedAfter {
		return
	}
	served, err := s.queueServed(ctx, c.Queue, now)
	if err != nil || served {
		return
	}
	p.warned = true
	s.log.Warn("the last tick's task waits in a queue no live worker serves; no tick fires until it is done, "+
		"so the schedule does not go on: run a worker that serves the queue (CERTMAIL_QUEUES), or remove the schedule",
		zap.String("schedule", c.ID), zap.String("task_id", taskID), zap.String("queue", c.Queue),
		zap.Duration("pending_for", now.Sub(p.since).Truncate(time.Second)))
}

// queueServed reports whether a live asynq server (a worker) lists queue,
// from a listing at most servedFor old.
func (s *Scheduler) queueServed(ctx context.Context, queue string, now time.Time) (bool, error) {
	if s.notes.served == nil || now.Sub(s.notes.servedAt) >= servedFor {
		if s.notes.inspector == nil {
			s.notes.inspector = asynq.NewInspectorFromRedisClient(s.rdb)
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		servers, err := s.notes.inspector.Servers() // asynq's inspector takes no context
		if err != nil {
			return false, fmt.Errorf("list the asynq servers: %w", err)
		}
		s.notes.served, s.notes.servedAt = map[string]bool{}, now
		for _, srv := range servers {
			for q, weight := range srv.Queues {
				if weight > 0 {
					s.notes.served[q] = true
				}
			}
		}
	}
	return s.notes.served[queue], nil
}
