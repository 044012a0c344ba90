package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/tasks"
)

// A delivery that comes to its DigiCert call once the worker is stopping
// makes no call and hands the task back: a wait that uses no retry,
// coming back soon for another worker.
func TestStoppingWorkerStartsNoCall(t *testing.T) {
	t.Parallel()
	p := guardTestProcessor(redistest.Start(t, redistest.Options{}).Client(), zap.NewNop())
	p.stopping.Store(true)
	d := &delivery{taskID: "t-stopping", attempt: 1, start: time.Now(), account: p.accounts["default"], report: &report{}}
	calls := 0
	err := p.deliverOnce(context.Background(), d, func(context.Context) (digicert.Result, error) {
		calls++
		return digicert.Result{Status: 204, Attempts: 1}, nil
	})
	if calls != 0 {
		t.Errorf("%d DigiCert calls from a stopping worker, want none", calls)
	}
	var te *taskError
	if !errors.As(err, &te) || te.code != "worker_stopping" || te.class != classWait {
		t.Fatalf("error %v, want a worker_stopping wait", err)
	}
	if IsFailure(err) {
		t.Error("the hand-back counts as a failure: it would use one of the task's retries")
	}
	if after := retryDelayFunc(0, err, nil); after < time.Second || after > 1250*time.Millisecond {
		t.Errorf("handed back for %v, want about a second", after)
	}
	if n, err := p.rdb.Exists(context.Background(), deliveredKey(d.taskID)).Result(); err != nil || n != 0 {
		t.Errorf("duplicate guard: %d, %v; want none written", n, err)
	}
	if d.report.calls != 0 || d.report.outcome != "" {
		t.Errorf("report %+v, want no call and no outcome", d.report)
	}
}

// A set-emails that comes to its DigiCert call once the worker is stopping
// makes no call either, and takes neither its order's lock nor the record
// that its list is being sent: an older list of the order is not held back
// by a list that never went.
func TestStoppingWorkerStartsNoSetEmailsCall(t *testing.T) {
	t.Parallel()
	p, calls := setEmailsTestProcessor(t)
	acct := p.accounts["default"]
	p.stopping.Store(true)
	d := &delivery{taskID: "t-stopping-se", attempt: 1, start: time.Now(), account: acct, report: &report{}}
	pl := tasks.SetEmails{OrderID: 77, AdditionalEmails: []string{"a@example.com"}, Sequence: 100}
	err := p.setEmails(context.Background(), d, pl, pl.Sequence)
	if n := calls.Load(); n != 0 {
		t.Errorf("%d DigiCert calls from a stopping worker, want none", n)
	}
	var te *taskError
	if !errors.As(err, &te) || te.code != "worker_stopping" || te.class != classWait {
		t.Fatalf("error %v, want a worker_stopping wait", err)
	}
	k := newOrderKeys(p.rdb, "default", pl.OrderID)
	if n, err := p.rdb.Exists(context.Background(), k.lock.Key(), k.sending).Result(); err != nil || n != 0 {
		t.Errorf("order lock and sending record: %d exist (%v); want neither taken", n, err)
	}
}
