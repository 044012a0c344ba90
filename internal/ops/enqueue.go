package ops

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/tasks"
)

// MaxIdempotencyKey is the longest idempotency key accepted, in bytes.
const MaxIdempotencyKey = 255

// EnqueueRequest is one task to enqueue, as a producer sent it.
type EnqueueRequest struct {
	Type           string        // task type name
	Payload        []byte        // JSON as received
	Queue          string        // "" means tasks.DefaultQueue; must match ^[a-z0-9][a-z0-9_-]{0,62}$
	ProcessAt      time.Time     // zero means now
	ProcessIn      time.Duration // 0 means now; ProcessAt and ProcessIn together are an error
	IdempotencyKey string        // "" means none; at most 255 printable ASCII characters
}

// TaskRef names an enqueued task. State is "pending" or "scheduled".
type TaskRef struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue"`
	State string `json:"state"`
}

// Messages of the option checks, in the style of the tasks package.
const (
	msgQueue          = "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
	msgBothTimes      = "give process_at or process_in, not both"
	msgNegative       = "must not be negative"
	msgKeyLength      = "at most 255 characters"
	msgKeyPrintable   = "must be printable ASCII"
	msgUnknownAccount = "unknown account"
)

// Enqueue validates req and enqueues the task it describes.
//
// The payload is read with tasks.Parse. Every problem with it, an account
// that is not configured ({"account", "unknown account"}) and bad options
// ("queue", also for a queue no worker serves, "process_at", "process_in",
// "idempotency_key") come back together in one bounded
// *tasks.ValidationError, and nothing is written to Redis.
// An unknown type gives an error wrapping tasks.ErrUnknownType.
//
// With an IdempotencyKey, the first request enqueues and the key is
// remembered for Options.IdempotencyTTL together with a SHA-256 of the type,
// the normalised payload and the queue. A later request with the same key and
// the same hash enqueues nothing and returns the earlier task with existing
// true; one with a different hash gives ErrIdempotencyConflict. Of concurrent
// requests with one key, exactly one enqueues.
func (s *Service) Enqueue(ctx context.Context, req EnqueueRequest) (ref TaskRef, existing bool, err error) {
	c, err := s.check(req)
	if err != nil {
		return TaskRef{}, false, err
	}
	if req.IdempotencyKey == "" {
		ref, err := s.enqueue(ctx, c, "")
		return ref, false, err
	}
	return s.enqueueOnce(ctx, c, req.IdempotencyKey)
}

// Validate checks req exactly as Enqueue does, without touching Redis (an
// idempotency key is checked for its form only).
func (s *Service) Validate(req EnqueueRequest) error {
	_, err := s.check(req)
	return err
}

// checked is a request that passed validation.
type checked struct {
	payload   tasks.Payload
	queue     string
	processAt time.Time // zero: now
	hash      string    // of type, normalised payload and queue; with an idempotency key only
}

func (s *Service) check(req EnqueueRequest) (checked, error) {
	p, err := tasks.Parse(req.Type, req.Payload)
	var (
		ve   *tasks.ValidationError
		errs []tasks.FieldError
	)
	switch {
	case errors.As(err, &ve):
		errs = slices.Clone(ve.Errors)
	case errors.Is(err, tasks.ErrUnknownType):
		return checked{}, fmt.Errorf("task type %.64q: %w", req.Type, tasks.ErrUnknownType)
	case err != nil:
		return checked{}, fmt.Errorf("parse %s payload: %w", req.Type, err)
	}
	listed := errs
	if ve != nil && ve.Omitted > 0 {
		listed = errs[:len(errs)-1] // the last entry counts the problems left out
	}
	if name, ok := accountOf(p, req.Payload, listed); ok && !s.opts.Accounts.Has(name) {
		errs = append(errs, tasks.FieldError{Field: "account", Message: msgUnknownAccount})
	}
	errs = append(errs, checkOptions(req)...)
	queue := cmp.Or(req.Queue, tasks.DefaultQueue)
	if queues.ValidName(queue) && !slices.Contains(s.opts.Queues, queue) {
		errs = append(errs, tasks.FieldError{Field: "queue", Message: s.msgNotServed(req.Queue == "")})
	}
	if len(errs) > 0 {
		return checked{}, tasks.NewValidationError(req.Type, errs...)
	}

	c := checked{payload: p, queue: queue, processAt: req.ProcessAt}
	if req.ProcessIn > 0 {
		c.processAt = time.Now().Add(req.ProcessIn)
	}
	if req.IdempotencyKey != "" { // only an idempotency key needs the request's fingerprint
		canonical, err := json.Marshal(p)
		if err != nil {
			return checked{}, fmt.Errorf("encode %s payload: %w", req.Type, err)
		}
		sum := sha256.New()
		for _, part := range [][]byte{[]byte(p.TaskType()), canonical, []byte(c.queue)} {
			sum.Write(part)
			sum.Write([]byte{0})
		}
		c.hash = hex.EncodeToString(sum.Sum(nil))
	}
	return c, nil
}

// accountOf returns the account a payload names so that it can be checked
// against the configured ones: from the parsed payload, or, when the payload
// has other problems, from its "account" member if that is a well-formed
// name. ok is false when there is no name to check.
func accountOf(p tasks.Payload, raw []byte, errs []tasks.FieldError) (name string, ok bool) {
	if p != nil {
		return p.AccountName(), true
	}
	for _, fe := range errs {
		if fe.Field == "account" || fe.Field == "" {
			return "", false // already reported, or the body is not an object
		}
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil {
		return "", false
	}
	if err := json.Unmarshal(members["account"], &name); err != nil || name == "" {
		return "", false
	}
	return name, true
}

// msgNotServed says that a queue is not one the workers serve, and which
// they serve.
func (s *Service) msgNotServed(isDefault bool) string {
	msg := "no worker serves this queue; CERTMAIL_QUEUES serves " + strings.Join(s.opts.Queues, ", ")
	if isDefault {
		msg = "the default queue " + tasks.DefaultQueue + " is not served (CERTMAIL_QUEUES serves " +
			strings.Join(s.opts.Queues, ", ") + "): name one of them"
	}
	return msg
}

func checkOptions(req EnqueueRequest) []tasks.FieldError {
	var errs []tasks.FieldError
	add := func(field, msg string) { errs = append(errs, tasks.FieldError{Field: field, Message: msg}) }
	if req.Queue != "" && !queues.ValidName(req.Queue) {
		add("queue", msgQueue)
	}
	if !req.ProcessAt.IsZero() && req.ProcessIn != 0 {
		add("process_at", msgBothTimes)
	}
	if req.ProcessIn < 0 {
		add("process_in", msgNegative)
	}
	if len(req.IdempotencyKey) > MaxIdempotencyKey {
		add("idempotency_key", msgKeyLength)
	}
	for i := 0; i < len(req.IdempotencyKey); i++ {
		if c := req.IdempotencyKey[i]; c < 0x20 || c > 0x7e {
			add("idempotency_key", msgKeyPrintable)
			break
		}
	}
	return errs
}

// enqueue builds the task of c and enqueues it, under taskID when not empty.
func (s *Service) enqueue(ctx context.Context, c checked, taskID string) (TaskRef, error) {
	opts := []asynq.Option{
		asynq.Queue(c.queue),
		asynq.MaxRetry(s.opts.MaxRetry),
		asynq.Retention(s.opts.Retention),
	}
	if !c.processAt.IsZero() {
		opts = append(opts, asynq.ProcessAt(c.processAt))
	}
	if taskID != "" {
		opts = append(opts, asynq.TaskID(taskID))
	}
	task, err := tasks.NewTask(c.payload, opts...)
	if err != nil {
		return TaskRef{}, fmt.Errorf("new %s task: %w", c.payload.TaskType(), err)
	}
	info, err := s.client.EnqueueContext(ctx, task)
	if err != nil {
		return TaskRef{}, fmt.Errorf("enqueue %s task: %w", c.payload.TaskType(), err)
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
func (s *Service) enqueueOnce(ctx context.Context, c checked, idempotencyKey string) (TaskRef, bool, error) {
	sum := sha256.Sum256([]byte(idempotencyKey))
	key := idempotencyKeyPrefix + hex.EncodeToString(sum[:])
	// A record can vanish between SET NX and GET (expiry, or a failed
	// enqueue releasing it): then claim again, a bounded number of times.
	for range 3 {
		state := asynq.TaskStatePending
		if c.processAt.After(time.Now()) {
			state = asynq.TaskStateScheduled
		}
		ref := TaskRef{ID: uuid.NewString(), Type: c.payload.TaskType(), Queue: c.queue, State: state.String()}
		rec, err := json.Marshal(idempotencyRecord{Hash: c.hash, Task: ref})
		if err != nil {
			return TaskRef{}, false, fmt.Errorf("encode idempotency record: %w", err)
		}
		claim := lease.WithToken(s.rdb, key, string(rec), s.opts.IdempotencyTTL)
		claimed, err := claim.Acquire(ctx)
		if err != nil {
			return TaskRef{}, false, fmt.Errorf("claim idempotency key: %w", err)
		}
		if claimed {
			got, err := s.enqueue(ctx, c, ref.ID)
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
		if prev.Hash != c.hash {
			return TaskRef{}, false, ErrIdempotencyConflict
		}
		return prev.Task, true, nil
	}
	return TaskRef{}, false, errors.New("idempotency key: claimed and released repeatedly by other requests; try again")
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
