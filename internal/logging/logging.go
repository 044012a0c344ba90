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
	"time"

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
		encoder = zapcore.NewConsoleEncoder(enc)
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.AddCaller()), nil
}
