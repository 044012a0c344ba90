package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
)

// TaskStatus is what is known of one task.
type TaskStatus struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Queue         string          `json:"queue"`
	State         string          `json:"state"` // pending, scheduled, active, retry, archived or completed
	Retried       int             `json:"retried"`
	MaxRetry      int             `json:"max_retry"` // the cap that applies: the lower of the task's own and the Service's (CERTMAIL_MAX_RETRY, as the worker's)
	LastError     string          `json:"last_error,omitempty"`
	LastFailedAt  *time.Time      `json:"last_failed_at,omitempty"`
	NextProcessAt *time.Time      `json:"next_process_at,omitempty"`
	CompletedAt   *time.Time      `json:"completed_at,omitempty"`
	Result        json.RawMessage `json:"result,omitempty"` // the worker's taskresult.Result
	// ResultEncoding and ResultTruncated describe Result as PayloadEncoding
	// and PayloadTruncated describe Payload.
	ResultEncoding  string `json:"result_encoding,omitempty"`
	ResultTruncated bool   `json:"result_truncated,omitempty"`
	// Payload is the task's payload: its JSON when it is a valid UTF-8 JSON
	// object of at most MaxShownBytes, otherwise a JSON string of its first
	// MaxShownBytes, as text or base64 (PayloadEncoding says which).
	Payload json.RawMessage `json:"payload"`
	// PayloadEncoding is "" when Payload is the JSON itself, EncodingText or
	// EncodingBase64 when it is a string holding the bytes.
	PayloadEncoding string `json:"payload_encoding,omitempty"`
	// PayloadTruncated says that Payload holds only the first MaxShownBytes
	// of PayloadBytes.
	PayloadTruncated bool `json:"payload_truncated,omitempty"`
	// PayloadBytes is the size of the whole payload.
	PayloadBytes int `json:"payload_bytes"`
	// OtherQueues lists the other queues that hold a task with this id
	// (asynq's task ids are unique per queue only: a producer may send its
	// own id to two queues), sorted, at most MaxQueuesListed of them, each
	// cut to 64 bytes; OtherQueuesCount counts them all. Task fills them;
	// TaskInQueue, asked about one queue, leaves them empty.
	OtherQueues      []string `json:"other_queues,omitempty"`
	OtherQueuesCount int      `json:"other_queues_count,omitempty"`
}

// Task finds the task with id in any queue: the first queue asynq lists
// that holds it (a task trimmed from asynq's archive is not held: see
// trimmedScript). When others hold a task with the same id too, the status
// names them (OtherQueues); TaskInQueue shows each. The error wraps
// ErrNotFound when no queue has it.
func (s *Service) Task(ctx context.Context, id string) (TaskStatus, error) {
	info, others, err := s.find(ctx, id)
	if err != nil {
		return TaskStatus{}, err
	}
	st, err := s.status(ctx, info)
	if err != nil {
		return TaskStatus{}, err
	}
	slices.Sort(others)
	st.OtherQueuesCount = len(others)
	for _, q := range others[:min(len(others), MaxQueuesListed)] {
		// Any asynq producer names queues: a name is shown cut to the
		// longest certmail takes.
		st.OtherQueues = append(st.OtherQueues, deadletter.Clip(q, maxQueueName))
	}
	return st, nil
}

// TaskInQueue is Task for a task whose queue is known: one lookup instead of
// one per queue. The error wraps ErrNotFound when the queue does not hold
// it (or does not exist), or holds only what asynq left of it after it
// trimmed it from the archive. For a queue asynq has never known (likely a
// mistyped name) it also wraps an *UnknownQueueError naming those it knows.
func (s *Service) TaskInQueue(ctx context.Context, queue, id string) (TaskStatus, error) {
	info, err := s.inspector.GetTaskInfo(queue, id)
	trimmed := false
	if err == nil && info.State == asynq.TaskStateArchived {
		trimmed, err = s.trimmed(ctx, queue, id, false)
	}
	switch {
	case errors.Is(err, asynq.ErrQueueNotFound):
		if all, known, lerr := s.knownQueues(); lerr == nil {
			return TaskStatus{}, fmt.Errorf("task %s in queue %s: %w: %w", ShowName(id), ShowName(queue), ErrNotFound,
				&UnknownQueueError{Queue: queue, Known: known, KnownCount: len(all)})
		}
		return TaskStatus{}, fmt.Errorf("task %s in queue %s: %w", ShowName(id), ShowName(queue), ErrNotFound)
	case errors.Is(err, asynq.ErrTaskNotFound), trimmed:
		return TaskStatus{}, fmt.Errorf("task %s in queue %s: %w", ShowName(id), ShowName(queue), ErrNotFound)
	case err != nil:
		return TaskStatus{}, fmt.Errorf("task %s in queue %s: %w", ShowName(id), ShowName(queue), err)
	}
	return s.status(ctx, info)
}

// UnknownQueueError says that asynq has never known Queue, in which a task
// was looked for: nothing was ever enqueued to it, so it holds no task, and
// its name is likely mistyped. Known lists the queues asynq knows, sorted,
// at most MaxQueuesListed of them, each cut to 64 bytes; KnownCount counts
// them all.
type UnknownQueueError struct {
	Queue      string
	Known      []string
	KnownCount int
}

// Error names the queue and those asynq knows: "asynq has never known
// queue defualt (it knows: critical, default)".
func (e *UnknownQueueError) Error() string {
	return fmt.Sprintf("asynq has never known queue %s (it knows: %s)", ShowName(e.Queue), QueueList(e.Known, e.KnownCount))
}

// knownQueues lists the queues asynq knows, sorted: all of them, and the
// first MaxQueuesListed cut to 64 bytes, to be shown.
func (s *Service) knownQueues() (all, shown []string, err error) {
	all, err = s.inspector.Queues()
	if err != nil {
		return nil, nil, fmt.Errorf("list queues: %w", err)
	}
	slices.Sort(all)
	for _, q := range all[:min(len(all), MaxQueuesListed)] {
		// Any asynq producer names queues: a name is shown cut to the
		// longest certmail takes.
		shown = append(shown, deadletter.Clip(q, maxQueueName))
	}
	return all, shown, nil
}

// status is what Task reports of info.
func (s *Service) status(ctx context.Context, info *asynq.TaskInfo) (TaskStatus, error) {
	id := info.ID
	st := TaskStatus{
		ID:            info.ID,
		Type:          info.Type,
		Queue:         info.Queue,
		State:         info.State.String(),
		Retried:       info.Retried,
		MaxRetry:      min(info.MaxRetry, s.MaxRetry()), // the worker stops at the lower
		LastError:     deadletter.Clip(info.LastErr, deadletter.MaxText),
		LastFailedAt:  timePtr(info.LastFailedAt),
		NextProcessAt: timePtr(info.NextProcessAt),
		CompletedAt:   timePtr(info.CompletedAt),
	}
	p := Show(info.Payload, len(info.Payload))
	st.Payload, st.PayloadEncoding, st.PayloadTruncated, st.PayloadBytes = p.Value, p.Encoding, p.Truncated, p.Size
	if len(info.Result) > 0 {
		r := Show(info.Result, len(info.Result))
		st.Result, st.ResultEncoding, st.ResultTruncated = r.Value, r.Encoding, r.Truncated
	}
	if info.State == asynq.TaskStateArchived {
		// A task parked by a wait on its last retry passes through asynq's
		// archive without being dead-lettered: it is waiting to be tried
		// again.
		until, parked, err := deadletter.ParkedUntil(ctx, s.rdb, info.Queue, info.ID)
		if err != nil {
			return TaskStatus{}, fmt.Errorf("task %s: parked entry: %w", ShowName(id), err)
		}
		if parked {
			st.State, st.NextProcessAt = asynq.TaskStateRetry.String(), &until
			return st, nil
		}
		// Or a worker has moved it to asynq's retry set since info was read,
		// then removed its entry: as read again now, it is no longer archived.
		again, err := s.inspector.GetTaskInfo(info.Queue, info.ID)
		if err == nil && again.State != asynq.TaskStateArchived {
			return s.status(ctx, again)
		}
	}
	return st, nil
}

// find looks the task up in every queue asynq knows, lookupBatch queues per
// round trip (holders): info is the task of the first queue, in asynq's
// order, that holds one with this id, read by asynq's Inspector, and others
// names the later queues that hold one too. A task trimmed from an archive
// (trimmedScript) is not held.
func (s *Service) find(ctx context.Context, id string) (info *asynq.TaskInfo, others []string, err error) {
	known, err := s.inspector.Queues()
	if err != nil {
		return nil, nil, fmt.Errorf("list queues: %w", err)
	}
	for batch := range slices.Chunk(known, lookupBatch) {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		held, err := s.holders(ctx, batch, id)
		switch {
		case err != nil && info != nil:
			s.incomplete("from_queue", batch[0], err) // one of the batch's queues failed
			return info, others, nil
		case err != nil:
			return nil, nil, fmt.Errorf("task %s: %w", ShowName(id), err)
		}
		for _, h := range held {
			switch {
			case info == nil:
				// The first holder is read again by asynq, and a trimmed
				// task told inside one script (taskIn): a task that left
				// the archive since the batch was read is still found.
				if info, err = s.taskIn(ctx, h.queue, id); err != nil {
					return nil, nil, err
				}
			case h.trimmed():
			case !h.readable():
				s.incomplete("queue", h.queue, fmt.Errorf("task state %.32q is not one asynq reads", h.state))
				return info, others, nil
			default:
				others = append(others, h.queue)
			}
		}
	}
	if info == nil {
		return nil, nil, fmt.Errorf("task %s: %w", ShowName(id), ErrNotFound)
	}
	return info, others, nil
}

// incomplete logs that the lookup failed in queue (field "queue"), or in
// a batch of queues from queue on (field "from_queue"), after the task was
// found in an earlier one. The task found is the answer whatever a later
// queue says: the lookup stops there, with the queues found so far, rather
// than fail or read the remaining queues (each read could wait out Redis's
// timeout when Redis has gone).
func (s *Service) incomplete(field, queue string, err error) {
	s.opts.Logger.Warn("task lookup failed in a further queue; other_queues may be incomplete",
		zap.String(field, deadletter.Clip(queue, maxQueueName)), zap.Error(err))
}

// taskIn reads the task id of queue with asynq's Inspector: nil when the
// queue does not hold it (any more), or holds what asynq left of it after it
// trimmed it from the archive (trimmedScript).
func (s *Service) taskIn(ctx context.Context, queue, id string) (*asynq.TaskInfo, error) {
	info, err := s.inspector.GetTaskInfo(queue, id)
	trimmed := false
	if err == nil && info.State == asynq.TaskStateArchived {
		trimmed, err = s.trimmed(ctx, queue, id, false)
	}
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound), trimmed:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("task %s in queue %s: %w", ShowName(id), ShowName(queue), err)
	}
	return info, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
