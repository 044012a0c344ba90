package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/schedule"
)

// reloadFile takes in the schedules file's version New read, or else looks
// at the file again (only when it changed; see fileReader.look).
func (s *Scheduler) reloadFile() {
	v := s.firstFile
	s.firstFile = nil
	if v == nil {
		v = s.file.look()
	}
	if v != nil {
		s.takeFile(v)
	}
}

// takeFile takes in a version of the schedules file. Invalid entries are
// reported once per version of the file; a file that cannot be read or
// parsed keeps the last good version.
func (s *Scheduler) takeFile(v *fileVersion) {
	switch {
	case v.err != nil && v.parse:
		s.log.Error("cannot parse the schedules file; keeping its last good version", zap.String("file", s.cfg.File), zap.Error(v.err))
		return
	case v.err != nil:
		s.log.Error("cannot read the schedules file; keeping its last good version", zap.String("file", s.cfg.File), zap.Error(v.err))
		return
	}
	for _, e := range v.bad {
		s.log.Error("invalid schedule skipped", zap.String("file", s.cfg.File), zap.String("schedule", e.ID),
			zap.String("position", fmt.Sprintf("schedules[%d]", e.Index)), zap.Error(e.Err))
	}
	s.fileScheds, s.mirrored = v.good, false
	s.changed()
	s.metrics.schedules.WithLabelValues(schedule.SourceFile).Set(float64(len(v.good)))
	s.log.Info("schedules file loaded", zap.String("file", s.cfg.File), zap.Int("schedules", len(v.good)), zap.Int("invalid", len(v.bad)))
}

// publishTrouble and readTrouble are the leader's failures to publish the
// file's schedules and to read the API's, which it tries again at each
// round (WRONGTYPE, NOPERM: see schedule's errors, which name the keys).
var (
	publishTrouble = trouble{msg: "could not publish the file's schedules",
		cleared: "published the file's schedules after failed tries"}
	readTrouble = trouble{msg: "could not read the API's schedules",
		cleared: "read the API's schedules after failed tries"}
)

// round is one pass of the leader: refresh the schedules, fire what is due.
// The states of the schedules that need a look are read in one round trip;
// a round with nothing due reads none. The lease is renewed while the round
// runs (keepLeading), however long it takes.
func (s *Scheduler) round(ctx context.Context) {
	r := s.keepLeading()
	defer s.stopKeeping(r)
	if !s.mirrored {
		err := s.publishFile(ctx)
		if !errors.Is(err, schedule.ErrNotLeader) { // lead notices at its next renewal
			s.publishing.note(s.log, err, zap.String("file", s.cfg.File))
		}
		if err == nil {
			// Publishing may have given file schedules states of their own:
			// what was known of any state is read again.
			s.mirrored = true
			clear(s.due)
			clear(s.states)
		}
	}
	if time.Since(s.refreshedAt) >= refreshInterval {
		err := s.refreshAPI(ctx)
		s.reading.note(s.log, err)
		if err == nil {
			s.refreshedAt = time.Now()
		}
	}
	now := time.Now()
	s.dropEndedSeries(now)
	s.skipCounted = 0
	var look []*schedule.Compiled
	fileIDs := map[string]bool{}
	for _, c := range s.fileScheds {
		fileIDs[c.ID] = true
		// Not before they are published: publishing gives each a state of
		// its own, not that of an API schedule of the same id.
		if s.mirrored && s.needsLook(c, now) {
			look = append(look, c)
		}
	}
	for _, c := range s.apiScheds {
		if fileIDs[c.ID] {
			s.warnOnce(c.ID, "an API schedule has the id of a file schedule: only the file's fires, with a state of its own; "+
				"remove the API's (certmail schedule rm) or give the id up in the file")
			continue
		}
		if s.needsLook(c, now) {
			look = append(look, c)
		}
	}
	if len(look) == 0 {
		return
	}
	ids := make([]string, len(look))
	for i, c := range look {
		ids[i] = c.ID
	}
	states, err := s.store.States(ctx, ids)
	if err != nil {
		return // Redis trouble: try again next round
	}
	for i, c := range look {
		if r.gone.Load() {
			return // another replica leads: lead says so before the next round
		}
		if !s.fireWith(ctx, c, states[i]) {
			return
		}
	}
}

// publishFile publishes the file's schedules, so that listings show them:
// those of the file, or none without a file, so that the schedules a leader
// with a file published stop showing as active and holding their ids (see
// schedule.Store.WithdrawFile). Each leader publishes its own: replicas
// with another file, or none, flap at each change of leader, with a WARN
// line each time when one has no file, and from the second change on when
// their files differ (schedule.Store.MirrorFile compares the version each
// publishes with the one the last replaced; a replica's lease token only
// tells its own edits apart).
func (s *Scheduler) publishFile(ctx context.Context) error {
	if s.cfg.File == "" {
		return s.store.WithdrawFile(ctx, s.lease)
	}
	return s.store.MirrorFile(ctx, s.lease, s.fileScheds)
}

// refreshAPI re-reads the API's schedules. Those whose JSON changed are
// validated again (an account may have been removed since; see
// schedule.Store.APISchedules); when a schedule was added or deleted since
// the last refresh (schedule.Store.Changes), the leader forgets what it
// knew of every schedule's state, which such a change may have cleared.
func (s *Scheduler) refreshAPI(ctx context.Context) error {
	changes, err := s.store.Changes(ctx)
	if err != nil {
		return err
	}
	good, bad, err := s.store.APISchedules(ctx)
	if err != nil {
		return err
	}
	for id, err := range bad {
		s.warnOnce(id, "invalid API schedule skipped: "+err.Error())
	}
	stored := map[string]bool{}
	for _, c := range good {
		stored[c.ID] = true
	}
	for id := range s.warned {
		if _, invalid := bad[id]; !invalid && !stored[id] {
			delete(s.warned, id) // deleted since: forget it
		}
	}
	if changes != s.changes {
		clear(s.due)
		clear(s.states)
		s.changes = changes
	}
	s.apiScheds = good
	s.changed()
	s.metrics.schedules.WithLabelValues(schedule.SourceAPI).Set(float64(len(good)))
	return nil
}

// changed forgets what the leader knew of schedules that changed or are
// gone: when each is due and its state (kept by the *schedule.Compiled,
// which is new when its definition changed), the metric series, awaited
// tasks, retries and notes of the ids that are gone. What it knew of the others
// stays, so that rounds do not read their state again.
func (s *Scheduler) changed() {
	known := map[string]bool{}
	live := map[*schedule.Compiled]bool{}
	for _, c := range s.fileScheds {
		known[c.ID], live[c] = true, true
	}
	for _, c := range s.apiScheds {
		known[c.ID], live[c] = true, true
	}
	maps.DeleteFunc(s.due, func(c *schedule.Compiled, _ time.Time) bool { return !live[c] })
	maps.DeleteFunc(s.states, func(c *schedule.Compiled, _ schedule.State) bool { return !live[c] })
	for id := range s.series {
		if !known[id] {
			s.dropSeries(id)
		}
	}
	maps.DeleteFunc(s.awaiting, func(id string, _ *awaiting) bool { return !known[id] })
	maps.DeleteFunc(s.retrying, func(id string, _ *retrying) bool { return !known[id] })
	s.notes.keep(known)
}

func (s *Scheduler) warnOnce(id, problem string) {
	if s.warned[id] == problem {
		return
	}
	s.warned[id] = problem
	s.log.Error(problem, zap.String("schedule", fmt.Sprintf("%.128s", id)))
}

// keepEndedSeries is how long the metric series of an ended schedule stay:
// the window of the alert CertmailSchedulerTicksSkipped, so that scrapes
// see the ticks a schedule fired or skipped as it ended (the skipped ticks
// of a schedule whose last runs all fell due in an outage end it at once)
// and the alert lasts as for a schedule that goes on.
const keepEndedSeries = 15 * time.Minute

// endedSeries notes at now that schedule id ended: its series, if any, are
// removed keepEndedSeries later (see dropEndedSeries).
func (s *Scheduler) endedSeries(id string, now time.Time) {
	if _, noted := s.dropAt[id]; s.series[id] && !noted {
		s.dropAt[id] = now.Add(keepEndedSeries)
	}
}

// dropEndedSeries removes the series of the schedules that ended
// keepEndedSeries or longer before now.
func (s *Scheduler) dropEndedSeries(now time.Time) {
	for id, at := range s.dropAt {
		if !now.Before(at) {
			s.dropSeries(id)
		}
	}
}

// dropSeries removes the metric series of schedule id.
func (s *Scheduler) dropSeries(id string) {
	s.metrics.ticks.DeleteLabelValues(id)
	s.metrics.failed.DeleteLabelValues(id)
	s.metrics.skipped.DeleteLabelValues(id)
	delete(s.series, id)
	delete(s.dropAt, id)
}
