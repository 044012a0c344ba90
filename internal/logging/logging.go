// Package logging builds certmail's zap loggers from the two settings operators
// see: a level (debug, info, warn, error) and a format (json or console), and
// carries go-redis's own messages to them (RedisLogger).
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

// New returns a logger writing to w. Timestamps are RFC 3339 with milliseconds
// in UTC so that lines from several processes sort together.
func New(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = func(t time.Time, pae zapcore.PrimitiveArrayEncoder) {
		pae.AppendString(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
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
