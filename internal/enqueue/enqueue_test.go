package enqueue_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/tasks"
)

// Check judges by the configured accounts and queues alone: the same
// request is accepted or refused as the rules say.
func TestCheckRules(t *testing.T) {
	t.Parallel()
	set := func(account, queue string) enqueue.Request {
		payload := `{"order_id": 1, "additional_emails": []}`
		if account != "" {
			payload = `{"order_id": 1, "additional_emails": [], "account": "` + account + `"}`
		}
		return enqueue.Request{Type: tasks.TypeSetEmails, Payload: []byte(payload), Queue: queue}
	}
	euBulk := enqueue.Rules{Accounts: []string{"eu", "default"}, Queues: []string{"critical", "bulk"}}
	tests := []struct {
		name  string
		req   enqueue.Request
		rules enqueue.Rules
		want  []tasks.FieldError
	}{
		{"defaults: account default, queue default", set("", ""), enqueue.Rules{}, nil},
		{"defaults: another account", set("eu", ""), enqueue.Rules{}, []tasks.FieldError{{Field: "account", Message: "unknown account; the configured accounts are default"}}},
		{"a configured account", set("eu", "bulk"), euBulk, nil},
		{"no account named: default", set("", "bulk"), euBulk, nil},
		{"no account named, and no account default", set("", "bulk"), enqueue.Rules{Accounts: []string{"eu"}, Queues: []string{"bulk"}},
			[]tasks.FieldError{{Field: "account", Message: "unknown account; the configured accounts are eu"}}},
		{"the account default named", set("default", "bulk"), euBulk, nil},
		{"an account not configured", set("us", "bulk"), euBulk, []tasks.FieldError{{Field: "account", Message: "unknown account; the configured accounts are default, eu"}}},
		{"a queue not served", set("", "default"), euBulk,
			[]tasks.FieldError{{Field: "queue", Message: "no worker serves this queue; CERTMAIL_QUEUES serves bulk, critical"}}},
		{"the default queue not served", set("", ""), euBulk,
			[]tasks.FieldError{{Field: "queue", Message: "the default queue default is not served (CERTMAIL_QUEUES serves bulk, critical): name one of them"}}},
		{"rules already sorted, a queue not served", set("us", "default"), euBulk.WithDefaults(),
			[]tasks.FieldError{{Field: "account", Message: "unknown account; the configured accounts are default, eu"},
				{Field: "queue", Message: "no worker serves this queue; CERTMAIL_QUEUES serves bulk, critical"}}},
		{"rules already sorted, all served", set("eu", "critical"), euBulk.WithDefaults(), nil},
		{"an unknown account beside other problems", enqueue.Request{Type: tasks.TypeSetEmails,
			Payload: []byte(`{"order_id": 0, "additional_emails": [], "account": "us"}`), Queue: "bulk"}, euBulk,
			[]tasks.FieldError{{Field: "order_id", Message: "must be greater than 0"}, {Field: "account", Message: "unknown account; the configured accounts are default, eu"}}},
		{"a task id and an idempotency key", enqueue.Request{Type: tasks.TypeSetEmails, Payload: set("", "").Payload,
			TaskID: "sched:x:1", IdempotencyKey: "k"}, enqueue.Rules{},
			[]tasks.FieldError{{Field: "task_id", Message: "a task with an idempotency key gets its id from the key: give one or the other"}}},
		{"a task id the dashboard cannot address", enqueue.Request{Type: tasks.TypeSetEmails, Payload: set("", "").Payload,
			TaskID: "sched:../x:1"}, enqueue.Rules{},
			[]tasks.FieldError{{Field: "task_id", Message: "must be at most 256 bytes; " + tasks.TaskIDRule}}},
		{"a task id too long", enqueue.Request{Type: tasks.TypeSetEmails, Payload: set("", "").Payload,
			TaskID: strings.Repeat("s", tasks.MaxTaskIDBytes+1)}, enqueue.Rules{},
			[]tasks.FieldError{{Field: "task_id", Message: "must be at most 256 bytes; " + tasks.TaskIDRule}}},
		{"a scheduler's task id", enqueue.Request{Type: tasks.TypeSetEmails, Payload: set("", "").Payload,
			TaskID: "sched:renew.example-1:1700000000"}, enqueue.Rules{}, nil},
	}
	for _, tt := range tests {
		c, err := enqueue.Check(tt.req, tt.rules)
		var ve *tasks.ValidationError
		switch {
		case tt.want == nil && err != nil:
			t.Errorf("%s: %v, want accepted", tt.name, err)
		case tt.want == nil && (c.Payload == nil || c.Queue != tasks.DefaultQueue && c.Queue != tt.req.Queue):
			t.Errorf("%s: checked %+v", tt.name, c)
		case tt.want != nil && (!errors.As(err, &ve) || !slices.Equal(ve.Errors, tt.want)):
			t.Errorf("%s: %v, want %+v", tt.name, err, tt.want)
		}
	}
}

// Check's message for a task id it refuses names the rule that id breaks,
// whichever of tasks.ValidTaskID's rules that is.
func TestCheckTaskIDMessage(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"order_id": 1, "additional_emails": []}`)
	tests := []struct {
		id   string
		rule string // words of the message that name the rule
	}{
		{"abc ", "end with a space"},
		{" abc", "begin or end with a space"},
		{"a/b", "/"},
		{`a\b`, `\`},
		{"a?b", "?"},
		{"a#b", "#"},
		{"a%b", "%"},
		{"a\tb", "control character"},
		{".", `"."`},
		{"..", `".."`},
		{strings.Repeat("s", tasks.MaxTaskIDBytes+1), "at most 256 bytes"},
	}
	for _, tt := range tests {
		if tasks.ValidTaskID(tt.id) {
			t.Fatalf("tasks.ValidTaskID(%q) = true: the case tests nothing", tt.id)
		}
		_, err := enqueue.Check(enqueue.Request{Type: tasks.TypeSetEmails, Payload: payload, TaskID: tt.id}, enqueue.Rules{})
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "task_id" {
			t.Errorf("task id %.20q: %v, want one task_id problem", tt.id, err)
			continue
		}
		if msg := ve.Errors[0].Message; !strings.Contains(msg, tt.rule) {
			t.Errorf("task id %.20q: message %q does not say %q", tt.id, msg, tt.rule)
		}
	}
}

// Checked carries what becomes the task: the normalised payload, the queue,
// the time, the task id, and for an idempotency key a hash that is the same
// for the same request however it was written.
func TestChecked(t *testing.T) {
	t.Parallel()
	req := enqueue.Request{Type: tasks.TypeSetEmails, Payload: []byte(`{"order_id": 1, "additional_emails": [" A@Example.com"]}`),
		ProcessIn: time.Hour, IdempotencyKey: "k1"}
	c, err := enqueue.Check(req, enqueue.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Queue != tasks.DefaultQueue || c.ProcessAt.Before(time.Now().Add(59*time.Minute)) || c.IdempotencyKey != "k1" || len(c.Hash) != 64 {
		t.Errorf("checked %+v", c)
	}
	if p, ok := c.Payload.(tasks.SetEmails); !ok || p.AdditionalEmails[0] != "A@example.com" {
		t.Errorf("payload %+v, want it normalised", c.Payload)
	}
	same := req
	same.Payload = []byte(`{"additional_emails":["A@example.com"],"order_id":1}`)
	other := req
	other.Queue = "bulk"
	cs, _ := enqueue.Check(same, enqueue.Rules{})
	co, _ := enqueue.Check(other, enqueue.Rules{})
	if cs.Hash != c.Hash || co.Hash == c.Hash {
		t.Errorf("hashes %s (same request) and %s (other queue), want %s and another", cs.Hash, co.Hash, c.Hash)
	}
	if c, _ := enqueue.Check(enqueue.Request{Type: tasks.TypeResendDCV, Payload: []byte(`{"order_id": 2}`), TaskID: "sched:s:1"},
		enqueue.Rules{}); c.TaskID != "sched:s:1" || c.Hash != "" {
		t.Errorf("with a task id: %+v", c)
	}
	if _, err := enqueue.Check(enqueue.Request{Type: "send-fax", Payload: []byte(`{}`)}, enqueue.Rules{}); !errors.Is(err, tasks.ErrUnknownType) {
		t.Errorf("unknown type: %v", err)
	}
}

// For every task type, naming the default account is the same request as
// naming none: one hash. Another account is another request.
func TestHashDefaultAccount(t *testing.T) {
	t.Parallel()
	bodies := map[string]string{
		tasks.TypeSetEmails:       `"order_id": 1, "additional_emails": []`,
		tasks.TypeResendDCV:       `"order_id": 1`,
		tasks.TypeSendCert:        `"certificate_id": 1, "emails": ["a@example.com"], "certificate_collect_format": "plaintext"`,
		tasks.TypeResendDomainDCV: `"domain_id": 1`,
	}
	rules := enqueue.Rules{Accounts: []string{tasks.DefaultAccount, "eu"}}
	for _, typ := range tasks.Types() {
		hash := func(account string) (enqueue.Checked, string) {
			c, err := enqueue.Check(enqueue.Request{Type: typ, Payload: []byte("{" + bodies[typ] + account + "}"), IdempotencyKey: "k"}, rules)
			if err != nil {
				t.Fatalf("%s%s: %v", typ, account, err)
			}
			return c, c.Hash
		}
		_, none := hash("")
		named, def := hash(`, "account": "default"`)
		_, eu := hash(`, "account": "eu"`)
		if def != none || eu == none {
			t.Errorf("%s: hashes %s (default account named), %s (none), %s (eu); want the first two equal, the last another", typ, def, none, eu)
		}
		if !named.SameRequest(def) || named.SameRequest(eu) || named.SameRequest("") {
			t.Errorf("%s: SameRequest accepts %s %t, %s %t, \"\" %t; want true, false, false", typ,
				def, named.SameRequest(def), eu, named.SameRequest(eu), named.SameRequest(""))
		}
	}
}

// Parse reads the options' text; what it cannot read is a problem under the
// option's name.
func TestParse(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC)
	req, errs := enqueue.Parse("resend-dcv", []byte(`{}`), map[string]string{
		"queue": "bulk", "process_at": at.Format(time.RFC3339), "idempotency_key": "k"})
	if len(errs) != 0 || req.Type != "resend-dcv" || string(req.Payload) != `{}` || req.Queue != "bulk" || !req.ProcessAt.Equal(at) ||
		req.IdempotencyKey != "k" || req.ProcessIn != 0 {
		t.Errorf("Parse = %+v, %v", req, errs)
	}
	if req, errs := enqueue.Parse("t", nil, map[string]string{"process_in": "90s"}); len(errs) != 0 || req.ProcessIn != 90*time.Second {
		t.Errorf("process_in: %+v, %v", req, errs)
	}
	// RFC 3339 (section 5.6) allows a lower-case t and z.
	for _, v := range []string{"2030-01-02t15:04:05z", "2030-01-02t16:04:05+01:00", "2030-01-02T15:04:05z"} {
		if req, errs := enqueue.Parse("t", nil, map[string]string{"process_at": v}); len(errs) != 0 || !req.ProcessAt.Equal(at) {
			t.Errorf("process_at %s: %+v, %v; want %v", v, req.ProcessAt, errs, at)
		}
	}
	// A minus sign is refused once, even on -0, which Go reads as 0.
	for _, v := range []string{"-5m", "-0"} {
		req := enqueue.Request{Type: tasks.TypeResendDCV, Payload: []byte(`{"order_id": 1}`)}
		req, errs := enqueue.Parse(req.Type, req.Payload, map[string]string{"process_in": v})
		_, err := enqueue.Check(req, enqueue.Rules{})
		if len(errs) != 1 || errs[0] != (tasks.FieldError{Field: "process_in", Message: "must not be negative"}) || err != nil {
			t.Errorf("process_in %s: %v, then Check %v; want one process_in problem, must not be negative", v, errs, err)
		}
	}
	_, errs = enqueue.Parse("t", nil, map[string]string{"queue": "", "process_at": "tomorrow", "process_in": "5 minutes",
		"idempotency_key": "", "delay": "5s", "a@example.com": "x"})
	var fields []string
	for _, fe := range errs {
		fields = append(fields, fe.Field)
	}
	if want := []string{"queue", "process_at", "process_in", "idempotency_key", `"a@example.com"`, "delay"}; !slices.Equal(fields, want) {
		t.Errorf("problems %q, want %q", fields, want)
	}
}

// A bulk line: type and payload required, options strings, null absent,
// unknown members named.
func TestDecodeLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want []string // fieldMessage of each problem
	}{
		{`{"type": "resend-dcv", "payload": {"order_id": 1}, "queue": "bulk", "process_in": "1h", "idempotency_key": null}`, nil},
		{`not json`, []string{"malformed JSON: invalid character 'o' in literal null (expecting 'u')"}},
		{`[1]`, []string{"must be a JSON object"}},
		{`null`, []string{"must be a JSON object"}},
		{"\ufeff{\"type\": \"resend-dcv\", \"payload\": {\"order_id\": 1}}", []string{"starts with a byte order mark (U+FEFF): JSON must be sent without one"}},
		{`{}`, []string{"type: required", "payload: required"}},
		{`{"type": 1, "payload": null}`, []string{"type: must be a string", "payload: required"}},
		{`{"type": "t", "payload": {}, "queue": 3, "process_at": "soon", "colour": "red"}`,
			[]string{"queue: must be a string", "process_at: must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z", "colour: unknown field"}},
		// A member given twice fails the line, as the API refuses a repeated
		// option, whichever value would have been taken.
		{`{"type": "set-emails", "payload": {"order_id": 1, "additional_emails": []}, "queue": "nope", "queue": "critical"}`,
			[]string{"queue: duplicate field"}},
		{`{"type": "set-emails", "payload": {"order_id": 1, "additional_emails": "bad"}, "payload": {"order_id": 2, "additional_emails": []}}`,
			[]string{"payload: duplicate field"}},
		{`{"type": "send-cert", "type": "set-emails", "payload": {"order_id": 3, "additional_emails": []}}`, []string{"type: duplicate field"}},
		{`{"type": "resend-dcv", "typ\u0065": "resend-dcv", "payload": {"order_id": 1}, "process_in": 1, "process_in": "1h"}`,
			[]string{"type: duplicate field", "process_in: duplicate field"}},
		{`{"type": "resend-dcv", "payload": {"order_id": 1}, "idempotency_key": "a", "idempotency_key": null}`, []string{"idempotency_key: duplicate field"}},
		{`{"type": "resend-dcv", "payload": {"order_id": 1}, "colour": 1, "colour": 2}`, []string{"colour: unknown field"}},
		// A repeated option among more problems than repeats: the others are
		// kept after it, and so are the type and payload.
		{`{"type": "resend-dcv", "payload": {"order_id": 1}, "queue": "a", "queue": "b", "process_at": "soon", "colour": 1}`,
			[]string{"queue: duplicate field", "process_at: must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z", "colour: unknown field"}},
	}
	for _, tt := range tests {
		req, errs := enqueue.DecodeLine([]byte(tt.line))
		var got []string
		for _, fe := range errs {
			if fe.Field == "" {
				got = append(got, fe.Message)
			} else {
				got = append(got, fe.Field+": "+fe.Message)
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: problems %q, want %q", tt.line, got, tt.want)
		}
		if strings.Contains(tt.line, `"payload": {"order_id": 2`) && req.Payload != nil {
			t.Errorf("%s: payload %s kept, want none judged when it is given twice", tt.line, req.Payload)
		}
		if tt.want == nil && (req.Type != "resend-dcv" || req.Queue != "bulk" || req.ProcessIn != time.Hour || string(req.Payload) != `{"order_id": 1}`) {
			t.Errorf("%s: request %+v", tt.line, req)
		}
		if strings.Contains(tt.line, `"queue": "a", "queue": "b"`) && (req.Type != "resend-dcv" || string(req.Payload) != `{"order_id": 1}`) {
			t.Errorf("%s: type %q and payload %s, want both kept when only an option repeats", tt.line, req.Type, req.Payload)
		}
	}
}

// ByteOrderMark says of a body that starts with a byte order mark what
// tasks.Parse says, so that the API's schedules, its tasks and the lines of
// enqueue --file are refused in the same words; other bodies have no such
// problem.
func TestByteOrderMark(t *testing.T) {
	t.Parallel()
	bom := []byte("\ufeff{\"order_id\": 1}")
	_, err := tasks.Parse(tasks.TypeResendDCV, bom)
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 1 {
		t.Fatalf("tasks.Parse of a body with a byte order mark: %v", err)
	}
	if got := enqueue.ByteOrderMark(bom); got != ve.Errors[0].Message || !strings.Contains(got, "byte order mark") {
		t.Errorf("ByteOrderMark = %q, tasks.Parse says %q", got, ve.Errors[0].Message)
	}
	for _, data := range []string{``, `{"order_id": 1}`, " \ufeff{}", "\xef\xbb"} {
		if got := enqueue.ByteOrderMark([]byte(data)); got != "" {
			t.Errorf("ByteOrderMark(%q) = %q, want none", data, got)
		}
	}
}

// BenchmarkCheck measures Check on the request the API bench sends, with
// rules as ops.Service holds them (WithDefaults already applied).
func BenchmarkCheck(b *testing.B) {
	req := enqueue.Request{Type: tasks.TypeSetEmails, Payload: []byte(`{"order_id": 4242, "additional_emails": ["bench@example.com"]}`)}
	rules := enqueue.Rules{Accounts: []string{"default"}, Queues: []string{"critical", "default", "bulk"}}.WithDefaults()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enqueue.Check(req, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckTimeBound: a task may be set to run at most enqueue.MaxDelay
// (43800h, 1825 days) ahead, by process_at or process_in; further is refused,
// naming the bound, however the request came (API, CLI, a line of a file).
func TestCheckTimeBound(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"order_id": 1}`)
	now := time.Now()
	tests := []struct {
		name  string
		at    time.Time
		in    time.Duration
		field string // "" when accepted
	}{
		{"in an hour", now.Add(time.Hour), 0, ""},
		{"a minute under the bound", now.Add(enqueue.MaxDelay - time.Minute), 0, ""},
		{"process_in at the bound", time.Time{}, enqueue.MaxDelay, ""},
		{"a minute over the bound", now.Add(enqueue.MaxDelay + time.Minute), 0, "process_at"},
		{"a mistyped year", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), 0, "process_at"},
		{"year 2999", time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC), 0, "process_at"},
		{"process_in over the bound", time.Time{}, enqueue.MaxDelay + time.Second, "process_in"},
		{"process_in of 228 years", time.Time{}, 2000000 * time.Hour, "process_in"},
		{"in the past", now.Add(-time.Hour), 0, ""},
	}
	for _, tt := range tests {
		_, err := enqueue.Check(enqueue.Request{Type: tasks.TypeResendDCV, Payload: payload, ProcessAt: tt.at, ProcessIn: tt.in}, enqueue.Rules{})
		var ve *tasks.ValidationError
		want := []tasks.FieldError{{Field: tt.field, Message: "must be at most 43800h (1825 days) ahead"}}
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tt.name, err)
		case tt.field != "" && (!errors.As(err, &ve) || !slices.Equal(ve.Errors, want)):
			t.Errorf("%s: %v, want %+v", tt.name, err, want)
		}
	}
	if enqueue.MaxDelay != 43800*time.Hour {
		t.Errorf("MaxDelay %v, but the messages say 43800h (1825 days)", enqueue.MaxDelay)
	}
}

// An unknown account's message lists the configured ones, at most ten of
// them: an accounts file of any length gives a bounded answer.
func TestUnknownAccountListBounded(t *testing.T) {
	var accounts []string
	for i := range 15 {
		accounts = append(accounts, fmt.Sprintf("acct%02d", i))
	}
	_, err := enqueue.Check(enqueue.Request{Type: tasks.TypeResendDCV, Payload: []byte(`{"order_id": 1, "account": "mars"}`)},
		enqueue.Rules{Accounts: accounts})
	want := "account: unknown account; the configured accounts are acct00, acct01, acct02, acct03, acct04, acct05, acct06, acct07, acct08, acct09 and 5 more"
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("got %v, want it to end with %q", err, want)
	}
}

// Rules naming queues.Reserved among the served queues are refused as the
// worker's and the metrics' configurations refuse it (queues.CheckServed):
// a served queue of that name would share the metrics label of the queues
// no process serves. Every command that reads CERTMAIL_QUEUES refused it;
// a Go caller building Rules did not. A name no queue may have is refused
// too; the defaults are accepted.
func TestRulesValidate(t *testing.T) {
	t.Parallel()
	for _, r := range []enqueue.Rules{{}, {Queues: []string{"default", "bulk"}}} {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v, want accepted", r, err)
		}
	}
	for _, tt := range []struct {
		queues []string
		want   string
	}{
		{[]string{"default", "other"}, `queue "other": the name is reserved for the metrics of the queues no process serves`},
		{[]string{"Bad Name"}, `queue "Bad Name": a name is 1-63 characters`},
	} {
		err := enqueue.Rules{Queues: tt.queues}.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("queues %q: %v, want %q", tt.queues, err, tt.want)
		}
	}
}

// TestCheckIdempotencyKeyBounds: a key is 1 to MaxIdempotencyKey characters
// of printable ASCII, space and tilde included; one more character, a
// control character or DEL is refused.
func TestCheckIdempotencyKeyBounds(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"order_id": 1}`)
	tests := []struct {
		key  string
		want string // "" when accepted
	}{
		{strings.Repeat("k", enqueue.MaxIdempotencyKey), ""},
		{"a b", ""},
		{"~!", ""},
		{strings.Repeat("k", enqueue.MaxIdempotencyKey+1), "at most 255 characters"},
		{"a\x1fb", "must be printable ASCII"},
		{"a\x7fb", "must be printable ASCII"},
	}
	for _, tt := range tests {
		_, err := enqueue.Check(enqueue.Request{Type: tasks.TypeResendDCV, Payload: payload, IdempotencyKey: tt.key}, enqueue.Rules{})
		var ve *tasks.ValidationError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("key %q (%d bytes): %v, want accepted", tt.key, len(tt.key), err)
		case tt.want != "" && (!errors.As(err, &ve) ||
			!slices.Equal(ve.Errors, []tasks.FieldError{{Field: enqueue.OptionIdempotencyKey, Message: tt.want}})):
			t.Errorf("key %q (%d bytes): %v, want %s", tt.key, len(tt.key), err, tt.want)
		}
	}
}

// TestCheckProcessInZeroIsNow: process_in 0 asks for no delay, so the
// checked request has no time to run at; a positive one has it.
func TestCheckProcessInZeroIsNow(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"order_id": 1}`)
	c, err := enqueue.Check(enqueue.Request{Type: tasks.TypeResendDCV, Payload: payload, ProcessIn: 0}, enqueue.Rules{})
	if err != nil || !c.ProcessAt.IsZero() {
		t.Errorf("process_in 0: process at %v, %v; want none", c.ProcessAt, err)
	}
	before := time.Now()
	c, err = enqueue.Check(enqueue.Request{Type: tasks.TypeResendDCV, Payload: payload, ProcessIn: time.Minute}, enqueue.Rules{})
	if err != nil || c.ProcessAt.Before(before.Add(time.Minute)) || c.ProcessAt.After(time.Now().Add(time.Minute)) {
		t.Errorf("process_in 1m: process at %v, %v; want a minute from the call", c.ProcessAt, err)
	}
}
