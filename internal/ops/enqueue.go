package ops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/lease"
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
// enqueues the task it describes, under req.TaskID when it names one. A
// request Check refuses gives Check's error (every problem in one bounded
// *tasks.ValidationError, or an error wrapping tasks.ErrUnknownType), and
// nothing is written to Redis.
//
// With an IdempotencyKey, the first request enqueues and the key is
// remembered for Config.IdempotencyTTL together with a SHA-256 of the type,
// the normalised payload and the queue. A later request with the same key and
// the same hash enqueues nothing and returns the earlier task with existing
// true, in the state it is in now (one lookup in its queue); one with a
// different hash gives ErrIdempotencyConflict. Of concurrent requests with
// one key, exactly one enqueues.
func (s *Service) Enqueue(ctx context.Context, req enqueue.Request) (ref TaskRef, existing bool, err error) {
	c, err := s.check(req)
	if err != nil {
		return TaskRef{}, false, err
	}
	if c.IdempotencyKey == "" {
		ref, err := s.add(ctx, c)
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

// add builds the task of c and enqueues it, under c.TaskID when not empty.
func (s *Service) add(ctx context.Context, c enqueue.Checked) (TaskRef, error) {
	opts := []asynq.Option{
		asynq.Queue(c.Queue),
		asynq.MaxRetry(s.MaxRetry()),
		asynq.Retention(s.opts.Retention),
	}
	if !c.ProcessAt.IsZero() {
		opts = append(opts, asynq.ProcessAt(c.ProcessAt))
	}
	if c.TaskID != "" {
		opts = append(opts, asynq.TaskID(c.TaskID))
	}
	task, err := tasks.NewTask(c.Payload, opts...)
	if err != nil {
		return TaskRef{}, fmt.Errorf("new %s task: %w", c.Payload.TaskType(), err)
	}
	info, err := s.client.EnqueueContext(ctx, task)
	if err != nil {
		return TaskRef{}, fmt.Errorf("enqueue %s task: %w", c.Payload.TaskType(), err)
	}
	return TaskRef{ID: info.ID, Type: info.Type, Queue: info.Queue, State: info.State.String()}, nil
}

// idempotencyKeyPrefix starts the Redis key that remembers an idempotency
// key: certmail:idempotency:{hex SHA-256 of the key}, a JSON idempotencyRecord.
const idempotencyKeyPrefix = "certmail:idempotency:"

type idempotencyRecord struct {
	Hash string  `json:"hash"`
	Task TaskRef `json:"task"`
}

// enqueueOnce claims the idempotency key (a lease.Lease whose token is the
// record: the id the task will get and the request's hash) and enqueues
// under that id; a request that finds the key taken returns the recorded
// task or ErrIdempotencyConflict.
func (s *Service) enqueueOnce(ctx context.Context, c enqueue.Checked) (TaskRef, bool, error) {
	sum := sha256.Sum256([]byte(c.IdempotencyKey))
	key := idempotencyKeyPrefix + hex.EncodeToString(sum[:])
	// A record can vanish between SET NX and GET (expiry, or a failed
	// enqueue releasing it): then claim again, a bounded number of times.
	for range 3 {
		state := asynq.TaskStatePending
		if c.ProcessAt.After(time.Now()) {
			state = asynq.TaskStateScheduled
		}
		ref := TaskRef{ID: uuid.NewString(), Type: c.Payload.TaskType(), Queue: c.Queue, State: state.String()}
		rec, err := json.Marshal(idempotencyRecord{Hash: c.Hash, Task: ref})
		if err != nil {
			return TaskRef{}, false, fmt.Errorf("encode idempotency record: %w", err)
		}
		claim := lease.WithToken(s.rdb, key, string(rec), s.opts.IdempotencyTTL)
		claimed, err := claim.Acquire(ctx)
		if err != nil {
			return TaskRef{}, false, fmt.Errorf("claim idempotency key: %w", err)
		}
		if claimed {
			c.TaskID = ref.ID
			got, err := s.add(ctx, c)
			if err != nil {
				return TaskRef{}, false, release(ctx, claim, err)
			}
			return got, false, nil
		}
		raw, err := s.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return TaskRef{}, false, fmt.Errorf("read idempotency key: %w", err)
		}
		var prev idempotencyRecord
		if err := json.Unmarshal(raw, &prev); err != nil {
			return TaskRef{}, false, fmt.Errorf("read idempotency key: record is not JSON: %w", err)
		}
		if prev.Hash != c.Hash {
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

// release forgets a claimed idempotency key after the enqueue failed, so
// that the producer can retry with the same key; cause is returned, joined
// with the release's own error if any.
func release(ctx context.Context, claim *lease.Lease, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := claim.Release(ctx); err != nil {
		return errors.Join(cause, fmt.Errorf("release idempotency key: %w", err))
	}
	return cause
}
