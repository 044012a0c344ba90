package ops

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/ranges"
	"github.com/certmail/certmail/tasks"
)

// DeadLetter is one entry of the dead-letter stream (a deadletter.Entry) as
// operators see it, plus whether the task is still in asynq's archive.
type DeadLetter struct {
	EntryID string `json:"entry_id"` // the stream entry id
	TaskID  string `json:"task_id"`
	Type    string `json:"type"`
	Queue   string `json:"queue"`
	// Payload, PayloadEncoding, PayloadTruncated and PayloadBytes show the
	// task's payload as TaskStatus does; the entry keeps at most
	// deadletter.PayloadMax bytes of it.
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

// deadLetterOf is what operators see of e: its payload shown as Show does.
func deadLetterOf(e deadletter.Entry) DeadLetter {
	p := Show(e.Payload, max(len(e.Payload), e.PayloadBytes))
	return DeadLetter{
		EntryID:          e.ID,
		TaskID:           e.TaskID,
		Type:             e.Type,
		Queue:            e.Queue,
		Payload:          p.Value,
		PayloadEncoding:  p.Encoding,
		PayloadTruncated: p.Truncated,
		PayloadBytes:     p.Size,
		ErrorCode:        e.ErrorCode,
		ErrorMessage:     e.ErrorMessage,
		HTTPStatus:       e.HTTPStatus,
		Attempts:         e.Attempts,
		FailedAt:         e.FailedAt,
	}
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
	Skipped []deadletter.Skipped
	// SkippedCount is how many entries were skipped, listed or not.
	SkippedCount int
}

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
		return page, fmt.Errorf("limit %d: %w: want %s", limit, ErrInvalidArgument, ranges.Of(1, MaxDeadLetterLimit))
	}
	if before != "" && !deadletter.ValidID(before) {
		return page, fmt.Errorf("cursor %.64q: %w: want an entry id such as 1718000000000-0", before, ErrInvalidArgument)
	}
	read, err := deadletter.List(ctx, s.rdb, before, limit)
	if err != nil {
		return page, err
	}
	page.Next = read.Next
	for _, e := range read.Entries {
		dl, err := s.withArchived(ctx, deadLetterOf(e))
		if err != nil {
			return DeadLetterPage{}, err
		}
		page.Entries = append(page.Entries, dl)
	}
	for _, sk := range read.Skipped {
		s.opts.Logger.Warn("malformed dead-letter entry skipped", zap.String("entry_id", sk.EntryID), zap.String("problem", sk.Problem))
	}
	page.SkippedCount = len(read.Skipped)
	if page.SkippedCount > 0 {
		page.Skipped = read.Skipped[:min(page.SkippedCount, MaxSkippedListed)]
	}
	return page, nil
}

// DeadLetter returns the newest entry of the task taskID. The error wraps
// ErrNotFound when the stream has none.
func (s *Service) DeadLetter(ctx context.Context, taskID string) (DeadLetter, error) {
	if err := checkDeadLetterID(taskID); err != nil {
		return DeadLetter{}, err
	}
	e, found, err := deadletter.Find(ctx, s.rdb, taskID)
	if err != nil {
		return DeadLetter{}, err
	}
	if !found {
		return DeadLetter{}, fmt.Errorf("dead letter %s: %w", ShowName(taskID), ErrNotFound)
	}
	return s.withArchived(ctx, deadLetterOf(e))
}

// Requeue moves the archived task taskID back to pending (it runs again as
// soon as a worker is free) and removes its stream entries. asynq's task ids
// are unique per queue only: the task is looked for in the queue its newest
// entry names (and only those of that queue's entries go), or, with no entry
// naming a queue, in every queue, an archived one first. The error wraps
// ErrNotFound when the task is in neither the stream nor the archive, and
// also, saying so, when the stream has it but that queue no longer holds it
// archived (deleted after its retention or by an operator, requeued or
// deleted by other means, or parked, waiting to be retried).
func (s *Service) Requeue(ctx context.Context, taskID string) (TaskRef, error) {
	if err := checkDeadLetterID(taskID); err != nil {
		return TaskRef{}, err
	}
	queue, refs, err := s.entriesOf(ctx, taskID)
	if err != nil {
		return TaskRef{}, err
	}
	info, err := s.archived(ctx, taskID, queue, len(refs) > 0)
	if err != nil {
		return TaskRef{}, err
	}
	// Its next failure is a dead letter of its own: the workers' lease sweep
	// must not take it for this one (deadletter.MarkerKey).
	if err := deadletter.Unmark(ctx, s.rdb, info.Queue, taskID); err != nil {
		return TaskRef{}, fmt.Errorf("requeue task %s: %w", ShowName(taskID), err)
	}
	if err := s.inspector.RunTask(info.Queue, taskID); err != nil {
		return TaskRef{}, s.actionError(ctx, "requeue", info, len(refs) > 0, err)
	}
	ref := TaskRef{ID: info.ID, Type: info.Type, Queue: info.Queue, State: asynq.TaskStatePending.String()}
	if _, err := deadletter.Remove(ctx, s.rdb, refs...); err != nil {
		return ref, fmt.Errorf("task %s requeued, but its dead-letter entries remain: %w", ShowName(taskID), err)
	}
	return ref, nil
}

// DeletedDeadLetter is what DeleteDeadLetter deleted.
type DeletedDeadLetter struct {
	// Task is the archived task deleted; nil when none was.
	Task *TaskRef
	// Entries counts the stream entries deleted.
	Entries int
	// Kept says, when Task is nil, why the task was not deleted: "no longer
	// archived in queue critical (it is pending now)", "waiting to be retried
	// in queue default".
	Kept string
}

// DeleteDeadLetter deletes the archived task taskID, looked for as Requeue
// does, if it is still archived there, and its stream entries (those of
// that queue). When the entries are all there is, they go alone, and the
// answer says why the task was not deleted. The error wraps ErrNotFound
// when there was neither.
func (s *Service) DeleteDeadLetter(ctx context.Context, taskID string) (DeletedDeadLetter, error) {
	var d DeletedDeadLetter
	if err := checkDeadLetterID(taskID); err != nil {
		return d, err
	}
	queue, refs, err := s.entriesOf(ctx, taskID)
	if err != nil {
		return d, err
	}
	info, err := s.archived(ctx, taskID, queue, len(refs) > 0)
	unmark := "" // the queue of the task, once it is gone
	if err == nil {
		unmark = info.Queue
		switch err = s.inspector.DeleteTask(info.Queue, taskID); {
		case errors.Is(err, asynq.ErrTaskNotFound):
			d.Kept, err = (&notArchivedError{id: taskID, queue: info.Queue, now: "deleted meanwhile"}).reason(), nil
		case err != nil:
			err = s.actionError(ctx, "delete", info, len(refs) > 0, err) // trimmed meanwhile?
		default:
			d.Task = &TaskRef{ID: info.ID, Type: info.Type, Queue: info.Queue, State: "deleted"}
		}
	}
	var kept *notArchivedError
	if errors.As(err, &kept) && kept.now == nowTrimmed {
		// What asynq left of a task it trimmed from the archive goes too,
		// so that its id no longer conflicts with a producer's task.
		switch deleted, terr := s.trimmed(ctx, kept.queue, taskID, true); {
		case terr != nil:
			return d, fmt.Errorf("delete task %s: %w", ShowName(taskID), terr)
		case deleted:
			d.Task, err, unmark = &TaskRef{ID: taskID, Type: kept.taskType, Queue: kept.queue, State: "deleted"}, nil, kept.queue
		default:
			kept.now, unmark = "changed meanwhile", ""
		}
	}
	switch {
	case errors.As(err, &kept) && len(refs) > 0:
		d.Kept = kept.reason()
	case err != nil:
		return d, err
	}
	if unmark != "" {
		// A producer may send the task again under its id: its next
		// failure is a dead letter of its own (deadletter.MarkerKey).
		if err := deadletter.Unmark(ctx, s.rdb, unmark, taskID); err != nil {
			return d, fmt.Errorf("delete task %s: %w", ShowName(taskID), err)
		}
	}
	d.Entries, err = deadletter.Remove(ctx, s.rdb, refs...)
	return d, err
}

// Purged is what PurgeDeadLetters deleted.
type Purged struct {
	Entries int // entries of the dead-letter stream
	Tasks   int // archived tasks
	// Kept counts the entries of the purged queues left in the stream:
	// those of tasks parked at the check, and those of tasks still archived
	// after the deletions (archived while the purge ran).
	Kept int
}

// purgePage is how many archived tasks one listing of a queue's archive
// fetches while PurgeDeadLetters collects them.
const purgePage = 1000

// maxQueueName is the most bytes of a queue name a PurgeCheck or a
// TaskStatus's OtherQueues shows: a queue certmail serves has at most 63
// (tasks.ValidQueueName).
const maxQueueName = 64

// MaxQueuesListed is the most queue names a PurgeCheck lists in Known and
// Other, and its messages name, and a TaskStatus in OtherQueues; the others
// are counted.
const MaxQueuesListed = 10

// PurgeCheck is what PurgeDeadLetters finds before it deletes anything.
type PurgeCheck struct {
	// Queues are the queues whose dead letters go: PurgeQueues, sorted.
	Queues []string
	// Unknown are those of Queues that asynq has never known: nothing was
	// ever enqueued to them, so they have no archive.
	Unknown []string
	// Known lists the queues asynq knows, sorted, at most MaxQueuesListed
	// of them, each cut to 64 bytes; KnownCount counts them all.
	Known      []string
	KnownCount int
	// Tasks counts the archived tasks of Queues that Purge deletes: all
	// but parked ones, which wait to be tried again.
	Tasks int
	// Entries counts the stream entries that Purge deletes: those that
	// name one of Queues, and the malformed ones that name no queue, except
	// those of a parked task, which stay with it.
	Entries int
	// Other lists the other queues that stream entries name, sorted, at
	// most MaxQueuesListed of them; OtherCount counts them all, and
	// OtherEntries their entries, which the purge keeps.
	Other        []string
	OtherCount   int
	OtherEntries int

	tasks []deadletter.Parked // the archived tasks counted in Tasks
	refs  []deadletter.Ref    // the entries counted in Entries, the only ones Purge may delete
	// parkedEntries counts the entries of Queues left out of Entries: those
	// of parked tasks, kept even if their task leaves the archive before
	// Purge runs.
	parkedEntries int
}

// UnknownNote says which of c.Queues asynq has never known and which
// queues it knows, both lists bounded: "asynq has never known queue
// defualt (it knows: critical, default)". It is "" when it knows them all.
func (c PurgeCheck) UnknownNote() string {
	if len(c.Unknown) == 0 {
		return ""
	}
	return fmt.Sprintf("asynq has never known %s %s (it knows: %s)", plural(len(c.Unknown), "queue", "queues"),
		QueueList(c.Unknown, len(c.Unknown)), QueueList(c.Known, c.KnownCount))
}

// UnknownQueuesError is the error of CheckPurge and PurgeDeadLetters when
// a queue to purge looks mistyped: asynq has never known it, and either it
// knows none of the queues to purge, or dead-letter entries name a queue
// that is not among them (likely the one meant). Nothing is deleted then.
// It matches ErrInvalidArgument.
type UnknownQueuesError struct {
	Check PurgeCheck
}

// Error says which queues asynq has never known, which it knows, and why
// that is refused.
func (e *UnknownQueuesError) Error() string {
	c := e.Check
	if c.OtherEntries > 0 {
		return fmt.Sprintf("%s, and %d dead-letter %s other queues (%s)", c.UnknownNote(), c.OtherEntries,
			plural(c.OtherEntries, "entry names", "entries name"), QueueList(c.Other, c.OtherCount))
	}
	return c.UnknownNote() + ": none of the queues to purge is known"
}

// Is reports whether target is ErrInvalidArgument.
func (e *UnknownQueuesError) Is(target error) bool { return target == ErrInvalidArgument }

// CheckPurge finds what a purge deletes and keeps, for Purge to delete: a
// question asked about its Tasks and Entries is about what goes. The error
// is an *UnknownQueuesError, with the check, when the purge would be
// refused. A queue asynq has never known among known ones (one no task was
// ever sent to yet) is only reported, in Unknown.
func (s *Service) CheckPurge(ctx context.Context) (PurgeCheck, error) {
	c := PurgeCheck{Queues: slices.Clone(s.opts.PurgeQueues)}
	all, known, err := s.knownQueues()
	if err != nil {
		return c, err
	}
	c.Known, c.KnownCount = known, len(all)
	for _, q := range c.Queues {
		if _, found := slices.BinarySearch(all, q); !found {
			c.Unknown = append(c.Unknown, q)
		}
	}
	refs, err := deadletter.Refs(ctx, s.rdb)
	if err != nil {
		return c, err
	}
	// The other queues' names are counted in full: the stream is capped,
	// and a queue name that could hold a task is at most 63 bytes.
	other := map[string]bool{}
	for _, r := range refs {
		if tasks.ValidQueueName(r.Queue) && !slices.Contains(c.Queues, r.Queue) {
			other[r.Queue] = true
			c.OtherEntries++
			continue
		}
		c.refs = append(c.refs, r)
	}
	c.OtherCount = len(other)
	c.Other = slices.Sorted(maps.Keys(other))
	c.Other = c.Other[:min(len(c.Other), MaxQueuesListed)]
	noneKnown := len(c.Unknown) == len(c.Queues) && c.KnownCount > 0
	if len(c.Unknown) > 0 && (noneKnown || c.OtherEntries > 0) {
		c.refs = nil // nothing goes: Purge of this check deletes nothing
		return c, &UnknownQueuesError{Check: c}
	}
	parked := map[deadletter.Parked]bool{} // archived parked tasks, as entries name them
	for _, q := range c.known() {
		ids, err := s.archivedIDs(q)
		if err != nil {
			return c, err
		}
		// Read after the listing: a worker parks a task before asynq
		// archives it, so every parked task listed is in the set by now.
		isParked, err := s.parkedMembers(ctx)
		if err != nil {
			return c, err
		}
		for _, id := range ids {
			if isParked[deadletter.Parked{Queue: q, ID: id}.Member()] {
				parked[deadletter.Parked{Queue: q, ID: deadletter.BoundedID(id)}] = true
				continue
			}
			c.tasks = append(c.tasks, deadletter.Parked{Queue: q, ID: id})
		}
	}
	c.Tasks = len(c.tasks)
	// A parked task's entries stay with it: not counted, so not deleted,
	// even when a worker has moved the task out of the archive by the time
	// Purge runs.
	counted := c.refs[:0]
	for _, r := range c.refs {
		if parked[deadletter.Parked{Queue: r.Queue, ID: r.TaskID}] {
			c.parkedEntries++
			continue
		}
		counted = append(counted, r)
	}
	c.refs = counted
	c.Entries = len(c.refs)
	return c, nil
}

// known returns the queues of c.Queues that asynq knows.
func (c PurgeCheck) known() []string {
	return slices.DeleteFunc(slices.Clone(c.Queues), func(q string) bool { return slices.Contains(c.Unknown, q) })
}

// parkedMembers returns the members of the parked set (deadletter.ParkedKey).
func (s *Service) parkedMembers(ctx context.Context) (map[string]bool, error) {
	parked, err := s.rdb.ZRange(ctx, deadletter.ParkedKey, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read parked tasks: %w", err)
	}
	is := make(map[string]bool, len(parked))
	for _, m := range parked {
		is[m] = true
	}
	return is, nil
}

// PurgeDeadLetters deletes the dead letters of the queues PurgeQueues
// names (by default those certmail serves, Rules.Queues): their archived tasks, except parked ones, which wait to be
// tried again, and the stream entries that name them, except those of a
// task parked when the purge began, wherever it is by its end, and of one
// still archived afterwards (archived meanwhile). Malformed
// entries that name no queue go too. The archives and entries of other
// queues (another asynq application's, or queues left out of PurgeQueues)
// are left alone. It is CheckPurge then Purge: it refuses with CheckPurge's
// *UnknownQueuesError, deleting nothing.
func (s *Service) PurgeDeadLetters(ctx context.Context) (Purged, error) {
	check, err := s.CheckPurge(ctx)
	if err != nil {
		return Purged{}, err
	}
	return s.Purge(ctx, check)
}

// Purge deletes what check, from CheckPurge, found: at most its Tasks
// archived tasks and its Entries entries, so that a purge confirmed on the
// check's counts deletes no more. A task that is no longer archived, or is
// parked now, is left, and so are the entries of a task still archived
// afterwards, and those of a task parked at the check, wherever it is now
// (Purged.Kept). A check CheckPurge refused deletes nothing.
func (s *Service) Purge(ctx context.Context, check PurgeCheck) (Purged, error) {
	p := Purged{Kept: check.parkedEntries}
	// A worker moves a parked task to asynq's retry set, then removes its
	// member: each task is also read again before it is deleted.
	isParked, err := s.parkedMembers(ctx)
	if err != nil {
		return p, err
	}
	for _, t := range check.tasks {
		q, id := t.Queue, t.ID
		if isParked[t.Member()] {
			continue
		}
		switch info, err := s.inspector.GetTaskInfo(q, id); {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound),
			err == nil && info.State != asynq.TaskStateArchived:
			continue // moved out of the archive, requeued or deleted meanwhile
		case err != nil:
			return p, fmt.Errorf("read task %s of queue %s: %w", ShowName(id), ShowName(q), err)
		}
		switch err := s.inspector.DeleteTask(q, id); {
		case errors.Is(err, asynq.ErrTaskNotFound):
			// requeued or deleted meanwhile
		case err != nil:
			return p, fmt.Errorf("delete task %s of queue %s: %w", ShowName(id), ShowName(q), err)
		default:
			p.Tasks++
			if err := deadletter.Unmark(ctx, s.rdb, q, id); err != nil { // as DeleteDeadLetter
				return p, fmt.Errorf("delete task %s of queue %s: %w", ShowName(id), ShowName(q), err)
			}
		}
	}
	// Listed after the deletions: the tasks still archived now keep their
	// entries.
	stillArchived := map[deadletter.Parked]bool{}
	for _, q := range check.known() {
		ids, err := s.archivedIDs(q)
		if err != nil {
			return p, err
		}
		for _, id := range ids {
			// As the entries name it (a long id shortened).
			stillArchived[deadletter.Parked{Queue: q, ID: deadletter.BoundedID(id)}] = true
		}
	}
	var gone []deadletter.Ref
	for _, r := range check.refs {
		if stillArchived[deadletter.Parked{Queue: r.Queue, ID: r.TaskID}] {
			p.Kept++
			continue
		}
		gone = append(gone, r)
	}
	p.Entries, err = deadletter.Remove(ctx, s.rdb, gone...)
	return p, err
}

// QueueList joins the first MaxQueuesListed of names, the first of total
// queues, and says how many it left out: "bulk, default and 3 more"; "none"
// when total is 0.
func QueueList(names []string, total int) string {
	if total == 0 {
		return "none"
	}
	shown := names[:min(len(names), MaxQueuesListed)]
	s := strings.Join(shown, ", ")
	if left := total - len(shown); left > 0 {
		s += fmt.Sprintf(" and %d more", left)
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// archivedIDs lists the ids of queue q's archived tasks (asynq caps an
// archive's size); none when asynq does not know the queue.
func (s *Service) archivedIDs(q string) ([]string, error) {
	var ids []string
	for page := 1; ; page++ {
		infos, err := s.inspector.ListArchivedTasks(q, asynq.PageSize(purgePage), asynq.Page(page))
		switch {
		case errors.Is(err, asynq.ErrQueueNotFound):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("list archived tasks of queue %s: %w", ShowName(q), err)
		}
		for _, info := range infos {
			ids = append(ids, info.ID)
		}
		if len(infos) < purgePage {
			return ids, nil
		}
	}
}

// CountDeadLetters returns how many entries the dead-letter stream holds.
func (s *Service) CountDeadLetters(ctx context.Context) (int, error) {
	return deadletter.Count(ctx, s.rdb)
}

// checkDeadLetterID refuses, as not found, a task id that no dead letter can
// have: empty or longer than deadletter.MaxID. Nothing is looked up for it,
// and the messages that name a task id stay short.
func checkDeadLetterID(taskID string) error {
	if taskID == "" || len(taskID) > deadletter.MaxID {
		return fmt.Errorf("dead letter: %w (a task id is 1 to %d bytes)", ErrNotFound, deadletter.MaxID)
	}
	return nil
}

// entriesOf returns the queue that the newest stream entry of the task
// taskID names, "" when none names one a task can be in, and the entries of
// the task that go with it: those that name that queue or none (all of
// them when queue is "").
func (s *Service) entriesOf(ctx context.Context, taskID string) (queue string, entries []deadletter.Ref, err error) {
	refs, err := deadletter.TaskRefs(ctx, s.rdb, taskID)
	if err != nil {
		return "", nil, err
	}
	for _, r := range refs {
		if tasks.ValidQueueName(r.Queue) {
			queue = r.Queue
			break
		}
	}
	for _, r := range refs {
		if r.Queue == queue || !tasks.ValidQueueName(r.Queue) {
			entries = append(entries, r)
		}
	}
	return queue, entries, nil
}

// notArchivedError is the error of archived for a task that is not, or no
// longer, a dead letter in asynq's archive. It wraps ErrNotFound.
type notArchivedError struct {
	id       string
	queue    string // where it was looked for or found; "" for every queue
	now      string // what it is now: an asynq state, "parked", "deleted meanwhile", nowTrimmed; "" when not found
	inStream bool   // the dead-letter stream names it
	taskType string // the task's type, when now is nowTrimmed
}

// nowTrimmed is the now of a notArchivedError for a task asynq trimmed
// from the archive (trimmedScript).
const nowTrimmed = "trimmed"

func (e *notArchivedError) Error() string {
	switch {
	case e.inStream:
		return fmt.Sprintf("task %s is dead-lettered but %s: %v", ShowName(e.id), e.reason(), ErrNotFound)
	case e.now == "parked":
		return fmt.Sprintf("dead letter %s: %v (the task is waiting to be retried)", ShowName(e.id), ErrNotFound)
	case e.now == nowTrimmed:
		return fmt.Sprintf("dead letter %s: %v: %s", ShowName(e.id), ErrNotFound, e.reason())
	case e.now != "":
		return fmt.Sprintf("dead letter %s: %v (the task is %s)", ShowName(e.id), ErrNotFound, e.now)
	}
	return fmt.Sprintf("dead letter %s: %v", ShowName(e.id), ErrNotFound)
}

func (e *notArchivedError) Unwrap() error { return ErrNotFound }

// reason says why the task is no dead letter to act on: "no longer
// archived in queue critical (it is completed now)".
func (e *notArchivedError) reason() string {
	where := ""
	if e.queue != "" {
		where = " in queue " + ShowName(e.queue)
	}
	switch {
	case e.now == "" && shortenedID(e.id):
		return "not archived under this id" + where + " (the shortened form of a longer id: delete the task from the dashboard, or purge)"
	case e.now == "":
		return "no longer archived" + where + " (deleted, after its retention or by an operator)"
	case e.now == "parked":
		return "waiting to be retried" + where
	case strings.HasSuffix(e.now, " meanwhile"):
		return "no longer archived" + where + " (" + e.now + ")"
	case e.now == nowTrimmed:
		return "no longer archived" + where + " (asynq trimmed it from the archive, over its cap of 10 000 tasks; " +
			"certmail dlq delete removes what is left of it, and a producer may then send it again)"
	}
	return "no longer archived" + where + " (it is " + e.now + " now)"
}

// shortenedID reports whether id has the form deadletter.BoundedID gives a
// longer id: "…" and 32 hex digits at its end.
func shortenedID(id string) bool {
	const mark, digest = "…", 32
	head, tail, found := strings.Cut(id, mark)
	if !found || len(tail) != digest || len(head)+len(mark)+digest > deadletter.MaxID {
		return false
	}
	_, err := hex.DecodeString(tail)
	return err == nil
}

// archived returns the task taskID if it is archived, and not parked, in
// queue; for queue "", in the first queue asynq knows that holds it so. The
// error is a *notArchivedError otherwise, whose message says why when
// inStream; for a task asynq trimmed from the archive (trimmedScript), its
// now is nowTrimmed.
func (s *Service) archived(ctx context.Context, taskID, queue string, inStream bool) (*asynq.TaskInfo, error) {
	var info *asynq.TaskInfo
	var err error
	if queue != "" {
		info, err = s.taskInfo(queue, taskID)
	} else {
		info, err = s.findArchived(ctx, taskID)
	}
	notArchived := &notArchivedError{id: taskID, queue: queue, inStream: inStream}
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, notArchived
	case err != nil:
		return nil, err
	}
	notArchived.queue = info.Queue
	if info.State != asynq.TaskStateArchived {
		notArchived.now = info.State.String()
		return nil, notArchived
	}
	// A parked task passes through asynq's archive too, but it is alive: it
	// waits to be tried again (see TaskInQueue), and deleting or running it
	// here would lose or hurry a delivery. A worker moves it to asynq's
	// retry set, then removes its entry: without an entry, it is read again.
	_, parked, err := deadletter.ParkedUntil(ctx, s.rdb, info.Queue, info.ID)
	switch {
	case err != nil:
		return nil, fmt.Errorf("task %s: parked entry: %w", ShowName(taskID), err)
	case parked:
		notArchived.now = "parked"
		return nil, notArchived
	}
	switch trimmed, err := s.trimmed(ctx, info.Queue, info.ID, false); {
	case err != nil:
		return nil, fmt.Errorf("task %s: %w", ShowName(taskID), err)
	case trimmed:
		notArchived.now, notArchived.taskType = nowTrimmed, info.Type
		return nil, notArchived
	}
	switch again, err := s.inspector.GetTaskInfo(info.Queue, info.ID); {
	case err == nil && again.State != asynq.TaskStateArchived:
		notArchived.now = again.State.String()
		return nil, notArchived
	case err != nil && !errors.Is(err, asynq.ErrTaskNotFound):
		return nil, fmt.Errorf("task %s: %w", ShowName(taskID), err)
	case err != nil:
		return nil, notArchived
	}
	return info, nil
}

// actionError is the error of asynq's run or delete (action) of the task
// info, which archived found archived: a *notArchivedError when asynq
// trimmed it from the archive meanwhile, whose Run and Delete then fail with
// an internal error of asynq's, else the error wrapped.
func (s *Service) actionError(ctx context.Context, action string, info *asynq.TaskInfo, inStream bool, err error) error {
	if trimmed, terr := s.trimmed(ctx, info.Queue, info.ID, false); terr == nil && trimmed {
		return &notArchivedError{id: info.ID, queue: info.Queue, now: nowTrimmed, inStream: inStream, taskType: info.Type}
	}
	return fmt.Errorf("%s task %s: %w", action, ShowName(info.ID), err)
}

// findArchived looks the task taskID up in every queue asynq knows, as
// Task does (lookupBatch per round trip), but takes one the archive lists
// before any other (such as what asynq left of a task
// it trimmed from an archive): asynq's task ids are unique per queue only.
// asynq's Inspector reads the one task taken.
func (s *Service) findArchived(ctx context.Context, taskID string) (*asynq.TaskInfo, error) {
	known, err := s.inspector.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	first := ""
	for batch := range slices.Chunk(known, lookupBatch) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		held, err := s.holders(ctx, batch, taskID)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", ShowName(taskID), err)
		}
		for _, h := range held {
			if h.state == asynq.TaskStateArchived.String() && h.listed {
				return s.taskInfo(h.queue, taskID)
			}
			if first == "" {
				first = h.queue
			}
		}
	}
	if first == "" {
		return nil, fmt.Errorf("task %s: %w", ShowName(taskID), ErrNotFound)
	}
	return s.taskInfo(first, taskID)
}

// taskInfo reads the task taskID of queue with asynq's Inspector; the error
// wraps ErrNotFound when the queue does not hold it.
func (s *Service) taskInfo(queue, taskID string) (*asynq.TaskInfo, error) {
	info, err := s.inspector.GetTaskInfo(queue, taskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil, fmt.Errorf("task %s in queue %s: %w", ShowName(taskID), ShowName(queue), ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("task %s in queue %s: %w", ShowName(taskID), ShowName(queue), err)
	}
	return info, nil
}

// withArchived sets dl.Archived from asynq's archive of dl.Queue, in one
// round trip.
func (s *Service) withArchived(ctx context.Context, dl DeadLetter) (DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return DeadLetter{}, err
	}
	if !tasks.ValidQueueName(dl.Queue) || dl.TaskID == "" {
		return dl, nil // not a queue a task can be in
	}
	// The archive's own list, not the task's state: a task asynq trimmed
	// from the archive is still "archived" in its hash (trimmedScript).
	listed, err := s.inArchive(ctx, dl.Queue, dl.TaskID)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("task %s: %w", ShowName(dl.TaskID), err)
	}
	dl.Archived = listed
	return dl, nil
}
