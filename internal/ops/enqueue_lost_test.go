package ops_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// The answers Redis loses in these tests: a write that Redis ran but whose
// answer go-redis gave up waiting for, and sent again (it retries a read
// that timed out).

const lostPayload = `{"order_id":12,"additional_emails":["jill@example.com"]}`

// wantOneTaskInDefault fails t unless the queue default holds one task.
func (b *bundle) wantOneTaskInDefault(t *testing.T) {
	t.Helper()
	if sizes := b.queueSizes(t); sizes["default"] != 1 {
		t.Errorf("queues = %v, want the one task in default", sizes)
	}
}

// fixedID is a Config.NewTaskID that gives id first, then ids of its own
// (id-2, id-3, ...), as uuid.NewString gives each call a new one.
func fixedID(id string) func() string {
	var mu sync.Mutex
	n := 0
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		if n++; n == 1 {
			return id
		}
		return fmt.Sprintf("%s-%d", id, n)
	}
}

// setupProxied is setup with the Service behind a redistest.Proxy, its
// clients giving up a read after 100 ms, and its task ids made by cfg's
// NewTaskID. The Service's Lua scripts are loaded in Redis already (one
// task enqueued in the queue "bulk"), as in a process that has run a while:
// a first EVALSHA that finds no script is answered NOSCRIPT without running.
func setupProxied(t *testing.T, cfg ops.Config) (*bundle, *redistest.Proxy) {
	t.Helper()
	b := setup(t)
	proxy := b.redis.Proxy()
	opt := asynq.RedisClientOpt{Addr: proxy.Addr(),
		DialTimeout: time.Second, ReadTimeout: 250 * time.Millisecond, WriteTimeout: 250 * time.Millisecond}
	client := opt.MakeRedisClient().(redis.UniversalClient)
	t.Cleanup(func() { _ = client.Close() })
	cfg.Redis = &redisconn.Conn{Opt: opt, Client: client, Target: "redis://" + proxy.Addr() + "/0"}
	svc, err := ops.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.svc.Close(); err != nil { // setup's cleanup closes svc instead
		t.Fatal(err)
	}
	b.svc = svc
	prime, err := ops.New(ops.Config{Redis: cfg.Redis}) // an id of its own: cfg's may give one id only
	if err != nil {
		t.Fatal(err)
	}
	defer prime.Close()
	if _, _, err := prime.Enqueue(context.Background(), enqueue.Request{Type: "set-emails", Queue: "bulk",
		Payload: []byte(`{"order_id":1,"additional_emails":[]}`)}); err != nil {
		t.Fatalf("prime the scripts: %v", err)
	}
	return b, proxy
}

// A conflict on the id Enqueue made for this call means an earlier try of
// the same call stored the task: the enqueue succeeded, and is answered as
// any other, the idempotency key remembered. It was an error (the API
// answered 500) although the task was in its queue and was delivered.
func TestEnqueueConflictOnOwnIDIsSuccess(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"", "order-12 v1"} {
		t.Run(cmp.Or(key, "no key"), func(t *testing.T) {
			t.Parallel()
			const id = "6d0f3a52-0c4e-4d7e-9b1a-3f2e8c7d5a10"
			b := setup(t, ops.Config{NewTaskID: fixedID(id)})
			client := asynq.NewClient(b.redis.ConnOpt())
			defer client.Close()
			if _, err := client.Enqueue(asynq.NewTask("set-emails", []byte(lostPayload)), asynq.TaskID(id)); err != nil {
				t.Fatal(err) // the earlier try, whose answer was lost
			}
			ctx := context.Background()
			req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: key}
			ref, existing, err := b.svc.Enqueue(ctx, req)
			want := ops.TaskRef{ID: id, Type: "set-emails", Queue: "default", State: "pending"}
			if err != nil || existing || ref != want {
				t.Fatalf("Enqueue = %+v, existing %t, %v; want %+v, new", ref, existing, err, want)
			}
			if sizes := b.queueSizes(t); sizes["default"] != 1 {
				t.Errorf("queues = %v, want the one task in default", sizes)
			}
			if key == "" {
				return
			}
			ref, existing, err = b.svc.Enqueue(ctx, req)
			if err != nil || !existing || ref.ID != id {
				t.Errorf("replay = %+v, existing %t, %v; want task %s, existing", ref, existing, err, id)
			}
		})
	}
}

// A task id the producer gave (a scheduler's tick) is not the Service's:
// a conflict on it stays an error, for the producer to judge.
func TestEnqueueConflictOnGivenIDIsError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), TaskID: "sched:s1:1700000000"}
	if _, _, err := b.svc.Enqueue(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.svc.Enqueue(context.Background(), req); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("second Enqueue with the same task id: %v, want asynq.ErrTaskIDConflict", err)
	}
}

// The finding as it happened: Redis runs the EVAL, its answer is lost,
// go-redis sends it again on a new connection and Redis answers that the
// id is taken.
func TestEnqueueLostAnswerIsSuccess(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"", "order-12 v1"} {
		t.Run(cmp.Or(key, "no key"), func(t *testing.T) {
			t.Parallel()
			const id = "0b7e51c4-8a7f-4e0c-a2a3-5d51a0f8e6b2"
			b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)})
			proxy.WithholdOnce("evalsha")
			ref, existing, err := b.svc.Enqueue(context.Background(),
				enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: key})
			want := ops.TaskRef{ID: id, Type: "set-emails", Queue: "default", State: "pending"}
			if err != nil || existing || ref != want {
				t.Fatalf("Enqueue = %+v, existing %t, %v; want %+v, new", ref, existing, err, want)
			}
			if sizes := b.queueSizes(t); sizes["default"] != 1 {
				t.Errorf("queues = %v, want the one task in default", sizes)
			}
		})
	}
}

// When no answer comes back at all, the error names the id the task has if
// Redis stored it, so that the producer can look it up rather than enqueue
// it a second time.
func TestEnqueueTimeoutNamesTask(t *testing.T) {
	t.Parallel()
	const id = "3c2f9e0d-5b6a-4f1e-8d7c-9a0b1c2d3e4f"
	b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)})
	proxy.WithholdAfter("evalsha")
	_, _, err := b.svc.Enqueue(context.Background(), enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload)})
	var ee *ops.EnqueueError
	if !errors.As(err, &ee) || ee.TaskID != id {
		t.Fatalf("Enqueue error = %v, want an *ops.EnqueueError naming task %s", err, id)
	}
	proxy.Resume()
	if _, err := b.inspector.GetTaskInfo("default", id); err != nil {
		t.Errorf("the task Redis stored is not under the id named: %v", err)
	}
}

// A request with an idempotency key whose enqueue got no answer keeps its
// key when Redis cannot say whether the task is stored: sent again with the
// key, it answers the task rather than enqueue a second one.
func TestEnqueueTimeoutKeepsIdempotencyKey(t *testing.T) {
	t.Parallel()
	const id = "a1a1a1a1-0000-4000-8000-000000000001"
	b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)})
	proxy.WithholdAfter("evalsha") // the check that follows gets no answer either
	req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: "order-12 v1"}
	_, _, err := b.svc.Enqueue(context.Background(), req)
	var ee *ops.EnqueueError
	if !errors.As(err, &ee) || ee.TaskID != id {
		t.Fatalf("Enqueue error = %v, want an *ops.EnqueueError naming task %s", err, id)
	}
	proxy.Resume()
	ref, existing, err := b.svc.Enqueue(context.Background(), req)
	if err != nil || !existing || ref.ID != id || ref.State != "pending" {
		t.Errorf("Enqueue again with the key = %+v, existing %t, %v; want the pending task %s, existing", ref, existing, err, id)
	}
	b.wantOneTaskInDefault(t)
}

// A request with an idempotency key whose answer is lost is enqueued once,
// and its key remembered for the task, so that the request sent again
// answers that task:
//   - the enqueue's answer is lost, and the check that follows finds the
//     task stored: the key was released instead, and the same request sent
//     again enqueued a second task;
//   - the answer to the key's claim (SET NX) is lost and go-redis sends it
//     again: Redis answers "not set", since the first try set it, but the
//     record holds the id this call made, so the claim is the call's own.
//     It was taken for an earlier request's claim: the call answered a
//     replay, state unknown, and nothing was ever enqueued.
func TestLostAnswerWithKeyEnqueuesOnce(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		withhold func(*redistest.Proxy)
	}{
		// The enqueue's EVALSHAs name the queue's pending list; the check
		// and the release of the key do not, and are answered.
		{"the enqueue's", func(p *redistest.Proxy) { p.WithholdEach(":pending") }},
		{"the claim's", func(p *redistest.Proxy) { p.WithholdOnce("\r\nset\r\n") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const id = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170"
			b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)}) // the replay makes an id of its own
			tt.withhold(proxy)
			req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: "order-12 v1"}
			ref, existing, err := b.svc.Enqueue(context.Background(), req)
			want := ops.TaskRef{ID: id, Type: "set-emails", Queue: "default", State: "pending"}
			if err != nil || existing || ref != want {
				t.Fatalf("Enqueue = %+v, existing %t, %v; want %+v, new", ref, existing, err, want)
			}
			proxy.Resume()
			if ref, existing, err := b.svc.Enqueue(context.Background(), req); err != nil || !existing || ref != want {
				t.Errorf("replay = %+v, existing %t, %v; want %+v, existing", ref, existing, err, want)
			}
			b.wantOneTaskInDefault(t)
		})
	}
}

// When the claim gets no answer at all, the call fails and releases the
// claim that may be its own, so that the request sent again with its key is
// enqueued rather than answered as a replay of a task that never was.
func TestClaimUnansweredIsReleased(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, wantErr string
		withhold      func(*redistest.Proxy)
	}{
		{"every try of the claim", "claim idempotency key", func(p *redistest.Proxy) { p.WithholdEach("\r\nset\r\n") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const id = "a2a2a2a2-0000-4000-8000-000000000001"
			b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)})
			tt.withhold(proxy) // the release is answered
			req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: "order-12 v2"}
			if _, _, err := b.svc.Enqueue(context.Background(), req); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Enqueue error = %v, want %q", err, tt.wantErr)
			}
			proxy.Resume()
			ref, existing, err := b.svc.Enqueue(context.Background(), req)
			if err != nil || existing || ref.ID != id+"-2" || ref.State != "pending" {
				t.Errorf("sent again with the key = %+v, existing %t, %v; want the new pending task %s-2", ref, existing, err, id)
			}
			b.wantOneTaskInDefault(t)
		})
	}
}

// When the claim's answer is lost but the claim ran, the claim tried again
// finds the key holding this call's own record: the claim is the call's
// (lease.Acquire), and the task is enqueued once, under the call's id, not
// answered as a replay of a task that never was.
func TestClaimAnswerLostIsTheCallsOwn(t *testing.T) {
	t.Parallel()
	const id = "a4a4a4a4-0000-4000-8000-000000000001"
	b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)})
	proxy.WithholdOnce("\r\nset\r\n")
	req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: "order-12 v4"}
	ref, existing, err := b.svc.Enqueue(context.Background(), req)
	if err != nil || existing || ref.ID != id || ref.State != "pending" {
		t.Fatalf("Enqueue = %+v, existing %t, %v; want the new pending task %s", ref, existing, err, id)
	}
	b.wantOneTaskInDefault(t)
}

// An enqueue with an idempotency key that Redis refuses (out of memory)
// stores nothing: the key is released, and the error is the enqueue's
// alone, with nothing said of a release that worked.
func TestEnqueueRefusedReleasesTheKey(t *testing.T) {
	t.Parallel()
	const id = "a3a3a3a3-0000-4000-8000-000000000001"
	b, proxy := setupProxied(t, ops.Config{NewTaskID: fixedID(id)})
	ctx := context.Background()
	// Writes are refused from the enqueue on (the claim before it is stored).
	proxy.BeforeOnce("evalsha", func() {
		if err := b.rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
			t.Error(err)
		}
	})
	req := enqueue.Request{Type: "set-emails", Payload: []byte(lostPayload), IdempotencyKey: "order-12 v3"}
	_, _, err := b.svc.Enqueue(ctx, req)
	var ee *ops.EnqueueError
	if !errors.As(err, &ee) || ee.TaskID != id || !strings.Contains(err.Error(), "OOM") || strings.Contains(err.Error(), "release") {
		t.Fatalf("Enqueue error = %v, want the enqueue's *ops.EnqueueError (OOM) for task %s alone", err, id)
	}
	if err := b.rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	ref, existing, err := b.svc.Enqueue(ctx, req)
	if err != nil || existing || ref.ID != id+"-2" || ref.State != "pending" {
		t.Errorf("sent again with the key = %+v, existing %t, %v; want the new pending task %s-2", ref, existing, err, id)
	}
	b.wantOneTaskInDefault(t)
}
