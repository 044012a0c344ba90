package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/tasks"
)

// An archived task's last_error, as asynq stores it and the dashboard shows
// it, is the dead-letter entry's reason "error_code: message", and the ERROR
// line says the same; none of them is a Go error chain, and all are bounded.
func TestDeadLetterReasonIsTheSameEverywhere(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.fake.AddOrder(8)
	badEmails := make([]string, 5000)
	for i := range badEmails {
		badEmails[i] = strconv.Quote(fmt.Sprintf("not-an-address-%d", i))
	}
	overLimit := `{"order_id": 1, "additional_emails": ["` + strings.Repeat("a", tasks.MaxPayloadBytes) + `"]}`
	tests := []struct {
		name, typ, payload string
		before             func()
		opts               []asynq.Option
		want               string // last_error
	}{
		{name: "DigiCert 404", typ: "resend-dcv", payload: `{"order_id": 404}`,
			want: "not_found|order: Order not found."},
		{name: "validation failure", typ: "set-emails", payload: `{"order_id": 0, "additional_emails": ["nobody"]}`,
			want: "invalid_payload: invalid set-emails payload: order_id: must be greater than 0; additional_emails[0]: not a bare email address"},
		{name: "thousands of bad addresses", typ: "set-emails", payload: `{"order_id": 3, "additional_emails": [` + strings.Join(badEmails, ",") + `]}`},
		{name: "retries exhausted", typ: "resend-dcv", payload: `{"order_id": 8}`, opts: []asynq.Option{asynq.MaxRetry(0)},
			before: func() { b.fake.FailNext(4, 503, "<html>Service Unavailable</html>", "text/html") },
			want:   "http_503: DigiCert answered 503 Service Unavailable"},
		{name: "payload over the limit", typ: "set-emails", payload: overLimit,
			want: fmt.Sprintf("payload_too_large: payload of %d bytes; at most %d are accepted", len(overLimit), tasks.MaxPayloadBytes)},
		{name: "unknown type", typ: strings.Repeat("set-emails-v2", 100), payload: `{"order_id": 5}`},
	}
	for _, tt := range tests { // one at a time: 503s are scripted on the shared fake
		if tt.before != nil {
			tt.before()
		}
		id := b.enqueue(t, tt.typ, tt.payload, tt.opts...)
		info := b.waitState(t, id, asynq.TaskStateArchived, 15*time.Second)
		if tt.want != "" && info.LastErr != tt.want {
			t.Errorf("%s: last_error = %q, want %q", tt.name, info.LastErr, tt.want)
		}
		if n := len(info.LastErr); n > 1024 {
			t.Errorf("%s: last_error is %d bytes", tt.name, n)
		}
		var entry map[string]string
		for _, e := range b.deadLetters(t, -1) {
			if e["task_id"] == id {
				entry = e
			}
		}
		if entry == nil {
			t.Fatalf("%s: no dead-letter entry", tt.name)
		}
		if got := entry["error_code"] + ": " + entry["error_message"]; got != info.LastErr {
			t.Errorf("%s: stream reason %q, last_error %q", tt.name, got, info.LastErr)
		}
		if n := len(entry["payload"]); n > deadletter.PayloadMax {
			t.Errorf("%s: stream keeps %d bytes of payload", tt.name, n)
		}
		var line map[string]any
		for _, l := range b.logs.Lines("error", "task dead-lettered") {
			if l["task_id"] == id {
				line = l
			}
		}
		if line == nil || line["error"] != info.LastErr {
			t.Errorf("%s: ERROR line %v, want error = last_error %q", tt.name, line, info.LastErr)
		}
		if d, _ := line["error_detail"].(string); len(d) > 2048 {
			t.Errorf("%s: error_detail of %d bytes", tt.name, len(d))
		}
		t.Logf("%s: %q", tt.name, info.LastErr)
	}
}

// A raw payload of 10 MB is refused before it is decoded; its dead-letter
// entry keeps a bounded part and says how large it was, and the worker's heap
// does not grow with it. Not parallel: it measures the process's heap.
func TestHugeRawPayloadIsRefusedCheaply(t *testing.T) {
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	var big bytes.Buffer
	big.WriteString(`{"order_id": 1, "additional_emails": [`)
	for big.Len() < 10<<20 {
		big.WriteString(`"not an address",`)
	}
	big.WriteString(`"x"]}`)
	size := big.Len()
	info, err := b.client.Enqueue(asynq.NewTask("set-emails", big.Bytes()), asynq.MaxRetry(0), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	big.Reset()
	// Wait on the stream, not the inspector: reading the task's info would
	// decode its 10 MB in this process too.
	peak := certmailtest.HeapPeak(func() {
		waitFor(t, 20*time.Second, func() bool {
			n, err := b.redis.Client().XLen(context.Background(), deadletter.Stream).Result()
			return err == nil && n == 1
		}, func() string { return "no dead-letter entry" })
	})
	t.Logf("heap rose %.1f MiB while the worker refused a %d-byte payload", float64(peak)/(1<<20), size)
	// asynq itself holds the message a few times while it dequeues and
	// archives it; parsing it would cost hundreds of MiB more.
	if limit := 5*uint64(size) + 16<<20; peak > limit {
		t.Errorf("heap rose %.1f MiB, want at most %.1f", float64(peak)/(1<<20), float64(limit)/(1<<20))
	}
	b.waitState(t, info.ID, asynq.TaskStateArchived, 5*time.Second)
	entry := b.deadLetters(t, 1)[0]
	if entry["error_code"] != "payload_too_large" || entry["payload_bytes"] != strconv.Itoa(size) ||
		len(entry["payload"]) != deadletter.PayloadMax {
		t.Errorf("entry: code %q, payload_bytes %q, %d bytes of payload", entry["error_code"], entry["payload_bytes"], len(entry["payload"]))
	}
	if n := b.fake.RequestCount(); n != 0 {
		t.Errorf("fake saw %d requests", n)
	}
}

// A task enqueued raw with an id over tasks.MaxTaskIDBytes is dead-lettered
// at once, without a call, under the id's deadletter.BoundedID: the entry
// reads back as a dead letter, and its marker, its ERROR line and the
// worker's other keys and lines hold the bounded id, never the whole one.
func TestLongTaskIDIsDeadLetteredBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	long := strings.Repeat("L", 5000)
	id := b.enqueue(t, "resend-dcv", `{"order_id": 2001}`, asynq.TaskID(long))
	info := b.waitState(t, id, asynq.TaskStateArchived, 15*time.Second)
	want := fmt.Sprintf("task_id_too_long: task id of %d bytes; at most %d are accepted", len(long), tasks.MaxTaskIDBytes)
	if info.LastErr != want || info.Retried != 0 {
		t.Errorf("last_error %q after %d retries, want %q at once", info.LastErr, info.Retried, want)
	}
	if n := b.fake.RequestCount(); n != 0 {
		t.Errorf("fake saw %d requests, want 0", n)
	}
	bounded := deadletter.BoundedID(long)
	if len(bounded) > tasks.MaxTaskIDBytes || !strings.HasPrefix(bounded, "LLLL") || bounded == deadletter.BoundedID(long+"M") {
		t.Fatalf("BoundedID = %q (%d bytes): want a distinct form of at most %d bytes", bounded, len(bounded), tasks.MaxTaskIDBytes)
	}
	entry := b.deadLetters(t, 1)[0]
	if entry["task_id"] != bounded || entry["error_code"]+": "+entry["error_message"] != want {
		t.Errorf("entry %v, want task_id %q and the reason %q", entry, bounded, want)
	}
	ctx := context.Background()
	rdb := b.redis.Client()
	page, err := deadletter.List(ctx, rdb, "", 10)
	if err != nil || len(page.Entries) != 1 || len(page.Skipped) != 0 || page.Entries[0].TaskID != bounded {
		t.Errorf("List = %+v, %v; want the entry read back, nothing skipped", page, err)
	}
	if e, found, err := deadletter.Find(ctx, rdb, bounded); err != nil || !found || e.ErrorCode != "task_id_too_long" {
		t.Errorf("Find by the bounded id = %+v, %t, %v", e, found, err)
	}
	if n, err := rdb.Exists(ctx, deadletter.MarkerKey("default", bounded)).Result(); err != nil || n != 1 {
		t.Errorf("marker under the bounded id: %d (%v), want set", n, err)
	}
	keys, err := rdb.Keys(ctx, "certmail:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if len(k) > 300 {
			t.Errorf("key of %d bytes: %.80s…", len(k), k)
		}
	}
	lines := b.logs.Lines("error", "task dead-lettered")
	if len(lines) != 1 || lines[0]["task_id"] != bounded || lines[0]["error"] != want {
		t.Errorf("ERROR lines %v, want one with the bounded task_id and the reason", lines)
	}
	// asynq's own lines name the task too: they are cut short.
	for line := range strings.Lines(b.logs.Text()) {
		if len(line) > 2048 || !strings.Contains(line, `"logger":"asynq"`) && strings.Contains(line, long[:tasks.MaxTaskIDBytes+1]) {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
	}
}
