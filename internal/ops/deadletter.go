package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/worker"
)

// DeadLetter is one entry of the Redis stream certmail:deadletter
// (worker.DeadLetterStream), plus whether the task is still in asynq's
// archive.
type DeadLetter struct {
	EntryID string `json:"entry_id"` // the stream entry id
	TaskID  string `json:"task_id"`
	Type    string `json:"type"`
	Queue   string `json:"queue"`
	// Payload, PayloadEncoding, PayloadTruncated and PayloadBytes show the
	// task's payload as TaskStatus does; the entry keeps at most
	// worker.DeadLetterPayloadMax bytes of it.
	Payload          json.RawMessage `json:"payload"`
	PayloadEncoding  string          `json:"payload_encoding,omitempty"`
	PayloadTruncated bool            `json:"payload_truncated,omitempty"`
	PayloadBytes     int             `json:"payload_bytes"`
	ErrorCode        string          `json:"error_code"`
	ErrorMessage     string          `json:"error_message"`
	HTTPStatus       int             `json:"http_status"`
	Attempts         int             `json:"attempts"`
	FailedAt         time.Time       `json:"failed_at"`
	Archived         bool            `json:"archived"` // still in asynq's archive, so it can be requeued
}

// Page sizes of dead-letter listings.
const (
	DefaultDeadLetterLimit = 100
	MaxDeadLetterLimit     = 1000
	// MaxSkippedListed is the most malformed entries a page names; the
	// others are counted.
	MaxSkippedListed = 20
)

// DeadLetterPage is one page of the dead-letter stream, newest first.
type DeadLetterPage struct {
	// Entries are the page's well-formed entries.
	Entries []DeadLetter
	// Next is the cursor of the following page, "" when there is none.
	Next string
	// Skipped names the page's malformed entries (at most MaxSkippedListed),
	// which are left out of Entries rather than failing the page.
	Skipped []SkippedEntry
	// SkippedCount is how many entries were skipped, listed or not.
	SkippedCount int
}

// SkippedEntry is a stream entry that could not be read as a dead letter.
type SkippedEntry struct {
	EntryID string `json:"entry_id"`
	Problem string `json:"problem"`
}

// scanPage is how many stream entries one read fetches when searching the
// stream for a task id.
const scanPage = 500

var streamIDPattern = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// DeadLetters lists entries newest first: at most limit of them (1 to
// MaxDeadLetterLimit; 0 means DefaultDeadLetterLimit), starting strictly
// before the entry id before ("" starts from the newest). A malformed entry
// (no task id, type or queue, or a failed_at that is not a time) counts
// towards limit but is skipped, logged and named in the page's Skipped. A
// bad limit or cursor gives an error wrapping ErrInvalidArgument.
func (s *Service) DeadLetters(ctx context.Context, limit int, before string) (DeadLetterPage, error) {
	page := DeadLetterPage{Entries: []DeadLetter{}}
	if limit == 0 {
		limit = DefaultDeadLetterLimit
	}
	if limit < 1 || limit > MaxDeadLetterLimit {
		return page, fmt.Errorf("limit %d: %w: want 1 to %d", limit, ErrInvalidArgument, MaxDeadLetterLimit)
	}
	end := "+"
	switch {
	case before == "":
	case !streamIDPattern.MatchString(before):
		return page, fmt.Errorf("cursor %.64q: %w: want an entry id such as 1718000000000-0", before, ErrInvalidArgument)
	case before == "0-0":
		return page, nil // nothing comes before the first possible id
	default:
		end = "(" + before
	}
	msgs, err := s.rdb.XRevRangeN(ctx, worker.DeadLetterStream, end, "-", int64(limit)+1).Result()
	if err != nil {
		return page, fmt.Errorf("read dead letters: %w", err)
	}
	if len(msgs) > limit {
		msgs = msgs[:limit]
		page.Next = msgs[limit-1].ID
	}
	for _, m := range msgs {
		dl, problem := entryOf(m)
		if problem == "" {
			dl, err = s.withArchived(ctx, dl)
			if err != nil {
				return DeadLetterPage{}, err
			}
			page.Entries = append(page.Entries, dl)
			continue
		}
		s.opts.Logger.Warn("malformed dead-letter entry skipped", zap.String("entry_id", m.ID), zap.String("problem", problem))
		page.SkippedCount++
		if len(page.Skipped) < MaxSkippedListed {
			page.Skipped = append(page.Skipped, SkippedEntry{EntryID: m.ID, Problem: problem})
		}
	}
	return page, nil
}

// DeadLetter returns the newest entry of the task taskID. The error wraps
// ErrNotFound when the stream has none.
func (s *Service) DeadLetter(ctx context.Context, taskID string) (DeadLetter, error) {
	var found *redis.XMessage
	err := s.scan(ctx, func(m redis.XMessage) bool {
		if m.Values["task_id"] == taskID {
			found = &m
			return false
		}
		return true
	})
	if err != nil {
		return DeadLetter{}, err
	}
	if found == nil {
		return DeadLetter{}, fmt.Errorf("dead letter %s: %w", taskID, ErrNotFound)
	}
	dl, _ := entryOf(*found) // it has the task id looked for; whatever else it lacks shows as empty
	return s.withArchived(ctx, dl)
}

// Requeue moves the archived task taskID back to pending (it runs again as
// soon as a worker is free) and removes the task's stream entries. The error
// wraps ErrNotFound when the task is in neither the stream nor the archive,
// and also, saying so, when the stream has it but the archive no longer does
// (deleted after its retention, or requeued or deleted by other means).
func (s *Service) Requeue(ctx context.Context, taskID string) (TaskRef, error) {
	ids, err := s.entryIDs(ctx, taskID)
	if err != nil {
		return TaskRef{}, err
	}
	info, err := s.archived(ctx, taskID, len(ids) > 0)
	if err != nil {
		return TaskRef{}, err
	}
	if err := s.inspector.RunTask(info.Queue, taskID); err != nil {
		return TaskRef{}, fmt.Errorf("requeue task %s: %w", taskID, err)
	}
	ref := TaskRef{ID: info.ID, Type: info.Type, Queue: info.Queue, State: asynq.TaskStatePending.String()}
	if err := s.removeEntries(ctx, ids); err != nil {
		return ref, fmt.Errorf("task %s requeued, but its dead-letter entries remain: %w", taskID, err)
	}
	return ref, nil
}

// DeleteDeadLetter deletes the archived task taskID, if it is still
// archived, and the task's stream entries. The error wraps ErrNotFound when
// there was neither.
func (s *Service) DeleteDeadLetter(ctx context.Context, taskID string) error {
	ids, err := s.entryIDs(ctx, taskID)
	if err != nil {
		return err
	}
	info, err := s.archived(ctx, taskID, len(ids) > 0)
	switch {
	case errors.Is(err, ErrNotFound) && len(ids) > 0:
		// Only the stream entries are left.
	case err != nil:
		return err
	default:
		err := s.inspector.DeleteTask(info.Queue, taskID)
		if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return fmt.Errorf("delete task %s: %w", taskID, err)
		}
	}
	return s.removeEntries(ctx, ids)
}

// PurgeDeadLetters deletes the whole stream and every archived task of
// every queue, and returns how many stream entries there were.
func (s *Service) PurgeDeadLetters(ctx context.Context) (int, error) {
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.XLen(ctx, worker.DeadLetterStream)
		p.Del(ctx, worker.DeadLetterStream)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete dead-letter stream: %w", err)
	}
	queues, err := s.inspector.Queues()
	if err != nil {
		return int(n.Val()), fmt.Errorf("list queues: %w", err)
	}
	for _, q := range queues {
		if _, err := s.inspector.DeleteAllArchivedTasks(q); err != nil {
			return int(n.Val()), fmt.Errorf("delete archived tasks of queue %s: %w", q, err)
		}
	}
	return int(n.Val()), nil
}

// CountDeadLetters returns how many entries the dead-letter stream holds.
func (s *Service) CountDeadLetters(ctx context.Context) (int, error) {
	n, err := s.rdb.XLen(ctx, worker.DeadLetterStream).Result()
	if err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	return int(n), nil
}

// archived returns the task taskID if it is archived. The error wraps
// ErrNotFound otherwise, with a message that says why when inStream.
func (s *Service) archived(ctx context.Context, taskID string, inStream bool) (*asynq.TaskInfo, error) {
	info, err := s.find(ctx, taskID)
	switch {
	case errors.Is(err, ErrNotFound) && inStream:
		return nil, fmt.Errorf("task %s is dead-lettered but no longer archived (deleted after its retention): %w", taskID, ErrNotFound)
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("dead letter %s: %w", taskID, ErrNotFound)
	case err != nil:
		return nil, err
	case info.State != asynq.TaskStateArchived && inStream:
		return nil, fmt.Errorf("task %s is dead-lettered but no longer archived (it is %s now): %w", taskID, info.State, ErrNotFound)
	case info.State != asynq.TaskStateArchived:
		return nil, fmt.Errorf("dead letter %s: %w (the task is %s)", taskID, ErrNotFound, info.State)
	}
	return info, nil
}

// withArchived sets dl.Archived from asynq's archive of dl.Queue.
func (s *Service) withArchived(ctx context.Context, dl DeadLetter) (DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return DeadLetter{}, err
	}
	if !queuePattern.MatchString(dl.Queue) || dl.TaskID == "" {
		return dl, nil // not a queue a task can be in
	}
	info, err := s.inspector.GetTaskInfo(dl.Queue, dl.TaskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
	case err != nil:
		return DeadLetter{}, fmt.Errorf("task %s: %w", dl.TaskID, err)
	default:
		dl.Archived = info.State == asynq.TaskStateArchived
	}
	return dl, nil
}

// entryIDs returns the ids of every stream entry of the task taskID.
func (s *Service) entryIDs(ctx context.Context, taskID string) ([]string, error) {
	var ids []string
	err := s.scan(ctx, func(m redis.XMessage) bool {
		if m.Values["task_id"] == taskID {
			ids = append(ids, m.ID)
		}
		return true
	})
	return ids, err
}

func (s *Service) removeEntries(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.rdb.XDel(ctx, worker.DeadLetterStream, ids...).Err(); err != nil {
		return fmt.Errorf("delete dead-letter entries: %w", err)
	}
	return nil
}

// scan calls fn on the stream's entries, newest first, until fn returns
// false or the stream ends. The stream is read a page at a time, so that a
// long stream never blocks Redis.
func (s *Service) scan(ctx context.Context, fn func(redis.XMessage) bool) error {
	end := "+"
	for {
		msgs, err := s.rdb.XRevRangeN(ctx, worker.DeadLetterStream, end, "-", scanPage).Result()
		if err != nil {
			return fmt.Errorf("read dead letters: %w", err)
		}
		for _, m := range msgs {
			if !fn(m) {
				return nil
			}
		}
		if len(msgs) < scanPage {
			return nil
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
}

// Bounds of the short fields of an entry read back, in bytes.
const (
	maxEntryID   = 256
	maxEntryCode = 64
)

// entryOf decodes a stream entry as the worker writes it. problem says why
// the entry is not a dead letter: a task id, type or queue missing or too
// long, or a failed_at that is not an RFC 3339 time. Other fields that are
// missing or malformed are left at their zero value; text is cut to a fixed
// length and the payload shown as Show does.
func entryOf(m redis.XMessage) (dl DeadLetter, problem string) {
	str := func(k string) string {
		v, _ := m.Values[k].(string)
		return v
	}
	num := func(k string) int {
		n, _ := strconv.Atoi(str(k))
		return max(n, 0)
	}
	failedAt, err := time.Parse(time.RFC3339, str("failed_at"))
	switch {
	case str("task_id") == "" || len(str("task_id")) > maxEntryID:
		problem = "no task_id"
	case str("type") == "" || len(str("type")) > maxEntryID:
		problem = "no type"
	case str("queue") == "" || len(str("queue")) > maxEntryID:
		problem = "no queue"
	case err != nil:
		problem = "failed_at is not an RFC 3339 time"
	}
	payload := []byte(str("payload"))
	p := Show(payload, max(len(payload), num("payload_bytes")))
	return DeadLetter{
		EntryID:          m.ID,
		TaskID:           clipText(str("task_id")),
		Type:             clipText(str("type")),
		Queue:            clipText(str("queue")),
		Payload:          p.Value,
		PayloadEncoding:  p.Encoding,
		PayloadTruncated: p.Truncated,
		PayloadBytes:     p.Size,
		ErrorCode:        clipText(str("error_code")[:min(len(str("error_code")), maxEntryCode)]),
		ErrorMessage:     clipText(str("error_message")),
		HTTPStatus:       num("http_status"),
		Attempts:         num("attempts"),
		FailedAt:         failedAt.UTC(),
	}, problem
}
