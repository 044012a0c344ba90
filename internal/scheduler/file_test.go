package scheduler

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/schedule"
)

// fileEntry is a valid entry of the schedules file, schedule id.
func fileEntry(id string) string {
	return "  - {id: " + id + ", cron: \"@every 1s\", type: resend-dcv, payload: {order_id: 1}}\n"
}

// newWithin runs New, failing the test when it does not return within a
// few seconds (it would hang on a named pipe).
func newWithin(t *testing.T, cfg Config) (*Scheduler, error) {
	t.Helper()
	type result struct {
		s   *Scheduler
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := New(cfg)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("New(%s) did not return within 5s", cfg.File)
		return nil, nil
	}
}

// TestFileThatIsNotARegularFileIsRefused: at start, a schedules file that
// is a named pipe, a device or a directory is refused at once with one line
// naming it, unread (a pipe would block the scheduler, /dev/zero would fill
// its memory).
func TestFileThatIsNotARegularFileIsRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	fifo := filepath.Join(e.dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A scheduler that opened the pipe waits for a writer: give it one.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	for _, c := range []struct{ file, want string }{
		{fifo, "not a regular file (a named pipe)"},
		{"/dev/zero", "not a regular file (a character device)"},
		{e.dir, "is a directory"},
	} {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			cfg, _ := e.deps(Config{File: c.file})
			_, err := newWithin(t, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.file) || strings.Contains(err.Error(), "\n") {
				t.Errorf("New = %v, want one line naming %s and saying %q", err, c.file, c.want)
			}
		})
	}
}

// TestFileOverTheCapIsRefused: a schedules file over MaxFileBytes is
// refused at start with one line naming the setting and the cap; on reload
// it is reported once, at ERROR, and the last good version goes on.
func TestFileOverTheCapIsRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	padding := strings.Repeat("# padding\n", MaxFileBytes/10+1)
	cfg, logs := e.deps(Config{File: e.writeFile("schedules:\n" + fileEntry("kept") + padding)})
	_, err := New(cfg)
	if err == nil || !strings.Contains(err.Error(), "larger than 4 MiB") || !strings.Contains(err.Error(), "CERTMAIL_SCHEDULES_FILE") {
		t.Fatalf("New with a file over the cap = %v, want it refused naming the setting and the cap", err)
	}
	e.writeFile("schedules:\n" + fileEntry("kept"))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.reloadFile()
	e.writeFile("schedules:\n" + fileEntry("kept") + fileEntry("more") + padding)
	for range 3 {
		s.reloadFile()
	}
	reports := logs.FilterMessage("cannot read the schedules file; keeping its last good version").All()
	if len(reports) != 1 || reports[0].Level != zapcore.ErrorLevel ||
		!strings.Contains(reports[0].ContextMap()["error"].(string), "larger than 4 MiB") {
		t.Errorf("reports of the file over the cap: %v, want one at ERROR naming the cap", reports)
	}
	if len(s.fileScheds) != 1 || s.fileScheds[0].ID != "kept" {
		t.Errorf("file schedules %v, want the last good version's", s.fileScheds)
	}
}

// TestFileReadOnlyWhenChanged: the file is read again only when it changed:
// a look at the same file, of the same size and modification time, does
// not read it once it was left alone for racyWindow before the last read,
// and does while it was modified within it (a rewrite in the same tick of
// the file system's clock keeps both); a Kubernetes ConfigMap update, which
// points the path's symbolic links at a new file, is seen.
func TestFileReadOnlyWhenChanged(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// The layout of a ConfigMap volume: schedules.yaml → ..data/schedules.yaml,
	// ..data → ..<timestamp>, a directory of the files.
	version := func(name, content string) {
		t.Helper()
		dir := filepath.Join(e.dir, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "schedules.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(e.dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(e.dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", "schedules:\n"+fileEntry("first1"))
	path := filepath.Join(e.dir, "schedules.yaml")
	if err := os.Symlink("..data/schedules.yaml", path); err != nil {
		t.Fatal(err)
	}
	cfg, _ := e.deps(Config{File: path})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.reloadFile()
	wantFile(t, s, "first1", "at start")

	// rewrite writes the file in place, keeping its size and setting its
	// modification time to mtime.
	inPlace := filepath.Join(e.dir, "..v1", "schedules.yaml")
	rewrite := func(id string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(inPlace, []byte("schedules:\n"+fileEntry(id)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(inPlace, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(inPlace)
	if err != nil {
		t.Fatal(err)
	}
	// Modified just before it was read: a rewrite within the file system's
	// timestamp granularity keeps its size and time, and is read.
	rewrite("first2", info.ModTime())
	s.reloadFile()
	wantFile(t, s, "first2", "after a rewrite of the same size and time as a file modified just before it was read")

	// Left alone for longer than racyWindow before it was read: its size
	// and time are trusted, and the file is not read at each look.
	settled := time.Now().Add(-time.Hour)
	if err := os.Chtimes(inPlace, settled, settled); err != nil {
		t.Fatal(err)
	}
	s.reloadFile()
	rewrite("first3", settled)
	for range 3 {
		s.reloadFile()
	}
	wantFile(t, s, "first2", "after looks at a settled file of the same size and time (want it not read again)")

	// Modified an hour ahead of the clock: settled too, not read at each
	// look until the clock catches up.
	ahead := time.Now().Add(time.Hour)
	rewrite("first4", ahead)
	s.reloadFile()
	wantFile(t, s, "first4", "after a rewrite an hour ahead of the clock")
	rewrite("first5", ahead)
	for range 3 {
		s.reloadFile()
	}
	wantFile(t, s, "first4", "after looks at a file an hour ahead of the clock, of the same size and time (want it not read again)")

	version("..v2", "schedules:\n"+fileEntry("second"))
	s.reloadFile()
	if len(s.fileScheds) != 1 || s.fileScheds[0].ID != "second" {
		t.Errorf("file schedules %v after the ConfigMap update, want second", s.fileScheds)
	}
}

// wantFile fails the test unless s holds one file schedule, id.
func wantFile(t *testing.T, s *Scheduler, id, when string) {
	t.Helper()
	ids := make([]string, 0, len(s.fileScheds))
	for _, c := range s.fileScheds {
		ids = append(ids, c.ID)
	}
	if len(ids) != 1 || ids[0] != id {
		t.Errorf("file schedules %v %s, want %s", ids, when, id)
	}
}

// TestFileParsedOnceAtStart: Run takes in the version of the file New
// read, without reading or parsing it again.
func TestFileParsedOnceAtStart(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg, logs := e.deps(Config{File: e.writeFile("schedules:\n" + fileEntry("once")), Lease: testLease})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	parses := make(chan struct{}, 10)
	s.file.parse = func(data []byte, r schedule.Rules) ([]*schedule.Compiled, []*schedule.EntryError, error) {
		parses <- struct{}{}
		return schedule.ParseFile(data, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	waitFor(t, 10*time.Second, "the file loaded", func() bool { return logs.FilterMessage("schedules file loaded").Len() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(parses); n != 0 {
		t.Errorf("the file was parsed %d more times at start, want once (by New)", n)
	}
}

// TestSlowReloadKeepsTheLease: while a changed schedules file is parsed
// for longer than the lease, the leader keeps renewing it: no other
// replica takes over.
func TestSlowReloadKeepsTheLease(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	const leaseFor = time.Second
	rival := lease.New(e.redis.Client(), leaderKey, leaseFor)
	cfg, logs := e.deps(Config{File: e.writeFile("schedules:\n" + fileEntry("fast")), Lease: leaseFor,
		ReloadInterval: 100 * time.Millisecond})
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	slowStart := make(chan time.Time, 1)
	taken := make(chan time.Duration, 1) // when the rival took the lease, after the slow parse began
	s.file.parse = func(data []byte, r schedule.Rules) ([]*schedule.Compiled, []*schedule.EntryError, error) {
		start := time.Now()
		slowStart <- start
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if ok, err := rival.Acquire(ctx); err == nil && ok {
				taken <- time.Since(start)
				break
			}
			if time.Since(start) > 3*leaseFor {
				break
			}
		}
		return schedule.ParseFile(data, r)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, 10*time.Second, "the scheduler leads", func() bool { return leads(t, s.cfg.Registry) })
	e.writeFile("schedules:\n" + fileEntry("slow"))
	select {
	case <-slowStart:
	case <-time.After(10 * time.Second):
		t.Fatal("the changed file was not parsed")
	}
	waitFor(t, 10*time.Second, "the slow version loaded", func() bool { return logs.FilterMessage("schedules file loaded").Len() == 2 })
	select {
	case after := <-taken:
		t.Errorf("another replica took the lease %v into a reload of %v; want it kept", after, 3*leaseFor)
	default:
	}
	if n := logs.FilterMessageSnippet("lost the scheduler leadership").Len(); n != 0 {
		t.Errorf("%d lines of a lost leadership", n)
	}
}

// TestLeaderWithoutAFileWithdrawsTheFileSchedules: a leader without a
// schedules file publishes none, so that the schedules a leader with a file
// published stop showing as active, holding their ids and lasting forever:
// they become leftovers, their state expiring after schedule.LeftoverTTL,
// with a WARN line. A leader with the file publishes them again, with their
// state kept, and says they had been withdrawn.
func TestLeaderWithoutAFileWithdrawsTheFileSchedules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	st := e.store()
	rdb := e.redis.Client()
	listed := func() bool {
		all, err := st.List(ctx)
		return err == nil && len(all) == 1 && all[0].ID == "filesched" && all[0].Source == schedule.SourceFile
	}
	file := e.writeFile("schedules:\n" + fileEntry("filesched"))
	_, stop := e.startStoreLogged(Config{File: file})
	waitFor(t, 10*time.Second, "the file schedule fires", func() bool { return len(e.ticks("bulk")["filesched"]) >= 1 })
	stop()

	// The lines of the withdrawal and of the publication come once Redis
	// answered the change, after it shows in the store: wait for them.
	withdrawal := func(logs *observer.ObservedLogs) []observer.LoggedEntry {
		return logs.FilterMessageSnippet("this scheduler has no schedules file").All()
	}
	publication := func(logs *observer.ObservedLogs) []observer.LoggedEntry {
		return logs.FilterMessageSnippet("published the schedules file's schedules again").All()
	}

	logs, stop := e.startStoreLogged(Config{})
	waitFor(t, 10*time.Second, "the file schedule withdrawn", func() bool { return len(withdrawal(logs)) > 0 })
	if listed() {
		t.Error("the file schedule is still listed after its withdrawal")
	}
	if has, err := st.FileHas(ctx, "filesched"); err != nil || has {
		t.Errorf("FileHas after the withdrawal = %v, %v; want the id free", has, err)
	}
	if ttl := rdb.TTL(ctx, stateKey("filesched")).Val(); ttl <= 0 || ttl > schedule.LeftoverTTL {
		t.Errorf("the withdrawn schedule's state expires in %v, want within %v", ttl, schedule.LeftoverTTL)
	}
	warned := withdrawal(logs)
	if len(warned) != 1 || warned[0].Level != zapcore.WarnLevel || warned[0].ContextMap()["schedules"] != int64(1) {
		t.Errorf("lines of the withdrawal: %v, want one WARN with schedules 1", warned)
	}
	stop()

	logs, _ = e.startStoreLogged(Config{File: file})
	waitFor(t, 10*time.Second, "the file schedule published again", func() bool { return len(publication(logs)) > 0 })
	if !listed() {
		t.Error("the file schedule is not listed after its publication")
	}
	if ttl := rdb.TTL(ctx, stateKey("filesched")).Val(); ttl != -1 {
		t.Errorf("the published schedule's state expires in %v, want kept", ttl)
	}
	if n := len(publication(logs)); n != 1 {
		t.Errorf("%d lines saying the file's schedules are published again, want 1", n)
	}
}

// startStoreLogged runs a scheduler as start does, its store's lines in
// its log, until the returned stop is called or the test ends.
func (e *env) startStoreLogged(cfg Config) (*observer.ObservedLogs, func()) {
	e.t.Helper()
	cfg, logs := e.deps(cfg)
	var err error
	if cfg.Store, err = schedule.NewStore(schedule.Config{Redis: cfg.Redis.Client, Rules: testRules, Logger: cfg.Logger}); err != nil {
		e.t.Fatal(err)
	}
	cfg.Lease, cfg.ReloadInterval = testLease, 200*time.Millisecond
	s, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return logs, stop
}

// TestReplicasWithDifferentFilesAreToldApart: scheduler replicas on one
// Redis with different schedules files, leading in turn, each restarted as
// it gives up the leadership (as a deploy or a node drain does): the first
// that replaces the other's file says so at INFO, the next leader that
// brings its file back warns, naming the other replica as its "scheduler
// started" line does.
func TestReplicasWithDifferentFilesAreToldApart(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	st := e.store()
	published := func(id string) func() bool {
		return func() bool { has, err := st.FileHas(ctx, id); return err == nil && has }
	}
	x, y := "schedules:\n"+fileEntry("x"), "schedules:\n"+fileEntry("y")

	_, stop := e.startStoreLogged(Config{File: e.writeFile(x)})
	waitFor(t, 10*time.Second, "a's file published", published("x"))
	stop()
	logsB, stop := e.startStoreLogged(Config{File: e.writeFile(y)})
	waitFor(t, 10*time.Second, "b's file published", published("y"))
	stop()
	if got := logsB.FilterMessageSnippet("differs from the one another scheduler published").All(); len(got) != 1 ||
		got[0].Level != zapcore.InfoLevel {
		t.Errorf("lines of b replacing a's file: %v, want one INFO", got)
	}
	logsA, _ := e.startStoreLogged(Config{File: e.writeFile(x)})
	warned := func() []observer.LoggedEntry {
		return logsA.FilterMessageSnippet("the scheduler replicas have different schedules files").All()
	}
	waitFor(t, 10*time.Second, "the WARN of different files", func() bool { return len(warned()) > 0 })
	started := logsB.FilterMessage("scheduler started").All()
	if len(started) != 1 {
		t.Fatalf("b's lines of its start: %v, want one", started)
	}
	b, _ := started[0].ContextMap()["replica"].(string)
	if b == "" {
		t.Fatalf("b's line of its start names no replica: %v", started[0].ContextMap())
	}
	if got := warned(); len(got) != 1 || got[0].Level != zapcore.WarnLevel || got[0].ContextMap()["other_replica"] != b {
		t.Errorf("lines of a's file published again: %v, want one WARN naming b's replica %s", got, b)
	}
}
