package logging_test

import (
	"bytes"
	stdlog "log"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/logging"
)

// TestRedirectStdLog: the standard logger's lines go to the latest
// redirection in force, each one JSON line, a repeat held back; undone in
// any order, no line reaches a logger whose redirection was undone, and
// the last undo gives the standard logger back its output.
//
// Not parallel: the standard logger is process-wide.
func TestRedirectStdLog(t *testing.T) {
	before := stdlog.Writer()
	var a, b bytes.Buffer
	logA, _ := logging.New("info", "json", &a)
	logB, _ := logging.New("info", "json", &b)
	undoA := logging.RedirectStdLog(logA, nil)
	undoB := logging.RedirectStdLog(logB, nil)
	stdlog.Printf("error: could not delete task with id %q: %v", "x1", "NOT_FOUND")
	stdlog.Printf("error: could not delete task with id %q: %v", "x2", "NOT_FOUND") // held back
	undoA()                                                                         // out of order
	stdlog.Print("to b " + strings.Repeat("y", 32<<10))
	undoB()
	if a.Len() != 0 {
		t.Errorf("an undone redirection got lines:\n%s", a.String())
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `"level":"warn"`) || !strings.Contains(lines[0], `\"x1\"`) ||
		!strings.Contains(lines[1], `"cut_bytes"`) || !strings.Contains(lines[2], `"suppressed":1`) || len(lines[1]) > 17<<10 {
		t.Errorf("want the first delete, the cut line and the count held back, got:\n%.3000s", b.String())
	}
	if stdlog.Writer() != before {
		t.Error("the standard logger's output was not given back")
	}
}
