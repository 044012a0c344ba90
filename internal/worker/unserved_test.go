package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zapcore"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/worker"
)

// A worker whose CERTMAIL_QUEUES leaves out queues that hold tasks waiting
// for a worker (pending, scheduled, retry) says so once at start, naming
// them (at most 10, the others counted); it names no queue without such
// tasks, nor one it serves, and says nothing when it serves every queue
// that holds tasks.
func TestWorkerWarnsOfUnservedQueuesWithTasks(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		serve string   // CERTMAIL_QUEUES
		with  []string // queues given a pending task
		later []string // queues given a task due in an hour
		empty []string // queues asynq knows without a task
		want  string   // the queues named, "" for no line
		more  int64
	}{
		{name: "mistyped", serve: "critical=6,defualt=3,bulk=1", with: []string{"default", "bulk"}, later: []string{"old"},
			empty: []string{"retired"}, want: "[default old]"},
		{name: "all served", serve: queues.Default, with: []string{"default", "bulk"}, later: []string{"critical"},
			empty: []string{"retired"}},
		{name: "bounded", serve: "bulk=1", with: []string{"q01", "q02", "q03", "q04", "q05", "q06", "q07", "q08", "q09", "q10", "q11", "q12"},
			want: "[q01 q02 q03 q04 q05 q06 q07 q08 q09 q10]", more: 2},
		{name: "long name", serve: queues.Default, with: []string{strings.Repeat("q", 5000)},
			want: "[" + strings.Repeat("q", 63) + "…]"},
		{name: "long name cut between characters", serve: queues.Default, with: []string{"qq" + strings.Repeat("é", 100)},
			want: "[qq" + strings.Repeat("é", 30) + "…]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{startWorkers: -1, fake: digicerttest.Config{AnyIDExists: true}})
			for _, q := range tt.with {
				b.enqueue(t, "resend-dcv", `{"order_id": 1}`, asynq.Queue(q))
			}
			for _, q := range tt.later {
				b.enqueue(t, "resend-dcv", `{"order_id": 1}`, asynq.Queue(q), asynq.ProcessIn(time.Hour))
			}
			for _, q := range tt.empty {
				id := b.enqueue(t, "resend-dcv", `{"order_id": 1}`, asynq.Queue(q))
				if err := b.inspector.DeleteTask(q, id); err != nil {
					t.Fatal(err)
				}
			}
			serve, err := queues.Parse(tt.serve)
			if err != nil {
				t.Fatal(err)
			}
			b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.Queues = serve }})
			var lines []map[string]any
			for _, e := range b.logs.FilterLevelExact(zapcore.WarnLevel).All() {
				if l := e.ContextMap(); l["unserved_queues"] != nil {
					l["msg"] = e.Message
					lines = append(lines, l)
				}
			}
			switch {
			case tt.want == "" && len(lines) != 0:
				t.Fatalf("WARN lines about unserved queues %v, want none", lines)
			case tt.want == "":
				return
			case len(lines) != 1:
				t.Fatalf("%d WARN lines about unserved queues (%v), want one", len(lines), lines)
			}
			l := lines[0]
			if got := fmt.Sprint(l["unserved_queues"]); got != tt.want || l["more_unserved_queues"] != tt.more ||
				!strings.Contains(l["msg"].(string), "another worker must serve them, or CERTMAIL_QUEUES is mistyped") {
				t.Errorf("WARN line %v: want unserved_queues %s and more_unserved_queues %d", l, tt.want, tt.more)
			}
		})
	}
}
