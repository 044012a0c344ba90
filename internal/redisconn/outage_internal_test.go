package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// replyError is an error reply of Redis, as go-redis returns it.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// What a command's error tells of Redis: answered (an error reply too),
// not answered (a broken or refused connection, a timeout, a server that
// cannot serve), or nothing (cut short by the caller or the client's close).
func TestAnswer(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	dialTimeout, readTimeout := timeouts(t)
	for _, tc := range []struct {
		err  error
		want outcome
	}{
		{nil, answered},
		{redis.Nil, answered},
		{replyError("ERR unknown command 'NOSUCHCOMMAND'"), answered},
		{replyError("WRONGTYPE Operation against a key holding the wrong kind of value"), answered},
		{replyError("NOSCRIPT No matching script"), answered},
		{replyError("LOADING Redis is loading the dataset in memory"), unanswered},
		{replyError("MASTERDOWN Link with MASTER is down"), unanswered},
		{refused, unanswered},
		{dialTimeout, unanswered},
		{fmt.Errorf("redis: all sentinels specified in configuration are unreachable: %w", dialTimeout), unanswered},
		{readTimeout, unanswered},
		{fmt.Errorf("auth gate: %w", refused), unanswered},
		{io.EOF, unanswered},
		{io.ErrUnexpectedEOF, unanswered},
		{redis.ErrPoolTimeout, unanswered},
		{context.Canceled, undecided},
		{context.DeadlineExceeded, undecided},
		{redis.ErrClosed, undecided},
	} {
		if got := answer(tc.err); got != tc.want {
			t.Errorf("answer(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// A Redis that comes and goes gets at most one WARN line per period: an
// outage that starts sooner after the last one is logged once it has lasted
// until then, and one that ends before is counted in the next line.
func TestOutageLinesThrottled(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	o := &outageWatch{target: "redis://r:6379/0", now: func() time.Time { return now }, period: 30 * time.Second}
	core, logs := observer.New(zapcore.DebugLevel)
	o.start(zap.New(core))
	down := errors.New("dial tcp: connection refused")
	lines := func() (s []string) {
		for _, e := range logs.TakeAll() {
			s = append(s, fmt.Sprintf("%s %s %v", e.Level, e.Message, e.ContextMap()))
		}
		return s
	}
	expect := func(step string, want ...string) {
		t.Helper()
		got := lines()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s:\n got %q\nwant %q", step, got, want)
		}
	}

	o.observe(down)
	now = now.Add(2 * time.Second)
	o.observe(down)
	expect("first outage", "warn Redis is not answering; certmail keeps trying map[error:dial tcp: connection refused redis:redis://r:6379/0]")
	o.observe(nil)
	o.observe(nil)
	expect("first answer", "info Redis is answering again map[down_for:2s failed_commands:2 redis:redis://r:6379/0]")

	now = now.Add(time.Second) // 3 s after the last WARN
	o.observe(down)
	o.observe(redis.Nil) // an answer
	expect("a blip within the period")

	now = now.Add(time.Second)
	o.observe(down)
	now = now.Add(10 * time.Second)
	o.observe(context.Canceled) // says nothing
	o.observe(down)
	expect("an outage within the period")
	now = now.Add(20 * time.Second) // 34 s after the last WARN, 30 s into the outage
	o.observe(down)
	expect("the outage past the period",
		"warn Redis is not answering; certmail keeps trying map[down_for:30s error:dial tcp: connection refused other_outages:1 redis:redis://r:6379/0]")
	now = now.Add(5 * time.Second)
	o.observe(replyError("ERR unknown command"))
	expect("its end", "info Redis is answering again map[down_for:35s failed_commands:3 redis:redis://r:6379/0]")
}

// timeouts returns the errors of a dial and of a read that time out, as
// net gives them to go-redis. The dial's matches context.DeadlineExceeded
// too, as a caller's deadline does.
func timeouts(t *testing.T) (dial, read error) {
	t.Helper()
	_, dial = (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", "127.0.0.1:1")
	if !errors.Is(dial, context.DeadlineExceeded) {
		t.Fatalf("a dial's timeout (%v) does not match context.DeadlineExceeded: the case below tests nothing", dial)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now())
	_, read = conn.Read(make([]byte, 1))
	if read == nil {
		t.Fatal("a read past its deadline did not fail")
	}
	return dial, read
}

// An outage that starts exactly one period after the last WARN line has
// "lasted until then": it gets its WARN line at once.
func TestOutageWarnAtExactlyOnePeriod(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	o := &outageWatch{target: "redis://r:6379/0", now: func() time.Time { return now }, period: 30 * time.Second}
	core, logs := observer.New(zapcore.DebugLevel)
	o.start(zap.New(core))
	down := errors.New("dial tcp: connection refused")
	o.observe(down) // the first WARN
	o.observe(nil)  // its INFO
	_ = logs.TakeAll()
	now = now.Add(30 * time.Second)
	o.observe(down)
	if got := logs.FilterMessage("Redis is not answering; certmail keeps trying").Len(); got != 1 {
		t.Fatalf("an outage one period after the last WARN: %d WARN lines, want 1", got)
	}
}
