package ops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/tasks"
)

// TaskRef names an enqueued task. State is "pending" or "scheduled" for a
// task just enqueued; for an idempotent replay it is the state the task is
// in now, as Task reports it, or StateUnknown.
type TaskRef struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue"`
	State string `json:"state"`
}

// StateUnknown is the State of a replayed TaskRef whose task no queue holds
// at the moment: deleted, its result's retention over, or not yet enqueued
// by a concurrent first request with the key.
const StateUnknown = "unknown"

// Enqueue validates req with enqueue.Check by the Service's rules and
// enqueues the task it describes, under req.TaskID when it names one and
// otherwise under an id from Config.NewTaskID, made before the task is
// sent. A request Check refuses gives Check's error (every problem in one
// bounded *tasks.ValidationError, or an error wrapping tasks.ErrUnknownType),
// and nothing is written to Redis.
//
// Redis may run the write and its answer be lost; go-redis then sends it
// again. When the retry finds the id Enqueue made taken, the first try
// stored the task, and Enqueue succeeds. When no answer comes at all, the
// error is an *EnqueueError naming the id under which the task may be
// stored. An error that says Redis stored nothing (notStored: the
// queue's registration, sent before the task, failed) is no *EnqueueError
// and says "nothing enqueued"; a refusal of the task's own write is an
// *EnqueueError, as it may be the refusal of a retry whose first try ran.
// A conflict on req.TaskID is an error wrapping asynq.ErrTaskIDConflict.
//
// With an IdempotencyKey, the first request enqueues and the key is
// remembered, in its scope (req.IdempotencyScope), for Config.IdempotencyTTL
// together with a SHA-256 of the type,
// the normalised payload and the queue (enqueue.Checked.Hash; not the time: a
// replay with another ProcessAt keeps the earlier task's). A later request
// with the same key and the same request (enqueue.Checked.SameRequest)
// enqueues nothing and returns the earlier task with existing true, in the
// state it is in now (one lookup in its queue); another request gives
// ErrIdempotencyConflict. Of concurrent requests with
// one key, exactly one enqueues. A key whose enqueue got no answer is kept
// unless Redis says the task was not stored (see settle), so that a retry
// with it does not enqueue the task a second time. A deadline on ctx bounds
// the whole call, that clean-up of the key included (see enqueueOnce).
func (s *Service) Enqueue(ctx context.Context, req enqueue.Request) (ref TaskRef, existing bool, err error) {
	c, err := s.check(req)
	if err != nil {
		return TaskRef{}, false, err
	}
	if c.IdempotencyKey == "" {
		ours := c.TaskID == ""
		if ours {
			c.TaskID = s.opts.NewTaskID()
		}
		ref, err := s.add(ctx, c, ours)
		return ref, false, err
	}
	return s.enqueueOnce(ctx, c)
}

// Validate checks req exactly as Enqueue does, without touching Redis (an
// idempotency key is checked for its form only).
func (s *Service) Validate(req enqueue.Request) error {
	_, err := s.check(req)
	return err
}

// check is enqueue.Check by the Service's rules.
func (s *Service) check(req enqueue.Request) (enqueue.Checked, error) {
	return enqueue.Check(req, s.opts.Rules)
}

// add builds the task of c and enqueues it under c.TaskID. ours says that
// the Service made that id for this call. Then a conflict on it means that
// an earlier try of this same call reached Redis: go-redis sends a command
// again when its answer does not come in time, and Redis may have run the
// first one (a UUID of another task is too unlikely to consider). The task
// is enqueued, and add succeeds. A conflict on an id the producer gave is
// its to judge (a scheduler's tick enqueued before), a failure that says
// nothing was stored (notStored) is a plain error, and any other failure of
// the enqueue is an *EnqueueError.
func (s *Service) add(ctx context.Context, c enqueue.Checked, ours bool) (TaskRef, error) {
	opts := []asynq.Option{
		asynq.Queue(c.Queue),
		asynq.MaxRetry(s.MaxRetry()),
		asynq.Retention(s.opts.Retention),
		asynq.TaskID(c.TaskID),
	}
	if !c.ProcessAt.IsZero() {
		opts = append(opts, asynq.ProcessAt(c.ProcessAt))
	}
	typ := c.Payload.TaskType()
	task, err := tasks.NewTask(c.Payload, opts...)
	if err != nil {
		return TaskRef{}, fmt.Errorf("new %s task: %w", typ, err)
	}
	info, err := s.client.EnqueueContext(ctx, task)
	switch {
	case err == nil:
		return TaskRef{ID: info.ID, Type: info.Type, Queue: info.Queue, State: info.State.String()}, nil
	case ours && errors.Is(err, asynq.ErrTaskIDConflict):
		return newRef(c), nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return TaskRef{}, fmt.Errorf("enqueue %s task: %w", typ, err)
	case notStored(err):
		return TaskRef{}, fmt.Errorf("enqueue %s task: nothing enqueued: %w", typ, err)
	}
	return TaskRef{}, &EnqueueError{TaskID: c.TaskID, Type: typ, Err: err}
}

// notStored reports whether err, the error of asynq's enqueue, says that
// Redis certainly stored nothing of the task, so that it is no
// *EnqueueError. asynq sends two commands: a SADD that registers the
// queue (the first time a client enqueues to it), then the script that
// stores the task. Any error of the SADD means the script was never sent
// ("redis command error: SADD failed: ...": a refused dial, WRONGPASS,
// NOAUTH, a timeout, a key of the wrong type). No error of the script
// ("redis eval error: ...") is certain: go-redis sends the script again,
// on a new connection, when its answer does not come in time, and Redis
// may have run the first one. The error is then the retry's, whatever
// refused it: a refused dial, a WRONGPASS, NOAUTH or NOPERM after the
// credentials changed, an unknown command on a server failed over to.
func notStored(err error) bool {
	return strings.Contains(err.Error(), "redis command error: SADD failed: ")
}

// newRef is the TaskRef of c's task as an enqueue gives it: pending, or
// scheduled when it is to run later.
func newRef(c enqueue.Checked) TaskRef {
	state := asynq.TaskStatePending
	if c.ProcessAt.After(time.Now()) {
		state = asynq.TaskStateScheduled
	}
	return TaskRef{ID: c.TaskID, Type: c.Payload.TaskType(), Queue: c.Queue, State: state.String()}
}

// idempotencyKeyPrefix starts the Redis key that remembers an idempotency
// key: certmail:idempotency:{idempotencyHash}, a JSON idempotencyRecord.
const idempotencyKeyPrefix = "certmail:idempotency:"

// idempotencyHash is the hex SHA-256 of an idempotency key's scope, a NUL
// and the key: equal keys of two scopes (two producers' tokens) are two
// Redis keys, and neither the key nor the scope can be read from it. The
// empty scope (the command line, an API without authentication) hashes the
// key alone, as versions before scopes did, so that its keys outlive an
// upgrade; that cannot meet a scoped hash, as a key holds no NUL
// (enqueue.Check takes printable ASCII only).
func idempotencyHash(scope, key string) string {
	h := sha256.New()
	if scope != "" {
		h.Write([]byte(scope))
		h.Write([]byte{0})
	}
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil))
}

type idempotencyRecord struct {
	Hash string  `json:"hash"`
	Task TaskRef `json:"task"`
}

// enqueueOnce claims the idempotency key (a lease.Lease whose token is the
// record: the id the task will get and the request's hash) and enqueues
// under that id; a request that finds the key taken returns the recorded
// task or ErrIdempotencyConflict.
//
// When ctx has a deadline, the claim, the enqueue and the replay's lookup
// end cleanupReserve before it (workContext), so that settle and unclaim,
// which run after them, still answer by ctx's deadline: a handler bounded
// by it does not overrun it to release a key.
func (s *Service) enqueueOnce(ctx context.Context, c enqueue.Checked) (TaskRef, bool, error) {
	cleanupCtx := ctx
	ctx, cancel := s.workContext(ctx)
	defer cancel()
	key := idempotencyKeyPrefix + idempotencyHash(c.IdempotencyScope, c.IdempotencyKey)
	// A record can vanish between SET NX and GET (expiry, or a failed
	// enqueue releasing it): then claim again, a bounded number of times.
	for range 3 {
		c.TaskID = s.opts.NewTaskID()
		ref := newRef(c)
		rec, err := json.Marshal(idempotencyRecord{Hash: c.Hash, Task: ref})
		if err != nil {
			return TaskRef{}, false, fmt.Errorf("encode idempotency record: %w", err)
		}
		claim := lease.WithToken(s.rdb, key, string(rec), s.opts.IdempotencyTTL)
		claimed, err := claim.Acquire(ctx)
		if err != nil {
			return TaskRef{}, false, s.unclaim(cleanupCtx, claim, fmt.Errorf("claim idempotency key: %w", err))
		}
		raw, err := []byte(nil), nil
		if !claimed {
			raw, err = s.rdb.Get(ctx, key).Bytes()
		}
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			// The claim may be this call's own, its answer lost: release it
			// (only while it holds this call's record).
			return TaskRef{}, false, s.unclaim(cleanupCtx, claim, fmt.Errorf("read idempotency key: %w", err))
		}
		var prev idempotencyRecord
		if !claimed {
			if err := json.Unmarshal(raw, &prev); err != nil {
				return TaskRef{}, false, fmt.Errorf("read idempotency key: record is not JSON: %w", err)
			}
		}
		// The record holds the id this call just made: the claim is this
		// call's own, its SET run once and its answer lost, then sent again
		// by the client. Nothing is enqueued under that id yet.
		if claimed || prev.Task.ID == c.TaskID {
			got, err := s.add(ctx, c, true)
			var unsure *EnqueueError
			switch {
			case errors.As(err, &unsure):
				return s.settle(cleanupCtx, claim, ref, err)
			case err != nil: // nothing stored: the key is free for a retry
				return TaskRef{}, false, s.unclaim(cleanupCtx, claim, err)
			}
			return got, false, nil
		}
		if !c.SameRequest(prev.Hash) {
			return TaskRef{}, false, ErrIdempotencyConflict
		}
		now, err := s.current(ctx, prev.Task)
		if err != nil {
			return TaskRef{}, false, err
		}
		return now, true, nil
	}
	return TaskRef{}, false, errors.New("idempotency key: claimed and released repeatedly by other requests; try again")
}

// current is ref, as recorded with its idempotency key, in the state its
// task is in now: a client that retries after a timeout must not read
// "pending" for a task already done. StateUnknown when its queue does not
// hold it.
func (s *Service) current(ctx context.Context, ref TaskRef) (TaskRef, error) {
	st, err := s.TaskInQueue(ctx, ref.Queue, ref.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		ref.State = StateUnknown
	case err != nil:
		return TaskRef{}, fmt.Errorf("idempotent replay: %w", err)
	default:
		ref.State = st.State
	}
	return ref, nil
}

// settle decides what becomes of a claimed idempotency key after the
// enqueue of its task ref failed with cause. The failure does not say
// whether Redis stored the task (a write whose answer timed out may have
// run), so the task is looked up. Stored: the enqueue succeeded. Not
// stored: the key is released, so that the producer can try again with it.
// Redis cannot say: the key is kept, so that a retry with it answers the
// recorded task rather than enqueue a second one (in state StateUnknown if
// the task was not stored after all); cause is returned.
func (s *Service) settle(ctx context.Context, claim *lease.Lease, ref TaskRef, cause error) (TaskRef, bool, error) {
	ctx, cancel := s.cleanupContext(ctx)
	defer cancel()
	// One EXISTS bounded by ctx (asynq's inspector takes no context), on
	// the hash asynq keeps of every task it holds.
	n, err := s.rdb.Exists(ctx, queues.AsynqTaskKey(ref.Queue, ref.ID)).Result()
	switch {
	case err != nil:
		return TaskRef{}, false, cause
	case n > 0:
		return ref, false, nil
	}
	if _, err := claim.Release(ctx); err != nil {
		return TaskRef{}, false, errors.Join(cause, fmt.Errorf("release idempotency key: %w", err))
	}
	return TaskRef{}, false, cause
}

// unclaim releases claim after its SET NX got no answer: Redis may have
// run it, and a claim left behind would make every retry with the key a
// replay of a task that was never enqueued. The release deletes the key
// only while it holds this call's record. cause comes back either way,
// joined with the release's error when Redis does not answer that either
// (the key then expires after the idempotency TTL).
func (s *Service) unclaim(ctx context.Context, claim *lease.Lease, cause error) error {
	ctx, cancel := s.cleanupContext(ctx)
	defer cancel()
	if _, err := claim.Release(ctx); err != nil {
		return errors.Join(cause, fmt.Errorf("release idempotency key: %w", err))
	}
	return cause
}

// cleanupReserve is the part of what is left of a deadline d away that
// enqueueOnce keeps for settle or unclaim: Config.CleanupTimeout, or a
// quarter of d when that is less (a short deadline still leaves the claim
// most of it).
func (s *Service) cleanupReserve(d time.Duration) time.Duration {
	return min(s.opts.CleanupTimeout, d/4)
}

// workContext is ctx ending cleanupReserve before ctx's deadline, or ctx
// itself when it has none.
func (s *Service) workContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, deadline.Add(-s.cleanupReserve(time.Until(deadline))))
}

// cleanupContext is the context of settle and unclaim, given the caller's
// ctx: not cancelled with it (a request cancelled while its claim was in
// flight must still release the key), but ending after
// Config.CleanupTimeout, and by ctx's deadline when that comes first.
func (s *Service) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	end := time.Now().Add(s.opts.CleanupTimeout)
	if deadline, ok := ctx.Deadline(); ok && deadline.Before(end) {
		end = deadline
	}
	return context.WithDeadline(context.WithoutCancel(ctx), end)
}

// EnqueueError is the error of an Enqueue whose task was sent to Redis
// without word that Redis stored it: Redis may have stored it under TaskID
// (a write that ran, its answer lost) or not. Look the task up before
// enqueueing it again.
type EnqueueError struct {
	TaskID string // the id the task has if it was stored
	Type   string // its task type
	Err    error  // what the enqueue gave, asynq's error
}

// Error names the task, its type and id, and what went wrong.
func (e *EnqueueError) Error() string {
	return fmt.Sprintf("enqueue %s task %s: %v", e.Type, e.TaskID, e.Err)
}

// Unwrap returns Err.
func (e *EnqueueError) Unwrap() error { return e.Err }
