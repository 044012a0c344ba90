package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/schedule"
)

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
	good, bad, err := schedule.ParseFile(data, s.store.Rules())
	if err != nil {
		s.log.Error("cannot parse the schedules file; keeping its last good version", zap.String("file", s.cfg.File), zap.Error(err))
		return
	}
	for _, e := range bad {
		s.log.Error("invalid schedule skipped", zap.String("file", s.cfg.File), zap.String("schedule", e.ID),
			zap.String("position", fmt.Sprintf("schedules[%d]", e.Index)), zap.Error(e.Err))
	}
	s.fileScheds, s.mirrored = good, false
	s.changed()
	s.metrics.schedules.WithLabelValues(schedule.SourceFile).Set(float64(len(good)))
	s.log.Info("schedules file loaded", zap.String("file", s.cfg.File), zap.Int("schedules", len(good)), zap.Int("invalid", len(bad)))
}

// round is one pass of the leader: refresh the schedules, fire what is due.
func (s *Scheduler) round(ctx context.Context) {
	if !s.mirrored && s.cfg.File != "" {
		if err := s.store.MirrorFile(ctx, s.fileScheds); err != nil {
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
		// Not before they are published: publishing gives each a state of
		// its own, not that of an API schedule of the same id.
		if s.mirrored && !s.fire(ctx, c) {
			return
		}
	}
	for _, c := range s.apiScheds {
		if fileIDs[c.ID] {
			s.warnOnce(c.ID, "an API schedule has the id of a file schedule: only the file's fires, with a state of its own; "+
				"remove the API's (certmail schedule rm) or give the id up in the file")
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
	s.apiScheds = good
	s.changed()
	s.metrics.schedules.WithLabelValues(schedule.SourceAPI).Set(float64(len(good)))
	return nil
}

// changed forgets what the leader knew of schedules that may have changed
// or gone: when each is due, the metric series, awaited tasks and retries
// of those that are gone.
func (s *Scheduler) changed() {
	clear(s.due)
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
	for id := range s.awaiting {
		if !known[id] {
			delete(s.awaiting, id)
		}
	}
	for id := range s.retrying {
		if !known[id] {
			delete(s.retrying, id)
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

// dropSeries removes the metric series of schedule id.
func (s *Scheduler) dropSeries(id string) {
	s.metrics.ticks.DeleteLabelValues(id)
	s.metrics.failed.DeleteLabelValues(id)
	delete(s.series, id)
}
