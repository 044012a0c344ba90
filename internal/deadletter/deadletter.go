// Package deadletter owns certmail's Redis records of tasks that did not
// complete:
//
//   - the stream certmail:deadletter (Stream): one entry per dead-lettered
//     task, with its error code, message and HTTP status, written by the
//     worker's error handler (Append) or its lease sweep (AppendOnce), and
//     read and deleted by operators (List, Find, TaskRefs, Refs, Remove)
//     through internal/ops, the API and the CLI;
//   - the sorted sets certmail:deadletter:index and :index:time (IndexKey,
//     IndexTimeKey), written with each entry and trimmed with the stream,
//     through which Find and TaskRefs reach a task's entries without
//     reading the stream, and certmail:deadletter:unindexed (UnindexedKey),
//     where the entries the index does not name begin;
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
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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

// IndexKey is the sorted set through which Find and TaskRefs reach a
// task's entries without reading the stream: a member per entry that
// Append or AppendOnce wrote, "<task id>\x00<entry id>" (the task id as the
// entry holds it), every score 0, so that a task's members are one range
// of it. IndexTimeKey holds the same members, scored by the millisecond of
// their entry id, so that the append that trims the stream removes the
// members of the entries it trimmed away. Both hold about as many members
// as the stream holds entries.
const (
	IndexKey     = "certmail:deadletter:index"
	IndexTimeKey = "certmail:deadletter:index:time"
)

// UnindexedKey holds the id of the newest stream entry known to have no
// member in IndexKey: written by an earlier version (before an upgrade, or
// by a worker that is still old during one) or by hand. Find and TaskRefs
// read the stream from there down, as every lookup did before the index;
// the append whose trim takes the stream past it deletes it, so that part
// shrinks to nothing as the stream is trimmed.
const UnindexedKey = "certmail:deadletter:unindexed"

// recordTypes are the keys Append writes whose type Redis checks, each
// with the type it holds; any other type in one makes Append fail with
// WRONGTYPE. (MarkerKey is written by SET, which replaces any type.)
var recordTypes = [...]struct{ key, typ string }{
	{Stream, "stream"}, {IndexKey, "zset"}, {IndexTimeKey, "zset"}, {UnindexedKey, "string"},
}

// WrongTypeKeys returns the keys Append writes that hold another type than
// it writes there (none when each holds its own type or does not exist):
// on a Redis shared with other programs, another program's data under
// certmail's names, which makes every append fail with WRONGTYPE.
func WrongTypeKeys(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	pipe := rdb.Pipeline()
	types := make([]*redis.StatusCmd, len(recordTypes))
	for i, r := range recordTypes {
		types[i] = pipe.Type(ctx, r.key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("dead-letter key types: %w", err)
	}
	var wrong []string
	for i, r := range recordTypes {
		if t := types[i].Val(); t != "none" && t != r.typ {
			wrong = append(wrong, r.key)
		}
	}
	return wrong, nil
}

// staleBatch is the most index members one append removes of entries the
// stream no longer holds: more than XADD MAXLEN ~ trims at once (a node of
// the stream, 100 entries by default), so that the index keeps up.
const staleBatch = 200

// appendScript appends a dead letter and indexes it. KEYS: the task's
// MarkerKey, Stream, IndexKey, IndexTimeKey, UnindexedKey. ARGV: 1 to set
// the marker only if it is not set and append only then (AppendOnce), 0 to
// set it with the entry (Append); the marker's lifetime in ms and value;
// the stream's cap (0: none); the task id as the entry holds it; the
// entry's fields and values. Returns 1 when it appended. Before it appends,
// it looks whether the newest entry has an index member: when not, it
// records that entry in UnindexedKey.
var appendScript = redis.NewScript(`
local function id(s)
  local ms, seq = string.match(s or '', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local ams, aseq = id(a)
  local bms, bseq = id(b)
  if not ams or not bms then return true end
  return ams < bms or (ams == bms and aseq < bseq)
end
if ARGV[1] == '1' and not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[2]) then return 0 end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if last then
  local task
  for i = 1, #last[2], 2 do
    if last[2][i] == 'task_id' then task = last[2][i + 1] break end
  end
  if not task or not redis.call('ZSCORE', KEYS[4], task .. '\0' .. last[1]) then
    redis.call('SET', KEYS[5], last[1])
  end
end
local entry
if tonumber(ARGV[4]) > 0 then
  entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 6))
else
  entry = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6))
end
local member = ARGV[5] .. '\0' .. entry
redis.call('ZADD', KEYS[3], 0, member)
redis.call('ZADD', KEYS[4], string.match(entry, '^%d+'), member)
if ARGV[1] ~= '1' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2]) end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1][1]
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.match(first, '^%d+'), 'LIMIT', 0, ` + strconv.Itoa(staleBatch) + `)
if #stale > 0 then
  redis.call('ZREM', KEYS[3], unpack(stale))
  redis.call('ZREM', KEYS[4], unpack(stale))
end
local unindexed = redis.call('GET', KEYS[5])
if unindexed and before(unindexed, first) then redis.call('DEL', KEYS[5]) end
return 1
`)

// appendArgs are appendScript's keys and arguments for e.
func appendArgs(e Entry, once bool, maxLen int64) (keys []string, args []any) {
	keys = []string{MarkerKey(e.Queue, e.TaskID), Stream, IndexKey, IndexTimeKey, UnindexedKey}
	flag := "0"
	if once {
		flag = "1"
	}
	args = append([]any{flag, MarkerTTL.Milliseconds(), e.FailedAt.UTC().Format(time.RFC3339), max(maxLen, 0), BoundedID(e.TaskID)},
		e.values()...)
	return keys, args
}

// Append adds e to the stream, capped at about maxLen entries (0: no
// cap), with its index members, sets the task's MarkerKey, and, in the
// same round trip, removes any parked entry of the task, which would
// otherwise bring the dead letter back. It is not a transaction: each
// write's error comes back on its own, unparkErr for the parked entry,
// appendErr for the stream entry and its marker.
func Append(ctx context.Context, rdb redis.UniversalClient, e Entry, maxLen int64) (unparkErr, appendErr error) {
	keys, args := appendArgs(e, false, maxLen)
	pipe := rdb.Pipeline()
	unpark := pipe.ZRem(ctx, ParkedKey, Parked{Queue: e.Queue, ID: e.TaskID}.Member())
	add := appendScript.EvalSha(ctx, pipe, keys, args...)
	_, _ = pipe.Exec(ctx) // each command's error is read below
	if err := unpark.Err(); err != nil {
		unparkErr = fmt.Errorf("clear parked entry: %w", err)
	}
	err := add.Err()
	if redis.HasErrorPrefix(err, "NOSCRIPT") { // Redis lost its scripts (a restart): once more, with the script
		err = appendScript.Run(ctx, rdb, keys, args...).Err()
	}
	if err != nil {
		appendErr = fmt.Errorf("append dead letter: %w", err)
	}
	return unparkErr, appendErr
}

// AppendOnce adds e to the stream, as Append does, unless the task's
// MarkerKey is set: its dead letter was written already, by the error
// handler or by another worker. Both happen in one step, and appended says
// whether this call wrote it.
func AppendOnce(ctx context.Context, rdb redis.UniversalClient, e Entry, maxLen int64) (appended bool, err error) {
	keys, args := appendArgs(e, true, maxLen)
	n, err := appendScript.Run(ctx, rdb, keys, args...).Int()
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
// whatever else it lacks; found is false when the stream has none. It
// costs a few commands whatever the stream's length (see lookup).
func Find(ctx context.Context, rdb redis.UniversalClient, taskID string) (e Entry, found bool, err error) {
	msgs, err := lookup(ctx, rdb, taskID, false)
	if err != nil || len(msgs) == 0 {
		return Entry{}, false, err
	}
	e, _ = Decode(msgs[0]) // it has the task id looked for; whatever else it lacks shows as empty
	return e, true, nil
}

// TaskRefs returns a Ref of every stream entry of the task taskID, newest
// first; a queue longer than MaxID is left empty, as in Refs. It costs a
// few commands whatever the stream's length (see lookup).
func TaskRefs(ctx context.Context, rdb redis.UniversalClient, taskID string) ([]Ref, error) {
	msgs, err := lookup(ctx, rdb, taskID, true)
	var refs []Ref
	for _, m := range msgs {
		q, _ := m.Values["queue"].(string)
		if len(q) > MaxID {
			q = ""
		}
		refs = append(refs, Ref{EntryID: m.ID, TaskID: taskID, Queue: q})
	}
	return refs, err
}

// lookup returns the stream entries of the task taskID, newest first: all
// of them, or only the newest when not all. It reads the task's members of
// IndexKey and those entries, in two round trips. Only when the stream
// holds entries the index may not name (UnindexedKey, or a newest entry
// without a member) does it also read the stream from the newest of them
// down to its start, a page at a time, as every lookup did before the
// index.
func lookup(ctx context.Context, rdb redis.UniversalClient, taskID string, all bool) ([]redis.XMessage, error) {
	pipe := rdb.Pipeline()
	members := pipe.ZRangeByLex(ctx, IndexKey, &redis.ZRangeBy{Min: "[" + taskID + "\x00", Max: "(" + taskID + "\x01"})
	unindexed := pipe.Get(ctx, UnindexedKey)
	newest := pipe.XRevRangeN(ctx, Stream, "+", "-", 1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	var ids []string
	for _, m := range members.Val() {
		task, id, found := cutLast(m, 0)
		if found && task == taskID && ValidID(id) {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int { return compareID(b, a) })
	from := unindexed.Val() // "" when none
	if !ValidID(from) {
		from = ""
	}

	pipe = rdb.Pipeline()
	var newestIndexed *redis.FloatCmd
	if n := newest.Val(); len(n) == 1 {
		task, _ := n[0].Values["task_id"].(string)
		newestIndexed = pipe.ZScore(ctx, IndexTimeKey, task+"\x00"+n[0].ID)
	}
	reads := make([]*redis.XMessageSliceCmd, len(ids))
	for i, id := range ids {
		reads[i] = pipe.XRangeN(ctx, Stream, id, id, 1)
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
	}
	if newestIndexed != nil && errors.Is(newestIndexed.Err(), redis.Nil) {
		from = newest.Val()[0].ID
	}
	var msgs []redis.XMessage
	for _, r := range reads {
		// An entry trimmed or removed since its member was read is gone.
		if got := r.Val(); len(got) == 1 && got[0].Values["task_id"] == taskID {
			msgs = append(msgs, got[0])
		}
	}
	if from == "" || (!all && len(msgs) > 0 && compareID(msgs[0].ID, from) > 0) {
		if !all {
			msgs = msgs[:min(len(msgs), 1)]
		}
		return msgs, nil
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.ID] = true
	}
	err := scan(ctx, rdb, from, func(m redis.XMessage) bool {
		if m.Values["task_id"] != taskID || seen[m.ID] {
			return true
		}
		msgs = append(msgs, m)
		return all
	})
	slices.SortFunc(msgs, func(a, b redis.XMessage) int { return compareID(b.ID, a.ID) })
	if !all {
		msgs = msgs[:min(len(msgs), 1)]
	}
	return msgs, err
}

// cutLast slices s around the last instance of sep.
func cutLast(s string, sep byte) (before, after string, found bool) {
	if i := strings.LastIndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// compareID compares the stream entry ids a and b, both ValidID, as Redis
// orders them.
func compareID(a, b string) int {
	ams, aseq, _ := strings.Cut(a, "-")
	bms, bseq, _ := strings.Cut(b, "-")
	parse := func(s string) uint64 {
		n, _ := strconv.ParseUint(s, 10, 64)
		return n
	}
	if c := cmp.Compare(parse(ams), parse(bms)); c != 0 {
		return c
	}
	return cmp.Compare(parse(aseq), parse(bseq))
}

// removeBatch is how many entries one XDEL deletes, so that deleting a
// whole stream's worth never blocks Redis for long.
const removeBatch = 500

// Remove deletes the stream entries refs, and their index members, a batch
// at a time, and returns how many entries there were (one already gone is
// not counted).
func Remove(ctx context.Context, rdb redis.UniversalClient, refs ...Ref) (int, error) {
	removed := 0
	for batch := range slices.Chunk(refs, removeBatch) {
		ids := make([]string, len(batch))
		members := make([]any, len(batch))
		for i, r := range batch {
			ids[i], members[i] = r.EntryID, r.TaskID+"\x00"+r.EntryID
		}
		pipe := rdb.Pipeline()
		del := pipe.XDel(ctx, Stream, ids...)
		pipe.ZRem(ctx, IndexKey, members...)
		pipe.ZRem(ctx, IndexTimeKey, members...)
		_, err := pipe.Exec(ctx)
		removed += int(del.Val())
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
	err := scan(ctx, rdb, "+", func(m redis.XMessage) bool {
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

// scanPage is how many stream entries one read fetches when reading the
// whole stream, or its part the index does not cover.
const scanPage = 500

// scan calls fn on the stream's entries, newest first, from the entry id
// end ("+": the newest) until fn returns false or the stream ends. The
// stream is read a page at a time, so that a long stream never blocks
// Redis.
func scan(ctx context.Context, rdb redis.UniversalClient, end string, fn func(redis.XMessage) bool) error {
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
