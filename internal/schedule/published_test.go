package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/schedule"
)

// The lines of a publication that replaces another replica's version.
const (
	differentFiles = "the scheduler replicas have different schedules files"
	otherFile      = "published a schedules file that differs from the one another scheduler published"
	publishedKey   = "certmail:schedules:file:published"
)

// loggedStore returns a Store whose lines go to the returned observer.
func (e *env) loggedStore() (*schedule.Store, *observer.ObservedLogs) {
	e.t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	st, err := schedule.NewStore(schedule.Config{Redis: e.redis.Client(), Rules: testRules, Logger: zap.New(core)})
	if err != nil {
		e.t.Fatal(err)
	}
	return st, logs
}

// fileVersion returns the schedules of a file with the given ids, in that
// order; version tells versions of the file apart (another order id).
func fileVersion(t *testing.T, version int, ids ...string) []*schedule.Compiled {
	t.Helper()
	var y strings.Builder
	y.WriteString("schedules:\n")
	for _, id := range ids {
		fmt.Fprintf(&y, "  - {id: %s, cron: \"@daily\", type: resend-dcv, payload: {order_id: %d}}\n", id, version)
	}
	c, bad, err := schedule.ParseFile([]byte(y.String()), testRules)
	if err != nil || len(bad) != 0 {
		t.Fatal(bad, err)
	}
	return c
}

// publisher publishes versions of the file as replicas do, failing the test
// on an error, and counts the lines each publication adds.
type publisher struct {
	t    *testing.T
	e    *env // each publication takes the leader lease first, as a change of leader does
	st   *schedule.Store
	logs *observer.ObservedLogs
}

func (p publisher) publish(replica string, scheds []*schedule.Compiled) {
	p.t.Helper()
	if err := p.st.MirrorFile(context.Background(), p.e.leading(replica), scheds); err != nil {
		p.t.Fatal(err)
	}
}

func (p publisher) lines(msg string) []observer.LoggedEntry {
	return p.logs.FilterMessageSnippet(msg).All()
}

// TestReplicasWithDifferentFilesWarn: replica a publishes its file, b its
// other file (a first replacement: INFO, as a rolling deploy), a its own
// again: the replicas' files differ, one WARN, with the other replica, both
// versions and when the other published. Every flap back warns again.
func TestReplicasWithDifferentFilesWarn(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st, logs := e.loggedStore()
	p := publisher{t: t, e: e, st: st, logs: logs}
	x, y := fileVersion(t, 1, "a", "b"), fileVersion(t, 2, "a", "b")

	p.publish("replica-a", x)
	p.publish("replica-b", y)
	if got := p.lines(otherFile); len(got) != 1 || got[0].Level != zapcore.InfoLevel {
		t.Fatalf("lines of b replacing a's file: %v, want one INFO", got)
	}
	if got := p.lines(differentFiles); len(got) != 0 {
		t.Fatalf("b replacing a's file once warned: %v", got)
	}
	p.publish("replica-a", x)
	warned := p.lines(differentFiles)
	if len(warned) != 1 || warned[0].Level != zapcore.WarnLevel {
		t.Fatalf("lines of a publishing its file again after b: %v, want one WARN", warned)
	}
	f := warned[0].ContextMap()
	hex12 := regexp.MustCompile(`^[0-9a-f]{12}$`)
	if f["replica"] != "replica-a" || f["other_replica"] != "replica-b" || !hex12.MatchString(fmt.Sprint(f["digest"])) ||
		!hex12.MatchString(fmt.Sprint(f["other_digest"])) || f["digest"] == f["other_digest"] || f["published_at"] == "" {
		t.Errorf("fields of the WARN: %v, want both replicas, two 12-digit digests that differ and published_at", f)
	}
	p.publish("replica-b", y)
	if n := len(p.lines(differentFiles)); n != 2 {
		t.Errorf("%d WARN lines after a, b, a, b, want 2: one per flap back", n)
	}
	if n := len(p.lines(otherFile)); n != 1 {
		t.Errorf("%d INFO lines after a, b, a, b, want 1: the first replacement", n)
	}
}

// TestRollingDeployOnlyInforms: a file replaced once, by replicas that each
// publish the new version, says so once at INFO and never warns; replicas
// with the same file, its entries in another order, say nothing.
func TestRollingDeployOnlyInforms(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st, logs := e.loggedStore()
	p := publisher{t: t, e: e, st: st, logs: logs}
	p.publish("old-1", fileVersion(t, 1, "a", "b"))
	p.publish("old-2", fileVersion(t, 1, "b", "a"))
	if n := logs.Len(); n != 0 {
		t.Fatalf("%d lines of two replicas with the same file: %v", n, logs.All())
	}
	p.publish("old-1", fileVersion(t, 1, "a", "b"))
	p.publish("new-1", fileVersion(t, 2, "a", "b"))
	p.publish("new-2", fileVersion(t, 2, "a", "b"))
	p.publish("new-1", fileVersion(t, 2, "a", "b"))
	if got := p.lines(otherFile); len(got) != 1 || got[0].ContextMap()["other_replica"] != "old-1" {
		t.Errorf("lines of the deploy: %v, want one INFO naming old-1", got)
	}
	if got := p.lines(differentFiles); len(got) != 0 {
		t.Errorf("a rolling deploy warned: %v", got)
	}
}

// TestEditOfTheOwnFileSaysNothing: a replica that edits its file back and
// forth is not told it differs from another.
func TestEditOfTheOwnFileSaysNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st, logs := e.loggedStore()
	p := publisher{t: t, e: e, st: st, logs: logs}
	for _, v := range []int{1, 2, 1, 2, 1} {
		p.publish("replica-a", fileVersion(t, v, "a"))
	}
	if n := len(p.lines(differentFiles)) + len(p.lines(otherFile)); n != 0 {
		t.Errorf("%d lines of a replica editing its own file: %v", n, logs.All())
	}
}

// TestWithdrawalLeavesThePublicationRecord: a leader without a file
// withdraws the file's schedules with the WARN it had, and the record of
// publications stays as it was: the replica that published them publishes them again
// without being told the files differ.
func TestWithdrawalLeavesThePublicationRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st, logs := e.loggedStore()
	p := publisher{t: t, e: e, st: st, logs: logs}
	x := fileVersion(t, 1, "a")
	p.publish("replica-a", x)
	record := func() map[string]string {
		t.Helper()
		rec, err := e.redis.Client().HGetAll(context.Background(), publishedKey).Result()
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	before := record()
	if err := st.WithdrawFile(context.Background(), e.leading("replica-without-a-file")); err != nil {
		t.Fatal(err)
	}
	if after := record(); !maps.Equal(after, before) {
		t.Errorf("the record after a withdrawal: %v, want it as before: %v", after, before)
	}
	p.publish("replica-a", x)
	if n := len(p.lines("withdrew the schedules")) + len(p.lines("published the schedules file's schedules again")); n != 2 {
		t.Errorf("%d lines of the withdrawal and the publication after it, want 2", n)
	}
	if n := len(p.lines(differentFiles)) + len(p.lines(otherFile)); n != 0 {
		t.Errorf("%d lines of other files around a withdrawal: %v", n, logs.All())
	}
}

// TestDeposedLeaderDoesNotPublish: replica b takes the lead and publishes
// its file between replica a's read and a's write (a deposed while it
// published). a's write fails, its next try finds that it no longer leads
// and writes nothing: b's file stays published and recorded, and a's publication
// says nothing. Unfenced, a's write would replace its successor's.
func TestDeposedLeaderDoesNotPublish(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a, aLogs := e.loggedStore()
	b, bLogs := e.loggedStore()
	pa := publisher{t: t, e: e, st: a, logs: aLogs}
	pb := publisher{t: t, e: e, st: b, logs: bLogs}
	x, y := fileVersion(t, 1, "x"), fileVersion(t, 2, "y")
	pa.publish("replica-a", x)
	reads := 0
	schedule.SetBeforeMirrorWrite(a, func() {
		if reads++; reads == 1 {
			pb.publish("replica-b", y)
		}
	})
	aLogs.TakeAll()
	err := a.MirrorFile(context.Background(), lease.WithToken(e.redis.Client(), leaderKey, "replica-a", time.Minute), x)
	if !errors.Is(err, schedule.ErrNotLeader) {
		t.Fatalf("MirrorFile of the deposed leader: %v, want ErrNotLeader", err)
	}
	if reads != 1 {
		t.Errorf("a wrote %d times, want once: the try after b's publication reads that b leads", reads)
	}
	if n := len(pb.lines(otherFile)); n != 1 {
		t.Errorf("%d INFO lines from b's publication, want 1", n)
	}
	if n := aLogs.Len(); n != 0 {
		t.Errorf("%d lines from the deposed leader's publication: %v", n, aLogs.All())
	}
	rdb := e.redis.Client()
	if by, err := rdb.HGet(context.Background(), publishedKey, "by").Result(); err != nil || by != "replica-b" {
		t.Errorf("record by %q (%v), want replica-b", by, err)
	}
	if ids, err := rdb.HKeys(context.Background(), fileSchedulesKey).Result(); err != nil || len(ids) != 1 || ids[0] != "y" {
		t.Errorf("file schedules %v (%v), want b's (y)", ids, err)
	}

	// b takes the lead between a's read and a's write but has not
	// published yet: a's write still fails.
	schedule.SetBeforeMirrorWrite(a, func() {
		if err := rdb.Set(context.Background(), leaderKey, "replica-c", time.Minute).Err(); err != nil {
			t.Error(err)
		}
	})
	pa.e.leading("replica-a")
	err = a.MirrorFile(context.Background(), lease.WithToken(rdb, leaderKey, "replica-a", time.Minute), x)
	if !errors.Is(err, schedule.ErrNotLeader) {
		t.Errorf("MirrorFile of a leader deposed before its write: %v, want ErrNotLeader", err)
	}
	if ids, err := rdb.HKeys(context.Background(), fileSchedulesKey).Result(); err != nil || len(ids) != 1 || ids[0] != "y" {
		t.Errorf("file schedules %v (%v), want b's (y) still", ids, err)
	}
}

// TestRenewalDuringAPublicationIsReadAgain: the publishing leader's own
// lease renewal between its read and its write makes it read again and
// publish; renewed at every try, it gives up after a bounded number of
// them with an error saying why, having written nothing.
func TestRenewalDuringAPublicationIsReadAgain(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a, aLogs := e.loggedStore()
	fence := e.leading("replica-a")
	for _, tt := range []struct {
		renewals, tries int
		wantErr         bool
	}{
		{renewals: 1, tries: 2},
		{renewals: 1000, tries: 5, wantErr: true},
	} {
		tries := 0
		schedule.SetBeforeMirrorWrite(a, func() {
			if tries++; tries <= tt.renewals {
				if ok, err := fence.Renew(context.Background()); !ok || err != nil {
					t.Errorf("renew: %v %v", ok, err)
				}
			}
		})
		version := fileVersion(t, tt.tries, "a")
		err := a.MirrorFile(context.Background(), fence, version)
		switch {
		case tt.wantErr && (err == nil || !strings.Contains(err.Error(), "another client changed them")):
			t.Errorf("renewed at every try: %v, want an error saying the keys changed at each try", err)
		case !tt.wantErr && err != nil:
			t.Errorf("renewed once: %v, want the publication made", err)
		}
		if tries != tt.tries {
			t.Errorf("renewed %d times: %d tries, want %d", tt.renewals, tries, tt.tries)
		}
	}
	if n := len(aLogs.All()); n != 0 {
		t.Errorf("%d lines from a replica publishing its own file: %v", n, aLogs.All())
	}
	raw, err := e.redis.Client().HGet(context.Background(), fileSchedulesKey, "a").Result()
	if err != nil || !strings.Contains(raw, `"order_id":2`) {
		t.Errorf("published %s (%v), want the first version's (the second gave up)", raw, err)
	}
}

// TestPublicationRecordIsBounded: the record holds six fields however many
// replicas publish, each bounded, without an expiry to outlive; a replica id
// over the bound is cut in it and in the lines.
func TestPublicationRecordIsBounded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st, logs := e.loggedStore()
	p := publisher{t: t, e: e, st: st, logs: logs}
	long := strings.Repeat("r", 1000)
	for i := range 20 {
		p.publish(fmt.Sprintf("%d-%s", i%2, long), fileVersion(t, 1+i%2, "a"))
	}
	rec, err := e.redis.Client().HGetAll(context.Background(), publishedKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(rec) != 6 {
		t.Errorf("the record has %d fields, want 6: %v", len(rec), rec)
	}
	for k, v := range rec {
		if len(v) > 128 {
			t.Errorf("field %s holds %d bytes, want at most 128", k, len(v))
		}
	}
	for _, l := range logs.All() {
		for k, v := range l.ContextMap() {
			if s, ok := v.(string); ok && len(s) > 128 {
				t.Errorf("line %q: field %s has %d bytes, want at most 128", l.Message, k, len(s))
			}
		}
	}
	if n := len(p.lines(differentFiles)); n == 0 {
		t.Error("no WARN from two replicas publishing two files in turn")
	}
}
