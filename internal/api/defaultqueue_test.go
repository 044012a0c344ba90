package api_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
)

// An API whose CERTMAIL_QUEUES leaves out the default queue, where every
// enqueue without ?queue goes (and is then refused), says so once at
// start, naming the queues it serves; one that serves it says nothing.
func TestRunWarnsOfAnUnservedDefaultQueue(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		queues []string
		warned bool
	}{
		{[]string{"critical", "defualt"}, true},
		{[]string{"critical", "default"}, false},
		{nil, false}, // CERTMAIL_QUEUES's default
	} {
		t.Run(fmt.Sprint(tt.queues), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			svc, err := ops.New(ops.Config{Redis: b.conn, Rules: enqueue.Rules{Queues: tt.queues}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			log, logs := certmailtest.NewLogger(t)
			s, err := api.New(api.Config{Ops: svc, Redis: b.conn, Schedules: b.schedules,
				Tokens: []api.Token{{Secret: testToken}}, Addr: "127.0.0.1:0", Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, func(net.Addr) { cancel() }) }()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			var lines []map[string]any
			for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
				if l := e.ContextMap(); l["default_queue"] != nil {
					l["msg"] = e.Message
					lines = append(lines, l)
				}
			}
			switch {
			case len(lines) != map[bool]int{true: 1}[tt.warned]:
				t.Fatalf("WARN lines about the default queue %v, want %d", lines, map[bool]int{true: 1}[tt.warned])
			case tt.warned && (lines[0]["default_queue"] != "default" || fmt.Sprint(lines[0]["queues"]) != "[critical defualt]"):
				t.Errorf("WARN line %v: want default_queue default and queues [critical defualt]", lines[0])
			}
		})
	}
}
