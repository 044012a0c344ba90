package ops_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/tasks"
)

func TestEnqueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		typ         string
		payload     string
		wantPayload string // as stored, normalised
	}{
		{
			name:        "set-emails normalised",
			typ:         tasks.TypeSetEmails,
			payload:     `{"order_id": 12, "additional_emails": [" Jill@Example.COM", "jill@example.com", "leon@example.com"], "sequence": 7}`,
			wantPayload: `{"order_id":12,"additional_emails":["Jill@example.com","leon@example.com"],"sequence":7}`,
		},
		{
			name:        "set-emails empty list clears",
			typ:         tasks.TypeSetEmails,
			payload:     `{"order_id": 12, "additional_emails": [], "sequence": 1}`,
			wantPayload: `{"order_id":12,"additional_emails":[],"sequence":1}`,
		},
		{
			name:        "resend-dcv",
			typ:         tasks.TypeResendDCV,
			payload:     `{"order_id": 13, "domain_approval_emails": [{"domain": "WWW.example.com", "email": "admin@example.com", "email_domain": "example.com"}], "locale": "en"}`,
			wantPayload: `{"order_id":13,"domain_approval_emails":[{"domain":"www.example.com","email":"admin@example.com","email_domain":"example.com"}],"locale":"en"}`,
		},
		{
			name:        "send-cert on a named account",
			typ:         tasks.TypeSendCert,
			payload:     `{"certificate_id": 14, "emails": ["a@example.com"], "certificate_collect_format": "attachment", "custom_message": "hi", "account": "eu"}`,
			wantPayload: `{"certificate_id":14,"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":"hi","account":"eu"}`,
		},
	}
	b := setup(t, ops.Config{Rules: enqueue.Rules{Accounts: []string{"default", "eu"}}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ref, existing, err := b.svc.Enqueue(context.Background(), enqueue.Request{Type: tt.typ, Payload: []byte(tt.payload)})
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			if existing || ref.ID == "" || ref.Type != tt.typ || ref.Queue != tasks.DefaultQueue || ref.State != "pending" {
				t.Errorf("Enqueue = %+v, existing %t; want a new pending %s task in %s", ref, existing, tt.typ, tasks.DefaultQueue)
			}
			info, err := b.inspector.GetTaskInfo(tasks.DefaultQueue, ref.ID)
			if err != nil {
				t.Fatalf("GetTaskInfo: %v", err)
			}
			if string(info.Payload) != tt.wantPayload {
				t.Errorf("stored payload = %s\nwant %s", info.Payload, tt.wantPayload)
			}
			if info.MaxRetry != tasks.DefaultMaxRetry || info.Retention != tasks.DefaultRetention || info.Timeout != tasks.DefaultTimeout {
				t.Errorf("max retry %d, retention %v, timeout %v; want the tasks defaults", info.MaxRetry, info.Retention, info.Timeout)
			}
		})
	}
}

func TestEnqueueStampsSequence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.enqueue(t, 12)
	info, err := b.inspector.GetTaskInfo(tasks.DefaultQueue, id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tasks.Parse(tasks.TypeSetEmails, info.Payload)
	if err != nil {
		t.Fatalf("stored payload %s: %v", info.Payload, err)
	}
	if p.(tasks.SetEmails).Sequence <= 0 {
		t.Errorf("stored payload %s has no sequence", info.Payload)
	}
}

func TestEnqueueInvalid(t *testing.T) {
	t.Parallel()
	future := time.Now().Add(time.Hour)
	good := `{"order_id": 12, "additional_emails": ["a@example.com"]}`
	tests := []struct {
		name string
		req  enqueue.Request
		want []tasks.FieldError
	}{
		{
			name: "bad email",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 12, "additional_emails": ["a@example.com", "Jill <jill@example.com>"]}`)},
			want: []tasks.FieldError{{Field: "additional_emails[1]", Message: "not a bare email address"}},
		},
		{
			name: "missing fields",
			req:  enqueue.Request{Type: "send-cert", Payload: []byte(`{}`)},
			want: []tasks.FieldError{
				{Field: "certificate_id", Message: "required"},
				{Field: "emails", Message: "required"},
				{Field: "certificate_collect_format", Message: "required"},
			},
		},
		{
			name: "unknown field",
			req:  enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id": 12, "langue": "fr"}`)},
			want: []tasks.FieldError{{Field: "langue", Message: "unknown field"}},
		},
		{
			name: "wrong JSON type",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": "12", "additional_emails": []}`)},
			want: []tasks.FieldError{{Field: "order_id", Message: "must be an integer"}},
		},
		{
			name: "malformed JSON",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 12,`)},
			want: []tasks.FieldError{{Field: "", Message: "malformed JSON: unexpected EOF"}},
		},
		{
			name: "empty body",
			req:  enqueue.Request{Type: "set-emails"},
			want: []tasks.FieldError{{Field: "", Message: "empty body"}},
		},
		{
			name: "unknown account",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 12, "additional_emails": [], "account": "eu"}`)},
			want: []tasks.FieldError{{Field: "account", Message: "unknown account; the configured accounts are default"}},
		},
		{
			name: "unknown account with other problems",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 0, "additional_emails": [], "account": "eu"}`)},
			want: []tasks.FieldError{
				{Field: "order_id", Message: "must be greater than 0"},
				{Field: "account", Message: "unknown account; the configured accounts are default"},
			},
		},
		{
			name: "malformed account name",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 12, "additional_emails": [], "account": "EU"}`)},
			want: []tasks.FieldError{{Field: "account", Message: "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"}},
		},
		{
			name: "bad queue",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(good), Queue: "Bulk!"},
			want: []tasks.FieldError{{Field: "queue", Message: "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"}},
		},
		{
			name: "process_at and process_in",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(good), ProcessAt: future, ProcessIn: time.Minute},
			want: []tasks.FieldError{{Field: "process_at", Message: "give process_at or process_in, not both"}},
		},
		{
			name: "negative process_in",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(good), ProcessIn: -time.Minute},
			want: []tasks.FieldError{{Field: "process_in", Message: "must not be negative"}},
		},
		{
			name: "idempotency key too long",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(good), IdempotencyKey: strings.Repeat("k", 256)},
			want: []tasks.FieldError{{Field: "idempotency_key", Message: "at most 255 characters"}},
		},
		{
			name: "idempotency key not printable",
			req:  enqueue.Request{Type: "set-emails", Payload: []byte(good), IdempotencyKey: "key\n1"},
			want: []tasks.FieldError{{Field: "idempotency_key", Message: "must be printable ASCII"}},
		},
		{
			name: "payload and option problems in one list",
			req: enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": -1, "additional_emails": ["nope"]}`),
				Queue: "-x", IdempotencyKey: "ключ"},
			want: []tasks.FieldError{
				{Field: "order_id", Message: "must be greater than 0"},
				{Field: "additional_emails[0]", Message: "not a bare email address"},
				{Field: "queue", Message: "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"},
				{Field: "idempotency_key", Message: "must be printable ASCII"},
			},
		},
	}
	b := setup(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for name, call := range map[string]func() error{
				"Enqueue": func() error {
					_, _, err := b.svc.Enqueue(context.Background(), tt.req)
					return err
				},
				"Validate": func() error { return b.svc.Validate(tt.req) },
			} {
				err := call()
				var ve *tasks.ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("%s error = %v, want a *tasks.ValidationError", name, err)
				}
				if ve.Type != tt.req.Type || !slices.Equal(ve.Errors, tt.want) {
					t.Errorf("%s errors = %s %+v\nwant %s %+v", name, ve.Type, ve.Errors, tt.req.Type, tt.want)
				}
			}
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		if n, err := b.rdb.DBSize(context.Background()).Result(); err != nil || n != 0 {
			t.Errorf("Redis holds %d keys (%v) after invalid requests; want none", n, err)
		}
	})
}

func TestEnqueueUnknownType(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, typ := range []string{"", "set_emails", "Set-Emails"} {
		_, _, err := b.svc.Enqueue(context.Background(), enqueue.Request{Type: typ, Payload: []byte(`{}`)})
		var ve *tasks.ValidationError
		if !errors.Is(err, tasks.ErrUnknownType) || errors.As(err, &ve) {
			t.Errorf("type %q: error = %v, want one wrapping tasks.ErrUnknownType", typ, err)
		}
	}
	if sizes := b.queueSizes(t); len(sizes) != 0 {
		t.Errorf("queues after unknown types = %v, want none", sizes)
	}
}

func TestEnqueueOptions(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"order_id": 12, "additional_emails": []}`)
	tests := []struct {
		name      string
		opts      ops.Config
		req       enqueue.Request
		wantQueue string
		wantState asynq.TaskState
		wantNext  time.Duration // from now, for scheduled tasks
		wantRetry int
		wantKeep  time.Duration
	}{
		{
			name:      "queue",
			req:       enqueue.Request{Queue: "bulk"},
			wantQueue: "bulk", wantState: asynq.TaskStatePending, wantRetry: tasks.DefaultMaxRetry, wantKeep: tasks.DefaultRetention,
		},
		{
			name:      "process_in",
			req:       enqueue.Request{ProcessIn: 10 * time.Minute},
			wantQueue: "default", wantState: asynq.TaskStateScheduled, wantNext: 10 * time.Minute,
			wantRetry: tasks.DefaultMaxRetry, wantKeep: tasks.DefaultRetention,
		},
		{
			name:      "process_at in the future",
			req:       enqueue.Request{ProcessAt: time.Now().Add(2 * time.Hour), Queue: "critical"},
			wantQueue: "critical", wantState: asynq.TaskStateScheduled, wantNext: 2 * time.Hour,
			wantRetry: tasks.DefaultMaxRetry, wantKeep: tasks.DefaultRetention,
		},
		{
			name:      "process_at in the past runs now",
			req:       enqueue.Request{ProcessAt: time.Now().Add(-time.Hour)},
			wantQueue: "default", wantState: asynq.TaskStatePending, wantRetry: tasks.DefaultMaxRetry, wantKeep: tasks.DefaultRetention,
		},
		{
			name:      "retries and retention",
			opts:      ops.Config{MaxRetry: 3, Retention: time.Hour},
			wantQueue: "default", wantState: asynq.TaskStatePending, wantRetry: 3, wantKeep: time.Hour,
		},
		{
			name:      "no retries",
			opts:      ops.Config{MaxRetry: -1},
			wantQueue: "default", wantState: asynq.TaskStatePending, wantRetry: 0, wantKeep: tasks.DefaultRetention,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.opts)
			req := tt.req
			req.Type, req.Payload = tasks.TypeSetEmails, payload
			ref, _, err := b.svc.Enqueue(context.Background(), req)
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			if ref.Queue != tt.wantQueue || ref.State != tt.wantState.String() {
				t.Errorf("Enqueue = %+v, want queue %s and state %s", ref, tt.wantQueue, tt.wantState)
			}
			info, err := b.inspector.GetTaskInfo(tt.wantQueue, ref.ID)
			if err != nil {
				t.Fatalf("GetTaskInfo: %v", err)
			}
			if info.State != tt.wantState || info.MaxRetry != tt.wantRetry || info.Retention != tt.wantKeep {
				t.Errorf("task is %s with max retry %d and retention %v; want %s, %d, %v",
					info.State, info.MaxRetry, info.Retention, tt.wantState, tt.wantRetry, tt.wantKeep)
			}
			if tt.wantNext > 0 {
				if d := time.Until(info.NextProcessAt) - tt.wantNext; d > 0 || d < -time.Minute {
					t.Errorf("next process at %v, want about %v from now", info.NextProcessAt, tt.wantNext)
				}
			}
		})
	}
}

func TestEnqueueIdempotency(t *testing.T) {
	t.Parallel()
	first := `{"order_id": 12, "additional_emails": ["jill@example.com"]}`
	tests := []struct {
		name         string
		second       enqueue.Request
		wantExisting bool
		wantErr      error
	}{
		{
			name:         "same request",
			second:       enqueue.Request{Type: "set-emails", Payload: []byte(first)},
			wantExisting: true,
		},
		{
			name: "same request written differently",
			second: enqueue.Request{Type: "set-emails", Queue: "default",
				Payload: []byte(`{"additional_emails":[" jill@EXAMPLE.com", "jill@example.com"],"order_id":12}`)},
			wantExisting: true,
		},
		{
			name:    "different payload",
			second:  enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 12, "additional_emails": []}`)},
			wantErr: ops.ErrIdempotencyConflict,
		},
		{ // the time is not compared, and the first one is kept
			name:         "another time",
			second:       enqueue.Request{Type: "set-emails", Payload: []byte(first), ProcessIn: time.Hour},
			wantExisting: true,
		},
		{
			name:         "another time, as process_at",
			second:       enqueue.Request{Type: "set-emails", Payload: []byte(first), ProcessAt: time.Now().Add(2 * time.Hour)},
			wantExisting: true,
		},
		{
			name:    "different queue",
			second:  enqueue.Request{Type: "set-emails", Payload: []byte(first), Queue: "bulk"},
			wantErr: ops.ErrIdempotencyConflict,
		},
		{
			name:    "different type",
			second:  enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id": 12}`)},
			wantErr: ops.ErrIdempotencyConflict,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			ref1, existing, err := b.svc.Enqueue(ctx, enqueue.Request{Type: "set-emails", Payload: []byte(first), IdempotencyKey: "order-12 v1"})
			if err != nil || existing {
				t.Fatalf("first Enqueue = %+v, %t, %v", ref1, existing, err)
			}
			second := tt.second
			second.IdempotencyKey = "order-12 v1"
			ref2, existing, err := b.svc.Enqueue(ctx, second)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("second Enqueue error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantExisting && (!existing || ref2 != ref1) {
				t.Errorf("second Enqueue = %+v, existing %t; want %+v, existing", ref2, existing, ref1)
			}
			if sizes := b.queueSizes(t); sizes["default"] != 1 || len(sizes) != 1 {
				t.Errorf("queues = %v, want one task in default", sizes)
			}
			ref3, existing, err := b.svc.Enqueue(ctx, enqueue.Request{Type: "set-emails", Payload: []byte(first), IdempotencyKey: "order-12 v2"})
			if err != nil || existing || ref3.ID == ref1.ID {
				t.Errorf("Enqueue with another key = %+v, %t, %v; want a new task", ref3, existing, err)
			}
		})
	}
}

// The default account named explicitly is the same request as no account,
// both ways round, as the default queue is the same as no queue; another
// body with the same key is still a conflict.
func TestEnqueueIdempotencyDefaultAccount(t *testing.T) {
	t.Parallel()
	const (
		bare  = `{"domain_id": 7}`
		named = `{"domain_id": 7, "account": "default"}`
		other = `{"domain_id": 8, "account": "default"}`
	)
	tests := []struct {
		first, second string
		wantErr       error
	}{
		{first: bare, second: named},
		{first: named, second: bare},
		{first: named, second: other, wantErr: ops.ErrIdempotencyConflict},
		{first: bare, second: other, wantErr: ops.ErrIdempotencyConflict},
	}
	for _, tt := range tests {
		t.Run(tt.first+" then "+tt.second, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			req := enqueue.Request{Type: tasks.TypeResendDomainDCV, Payload: []byte(tt.first), IdempotencyKey: "domain-7"}
			first, _, err := b.svc.Enqueue(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			req.Payload = []byte(tt.second)
			again, existing, err := b.svc.Enqueue(ctx, req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("second Enqueue error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (!existing || again.ID != first.ID) {
				t.Errorf("second Enqueue = %+v, existing %t; want %+v, existing", again, existing, first)
			}
		})
	}
}

// A key remembered by an earlier version holds the hash it computed, with an
// explicit "account":"default" kept in the payload: the same body sent again
// after an upgrade replays the task, and another body is still a conflict.
func TestEnqueueIdempotencyEarlierDefaultAccountHash(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const body = `{"domain_id": 7, "account": "default"}`
	req := enqueue.Request{Type: tasks.TypeResendDomainDCV, Payload: []byte(body), IdempotencyKey: "domain-7"}
	first, _, err := b.svc.Enqueue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// The record as the earlier version wrote it: the hash of the type, the
	// payload as tasks encodes it, account included, and the queue, each
	// followed by a NUL.
	sum := sha256.Sum256([]byte("resend-domain-dcv\x00" + `{"domain_id":7,"account":"default"}` + "\x00default\x00"))
	key := sha256.Sum256([]byte("domain-7"))
	record := `{"hash":"` + hex.EncodeToString(sum[:]) + `","task":{"id":"` + first.ID +
		`","type":"resend-domain-dcv","queue":"default","state":"pending"}}`
	if err := b.rdb.Set(ctx, "certmail:idempotency:"+hex.EncodeToString(key[:]), record, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	again, existing, err := b.svc.Enqueue(ctx, req)
	if err != nil || !existing || again.ID != first.ID {
		t.Errorf("replay after the upgrade = %+v, %t, %v; want %+v, existing", again, existing, err, first)
	}
	req.Payload = []byte(`{"domain_id": 8, "account": "default"}`)
	if _, _, err := b.svc.Enqueue(ctx, req); !errors.Is(err, ops.ErrIdempotencyConflict) {
		t.Errorf("another body after the upgrade: %v, want %v", err, ops.ErrIdempotencyConflict)
	}
}

// A replay reports the task as it is now: a client that retries after a
// timeout read "pending" for a task the worker had already delivered. A task
// no queue holds any more keeps the recorded id, type and queue, and its
// state is unknown, never a stale "pending".
func TestEnqueueIdempotencyReplayState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, 12)
	ctx := context.Background()
	req := enqueue.Request{Type: "set-emails", IdempotencyKey: "order-12 v1",
		Payload: []byte(`{"order_id": 12, "additional_emails": ["jill@example.com"]}`)}
	first, existing, err := b.svc.Enqueue(ctx, req)
	if err != nil || existing || first.State != "pending" {
		t.Fatalf("first Enqueue = %+v, %t, %v; want a new pending task", first, existing, err)
	}
	waitFor(t, 10*time.Second, func() error {
		st, err := b.svc.Task(ctx, first.ID)
		if err == nil && st.State != "completed" {
			err = errors.New("task is " + st.State)
		}
		return err
	})
	replay, existing, err := b.svc.Enqueue(ctx, req)
	want := first
	want.State = "completed"
	if err != nil || !existing || replay != want {
		t.Errorf("replay of a completed task = %+v, %t, %v; want %+v, existing", replay, existing, err, want)
	}

	if err := b.inspector.DeleteTask(first.Queue, first.ID); err != nil {
		t.Fatal(err)
	}
	replay, existing, err = b.svc.Enqueue(ctx, req)
	want.State = ops.StateUnknown
	if err != nil || !existing || replay != want {
		t.Errorf("replay of a deleted task = %+v, %t, %v; want %+v, existing", replay, existing, err, want)
	}
	if sizes := b.queueSizes(t); sizes["default"] != 0 {
		t.Errorf("queues = %v: a replay enqueued a task", sizes)
	}
}

func TestEnqueueIdempotencyExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{IdempotencyTTL: 50 * time.Millisecond})
	req := enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 12, "additional_emails": []}`), IdempotencyKey: "k"}
	ref1, _, err := b.svc.Enqueue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		ref2, existing, err := b.svc.Enqueue(context.Background(), req)
		switch {
		case err != nil:
			t.Fatalf("Enqueue: %v", err)
		case existing:
			return errors.New("the key is still remembered")
		case ref2.ID == ref1.ID:
			t.Fatalf("a new task got the old id %s", ref1.ID)
		}
		return nil
	})
}

// TestEnqueueIdempotencyKeptFor24Hours: with the default configuration an
// idempotency key is remembered for 24 h, the lifetime of its key in Redis
// (README, "Redis keys").
func TestEnqueueIdempotencyKeptFor24Hours(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, _, err := b.svc.Enqueue(ctx, enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 12, "additional_emails": []}`),
		IdempotencyKey: "order-12 v1"}); err != nil {
		t.Fatal(err)
	}
	// The key's scope is "" (the command line's): the key alone is hashed.
	sum := sha256.Sum256([]byte("order-12 v1"))
	ttl, err := b.rdb.PTTL(ctx, "certmail:idempotency:"+hex.EncodeToString(sum[:])).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl > 24*time.Hour || ttl < 24*time.Hour-time.Minute {
		t.Errorf("the idempotency key's lifetime in Redis is %v, want 24h", ttl)
	}
}

// TestEnqueueIdempotencyScoped: an idempotency key belongs to its scope (the
// API's: the token that sent it). The same key in two scopes is two keys:
// two tasks, neither a conflict nor a replay of the other's; in its own
// scope it replays.
func TestEnqueueIdempotencyScoped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	reqA := enqueue.Request{Type: "set-emails", Payload: []byte(`{"order_id": 123, "additional_emails": ["a@example.com"]}`),
		IdempotencyKey: "crm-7781", IdempotencyScope: "scope-a"}
	reqB := enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id": 999}`), IdempotencyKey: "crm-7781", IdempotencyScope: "scope-b"}
	refB, existing, err := b.svc.Enqueue(ctx, reqB)
	if err != nil || existing {
		t.Fatalf("scope b: Enqueue = %+v, %t, %v; want a new task", refB, existing, err)
	}
	refA, existing, err := b.svc.Enqueue(ctx, reqA)
	if err != nil || existing || refA.ID == refB.ID {
		t.Fatalf("scope a, the same key: Enqueue = %+v, %t, %v; want a task of its own", refA, existing, err)
	}
	again, existing, err := b.svc.Enqueue(ctx, reqA)
	if err != nil || !existing || again.ID != refA.ID {
		t.Errorf("scope a again: Enqueue = %+v, %t, %v; want a replay of %s", again, existing, err, refA.ID)
	}
	// Scope b sends a's request under the same key: not a's task.
	stolen := reqA
	stolen.IdempotencyScope = "scope-b"
	if ref, existing, err := b.svc.Enqueue(ctx, stolen); !errors.Is(err, ops.ErrIdempotencyConflict) {
		t.Errorf("scope b, a's request under its own key: Enqueue = %+v, %t, %v; want a conflict with b's task", ref, existing, err)
	}
	// The scope "" (the command line's) is one more.
	unscoped := reqA
	unscoped.IdempotencyScope = ""
	if ref, existing, err := b.svc.Enqueue(ctx, unscoped); err != nil || existing || ref.ID == refA.ID {
		t.Errorf("no scope, the same key: Enqueue = %+v, %t, %v; want a task of its own", ref, existing, err)
	}
	if sizes := b.queueSizes(t); sizes["default"] != 3 {
		t.Errorf("queues = %v, want three tasks in default", sizes)
	}
}

// TestEnqueueIdempotencyUnscopedKeyUnchanged: a key of the empty scope (the
// command line, an API without authentication) is kept under the Redis key
// of the versions before scopes, certmail:idempotency: and the SHA-256 of
// the key alone, so that an upgrade does not forget it; a scoped one is
// not.
func TestEnqueueIdempotencyUnscopedKeyUnchanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// printf 'crm-7781' | sha256sum
	const earlier = "certmail:idempotency:ec340b3afe5495e938b65a9443e400457cce86f65448f18fbff7bd43caf1f887"
	req := enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id": 999}`), IdempotencyKey: "crm-7781"}
	if _, _, err := b.svc.Enqueue(ctx, req); err != nil {
		t.Fatal(err)
	}
	keys, err := b.rdb.Keys(ctx, "certmail:idempotency:*").Result()
	if err != nil || len(keys) != 1 || keys[0] != earlier {
		t.Fatalf("idempotency keys %v, %v; want only %s", keys, err, earlier)
	}
	req.IdempotencyScope = "scope-a"
	if _, _, err := b.svc.Enqueue(ctx, req); err != nil {
		t.Fatal(err)
	}
	if keys, err := b.rdb.Keys(ctx, "certmail:idempotency:*").Result(); err != nil || len(keys) != 2 {
		t.Errorf("idempotency keys %v, %v; want the scoped key apart from %s", keys, err, earlier)
	}
}

func TestEnqueueIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 32
	req := enqueue.Request{Type: "send-cert", IdempotencyKey: "send-456",
		Payload: []byte(`{"certificate_id": 456, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fresh int
		ids   = map[string]bool{}
		start = make(chan struct{})
	)
	for range n {
		wg.Go(func() {
			<-start
			ref, existing, err := b.svc.Enqueue(context.Background(), req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("Enqueue: %v", err)
				return
			}
			ids[ref.ID] = true
			if !existing {
				fresh++
			}
		})
	}
	close(start)
	wg.Wait()
	if fresh != 1 || len(ids) != 1 {
		t.Errorf("%d requests enqueued, %d distinct ids; want exactly 1 and 1", fresh, len(ids))
	}
	if sizes := b.queueSizes(t); sizes["default"] != 1 {
		t.Errorf("queues = %v, want exactly one task in default", sizes)
	}
}
