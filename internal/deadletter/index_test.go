package deadletter_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/redistest"
)

// oldEntry writes an entry as an earlier version (or an operator) did:
// the stream entry alone.
func oldEntry(t *testing.T, rdb redis.UniversalClient, taskID string) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: deadletter.Stream, Values: []any{
		"task_id", taskID, "type", "resend-dcv", "queue", "default", "payload", "{}", "error_code", "old",
		"error_message", "", "http_status", "0", "attempts", "1", "failed_at", time.Now().UTC().Format(time.RFC3339)}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// lookupCost counts the commands Redis runs for a Find and a TaskRefs of
// a task with an entry, and a Find and a TaskRefs of an unknown task.
func lookupCost(t *testing.T, s *redistest.Server, known string) (all, reads int64) {
	t.Helper()
	ctx := context.Background()
	rdb := s.Client()
	s.ResetStats()
	if _, found, err := deadletter.Find(ctx, rdb, known); err != nil || !found {
		t.Fatalf("Find(%s): found %v (%v)", known, found, err)
	}
	if refs, err := deadletter.TaskRefs(ctx, rdb, known); err != nil || len(refs) != 1 {
		t.Fatalf("TaskRefs(%s) = %v (%v), want one", known, refs, err)
	}
	if _, found, err := deadletter.Find(ctx, rdb, "unknown"); err != nil || found {
		t.Fatalf("Find(unknown): found %v (%v)", found, err)
	}
	if refs, err := deadletter.TaskRefs(ctx, rdb, "unknown"); err != nil || len(refs) != 0 {
		t.Fatalf("TaskRefs(unknown) = %v (%v)", refs, err)
	}
	for name, n := range s.Commands() {
		switch name {
		case "config|resetstat", "info":
			continue
		case "xrange", "xrevrange":
			reads += n
		}
		all += n
	}
	return all, reads
}

// Finding a task's entries, or finding that it has none, costs the same
// few commands in a stream of 200 entries and of 20 000: they are looked up
// through the index Append writes, not by reading the stream.
func TestLookupCostDoesNotGrowWithTheStream(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	rdb := s.Client()
	certmailtest.AppendDeadLetters(t, rdb, "a", 200, 100000)
	smallAll, smallReads := lookupCost(t, s, "a-3")
	certmailtest.AppendDeadLetters(t, rdb, "b", 19800, 100000)
	bigAll, bigReads := lookupCost(t, s, "a-3")
	if bigAll != smallAll || bigReads != smallReads || bigAll > 20 {
		t.Errorf("4 lookups in 20 000 entries: %d commands, %d stream reads; in 200: %d, %d; want the same few",
			bigAll, bigReads, smallAll, smallReads)
	}
}

// Entries written without the index, by an earlier version before the
// upgrade or by hand, are found as before, with the indexed ones of the
// same task, newest first; once the stream is trimmed past them, lookups
// no longer read the stream.
func TestLookupOfEntriesWithoutIndex(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	rdb := s.Client()
	ctx := context.Background()
	before := oldEntry(t, rdb, "t1") // written before the upgrade
	oldEntry(t, rdb, "t2")
	certmailtest.AppendDeadLetters(t, rdb, "new", 3, 100000)
	e := deadletter.Entry{TaskID: "t1", Type: "resend-dcv", Queue: "other", ErrorCode: "new", FailedAt: time.Now()}
	if _, err := deadletter.Append(ctx, rdb, e, 100000); err != nil {
		t.Fatal(err)
	}
	refs, err := deadletter.TaskRefs(ctx, rdb, "t1")
	if err != nil || len(refs) != 2 || refs[0].Queue != "other" || refs[1] != (deadletter.Ref{EntryID: before, TaskID: "t1", Queue: "default"}) {
		t.Fatalf("TaskRefs(t1) = %+v, %v; want its new entry, then the old one", refs, err)
	}
	if got, found, err := deadletter.Find(ctx, rdb, "t1"); err != nil || !found || got.ErrorCode != "new" {
		t.Errorf("Find(t1) = %+v, %v, %v; want the newest", got, found, err)
	}
	if got, found, err := deadletter.Find(ctx, rdb, "t2"); err != nil || !found || got.ErrorCode != "old" {
		t.Errorf("Find(t2) = %+v, %v, %v; want the old entry", got, found, err)
	}
	// One written by hand after the indexed ones, the newest.
	byHand := oldEntry(t, rdb, "t3")
	if got, found, err := deadletter.Find(ctx, rdb, "t3"); err != nil || !found || got.ID != byHand {
		t.Errorf("Find(t3) = %+v, %v, %v; want the entry written by hand", got, found, err)
	}
	// Another after it: the hand-written one is still found.
	certmailtest.AppendDeadLetters(t, rdb, "later", 1, 100000)
	if refs, err := deadletter.TaskRefs(ctx, rdb, "t3"); err != nil || len(refs) != 1 || refs[0].EntryID != byHand {
		t.Errorf("TaskRefs(t3) = %+v, %v; want the entry written by hand", refs, err)
	}
	// During a roll: an earlier worker writes a newer entry of a task whose
	// older entry is indexed. Find gives the newer one.
	e4 := deadletter.Entry{TaskID: "t4", Type: "resend-dcv", Queue: "default", ErrorCode: "indexed", FailedAt: time.Now()}
	if _, err := deadletter.Append(ctx, rdb, e4, 100000); err != nil {
		t.Fatal(err)
	}
	byOldWorker := oldEntry(t, rdb, "t4")
	certmailtest.AppendDeadLetters(t, rdb, "after", 1, 100000)
	if got, found, err := deadletter.Find(ctx, rdb, "t4"); err != nil || !found || got.ID != byOldWorker {
		t.Errorf("Find(t4) = %+v, %v, %v; want the newer entry, the earlier worker's", got, found, err)
	}
	// Trimmed past every unindexed entry: nothing left to read but the index.
	certmailtest.AppendDeadLetters(t, rdb, "fill", 2000, 500)
	if _, found, err := deadletter.Find(ctx, rdb, "t1"); err != nil || found {
		t.Errorf("Find(t1) after trimming: found %v (%v)", found, err)
	}
	s.ResetStats()
	if _, found, err := deadletter.Find(ctx, rdb, "unknown"); err != nil || found {
		t.Fatalf("Find(unknown): found %v (%v)", found, err)
	}
	if n := s.Commands()["xrevrange"]; n != 1 {
		t.Errorf("Find after the unindexed entries were trimmed: %d XREVRANGE, want 1 (the newest entry)", n)
	}
	if n, err := rdb.Exists(ctx, deadletter.UnindexedKey).Result(); err != nil || n != 0 {
		t.Errorf("%s still set after its entries were trimmed (%v)", deadletter.UnindexedKey, err)
	}
}

// The index is trimmed with the stream: it names no more entries than the
// stream holds, give or take what one append trims; an entry trimmed away
// or removed is no longer found, and a task's several entries all are.
func TestIndexFollowsTheStream(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	rdb := s.Client()
	ctx := context.Background()
	for range 3 {
		e := deadletter.Entry{TaskID: "twice", Type: "resend-dcv", Queue: "default", FailedAt: time.Now()}
		if _, err := deadletter.Append(ctx, rdb, e, 300); err != nil {
			t.Fatal(err)
		}
	}
	refs, err := deadletter.TaskRefs(ctx, rdb, "twice")
	if err != nil || len(refs) != 3 || !slices.IsSortedFunc(refs, func(a, b deadletter.Ref) int { return -cmpID(a.EntryID, b.EntryID) }) {
		t.Fatalf("TaskRefs(twice) = %+v, %v; want three, newest first", refs, err)
	}
	if n, err := deadletter.Remove(ctx, rdb, refs[0]); err != nil || n != 1 {
		t.Fatalf("Remove = %d, %v", n, err)
	}
	if got, found, err := deadletter.Find(ctx, rdb, "twice"); err != nil || !found || got.ID != refs[1].EntryID {
		t.Errorf("Find after removing the newest = %q, %v (%v); want %s", got.ID, found, err, refs[1].EntryID)
	}
	certmailtest.AppendDeadLetters(t, rdb, "fill", 3000, 300)
	if refs, err := deadletter.TaskRefs(ctx, rdb, "twice"); err != nil || len(refs) != 0 {
		t.Errorf("TaskRefs(twice) after trimming = %+v, %v; want none", refs, err)
	}
	streamLen := rdb.XLen(ctx, deadletter.Stream).Val()
	for _, key := range []string{deadletter.IndexKey, deadletter.IndexTimeKey} {
		if n := rdb.ZCard(ctx, key).Val(); n < streamLen || n > streamLen+200 {
			t.Errorf("%s holds %d members for %d entries", key, n, streamLen)
		}
	}
}

// cmpID compares two stream entry ids as Redis orders them.
func cmpID(a, b string) int {
	var ams, aseq, bms, bseq uint64
	if _, err := fmt.Sscanf(a, "%d-%d", &ams, &aseq); err != nil {
		panic("stream entry id " + a + ": " + err.Error())
	}
	if _, err := fmt.Sscanf(b, "%d-%d", &bms, &bseq); err != nil {
		panic("stream entry id " + b + ": " + err.Error())
	}
	if c := cmp.Compare(ams, bms); c != 0 {
		return c
	}
	return cmp.Compare(aseq, bseq)
}

// A task id of MaxID bytes, the longest certmail gives, is a dead letter's
// id like any other: found, and read by a purge (Refs).
func TestEntryWithTheLongestID(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	id := strings.Repeat("i", deadletter.MaxID)
	e := deadletter.Entry{TaskID: id, Type: "resend-dcv", Queue: "default", ErrorCode: "not_found|order", FailedAt: time.Now()}
	if _, err := deadletter.Append(ctx, rdb, e, 1000); err != nil {
		t.Fatal(err)
	}
	if got, found, err := deadletter.Find(ctx, rdb, id); err != nil || !found || got.TaskID != id {
		t.Errorf("Find of a %d-byte id: %+v, %v, %v; want its entry", len(id), got, found, err)
	}
	if refs, err := deadletter.Refs(ctx, rdb); err != nil || len(refs) != 1 || refs[0].TaskID != id || refs[0].Queue != "default" {
		t.Errorf("Refs with a %d-byte id: %+v, %v; want its entry, id and queue", len(id), refs, err)
	}
}
