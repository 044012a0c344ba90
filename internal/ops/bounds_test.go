package ops_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/tasks"
)

// A task's payload is shown as its JSON only when it is a whole, valid UTF-8
// JSON object; otherwise as a bounded string, text or base64, saying which. The
// answer is always valid UTF-8 and small.
func TestTaskPayloadShownSafely(t *testing.T) {
	t.Parallel()
	b := setup(t)
	client := asynq.NewClient(b.redis.ConnOpt())
	t.Cleanup(func() { _ = client.Close() })
	huge := bytes.Repeat([]byte("x"), 10<<20)
	// JSON of exactly MaxShownBytes: the most an answer shows as it is.
	atLimit := append(append([]byte(`{"a":"`), bytes.Repeat([]byte("x"), ops.MaxShownBytes-len(`{"a":""}`))...), '"', '}')
	tests := []struct {
		name      string
		payload   []byte
		encoding  string
		truncated bool
		value     string // the JSON of the payload field; "" to skip
	}{
		{"JSON", []byte(`{"order_id":1}`), "", false, `{"order_id":1}`},
		{"invalid UTF-8 inside a JSON string", []byte("{\"order_id\":1,\"account\":\"\xff\xfe\"}"), ops.EncodingBase64, false,
			strconv.Quote(base64.StdEncoding.EncodeToString([]byte("{\"order_id\":1,\"account\":\"\xff\xfe\"}")))},
		{"not JSON", []byte("order 5 please"), ops.EncodingText, false, `"order 5 please"`},
		{"JSON object after white space", []byte(" \n{\"order_id\":1}"), "", false, " \n{\"order_id\":1}"},
		{"a JSON array", []byte(`[1,2]`), ops.EncodingText, false, `"[1,2]"`},
		{"a JSON number", []byte(`42`), ops.EncodingText, false, `"42"`},
		{"a JSON string", []byte(`"str"`), ops.EncodingText, false, `"\"str\""`},
		{"JSON null", []byte(`null`), ops.EncodingText, false, `"null"`},
		{"JSON of exactly MaxShownBytes", atLimit, "", false, string(atLimit)},
		{"10 MB of text", huge, ops.EncodingText, true, ""},
		{"10 MB of JSON", append(append([]byte(`{"a":"`), huge...), '"', '}'), ops.EncodingText, true, ""},
		{"a rune cut at the limit", append(bytes.Repeat([]byte("a"), ops.MaxShownBytes-1), "é and more"...), ops.EncodingText, true, ""},
	}
	for _, tt := range tests {
		info, err := client.Enqueue(asynq.NewTask("set-emails", tt.payload), asynq.Queue("default"), asynq.ProcessIn(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.svc.Task(context.Background(), info.ID)
		if err != nil {
			t.Fatal(err)
		}
		answer, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(answer) || !json.Valid(answer) {
			t.Errorf("%s: answer is not valid UTF-8 JSON", tt.name)
		}
		if len(answer) > ops.MaxShownBytes+4096 {
			t.Errorf("%s: answer of %d bytes", tt.name, len(answer))
		}
		if st.PayloadEncoding != tt.encoding || st.PayloadTruncated != tt.truncated || st.PayloadBytes != len(tt.payload) {
			t.Errorf("%s: encoding %q truncated %v bytes %d; want %q %v %d", tt.name, st.PayloadEncoding, st.PayloadTruncated,
				st.PayloadBytes, tt.encoding, tt.truncated, len(tt.payload))
		}
		if tt.value != "" && string(st.Payload) != tt.value {
			t.Errorf("%s: payload %s, want %s", tt.name, st.Payload, tt.value)
		}
	}
}

// Malformed entries of the dead-letter stream (written by hand, by an older
// version, or damaged) are skipped and named; the page still answers.
func TestMalformedDeadLettersAreSkipped(t *testing.T) {
	t.Parallel()
	b, ids := setupDead(t, 401)
	ctx := context.Background()
	garbage := [][]any{
		{"hello", "world"},
		{"task_id", "t1", "type", "set-emails", "queue", "default", "failed_at", "yesterday"},
		{"task_id", "t2", "type", "set-emails", "queue", "   ", "failed_at", time.Now().UTC().Format(time.RFC3339),
			"attempts", "many", "http_status", "-5", "payload", "\xff\xfe", "error_message", strings.Repeat("é", 100000)},
	}
	for _, values := range garbage {
		if err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: deadletter.Stream, Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	page, err := b.svc.DeadLetters(ctx, 10, "")
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	// Entry t2 lacks nothing that identifies it: it is listed, its garbage
	// read as zero values and its text bounded.
	if len(page.Entries) != 2 || page.Entries[1].TaskID != ids[0] || page.Entries[0].TaskID != "t2" {
		t.Fatalf("entries %+v, want t2 and %s", page.Entries, ids[0])
	}
	t2 := page.Entries[0]
	if t2.Attempts != 0 || t2.HTTPStatus != 0 || t2.PayloadEncoding != ops.EncodingBase64 || len(t2.ErrorMessage) > 2048 || t2.Archived {
		t.Errorf("t2 = %+v", t2)
	}
	if page.SkippedCount != 2 || len(page.Skipped) != 2 || page.Skipped[0].Problem != "failed_at is not an RFC 3339 time" ||
		page.Skipped[1].Problem != "no task_id" {
		t.Errorf("skipped %d: %+v", page.SkippedCount, page.Skipped)
	}
}

// A dead-letter entry keeps a bounded part of a large payload; the listing
// says so.
func TestDeadLetterOfALargePayloadIsMarked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	head := strings.Repeat("y", deadletter.PayloadMax)
	if err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: deadletter.Stream, Values: []any{
		"task_id", "big", "type", "set-emails", "queue", "default", "payload", head, "payload_bytes", "10485760",
		"error_code", "payload_too_large", "error_message", "payload of 10485760 bytes", "failed_at", time.Now().UTC().Format(time.RFC3339),
	}}).Err(); err != nil {
		t.Fatal(err)
	}
	page, err := b.svc.DeadLetters(ctx, 10, "")
	if err != nil || len(page.Entries) != 1 {
		t.Fatalf("DeadLetters = %+v, %v", page, err)
	}
	dl := page.Entries[0]
	if !dl.PayloadTruncated || dl.PayloadBytes != 10485760 || dl.PayloadEncoding != ops.EncodingText || string(dl.Payload) != strconv.Quote(head) {
		t.Errorf("entry: truncated %v, bytes %d, encoding %q, %d bytes shown", dl.PayloadTruncated, dl.PayloadBytes, dl.PayloadEncoding, len(dl.Payload))
	}
}

// A task for a queue no worker serves is refused, naming the field and the
// served queues; so is a task without queue when "default" is not served.
func TestEnqueueRefusesUnservedQueues(t *testing.T) {
	t.Parallel()
	b := setup(t, ops.Config{Rules: enqueue.Rules{Queues: []string{"critical", "bulk"}}})
	ctx := context.Background()
	payload := []byte(`{"order_id": 1, "additional_emails": []}`)
	for _, tt := range []struct {
		queue, want string
	}{
		{"default", "no worker serves this queue; CERTMAIL_QUEUES serves bulk, critical"},
		{"typo", "no worker serves this queue; CERTMAIL_QUEUES serves bulk, critical"},
		{"", "the default queue default is not served (CERTMAIL_QUEUES serves bulk, critical): name one of them"},
	} {
		_, _, err := b.svc.Enqueue(ctx, enqueue.Request{Type: tasks.TypeSetEmails, Payload: payload, Queue: tt.queue})
		ve, ok := err.(*tasks.ValidationError)
		if !ok || len(ve.Errors) != 1 || ve.Errors[0].Field != "queue" || ve.Errors[0].Message != tt.want {
			t.Errorf("queue %q: %v, want queue: %s", tt.queue, err, tt.want)
		}
	}
	if _, _, err := b.svc.Enqueue(ctx, enqueue.Request{Type: tasks.TypeSetEmails, Payload: payload, Queue: "bulk"}); err != nil {
		t.Errorf("served queue: %v", err)
	}
	if qs, _ := b.inspector.Queues(); len(qs) != 1 || qs[0] != "bulk" {
		t.Errorf("queues in Redis: %v, want only bulk", qs)
	}
}

// ShowName leaves a plain name alone and quotes any other: nothing it
// returns holds a control character, and a long name is cut.
func TestShowName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 100000)
	tests := []struct{ in, want string }{
		{"6f1c2d3e-0000-4000-8000-000000000000", "6f1c2d3e-0000-4000-8000-000000000000"},
		{"set-emails", "set-emails"},
		{"ünïcode-id", "ünïcode-id"},
		{"id\x1b[2Jclear", `"id\x1b[2Jclear"`},
		{"id-with\nnewline", `"id-with\nnewline"`},
		{"evil\x1b[31mRED\x1b[0m\ttype", `"evil\x1b[31mRED\x1b[0m\ttype"`},
		{"two words", `"two words"`},
		{"\u202egnp.exe", `"\u202egnp.exe"`},
		{"bad\xffutf8", `"bad\xffutf8"`},
		{`"quoted"`, `"\"quoted\""`},
		{"", `""`},
		{strings.Repeat("b", 256), strings.Repeat("b", 256)},
		{long, `"` + long[:32] + `"… (100000 bytes)`},
		{strings.Repeat("é", 200), `"` + strings.Repeat("é", 16) + `"… (400 bytes)`},
	}
	for _, tt := range tests {
		if got := ops.ShowName(tt.in); got != tt.want {
			t.Errorf("ShowName(%.40q) = %.80q, want %.80q", tt.in, got, tt.want)
		}
	}
}
