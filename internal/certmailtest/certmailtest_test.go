package certmailtest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/certmailtest"
)

// A logger's lines are observed as entries and written as JSON text.
func TestNewLogger(t *testing.T) {
	t.Parallel()
	log, logs := certmailtest.NewLogger(t)
	log.Info("task done", zap.String("task_id", "t1"), zap.Int("attempt", 2), zap.Duration("duration", 1500*time.Millisecond))
	log.Error("task dead-lettered", zap.Error(errors.New("boom")))
	log.Debug("noise")
	if n := logs.Len(); n != 3 {
		t.Fatalf("%d entries, want 3", n)
	}
	done := logs.Lines("info", "task done")
	if len(done) != 1 || done[0]["task_id"] != "t1" || done[0]["attempt"] != int64(2) || done[0]["duration"] != 1500*time.Millisecond {
		t.Errorf("info lines %v", done)
	}
	if errs := logs.Lines("error", ""); len(errs) != 1 || errs[0]["error"] != "boom" {
		t.Errorf("error lines %v", errs)
	}
	if all := logs.Lines("", ""); len(all) != 3 {
		t.Errorf("%d lines of any level, want 3", len(all))
	}
	text := logs.Text()
	if !strings.Contains(text, `"msg":"task done"`) || !strings.Contains(text, `"duration":1500`) || strings.Count(text, "\n") != 3 {
		t.Errorf("text:\n%s", text)
	}
}

// Output decodes JSON lines; a line that is not JSON fails the test.
func TestOutput(t *testing.T) {
	t.Parallel()
	var o certmailtest.Output
	fmt.Fprintln(&o, `{"msg":"a","n":1}`)
	fmt.Fprintln(&o, `{"msg":"b"}`)
	if lines := o.JSONLines(t); len(lines) != 2 || lines[0]["msg"] != "a" || lines[0]["n"] != 1.0 || lines[1]["msg"] != "b" {
		t.Errorf("lines %v", lines)
	}
	fmt.Fprintln(&o, "not json")
	ft := &fakeTB{TB: t}
	func() {
		defer func() { _ = recover() }()
		o.JSONLines(ft)
	}()
	if !ft.failed {
		t.Error("a line that is not JSON did not fail the test")
	}
}

// fakeTB records a Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(string, ...any) {
	f.failed = true
	panic("fatal")
}
