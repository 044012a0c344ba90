package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/taskresult"
)

// dieHolding leaves the pending task id as a worker killed during its
// delivery leaves it: active, with a lease that expired a minute ago
// (asynq's dequeue, then no heartbeat). The recoverer of the next worker
// that starts finds it at once, as it would 30 s to a minute after a kill.
func dieHolding(t *testing.T, b *bundle, id string) {
	t.Helper()
	err := b.redis.Client().Eval(context.Background(), `
if redis.call('LREM', KEYS[1], 0, ARGV[1]) ~= 1 then return redis.error_reply('not pending') end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], 'state', 'active')
redis.call('HDEL', KEYS[4], 'pending_since')
return redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])`,
		[]string{"asynq:{default}:pending", "asynq:{default}:active", "asynq:{default}:lease", "asynq:{default}:t:" + id},
		id, time.Now().Add(-time.Minute).Unix()).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// A task whose worker dies during its last delivery is archived by asynq's
// recoverer in another worker, which never calls certmail's error handler.
// The workers still dead-letter it, once among them: a stream entry with
// code lease_expired, one ERROR line, the metric. One whose DigiCert call
// had succeeded says so. One the error handler already dead-lettered (its
// lease expired while its worker lived), and a parked one, get no second
// entry.
func TestLeaseExpiredOnLastDeliveryIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	rdb := b.redis.Client()
	ctx := context.Background()
	killed := b.enqueue(t, "resend-dcv", `{"order_id": 1}`, asynq.MaxRetry(0))
	sent := b.enqueue(t, "resend-dcv", `{"order_id": 2}`, asynq.MaxRetry(0))
	known := b.enqueue(t, "resend-dcv", `{"order_id": 3}`, asynq.MaxRetry(0))
	parked := b.enqueue(t, "resend-dcv", `{"order_id": 4}`, asynq.MaxRetry(0))
	for _, id := range []string{killed, sent, known, parked} {
		dieHolding(t, b, id)
	}
	// sent: DigiCert answered 2xx and the script after the call ran.
	res, err := taskresult.Result{Outcome: taskresult.Delivered, HTTPStatus: 204, Attempts: 1}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "asynq:{default}:t:"+sent, "result", res).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "certmail:delivered:"+sent, "2026-05-01T09:30:00Z", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	// known: its worker's error handler dead-lettered it, asynq left the archive to the recoverer.
	if _, err := deadletter.Append(ctx, rdb, deadletter.Entry{TaskID: known, Type: "resend-dcv", Queue: "default",
		ErrorCode: "lease_expired", ErrorMessage: "asynq: task lease expired", FailedAt: time.Now()}, 1000); err != nil {
		t.Fatal(err)
	}
	if err := deadletter.Park(ctx, rdb, deadletter.Parked{Queue: "default", ID: parked}, time.Now()); err != nil {
		t.Fatal(err)
	}

	b.startWorker(t, setupOpts{})
	b.startWorker(t, setupOpts{})
	for _, id := range []string{killed, sent, known} {
		if info := b.waitState(t, id, asynq.TaskStateArchived, 10*time.Second); info.LastErr != asynq.ErrLeaseExpired.Error() {
			t.Fatalf("task %s archived with %q, want the recoverer's", id, info.LastErr)
		}
	}
	b.waitState(t, parked, asynq.TaskStateCompleted, 10*time.Second)
	lines := func() []map[string]any { return b.logs.Lines("error", "task dead-lettered") }
	waitFor(t, 10*time.Second, func() bool { return len(lines()) >= 2 },
		func() string { return "no ERROR line for the tasks the recoverer archived" })
	entries := b.deadLetters(t, 3) // known's own, and one each for killed and sent
	byTask := map[string]map[string]string{}
	for _, e := range entries {
		if byTask[e["task_id"]] != nil {
			t.Errorf("task %s dead-lettered twice", e["task_id"])
		}
		byTask[e["task_id"]] = e
	}
	for _, id := range []string{killed, sent} {
		e := byTask[id]
		if e == nil || e["error_code"] != "lease_expired" || e["type"] != "resend-dcv" || e["queue"] != "default" || e["attempts"] != "1" {
			t.Errorf("dead letter of %s = %v, want one with code lease_expired", id, e)
		}
	}
	if m := byTask[killed]["error_message"]; strings.Contains(m, "succeeded") {
		t.Errorf("killed's message %q says its call succeeded", m)
	}
	if m := byTask[sent]["error_message"]; !strings.Contains(m, "DigiCert call had succeeded") || !strings.Contains(m, "2026-05-01T09:30:00Z") {
		t.Errorf("sent's message %q does not say its call succeeded, and when", m)
	}
	for _, l := range lines() {
		if l["error_code"] != "lease_expired" || (l["task_id"] != killed && l["task_id"] != sent) || l["order_id"] == nil {
			t.Errorf("ERROR line %v", l)
		}
	}
	var total float64
	for i := range 2 {
		v, _ := sum(b.scrape(t, i), "certmail_dead_letters_total", "type", "resend-dcv", "error_code", "lease_expired")
		total += v
	}
	if total != 2 {
		t.Errorf("certmail_dead_letters_total{error_code=lease_expired} = %v over both workers, want 2", total)
	}
}
