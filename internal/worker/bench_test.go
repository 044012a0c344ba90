package worker_test

import (
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/logging"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/worker"
	"github.com/certmail/certmail/tasks"
)

// BenchmarkDeliveries drains b.N resend-dcv tasks through a worker in this
// process, as `make bench` does with processes: concurrency 20, two
// rate-limit windows that never bind, JSON logs (to io.Discard), the fake
// CertCentral. Its allocations per delivery are those of the whole process
// (the fake and asynq's included), so they compare one build with another;
// time per delivery is only a hint on a shared machine (`make bench` is the
// measure).
func BenchmarkDeliveries(b *testing.B) {
	rs := redistest.Start(b)
	_, baseURL := digicerttest.NewTestServer(b, digicerttest.Config{APIKeys: []string{testKey}, AnyIDExists: true, RecordLimit: 1})
	log, err := logging.New("info", "json", io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	client := asynq.NewClient(rs.ConnOpt())
	b.Cleanup(func() { client.Close() })
	inspector := asynq.NewInspector(rs.ConnOpt())
	b.Cleanup(func() { inspector.Close() })
	for i := range b.N {
		task, err := tasks.NewTask(tasks.ResendDCV{OrderID: int64(1000 + i)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := client.Enqueue(task); err != nil {
			b.Fatal(err)
		}
	}
	windows, err := ratelimit.ParseWindows("1000000/100ms,1000000/1s")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	w := certmailtest.StartWorker(b, rs.URL(), worker.Config{
		Accounts: account.Set{"default": account.Account{Name: "default", BaseURL: baseURL,
			APIKey: account.Secret(testKey), RateLimits: windows}},
		Queues: map[string]int{tasks.DefaultQueue: 1},
		Logger: log,
	})
	for {
		q, err := inspector.GetQueueInfo(tasks.DefaultQueue)
		if err != nil {
			b.Fatal(err)
		}
		if q.Retry+q.Archived > 0 {
			b.Fatalf("%d tasks failed", q.Retry+q.Archived)
		}
		if q.Pending+q.Active == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond) // seldom: the poll counts in the figures
	}
	b.StopTimer()
	w.Stop()
}
