package logging

import (
	"bytes"
	"io"
	stdlog "log"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// maxStdLine bounds the text of one line of the standard library's log
// package carried to zap: a panic's stack fits, a task id a client sent to
// asynqmon in a 1 MB body does not.
const maxStdLine = 16 << 10

// stdKeyWords is how many words of a line's first line tell its repeats
// apart (Key): what net/http and asynqmon write before the details that
// vary (an address, a task id a client chose). A handler's panic is told
// apart by its value and site instead (panicKey).
const stdKeyWords = 6

// stdWriter carries the lines of a standard library logger (one Write per
// line, as package log makes them) to a zap logger: each a JSON line of
// its own, cut to maxStdLine bytes, a repeat within the throttle's period
// held back.
type stdWriter struct {
	level    func(msg string) zapcore.Level
	throttle *Throttle
	mu       sync.RWMutex
	log      *zap.Logger // nil once detached
}

func (w *stdWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.log == nil {
		return n, nil
	}
	p = bytes.TrimRight(p, "\n")
	cut := 0
	if len(p) > maxStdLine {
		p, cut = p[:maxStdLine], len(p)-maxStdLine
	}
	msg := string(p)
	level := w.level(msg)
	ok, held := w.throttle.Allow(stdKey(level, msg))
	if !ok {
		return n, nil
	}
	if ce := w.log.Check(level, msg); ce != nil {
		var fields []zap.Field
		if cut > 0 {
			fields = append(fields, zap.Int("cut_bytes", cut))
		}
		if held > 0 {
			fields = append(fields, zap.Int("suppressed", held))
		}
		ce.Write(fields...)
	}
	return n, nil
}

// stdKey is the throttle key of msg, a line at level: for a handler's
// panic, its value and its site (panicKey); for any other line, its first
// stdKeyWords words.
func stdKey(level zapcore.Level, msg string) string {
	if isPanic(msg) {
		return panicKey(msg)
	}
	first, _, _ := strings.Cut(msg, "\n")
	words := strings.Fields(first)
	return Key(level, strings.Join(words[:min(len(words), stdKeyWords)], " "))
}

// detach reports the repeats held back (flush), then drops every later
// line, once the lines being written are done.
func (w *stdWriter) detach() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.log != nil {
		w.throttle.flushBy(w.log, keyLevel)
	}
	w.log = nil
}

// flush reports the repeats held back, each message's count at its
// level: a panic's at ERROR.
func (w *stdWriter) flush() {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.log != nil {
		w.throttle.flushBy(w.log, keyLevel)
	}
}

// keyLevel is the level a key of stdKey starts with (Key's first word).
func keyLevel(key string) zapcore.Level {
	name, _, _ := strings.Cut(key, " ")
	level, err := zapcore.ParseLevel(name)
	if err != nil {
		return zapcore.WarnLevel
	}
	return level
}

// HTTPErrorLog returns the ErrorLog of an http.Server: net/http's own
// messages (a handler's panic, a superfluous WriteHeader, a failed TLS
// handshake, a failed Accept) become lines of log, a panic at ERROR and
// the others at WARN, each cut to 16 KiB, a repeat held back as throttle
// does (a new Throttle of ThrottlePeriod when nil): a client can make
// net/http write them. (zap.NewStdLogAt writes every line, unbounded.)
// A panic repeats another only when its value (but for its addresses,
// ports and counts) and its site, the first frame of its stack outside
// net/http and the runtime, are the same: a panic of another bug is
// written at once, with its stack. When the server stops, FlushHTTPErrorLog
// reports the repeats held back.
func HTTPErrorLog(log *zap.Logger, throttle *Throttle) *stdlog.Logger {
	if throttle == nil {
		throttle = NewThrottle(0, nil)
	}
	return stdlog.New(&stdWriter{log: log, level: httpLevel, throttle: throttle}, "", 0)
}

// FlushHTTPErrorLog writes, through the logger HTTPErrorLog made l with,
// one line for each of l's messages whose repeats were held back since it
// was last written, with their number (Throttle.Flush; a panic's at
// ERROR), so that a server that stops does not take the count with it. It
// does nothing when l was not made by HTTPErrorLog.
func FlushHTTPErrorLog(l *stdlog.Logger) {
	if l == nil {
		return
	}
	if w, ok := l.Writer().(*stdWriter); ok {
		w.flush()
	}
}

// httpLevel is the level of one of net/http's messages: ERROR for a
// handler's panic, a bug of certmail's; WARN for the rest.
func httpLevel(msg string) zapcore.Level {
	if isPanic(msg) {
		return zapcore.ErrorLevel
	}
	return zapcore.WarnLevel
}

// The standard library's logger (package log's) is process-wide; the
// redirections of RedirectStdLog in force, the latest last, and what it
// wrote to before the first.
var std struct {
	mu     sync.Mutex
	to     []*stdWriter
	out    io.Writer
	flags  int
	prefix string
}

// stdMux is the output of the standard logger while a redirection is in
// force: the latest one still in force gets each line.
type stdMux struct{}

func (stdMux) Write(p []byte) (int, error) {
	std.mu.Lock()
	var w *stdWriter
	if len(std.to) > 0 {
		w = std.to[len(std.to)-1]
	}
	out := std.out
	std.mu.Unlock()
	if w == nil { // undone between the log call and this write
		return out.Write(p)
	}
	return w.Write(p)
}

// RedirectStdLog sends the lines of the standard library's logger, which
// libraries call on their own (asynqmon's handlers do, when a batch action
// fails), to log at WARN, each cut to 16 KiB and a repeat held back as
// throttle does (a new Throttle when nil), until undo is called, which
// reports the repeats held back (Throttle.Flush) and ends it. The logger
// is process-wide: while several redirections are in force (commands run
// side by side in one process, as tests run them), the latest gets the
// lines, and undoing one, in any order, hands them to the latest left, or,
// once none is, back to where they went before the first. Lines never
// reach a logger whose redirection was undone.
func RedirectStdLog(log *zap.Logger, throttle *Throttle) (undo func()) {
	if throttle == nil {
		throttle = NewThrottle(0, nil)
	}
	w := &stdWriter{log: log, level: func(string) zapcore.Level { return zapcore.WarnLevel }, throttle: throttle}
	std.mu.Lock()
	if len(std.to) == 0 {
		std.out, std.flags, std.prefix = stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
		stdlog.SetOutput(stdMux{})
		stdlog.SetFlags(0)
		stdlog.SetPrefix("")
	}
	std.to = append(std.to, w)
	std.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			std.mu.Lock()
			for i, x := range std.to {
				if x == w {
					std.to = append(std.to[:i], std.to[i+1:]...)
					break
				}
			}
			if len(std.to) == 0 {
				stdlog.SetOutput(std.out)
				stdlog.SetFlags(std.flags)
				stdlog.SetPrefix(std.prefix)
			}
			std.mu.Unlock()
			w.detach()
		})
	}
}
