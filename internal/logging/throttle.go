package logging

import (
	"strings"
	"sync"
	"time"
	"unicode"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ThrottlePeriod is how often a Throttle lets one repeated message through:
// a Redis outage then costs each process a line per message every 30 s
// rather than one per retry of every loop.
const ThrottlePeriod = 30 * time.Second

// maxThrottled bounds the messages a Throttle remembers; beyond it, a new
// message is logged without being counted until older ones are forgotten.
const maxThrottled = 256

// maxKey bounds the part of a message a Throttle keeps as its key.
const maxKey = 200

// Throttle holds back a message repeated within its period: the first
// occurrence is logged at once, the repeats until the period has passed
// are counted, and the next occurrence logged carries their number
// (`suppressed`). It is safe for concurrent use; a nil Throttle holds
// nothing back.
type Throttle struct {
	period time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*throttled
}

type throttled struct {
	logged     time.Time // when the message was last let through
	suppressed int       // repeats held back since
}

// NewThrottle returns a Throttle that lets a message through once per
// period (ThrottlePeriod when 0), timed by now (time.Now when nil).
func NewThrottle(period time.Duration, now func() time.Time) *Throttle {
	if period <= 0 {
		period = ThrottlePeriod
	}
	if now == nil {
		now = time.Now
	}
	return &Throttle{period: period, now: now, seen: map[string]*throttled{}}
}

// Allow reports whether the message of key may be logged now and, when it
// may, how many of its repeats were held back since it was last logged.
func (t *Throttle) Allow(key string) (ok bool, suppressed int) {
	if t == nil {
		return true, 0
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, found := t.seen[key]; found {
		if now.Sub(e.logged) < t.period {
			e.suppressed++
			return false, 0
		}
		n := e.suppressed
		e.logged, e.suppressed = now, 0
		return true, n
	}
	if len(t.seen) >= maxThrottled {
		for k, e := range t.seen {
			if now.Sub(e.logged) >= t.period {
				delete(t.seen, k) // its held-back repeats go unreported
			}
		}
		if len(t.seen) >= maxThrottled {
			return true, 0
		}
	}
	t.seen[key] = &throttled{logged: now}
	return true, 0
}

// Flush writes, through log, one WARN line for each message whose repeats
// were held back since it was last let through, with the message as Key
// gives it and their number (`suppressed`), and forgets them: a process
// that stops does not take the count with it. At most maxThrottled lines.
func (t *Throttle) Flush(log *zap.Logger) { t.FlushAt(log, zapcore.WarnLevel) }

// FlushAt is Flush writing its lines at level.
func (t *Throttle) FlushAt(log *zap.Logger, level zapcore.Level) {
	t.flushBy(log, func(string) zapcore.Level { return level })
}

// flushBy is Flush writing the line of the message of each key at
// level(key).
func (t *Throttle) flushBy(log *zap.Logger, level func(key string) zapcore.Level) {
	if t == nil {
		return
	}
	t.mu.Lock()
	held := map[string]int{}
	for k, e := range t.seen {
		if e.suppressed > 0 {
			held[k] = e.suppressed
			e.suppressed = 0
		}
	}
	t.mu.Unlock()
	for k, n := range held {
		if ce := log.Check(level(k), "repeated lines held back"); ce != nil {
			ce.Write(zap.String("message", k), zap.Int("suppressed", n))
		}
	}
}

// Log writes msg with fields at level through log unless msg, at that
// level, was logged within the period; a line after held-back repeats adds
// their number as `suppressed`. For messages whose text is constant (the
// details in fields).
func (t *Throttle) Log(log *zap.Logger, level zapcore.Level, msg string, fields ...zap.Field) {
	ok, n := t.Allow(level.String() + " " + msg)
	if !ok {
		return
	}
	if n > 0 {
		fields = append(fields, zap.Int("suppressed", n))
	}
	if ce := log.Check(level, msg); ce != nil {
		ce.Write(fields...)
	}
}

// Key returns what tells a message at level apart from others when its
// text carries volatile details (a library's formatted line): its words of
// digits and punctuation without a letter (addresses, ports, counts), or
// with only the T and Z of a timestamp (an expired certificate's error
// names the current time), and what is in brackets (lists of ids) are left
// out, and at most the first 200 bytes are kept. A word with another
// letter stays: a task's id, a queue's name ("tier1"), so that lines about
// different tasks or queues are not taken for repeats.
func Key(level zapcore.Level, msg string) string {
	var b strings.Builder
	b.WriteString(level.String())
	depth, left := 0, false
	for word := range strings.FieldsSeq(msg) {
		if b.Len() >= maxKey {
			break
		}
		opens, closes := strings.Count(word, "["), strings.Count(word, "]")
		inList := depth > 0 || opens > 0
		depth = max(depth+opens-closes, 0)
		if inList || strings.ContainsFunc(word, unicode.IsDigit) && !strings.ContainsFunc(word, isNameLetter) {
			if left {
				continue // one mark for a run of words left out: a list of any length
			}
			word, left = "#", true
		} else {
			left = false
		}
		b.WriteByte(' ')
		b.WriteString(word)
	}
	s := b.String()
	return s[:min(len(s), maxKey)]
}

// isNameLetter reports whether r is a letter other than the T and Z of an
// RFC 3339 timestamp.
func isNameLetter(r rune) bool { return unicode.IsLetter(r) && r != 'T' && r != 'Z' }
