package ops_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redistest"
)

// refusedService is a Service on url with its own task ids, closed when the
// test ends.
func refusedService(t *testing.T, url string) *ops.Service {
	t.Helper()
	svc, err := ops.New(ops.Config{Redis: certmailtest.Conn(t, url)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

// An enqueue that Redis refused before the task was sent (no Redis on the
// port, a wrong or missing password, a user not allowed to register the
// queue) is no *ops.EnqueueError, which tells the producer that the task
// may be stored all the same and to look it up first: the error says
// nothing was enqueued. The key of a request with an idempotency key is
// released, where Redis lets it be.
func TestEnqueueRefusedOutrightIsNoEnqueueError(t *testing.T) {
	t.Parallel()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	secured := redistest.Start(t, redistest.Options{Password: "right-password"})
	// A user who may claim and release idempotency keys but touch none of
	// asynq's keys.
	scoped := redistest.Start(t)
	if err := scoped.Client().Do(context.Background(), "ACL", "SETUSER", "noasynq", "on", ">pw", "~certmail:*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url, want string
		keys            *redistest.Server // where the idempotency key is claimed and released
	}{
		{"no Redis on the port", fmt.Sprintf("redis://127.0.0.1:%d/0", port), "connection refused", nil},
		{"a wrong password", "redis://:wrong@" + secured.Addr() + "/0", "WRONGPASS", nil},
		{"no password", "redis://" + secured.Addr() + "/0", "NOAUTH", nil},
		{"the queue's registration not allowed", "redis://noasynq:pw@" + scoped.Addr() + "/0", "NOPERM", scoped},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc := refusedService(t, tt.url)
			for _, key := range []string{"", "order-21"} {
				_, _, err := svc.Enqueue(context.Background(), enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: key})
				var ee *ops.EnqueueError
				if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("key %q: Enqueue error = %v; want one saying %s, no *ops.EnqueueError", key, err, tt.want)
				}
				if err != nil && ee == nil && key == "" && !strings.Contains(err.Error(), "nothing enqueued") {
					t.Errorf("Enqueue error = %v; want it to say nothing was enqueued", err)
				}
			}
			if tt.keys == nil {
				return
			}
			if keys, err := tt.keys.Client().Keys(context.Background(), "certmail:idempotency:*").Result(); err != nil || len(keys) != 0 {
				t.Errorf("idempotency keys left: %v, %v; want the key released", keys, err)
			}
		})
	}
}

// An error raised inside asynq's script may follow a write of the script:
// here its HSET stored the task's hash before its LPUSH met a key of the
// wrong type. It stays an *ops.EnqueueError naming the task.
func TestEnqueueFailingInsideTheScriptNamesTask(t *testing.T) {
	t.Parallel()
	const id = "b4b4b4b4-0000-4000-8000-000000000001"
	b := setup(t, ops.Config{NewTaskID: fixedID(id)})
	if err := b.rdb.Set(context.Background(), "asynq:{default}:pending", "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, _, err := b.svc.Enqueue(context.Background(), enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload)})
	var ee *ops.EnqueueError
	if !errors.As(err, &ee) || ee.TaskID != id || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Enqueue error = %v, want an *ops.EnqueueError (WRONGTYPE) naming task %s", err, id)
	}
	if n, err := b.rdb.Exists(context.Background(), "asynq:{default}:t:"+id).Result(); err != nil || n != 1 {
		t.Errorf("the task's hash: %d, %v; want it written before the error", n, err)
	}
}

// A refusal of the script that stores the task is no proof that nothing
// was stored: it may answer go-redis's retry of a script that ran and whose
// answer was lost. The error is an *ops.EnqueueError naming the task. Here
// the first try is refused: a user not allowed the script's command, a
// server without it.
func TestEnqueueScriptRefusedNamesTask(t *testing.T) {
	t.Parallel()
	// One user may register the queue (SADD) but not run the script.
	acl := redistest.Start(t)
	if err := acl.Client().Do(context.Background(), "ACL", "SETUSER", "noscript", "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval").Err(); err != nil {
		t.Fatal(err)
	}
	renamed := redistest.Start(t, redistest.Options{Args: []string{"--rename-command", "EVALSHA", ""}})
	for _, tt := range []struct {
		name, url, want string
	}{
		{"the script's command not allowed", "redis://noscript:pw@" + acl.Addr() + "/0", "NOPERM"},
		{"the script's command renamed away", "redis://" + renamed.Addr() + "/0", "unknown command"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const id = "c5c5c5c5-0000-4000-8000-000000000001"
			svc, err := ops.New(ops.Config{Redis: certmailtest.Conn(t, tt.url), NewTaskID: fixedID(id)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			for _, key := range []string{"", "order-21"} {
				_, _, err := svc.Enqueue(context.Background(), enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: key})
				var ee *ops.EnqueueError
				if !errors.As(err, &ee) || !strings.HasPrefix(ee.TaskID, id) || !strings.Contains(err.Error(), tt.want) ||
					strings.Contains(err.Error(), "nothing enqueued") {
					t.Errorf("key %q: Enqueue error = %v; want an *ops.EnqueueError (%s) naming the task", key, err, tt.want)
				}
			}
		})
	}
}

// The refusal of go-redis's retry of a script whose answer was lost: the
// script ran and stored the task, then the password changed, and the retry's
// new connection was refused (NOAUTH). The error names the stored task, the
// idempotency key is kept (Redis refuses the lookup as well), and the same
// request sent again once the password is right answers that task rather
// than enqueue a second one.
func TestEnqueueRetryRefusedAfterLostAnswer(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"", "order-77"} {
		t.Run(cmp.Or(key, "no key"), func(t *testing.T) {
			t.Parallel()
			const id = "d0d0d0d0-0000-4000-8000-000000000001"
			b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)})
			direct := b.redis.Client()
			if err := direct.Ping(context.Background()).Err(); err != nil { // connected before the password
				t.Fatal(err)
			}
			setPassword := func(pw string) {
				if err := direct.ConfigSet(context.Background(), "requirepass", pw).Err(); err != nil {
					t.Error(err)
				}
			}
			proxy.BeforeOnce("evalsha", func() { setPassword("rotated") })
			proxy.WithholdOnce("evalsha")
			req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: key}
			ref, _, err := b.svc.Enqueue(context.Background(), req)
			proxy.Resume()
			setPassword("")
			var ee *ops.EnqueueError
			// With a key, the lookup that settles it may find the task on a
			// connection that authenticated before the change: a success.
			settled := key != "" && err == nil && ref.ID == id
			if !settled && (!errors.As(err, &ee) || ee.TaskID != id || strings.Contains(err.Error(), "nothing enqueued")) {
				t.Fatalf("Enqueue = %+v, %v; want an *ops.EnqueueError naming task %s", ref, err, id)
			}
			if n, err := direct.Exists(context.Background(), "asynq:{default}:t:"+id).Result(); err != nil || n != 1 {
				t.Fatalf("task %s stored: %d, %v; want it stored", id, n, err)
			}
			if key == "" {
				return
			}
			ref, existing, err := b.svc.Enqueue(context.Background(), req)
			if err != nil || !existing || ref.ID != id {
				t.Errorf("Enqueue again with the key = %+v, existing %t, %v; want task %s, existing", ref, existing, err, id)
			}
			b.wantOneTaskInDefault(t)
		})
	}
}
