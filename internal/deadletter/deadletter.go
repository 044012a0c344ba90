// Package deadletter owns certmail's Redis records of tasks that did not
// complete:
//
//   - the stream certmail:deadletter (Stream): one entry per dead-lettered
//     task, with its error code, message and HTTP status, written by the
//     worker's error handler (Append) or its lease sweep (AppendOnce), and
//     read and deleted by operators (List, Find, TaskRefs, Refs, Remove)
//     through internal/ops, the API and the CLI;
//   - the keys certmail:deadlettered:<queue>:<task id> (MarkerKey): a task
//     dead-lettered in the last hour, so that no task gets two entries;
//   - the sorted set certmail:parked (ParkedKey): the tasks parked by a wait
//     on their last delivery, written by the worker's error handler (Park),
//     read by ops to report such a task as waiting for a retry (ParkedUntil),
//     and emptied by every worker's unparker (ListParked, Unpark), which
//     moves each task from asynq's archive to its retry set.
//
// A dead-lettered task itself stays in asynq's archive. The worker and the
// operator side both import this package, and neither imports the other.
// Readers are tolerant: an entry written by hand, by an older version or
// damaged is reported as skipped, never fails a whole listing.
package deadletter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Stream is the Redis stream of dead letters.
const Stream = "certmail:deadletter"

// DefaultMaxLen caps the stream (approximately, as XADD MAXLEN ~ does)
// unless the worker is told otherwise (CERTMAIL_DEADLETTER_MAXLEN).
const DefaultMaxLen = 100000

// PayloadMax is the most bytes of a task's payload an entry keeps; the entry
// of a larger one keeps its first PayloadMax bytes and its full size in the
// field payload_bytes. The task itself stays whole in asynq's archive.
const PayloadMax = 8 << 10

// MaxText bounds the text fields of an entry read back (the error message,
// and ids, type and queue, which are refused beyond MaxID), in bytes.
const MaxText = 2048

// MaxID bounds the task id, type and queue of an entry read back, in bytes:
// an entry with a longer one is not a dead letter. It is the longest task id
// certmail's entry points give (tasks.MaxTaskIDBytes).
const MaxID = 256

// BoundedID returns the form of the task id id that whatever certmail
// builds from an id holds (an entry's task_id, MarkerKey, a parked member,
// the worker's keys and log lines): id itself when it is at most MaxID
// bytes; otherwise, for a longer one a raw asynq producer gave, its first
// bytes as valid UTF-8, "…" and 32 hex digits of its SHA-256, at most MaxID
// bytes in all, so that two long ids that begin alike stay apart. It is the
// same for the same id, and BoundedID of a bounded id is that id.
func BoundedID(id string) string {
	if len(id) <= MaxID {
		return id
	}
	const mark, digest = "…", 32
	sum := sha256.Sum256([]byte(id))
	head := strings.TrimSuffix(Clip(id, MaxID-len(mark)-digest), mark)
	return head + mark + hex.EncodeToString(sum[:digest/2])
}

// maxCode bounds the error code of an entry read back, in bytes.
const maxCode = 64

// Entry is one dead letter: the one definition of the stream's fields.
type Entry struct {
	// ID is the stream entry id, set when an entry is read back.
	ID     string
	TaskID string
	Type   string
	Queue  string
	// Payload is the task's payload: whole when appended (Append keeps its
	// first PayloadMax bytes), at most PayloadMax bytes when read back.
	Payload []byte
	// PayloadBytes is the size of the whole payload when the entry keeps only
	// part of it, 0 otherwise.
	PayloadBytes int
	ErrorCode    string
	ErrorMessage string
	HTTPStatus   int // DigiCert's answer, 0 when none
	Attempts     int
	FailedAt     time.Time
}

// MarkerKey is the key that says the task taskID of queue was dead-lettered
// a moment ago, for MarkerTTL: Append sets it with the stream entry, and a
// worker's lease sweep writes a dead letter only for a task without one
// (AppendOnce), so that a task asynq's recoverer archives after certmail's
// error handler dead-lettered it gets no second entry. A requeue deletes it
// (Unmark): the task's next failure is a new dead letter. The key holds
// the task id's BoundedID.
func MarkerKey(queue, taskID string) string {
	return "certmail:deadlettered:" + queue + ":" + BoundedID(taskID)
}

// MarkerTTL is how long a MarkerKey lives: longer than asynq's recoverer
// takes to archive a task whose lease expired (a minute or two while any
// worker runs) and than a lease sweep looks back.
const MarkerTTL = time.Hour

// Append adds e to the stream, capped at about maxLen entries, sets the
// task's MarkerKey, and, in the same round trip, removes any parked entry of
// the task, which would otherwise bring the dead letter back. It is not a
// transaction: each write's error comes back on its own, unparkErr for the
// parked entry, appendErr for the stream entry and its marker.
func Append(ctx context.Context, rdb redis.UniversalClient, e Entry, maxLen int64) (unparkErr, appendErr error) {
	pipe := rdb.Pipeline()
	unpark := pipe.ZRem(ctx, ParkedKey, Parked{Queue: e.Queue, ID: e.TaskID}.Member())
	add := pipe.XAdd(ctx, &redis.XAddArgs{Stream: Stream, MaxLen: maxLen, Approx: true, Values: e.values()})
	mark := pipe.Set(ctx, MarkerKey(e.Queue, e.TaskID), e.FailedAt.UTC().Format(time.RFC3339), MarkerTTL)
	_, _ = pipe.Exec(ctx) // each command's error is read below
	if err := unpark.Err(); err != nil {
		unparkErr = fmt.Errorf("clear parked entry: %w", err)
	}
	if err := add.Err(); err != nil {
		appendErr = fmt.Errorf("append dead letter: %w", err)
	} else if err := mark.Err(); err != nil {
		appendErr = fmt.Errorf("mark the task dead-lettered: %w", err)
	}
	return unparkErr, appendErr
}

// appendOnceScript sets the marker KEYS[1] for ARGV[1] ms unless it is
// set, and only then appends the entry ARGV[3..] (field, value, ...) to the
// stream KEYS[2], capped at about ARGV[2] entries. Returns 1 when it
// appended.
var appendOnceScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
return 1
`)

// AppendOnce adds e to the stream, as Append does, unless the task's
// MarkerKey is set: its dead letter was written already, by the error
// handler or by another worker. Both happen in one step, and appended says
// whether this call wrote it.
func AppendOnce(ctx context.Context, rdb redis.UniversalClient, e Entry, maxLen int64) (appended bool, err error) {
	args := append([]any{MarkerTTL.Milliseconds(), maxLen, e.FailedAt.UTC().Format(time.RFC3339)}, e.values()...)
	n, err := appendOnceScript.Run(ctx, rdb, []string{MarkerKey(e.Queue, e.TaskID), Stream}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("append dead letter: %w", err)
	}
	return n == 1, nil
}

// Unmark deletes the task's MarkerKey: the task leaves the dead letters.
func Unmark(ctx context.Context, rdb redis.UniversalClient, queue, taskID string) error {
	if err := rdb.Del(ctx, MarkerKey(queue, taskID)).Err(); err != nil {
		return fmt.Errorf("clear dead-letter marker: %w", err)
	}
	return nil
}

// values are e's stream fields and values; the task id is its BoundedID,
// so that Decode reads every entry Append writes.
func (e Entry) values() []any {
	values := []any{
		"task_id", BoundedID(e.TaskID),
		"type", e.Type,
		"queue", e.Queue,
		"payload", string(e.Payload[:min(len(e.Payload), PayloadMax)]),
		"error_code", e.ErrorCode,
		"error_message", e.ErrorMessage,
		"http_status", strconv.Itoa(e.HTTPStatus),
		"attempts", strconv.Itoa(e.Attempts),
		"failed_at", e.FailedAt.UTC().Format(time.RFC3339),
	}
	if len(e.Payload) > PayloadMax {
		values = append(values, "payload_bytes", strconv.Itoa(len(e.Payload)))
	}
	return values
}

// Decode reads a stream entry as Append writes it. problem says why the
// entry is not a dead letter: a task id, type or queue missing or too long,
// or a failed_at that is not an RFC 3339 time. Other fields that are missing
// or malformed are left at their zero value, and text is made valid UTF-8
// and cut to MaxText bytes (an error code to 64), so that whatever the
// stream holds, an entry read back is bounded.
func Decode(m redis.XMessage) (e Entry, problem string) {
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
	case str("task_id") == "" || len(str("task_id")) > MaxID:
		problem = "no task_id"
	case str("type") == "" || len(str("type")) > MaxID:
		problem = "no type"
	case str("queue") == "" || len(str("queue")) > MaxID:
		problem = "no queue"
	case err != nil:
		problem = "failed_at is not an RFC 3339 time"
	}
	payload := []byte(str("payload"))
	size := num("payload_bytes")
	if size <= len(payload) {
		size = 0
	}
	code := str("error_code")
	return Entry{
		ID:           m.ID,
		TaskID:       Clip(str("task_id"), MaxText),
		Type:         Clip(str("type"), MaxText),
		Queue:        Clip(str("queue"), MaxText),
		Payload:      payload,
		PayloadBytes: size,
		ErrorCode:    Clip(code[:min(len(code), maxCode)], MaxText),
		ErrorMessage: Clip(str("error_message"), MaxText),
		HTTPStatus:   num("http_status"),
		Attempts:     num("attempts"),
		FailedAt:     failedAt.UTC(),
	}, problem
}

// Clip returns s as valid UTF-8 of at most limit bytes, ending with "…"
// when it was cut: how a failed task's reason and the fields of its dead
// letter are bounded, when written and when read back.
func Clip(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= limit {
		return s
	}
	const mark = "…"
	cut := limit - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// idPattern is the form of a stream entry id; ValidID also bounds its halves.
var idPattern = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// ValidID reports whether s is a stream entry id such as 1718000000000-0,
// the cursor of List: two decimal uint64s, as Redis reads them (it refuses
// an id beyond, which would fail List).
func ValidID(s string) bool {
	if !idPattern.MatchString(s) {
		return false
	}
	ms, seq, _ := strings.Cut(s, "-")
	_, errMS := strconv.ParseUint(ms, 10, 64)
	_, errSeq := strconv.ParseUint(seq, 10, 64)
	return errMS == nil && errSeq == nil
}

// Skipped is a stream entry that could not be read as a dead letter.
type Skipped struct {
	EntryID string `json:"entry_id"`
	Problem string `json:"problem"`
}

// Page is one page of the stream, newest first.
type Page struct {
	// Entries are the page's well-formed entries.
	Entries []Entry
	// Skipped are the page's malformed entries (as many as the page holds),
	// left out of Entries.
	Skipped []Skipped
	// Next is the cursor of the following page, "" when there is none.
	Next string
}

// List reads at most limit entries (at least 1), newest first, starting
// strictly before the entry id before ("" starts from the newest; any other
// value must be ValidID). Malformed entries count towards limit and are
// returned in Skipped.
func List(ctx context.Context, rdb redis.UniversalClient, before string, limit int) (Page, error) {
	var page Page
	end := "+"
	switch before {
	case "":
	case "0-0":
		return page, nil // nothing comes before the first possible id
	default:
		end = "(" + before
	}
	msgs, err := rdb.XRevRangeN(ctx, Stream, end, "-", int64(limit)+1).Result()
	if err != nil {
		return page, fmt.Errorf("read dead letters: %w", err)
	}
	if len(msgs) > limit {
		msgs = msgs[:limit]
		page.Next = msgs[limit-1].ID
	}
	for _, m := range msgs {
		e, problem := Decode(m)
		if problem != "" {
			page.Skipped = append(page.Skipped, Skipped{EntryID: m.ID, Problem: problem})
			continue
		}
		page.Entries = append(page.Entries, e)
	}
	return page, nil
}

// Find returns the newest entry of the task taskID, as Decode reads it
// whatever else it lacks; found is false when the stream has none.
func Find(ctx context.Context, rdb redis.UniversalClient, taskID string) (e Entry, found bool, err error) {
	err = scan(ctx, rdb, func(m redis.XMessage) bool {
		if m.Values["task_id"] == taskID {
			e, _ = Decode(m) // it has the task id looked for; whatever else it lacks shows as empty
			found = true
			return false
		}
		return true
	})
	return e, found, err
}

// TaskRefs returns a Ref of every stream entry of the task taskID, newest
// first; a queue longer than MaxID is left empty, as in Refs.
func TaskRefs(ctx context.Context, rdb redis.UniversalClient, taskID string) ([]Ref, error) {
	var refs []Ref
	err := scan(ctx, rdb, func(m redis.XMessage) bool {
		if m.Values["task_id"] == taskID {
			q, _ := m.Values["queue"].(string)
			if len(q) > MaxID {
				q = ""
			}
			refs = append(refs, Ref{EntryID: m.ID, TaskID: taskID, Queue: q})
		}
		return true
	})
	return refs, err
}

// removeBatch is how many entries one XDEL deletes, so that deleting a
// whole stream's worth never blocks Redis for long.
const removeBatch = 500

// Remove deletes the stream entries ids, a batch at a time, and returns how
// many there were (an id already gone is not counted).
func Remove(ctx context.Context, rdb redis.UniversalClient, ids ...string) (int, error) {
	removed := 0
	for batch := range slices.Chunk(ids, removeBatch) {
		n, err := rdb.XDel(ctx, Stream, batch...).Result()
		removed += int(n)
		if err != nil {
			return removed, fmt.Errorf("delete dead-letter entries: %w", err)
		}
	}
	return removed, nil
}

// Ref is what a purge reads of a stream entry: its id, and its task id and
// queue as stored (either may be missing or malformed).
type Ref struct {
	EntryID string
	TaskID  string
	Queue   string
}

// Refs returns a Ref of every entry of the stream, newest first, read a
// page at a time. The stream is capped (CERTMAIL_DEADLETTER_MAXLEN), so is
// the list; a task id or queue longer than MaxID is left empty, as Decode
// refuses it.
func Refs(ctx context.Context, rdb redis.UniversalClient) ([]Ref, error) {
	var refs []Ref
	err := scan(ctx, rdb, func(m redis.XMessage) bool {
		str := func(k string) string {
			v, _ := m.Values[k].(string)
			if len(v) > MaxID {
				return ""
			}
			return v
		}
		refs = append(refs, Ref{EntryID: m.ID, TaskID: str("task_id"), Queue: str("queue")})
		return true
	})
	return refs, err
}

// Count returns how many entries the stream holds.
func Count(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	n, err := rdb.XLen(ctx, Stream).Result()
	if err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	return int(n), nil
}

// scanPage is how many stream entries one read fetches when searching the
// stream for a task id.
const scanPage = 500

// scan calls fn on the stream's entries, newest first, until fn returns
// false or the stream ends. The stream is read a page at a time, so that a
// long stream never blocks Redis.
func scan(ctx context.Context, rdb redis.UniversalClient, fn func(redis.XMessage) bool) error {
	end := "+"
	for {
		msgs, err := rdb.XRevRangeN(ctx, Stream, end, "-", scanPage).Result()
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
