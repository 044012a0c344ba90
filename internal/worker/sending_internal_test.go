package worker

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/tasks"
)

// setEmailsTestProcessor is a processor of one account, "default", whose
// DigiCert answers every call with a 204, counted in calls; the client has
// the defaults (an attempt needs 2 s of the call's deadline left).
func setEmailsTestProcessor(t *testing.T) (p *processor, calls *atomic.Int32) {
	t.Helper()
	calls = &atomic.Int32{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(ts.Close)
	p = guardTestProcessor(redistest.Start(t, redistest.Options{}).Client(), zap.NewNop())
	acct := p.accounts["default"]
	client, err := digicert.New(digicert.Config{BaseURL: ts.URL, APIKey: "k", Limiter: acct.limiter})
	if err != nil {
		t.Fatal(err)
	}
	acct.client = client
	return p, calls
}

// A set-emails whose call is not sent because too little of the task's
// deadline is left (deadline_near, a wait) changed nothing at DigiCert: as
// after the limiter's wait, the record that its list is being sent goes
// (there was none before), and an older list of the order is not held back
// by a list DigiCert never received.
func TestSetEmailsNotSentNearItsDeadlineLeavesNoRecord(t *testing.T) {
	t.Parallel()
	p, calls := setEmailsTestProcessor(t)
	d := &delivery{taskID: "t-deadline-se", attempt: 1, start: time.Now(), account: p.accounts["default"], report: &report{}}
	pl := tasks.SetEmails{OrderID: 78, AdditionalEmails: []string{"a@example.com"}, Sequence: 100}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := p.setEmails(ctx, d, pl, pl.Sequence)
	var te *taskError
	if !errors.As(err, &te) || te.code != "deadline_near" {
		t.Fatalf("error %v, want deadline_near", err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("%d DigiCert calls, want none", n)
	}
	k := newOrderKeys(p.rdb, "default", pl.OrderID)
	if got, err := p.rdb.Get(context.Background(), k.sending).Result(); err == nil {
		t.Errorf("sending record %q left by a list that was not sent", got)
	}
	if n, err := p.rdb.Exists(context.Background(), k.lock.Key()).Result(); err != nil || n != 0 {
		t.Errorf("order lock: %d (%v), want released", n, err)
	}
}

// The order's lock outlives any one set-emails call, its whole budget
// (digicert.DefaultMaxElapsed, which DIGICERT_TIMEOUT may fill) and a
// margin, even when its worker loses Redis as the call starts and renews
// nothing: another worker cannot send a newer list that the call's late
// attempt would then overwrite.
func TestOrderLockOutlivesACall(t *testing.T) {
	t.Parallel()
	if margin := orderLockTTL - digicert.DefaultMaxElapsed; margin < digicert.DefaultMaxElapsed/10 {
		t.Errorf("order lock %v: %v past a call's budget %v, want at least %v", orderLockTTL, margin,
			digicert.DefaultMaxElapsed, digicert.DefaultMaxElapsed/10)
	}
	p, _ := setEmailsTestProcessor(t)
	ctx := context.Background()
	k := newOrderKeys(p.rdb, "default", 79)
	if v, _, _, err := p.accounts["default"].gate.checkOrder(ctx, k, deliveredKey("t-lock"), 100, time.Hour, nil); err != nil || v != gateGo {
		t.Fatalf("checkOrder: %v, %v; want go", v, err)
	}
	if ttl := p.rdb.PTTL(ctx, k.lock.Key()).Val(); ttl <= digicert.DefaultMaxElapsed {
		t.Errorf("order lock taken for %v, want more than a call's budget %v", ttl, digicert.DefaultMaxElapsed)
	}
	if _, err := k.lock.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if ttl := p.rdb.PTTL(ctx, k.lock.Key()).Val(); ttl <= digicert.DefaultMaxElapsed {
		t.Errorf("order lock renewed for %v, want more than a call's budget %v", ttl, digicert.DefaultMaxElapsed)
	}
}
