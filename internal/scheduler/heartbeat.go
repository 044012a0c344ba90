package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/asynqsched"
	"github.com/certmail/certmail/internal/schedule"
)

// DefaultHeartbeat is how often the leader rewrites the dashboard's entries
// (Config.Heartbeat). They expire after two heartbeats.
const DefaultHeartbeat = 5 * time.Second

// The dashboard's Schedulers tab lists what asynq.Inspector.SchedulerEntries
// reads; the leader writes it (see package asynqsched for the format).
const (
	// dashboardID names the one entry list of whichever replica leads, so
	// that a failover replaces the list instead of showing every schedule
	// twice until the dead leader's expires.
	dashboardID = "certmail"
	// maxEntries caps the list of running schedules (the ended ones are
	// not listed); those beyond it, by id, are left out of the dashboard
	// (and the leader logs how many), not out of the scheduling.
	maxEntries = 1000
)

// heartbeat is the state of the leader's dashboard entries.
type heartbeat struct {
	at      time.Time // last write
	soon    bool      // write at the end of this round (a tick was recorded)
	written bool      // this replica's entries may be in Redis
	failing bool      // the last write failed (logged once)
	leftOut int       // schedules left out at the last write (logged on change)
	led     bool      // this replica led at the last beat
}

var errNotLeader = errors.New("not the leader")

// beat writes the dashboard's entries when the leader's heartbeat is due or
// a tick was just recorded, and clears them, and the metrics only a leader
// keeps (forgetLeading), once this replica no longer leads.
func (s *Scheduler) beat(ctx context.Context, now time.Time) {
	switch {
	case s.leader:
		s.hb.led = true
	case s.hb.led:
		s.forgetLeading()
		s.hb.led = false
	}
	switch {
	case s.leader && (s.hb.soon || now.Sub(s.hb.at) >= s.cfg.Heartbeat):
		s.writeEntries(ctx, now)
	case !s.leader && s.hb.written:
		s.clearEntries(ctx)
	}
}

// writeEntries replaces the dashboard's entries with the schedules this
// leader fires, only while it holds the lease.
func (s *Scheduler) writeEntries(ctx context.Context, now time.Time) {
	entries, leftOut, err := s.entries(ctx, now)
	if err == nil {
		err = s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			holder, err := tx.Get(ctx, leaderKey).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if holder != s.lease.Token() {
				return errNotLeader
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				asynqsched.WriteEntries(ctx, p, dashboardID, entries, now, 2*s.cfg.Heartbeat)
				return nil
			})
			return err
		}, leaderKey)
	}
	switch {
	case errors.Is(err, errNotLeader):
		return // lead notices at its next renewal
	case err != nil:
		// Tried again next round; the entries expire meanwhile if this lasts.
		if !s.hb.failing && ctx.Err() == nil {
			s.log.Warn("could not write the schedules for the dashboard", zap.Error(err))
		}
		s.hb.failing = true
		return
	}
	s.hb.at, s.hb.soon, s.hb.written, s.hb.failing = now, false, true, false
	if leftOut != s.hb.leftOut {
		if leftOut > 0 {
			s.log.Warn("the dashboard lists only the first schedules by id", zap.Int("listed", len(entries)),
				zap.Int("left_out", leftOut))
		}
		s.hb.leftOut = leftOut
	}
}

// clearEntries removes the dashboard's entries unless another replica
// leads now (its entries replace them).
func (s *Scheduler) clearEntries(ctx context.Context) {
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		holder, err := tx.Get(ctx, leaderKey).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if holder != "" && holder != s.lease.Token() {
			return nil
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			asynqsched.ClearEntries(ctx, p, dashboardID)
			return nil
		})
		return err
	}, leaderKey)
	if err != nil && ctx.Err() == nil {
		// They expire by themselves within two heartbeats.
		s.log.Warn("could not clear the schedules from the dashboard", zap.Error(err))
	}
	s.hb.written = false
}

// entries lists the schedules the leader fires, sorted by id, as the
// dashboard shows them: without the ended ones, the first maxEntries of
// those that run; leftOut counts the running ones beyond. The ended ones
// are dropped before the cap, so that a store full of ended schedules
// does not hide those that run.
func (s *Scheduler) entries(ctx context.Context, now time.Time) (out []asynqsched.Entry, leftOut int, err error) {
	scheds := s.firing()
	if err := s.readStates(ctx, scheds); err != nil {
		return nil, 0, err
	}
	for _, c := range scheds {
		state := s.states[c]
		if state.Ended {
			continue
		}
		next := c.Next(c.TickBase(state, now, s.cfg.CatchUp)) // the next tick, as fire computes it
		if c.Until != nil && next.After(*c.Until) {
			continue // over; fire marks it ended
		}
		if len(out) == maxEntries {
			leftOut++
			continue
		}
		out = append(out, asynqsched.Entry{ID: c.ID, Spec: c.Cron, Type: c.Type, Payload: entryPayload(c),
			Options: s.entryOptions(c), Next: next, Prev: state.LastRunAt})
	}
	return out, leftOut, nil
}

// readStates reads, in one round trip, the states of the schedules of
// scheds the leader does not know (see Scheduler.states).
func (s *Scheduler) readStates(ctx context.Context, scheds []*schedule.Compiled) error {
	var unknown []*schedule.Compiled
	var ids []string
	for _, c := range scheds {
		if _, ok := s.states[c]; !ok {
			unknown = append(unknown, c)
			ids = append(ids, c.ID)
		}
	}
	states, err := s.store.States(ctx, ids)
	if err != nil {
		return err
	}
	for i, c := range unknown {
		s.states[c] = states[i]
	}
	return nil
}

// firing returns the schedules the leader fires (a file schedule hides an
// API one with its id, as in round), sorted by id.
func (s *Scheduler) firing() []*schedule.Compiled {
	out := make([]*schedule.Compiled, 0, len(s.fileScheds)+len(s.apiScheds))
	inFile := map[string]bool{}
	for _, c := range s.fileScheds {
		inFile[c.ID] = true
		out = append(out, c)
	}
	for _, c := range s.apiScheds {
		if !inFile[c.ID] {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// entryPayload is the payload the dashboard shows for a schedule: the one
// its ticks carry (only_if_pending added for an until_validated schedule),
// or its own as written when that cannot be had.
func entryPayload(c *schedule.Compiled) []byte {
	if !c.EndsWhenValidated() {
		return c.Payload
	}
	p, err := c.TickPayload()
	if err != nil {
		return c.Payload
	}
	b, err := json.Marshal(p)
	if err != nil {
		return c.Payload
	}
	return b
}

// entryOptions are the options the dashboard shows for a schedule: the
// queue its tasks go to and their retries, as enqueue sets them. The others
// its tasks get, the same for every certmail task (timeout, retention),
// are left out: the
// table is wider than the dashboard's page, and the widest column would
// push the next and previous runs out of sight.
func (s *Scheduler) entryOptions(c *schedule.Compiled) []asynq.Option {
	return []asynq.Option{asynq.Queue(c.Queue), asynq.MaxRetry(s.ops.MaxRetry())}
}
