package deadletter_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/tasks"
)

// What Append writes, Decode reads back field for field; a large payload is
// cut to PayloadMax with its size kept; the task's parked entry goes in the
// same round trip.
func TestAppendDecode(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	at := time.Date(2026, 5, 1, 9, 30, 0, 0, time.FixedZone("CEST", 2*3600))
	small := deadletter.Entry{TaskID: "t1", Type: "set-emails", Queue: "default", Payload: []byte(`{"order_id":1}`),
		ErrorCode: "not_found|order", ErrorMessage: "Order not found.", HTTPStatus: 404, Attempts: 3, FailedAt: at}
	big := small
	big.TaskID, big.Payload = "t2", bytes.Repeat([]byte("x"), deadletter.PayloadMax+100)
	full := small
	full.TaskID, full.Payload = "t3", bytes.Repeat([]byte("y"), deadletter.PayloadMax)
	if err := deadletter.Park(ctx, rdb, deadletter.Parked{Queue: "default", ID: "t1"}, at); err != nil {
		t.Fatal(err)
	}
	for _, e := range []deadletter.Entry{small, big, full} {
		if unparkErr, appendErr := deadletter.Append(ctx, rdb, e, 1000); unparkErr != nil || appendErr != nil {
			t.Fatalf("Append %s: %v, %v", e.TaskID, unparkErr, appendErr)
		}
	}
	if _, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", "t1"); err != nil || parked {
		t.Errorf("t1 still parked after its dead letter (%v)", err)
	}
	msgs, err := rdb.XRange(ctx, deadletter.Stream, "-", "+").Result()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("stream: %d entries (%v), want 3", len(msgs), err)
	}
	got, problem := deadletter.Decode(msgs[0])
	want := small
	want.ID, want.FailedAt = msgs[0].ID, at.UTC()
	if problem != "" || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Decode = %+v (%q)\nwant     %+v", got, problem, want)
	}
	if _, cut := msgs[0].Values["payload_bytes"]; cut || len(msgs[0].Values) != 9 {
		t.Errorf("a whole payload's entry has fields %v, want the nine", msgs[0].Values)
	}
	if msgs[1].Values["payload_bytes"] != fmt.Sprint(deadletter.PayloadMax+100) {
		t.Errorf("a cut payload's entry has payload_bytes %v", msgs[1].Values["payload_bytes"])
	}
	got, problem = deadletter.Decode(msgs[1])
	if problem != "" || len(got.Payload) != deadletter.PayloadMax || got.PayloadBytes != deadletter.PayloadMax+100 {
		t.Errorf("large payload read back: %d bytes kept of %d (%q)", len(got.Payload), got.PayloadBytes, problem)
	}
	// A payload of exactly PayloadMax bytes is kept whole: nine fields.
	if _, cut := msgs[2].Values["payload_bytes"]; cut || len(msgs[2].Values) != 9 {
		t.Errorf("a payload of PayloadMax bytes has an entry with fields %v, want the nine", slices.Sorted(maps.Keys(msgs[2].Values)))
	}
	if got, _ := deadletter.Decode(msgs[2]); len(got.Payload) != deadletter.PayloadMax || got.PayloadBytes != 0 {
		t.Errorf("a payload of PayloadMax bytes read back: %d bytes, payload_bytes %d; want it whole", len(got.Payload), got.PayloadBytes)
	}
}

// Decode never fails on what the stream holds: an entry that cannot be a
// dead letter says why, and every field read back is bounded valid UTF-8.
func TestDecodeIsTolerant(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Format(time.RFC3339)
	for i, tt := range []struct {
		values  map[string]any
		problem string
	}{
		{map[string]any{"hello": "world"}, "no task_id"},
		{map[string]any{"task_id": strings.Repeat("i", 257), "type": "t", "queue": "q", "failed_at": now}, "no task_id"},
		{map[string]any{"task_id": "i", "queue": "q", "failed_at": now}, "no type"},
		{map[string]any{"task_id": "i", "type": strings.Repeat("t", 257), "queue": "q", "failed_at": now}, "no type"},
		{map[string]any{"task_id": "i", "type": "t", "failed_at": now}, "no queue"},
		{map[string]any{"task_id": "i", "type": "t", "queue": strings.Repeat("q", 257), "failed_at": now}, "no queue"},
		// 256 bytes is the longest task id, type and queue read back.
		{map[string]any{"task_id": strings.Repeat("i", 256), "type": strings.Repeat("t", 256), "queue": strings.Repeat("q", 256),
			"failed_at": now}, ""},
		// payload_bytes equal to the payload's own size says nothing more.
		{map[string]any{"task_id": "i", "type": "t", "queue": "q", "failed_at": now, "payload": "abc", "payload_bytes": "3"}, ""},
		{map[string]any{"task_id": "i", "type": "t", "queue": "q", "failed_at": "yesterday"}, "failed_at is not an RFC 3339 time"},
		{map[string]any{"task_id": "i", "type": "t", "queue": "q", "failed_at": now, "attempts": "many", "http_status": "-5",
			"error_code": strings.Repeat("c", 100), "error_message": strings.Repeat("é", 100000) + "\xff",
			"payload": "abcdef", "payload_bytes": "3"}, ""},
	} {
		e, problem := deadletter.Decode(redis.XMessage{ID: "1-0", Values: tt.values})
		if problem != tt.problem {
			t.Errorf("entry %d: problem %q, want %q", i, problem, tt.problem)
		}
		for _, s := range []string{e.TaskID, e.Type, e.Queue, e.ErrorCode, e.ErrorMessage} {
			if len(s) > deadletter.MaxText || !utf8.ValidString(s) {
				t.Errorf("entry %d: field of %d bytes read back (valid UTF-8: %v)", i, len(s), utf8.ValidString(s))
			}
		}
		// payload_bytes up to the payload's own size says nothing more.
		if len(e.ErrorCode) > 64 || e.Attempts < 0 || e.HTTPStatus < 0 || e.PayloadBytes != 0 {
			t.Errorf("entry %d: code %d bytes, attempts %d, status %d, payload_bytes %d", i, len(e.ErrorCode), e.Attempts, e.HTTPStatus, e.PayloadBytes)
		}
	}
}

// List pages newest first, says where the next page starts, and returns a
// malformed entry as skipped, counted towards the page; Find, TaskRefs,
// Remove and Count work on every entry of a task, and Refs reads what
// remains.
func TestListFindRemove(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	appendEntry := func(id string) {
		t.Helper()
		e := deadletter.Entry{TaskID: id, Type: "resend-dcv", Queue: "default", ErrorCode: "c-" + id, FailedAt: time.Now()}
		if _, err := deadletter.Append(ctx, rdb, e, 1000); err != nil {
			t.Fatal(err)
		}
	}
	appendEntry("a")
	appendEntry("b")
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: deadletter.Stream, Values: []any{"junk", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	appendEntry("a")

	first, err := deadletter.List(ctx, rdb, "", 2)
	if err != nil || len(first.Entries) != 1 || first.Entries[0].TaskID != "a" || len(first.Skipped) != 1 ||
		first.Skipped[0].Problem != "no task_id" || !deadletter.ValidID(first.Next) {
		t.Fatalf("first page = %+v, %v", first, err)
	}
	second, err := deadletter.List(ctx, rdb, first.Next, 2)
	if err != nil || len(second.Entries) != 2 || second.Entries[0].TaskID != "b" || second.Entries[1].TaskID != "a" || second.Next != "" {
		t.Fatalf("second page = %+v, %v", second, err)
	}
	if none, err := deadletter.List(ctx, rdb, "0-0", 10); err != nil || len(none.Entries)+len(none.Skipped) != 0 {
		t.Errorf("before 0-0 = %+v, %v; want nothing", none, err)
	}
	if e, found, err := deadletter.Find(ctx, rdb, "a"); err != nil || !found || e.ID != first.Entries[0].ID {
		t.Errorf("Find(a) = %+v %v %v, want the newest entry of a", e, found, err)
	}
	if _, found, err := deadletter.Find(ctx, rdb, "zzz"); err != nil || found {
		t.Errorf("Find(zzz) found %v (%v)", found, err)
	}
	aRefs, err := deadletter.TaskRefs(ctx, rdb, "a")
	if want := []deadletter.Ref{{EntryID: first.Entries[0].ID, TaskID: "a", Queue: "default"},
		{EntryID: second.Entries[1].ID, TaskID: "a", Queue: "default"}}; err != nil || !slices.Equal(aRefs, want) {
		t.Fatalf("TaskRefs(a) = %v, %v; want a's two entries %v", aRefs, err, want)
	}
	if n, err := deadletter.Remove(ctx, rdb, append(aRefs, aRefs[0])...); err != nil || n != 2 {
		t.Fatalf("Remove(a's entries, one twice) = %d, %v; want 2", n, err)
	}
	if n, err := deadletter.Count(ctx, rdb); err != nil || n != 2 {
		t.Errorf("Count after removing a = %d, %v; want b and the junk", n, err)
	}
	if _, found, err := deadletter.Find(ctx, rdb, "b"); err != nil || !found {
		t.Errorf("Find(b) after removing a: found %v (%v)", found, err)
	}
	refs, err := deadletter.Refs(ctx, rdb)
	if want := []deadletter.Ref{{EntryID: first.Skipped[0].EntryID}, {EntryID: second.Entries[0].ID, TaskID: "b", Queue: "default"}}; err != nil ||
		!slices.Equal(refs, want) {
		t.Errorf("Refs = %+v, %v; want the junk's and b's, newest first: %+v", refs, err, want)
	}
	// Both halves are uint64s, as Redis reads them: beyond, it refuses the id.
	for _, bad := range []string{"", "1", "1-", "-1", "a-b", "1-2-3", strings.Repeat("1", 21) + "-0",
		"18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-0", "+1-0"} {
		if deadletter.ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
	const highest = "18446744073709551615-18446744073709551615"
	if !deadletter.ValidID(highest) {
		t.Errorf("ValidID(%q) = false", highest)
	}
	if _, err := deadletter.List(ctx, rdb, highest, 10); err != nil {
		t.Errorf("List before the highest id: %v", err)
	}
}

// Find and TaskRefs read the whole stream however long, a page at a time:
// the oldest entry of a task behind two full pages of others is found.
func TestFindInALongStream(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	old := deadletter.Entry{TaskID: "old", Type: "resend-dcv", Queue: "default", FailedAt: time.Now()}
	if _, err := deadletter.Append(ctx, rdb, old, 10000); err != nil {
		t.Fatal(err)
	}
	pipe := rdb.Pipeline()
	for i := range 1000 { // two pages of the scan exactly
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: deadletter.Stream, Values: []any{"task_id", fmt.Sprint("other-", i)}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	oldest, err := rdb.XRangeN(ctx, deadletter.Stream, "-", "+", 1).Result()
	if err != nil || len(oldest) != 1 {
		t.Fatalf("XRANGE: %v, %v", oldest, err)
	}
	if e, found, err := deadletter.Find(ctx, rdb, "old"); err != nil || !found || e.ID != oldest[0].ID {
		t.Errorf("Find(old) = %q, found %v (%v); want entry %s behind 1000 others", e.ID, found, err, oldest[0].ID)
	}
	if refs, err := deadletter.TaskRefs(ctx, rdb, "old"); err != nil || len(refs) != 1 || refs[0].EntryID != oldest[0].ID {
		t.Errorf("TaskRefs(old) = %v, %v; want entry %s", refs, err, oldest[0].ID)
	}
}

// ListParked reads the entries soonest due first, from an offset; Unpark
// removes an entry only while it holds the due time it was read with, and
// says which it removed.
func TestListAndUnpark(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	now := time.Now()
	soon, later := deadletter.Parked{Queue: "default", ID: "soon"}, deadletter.Parked{Queue: "default", ID: "later"}
	if err := deadletter.Park(ctx, rdb, later, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := deadletter.Park(ctx, rdb, soon, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	entries, err := deadletter.ListParked(ctx, rdb, 0, 10)
	want := []deadletter.ParkedEntry{{Member: soon.Member(), DueMS: now.Add(time.Second).UnixMilli()},
		{Member: later.Member(), DueMS: now.Add(time.Hour).UnixMilli()}}
	if err != nil || !slices.Equal(entries, want) {
		t.Fatalf("ListParked = %v, %v; want %v", entries, err, want)
	}
	if rest, err := deadletter.ListParked(ctx, rdb, 1, 10); err != nil || !slices.Equal(rest, want[1:]) {
		t.Errorf("ListParked from 1 = %v, %v", rest, err)
	}
	if first, err := deadletter.ListParked(ctx, rdb, 0, 1); err != nil || !slices.Equal(first, want[:1]) {
		t.Errorf("ListParked of 1 = %v, %v; want the soonest alone", first, err)
	}
	p, err := deadletter.ParseParked(entries[0].Member)
	if err != nil || p != soon {
		t.Errorf("ParseParked = %+v, %v", p, err)
	}
	if _, err := deadletter.ParseParked("not json"); err == nil {
		t.Error("ParseParked accepted garbage")
	}
	// "soon" is parked again meanwhile: its new entry stands.
	again := now.Add(time.Minute)
	if err := deadletter.Park(ctx, rdb, soon, again); err != nil {
		t.Fatal(err)
	}
	removed, err := deadletter.Unpark(ctx, rdb, entries)
	if err != nil || !slices.Equal(removed, []bool{false, true}) {
		t.Errorf("Unpark = %v, %v; want [false true]", removed, err)
	}
	if until, parked, _ := deadletter.ParkedUntil(ctx, rdb, "default", "soon"); !parked || until.UnixMilli() != again.UnixMilli() {
		t.Errorf("soon: parked %v until %v, want %v", parked, until, again)
	}
	if _, parked, _ := deadletter.ParkedUntil(ctx, rdb, "default", "later"); parked {
		t.Error("later still parked")
	}
	if removed, err := deadletter.Unpark(ctx, rdb, nil); err != nil || removed != nil {
		t.Errorf("Unpark(nil) = %v, %v", removed, err)
	}
}

// Append marks the task dead-lettered for MarkerTTL; AppendOnce writes
// only for a task not marked, and marks it, in one step; Unmark clears it.
func TestAppendOnce(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	at := time.Date(2026, 5, 1, 9, 30, 0, 0, time.UTC)
	e := deadletter.Entry{TaskID: "t1", Type: "resend-dcv", Queue: "default", Payload: []byte(`{"order_id":1}`),
		ErrorCode: "lease_expired", ErrorMessage: "the worker stopped", Attempts: 1, FailedAt: at}
	if _, err := deadletter.Append(ctx, rdb, e, 1000); err != nil {
		t.Fatal(err)
	}
	ttl, err := rdb.PTTL(ctx, deadletter.MarkerKey("default", "t1")).Result()
	if err != nil || ttl <= deadletter.MarkerTTL-time.Minute || ttl > deadletter.MarkerTTL {
		t.Errorf("marker's TTL after Append = %v (%v), want %v", ttl, err, deadletter.MarkerTTL)
	}
	if appended, err := deadletter.AppendOnce(ctx, rdb, e, 1000); err != nil || appended {
		t.Errorf("AppendOnce of a marked task = %v, %v; want nothing written", appended, err)
	}
	other := e
	other.TaskID = "t2"
	for i, want := range []bool{true, false} {
		if appended, err := deadletter.AppendOnce(ctx, rdb, other, 1000); err != nil || appended != want {
			t.Errorf("AppendOnce #%d = %v, %v; want %v", i+1, appended, err, want)
		}
	}
	if err := deadletter.Unmark(ctx, rdb, "default", "t2"); err != nil {
		t.Fatal(err)
	}
	if appended, err := deadletter.AppendOnce(ctx, rdb, other, 1000); err != nil || !appended {
		t.Errorf("AppendOnce after Unmark = %v, %v; want written", appended, err)
	}
	msgs, err := rdb.XRange(ctx, deadletter.Stream, "-", "+").Result()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("stream: %d entries (%v), want 3", len(msgs), err)
	}
	got, problem := deadletter.Decode(msgs[1])
	want := other
	want.ID = msgs[1].ID
	if problem != "" || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Decode = %+v (%q)\nwant     %+v", got, problem, want)
	}
	if ttl, err := rdb.PTTL(ctx, deadletter.MarkerKey("default", "t2")).Result(); err != nil || ttl <= 0 {
		t.Errorf("marker's TTL after AppendOnce = %v (%v)", ttl, err)
	}
}

func TestClip(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in    string
		limit int
		want  string
	}{
		{"short", 10, "short"},
		{"abcdefghij", 10, "abcdefghij"},
		{"abcdefghijk", 10, "abcdefg…"},
		{"ééééé", 8, "éé…"}, // cut on a rune boundary
		{"a\xffb", 10, "a\uFFFDb"},
	} {
		if got := deadletter.Clip(tt.in, tt.limit); got != tt.want || len(got) > tt.limit {
			t.Errorf("Clip(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
	}
}

// BoundedID keeps an id of at most MaxID bytes as it is, and gives a
// longer one a form of at most MaxID bytes, valid UTF-8, the same each
// time and apart from another id's that begins alike. The bound is the
// public package's.
func TestBoundedID(t *testing.T) {
	t.Parallel()
	if deadletter.MaxID != tasks.MaxTaskIDBytes {
		t.Fatalf("MaxID %d, tasks.MaxTaskIDBytes %d: one bound", deadletter.MaxID, tasks.MaxTaskIDBytes)
	}
	at := strings.Repeat("é", deadletter.MaxID/2)
	if got := deadletter.BoundedID(at); got != at {
		t.Errorf("an id of MaxID bytes became %q", got)
	}
	seen := map[string]string{}
	for _, id := range []string{at + "x", at + "y", strings.Repeat("L", 5000), strings.Repeat("L", 5000) + "M", strings.Repeat("\xff", 1000)} {
		got := deadletter.BoundedID(id)
		if len(got) > deadletter.MaxID || !utf8.ValidString(got) || !strings.Contains(got, "…") {
			t.Errorf("BoundedID of %d bytes = %q (%d bytes)", len(id), got, len(got))
		}
		if deadletter.BoundedID(id) != got || deadletter.BoundedID(got) != got {
			t.Errorf("BoundedID of %d bytes is not stable: %q", len(id), got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("two ids of %d and %d bytes share %q", len(other), len(id), got)
		}
		seen[got] = id
	}
}

// An entry, its marker and a parked entry of a task whose id is longer
// than MaxID hold its BoundedID: the entry reads back as a dead letter.
func TestLongTaskIDIsBounded(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	long := strings.Repeat("L", 5000)
	bounded := deadletter.BoundedID(long)
	if err := deadletter.Park(ctx, rdb, deadletter.Parked{Queue: "default", ID: long}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, parked, err := deadletter.ParkedUntil(ctx, rdb, "default", bounded); err != nil || !parked {
		t.Errorf("ParkedUntil by the bounded id = %t, %v", parked, err)
	}
	e := deadletter.Entry{TaskID: long, Type: "resend-dcv", Queue: "default", ErrorCode: "task_id_too_long", FailedAt: time.Now()}
	if unparkErr, appendErr := deadletter.Append(ctx, rdb, e, 1000); unparkErr != nil || appendErr != nil {
		t.Fatal(unparkErr, appendErr)
	}
	if n, err := rdb.ZCard(ctx, deadletter.ParkedKey).Result(); err != nil || n != 0 {
		t.Errorf("%d parked entries left (%v), want the task's removed", n, err)
	}
	page, err := deadletter.List(ctx, rdb, "", 10)
	if err != nil || len(page.Entries) != 1 || len(page.Skipped) != 0 || page.Entries[0].TaskID != bounded {
		t.Fatalf("List = %+v, %v; want the entry under %q", page, err, bounded)
	}
	if appended, err := deadletter.AppendOnce(ctx, rdb, e, 1000); err != nil || appended {
		t.Errorf("AppendOnce after Append = %t, %v; want its marker found", appended, err)
	}
	if k := deadletter.MarkerKey("default", long); len(k) > len("certmail:deadlettered:default:")+deadletter.MaxID {
		t.Errorf("marker key of %d bytes", len(k))
	}
}
