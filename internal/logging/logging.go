// Package logging builds certmail's zap loggers from the two settings operators
// see: a level (debug, info, warn, error) and a format (json or console),
// CERTMAIL_LOG_LEVEL and CERTMAIL_LOG_FORMAT, which every command reads but
// fake-digicert (it writes no log of its own) and version; and it carries
// go-redis's own messages to them (RedisLogger), and those of the standard
// library's log package (HTTPErrorLog for net/http's, RedirectStdLog for
// the process-wide logger), a repeated message at most once per
// ThrottlePeriod (Throttle).
package logging

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/buffer"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Defaults of CERTMAIL_LOG_LEVEL and CERTMAIL_LOG_FORMAT.
const (
	DefaultLevel  = "info"
	DefaultFormat = "json"
)

// timeLayout is the layout of the timestamps, in UTC.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// New returns a logger writing to w. Timestamps are RFC 3339 with milliseconds
// in UTC so that lines from several processes sort together.
func New(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	// zap's layout encoder writes the time straight into the JSON line,
	// where Format would first allocate it as a string.
	layout := zapcore.TimeEncoderOfLayout(timeLayout)
	enc.EncodeTime = func(t time.Time, pae zapcore.PrimitiveArrayEncoder) {
		layout(t.UTC(), pae)
	}
	enc.EncodeDuration = zapcore.MillisDurationEncoder
	var encoder zapcore.Encoder
	switch format {
	case "json":
		encoder = zapcore.NewJSONEncoder(enc)
	case "console":
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = oneLineEncoder{zapcore.NewConsoleEncoder(enc)}
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.AddCaller()), nil
}

// oneLineEncoder is the console encoder with each message's control
// characters escaped: zap's console format writes a message as it is, and
// text that reaches one from outside (a library's line through the
// standard log package, a panic's value) could otherwise split an entry or
// drive the terminal. Fields are JSON, escaped already.
type oneLineEncoder struct{ zapcore.Encoder }

func (e oneLineEncoder) Clone() zapcore.Encoder { return oneLineEncoder{e.Encoder.Clone()} }

func (e oneLineEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	ent.Message = escapeControl(ent.Message)
	return e.Encoder.EncodeEntry(ent, fields)
}

// escapeControl returns s with its control characters (C0, DEL, C1, and
// the Unicode line and paragraph separators) written as escapes: \n, \r,
// \t, or \u followed by four hex digits. s is returned as it is when it
// holds none.
func escapeControl(s string) string {
	if strings.IndexFunc(s, isControl) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case isControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isControl(r rune) bool {
	return r < 0x20 || (0x7f <= r && r <= 0x9f) || r == 0x2028 || r == 0x2029 || r == utf8.RuneError
}
