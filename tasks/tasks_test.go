package tasks_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/tasks"
)

func TestDefaultOptions(t *testing.T) {
	t.Parallel()
	opts := tasks.DefaultOptions()
	type opt struct {
		typ asynq.OptionType
		val any
	}
	want := []opt{
		{asynq.QueueOpt, "default"},
		{asynq.MaxRetryOpt, 12},
		{asynq.TimeoutOpt, 2 * time.Minute},
		{asynq.RetentionOpt, 24 * time.Hour},
	}
	if len(opts) != len(want) {
		t.Fatalf("DefaultOptions() = %v, want %d options", opts, len(want))
	}
	for i, o := range opts {
		if o.Type() != want[i].typ || o.Value() != want[i].val {
			t.Errorf("option %d = %v (type %d, value %v), want type %d value %v", i, o, o.Type(), o.Value(), want[i].typ, want[i].val)
		}
	}
	opts[0] = asynq.Queue("changed")
	if tasks.DefaultOptions()[0].Value() != "default" {
		t.Error("DefaultOptions returns a shared slice")
	}
}

func TestNewTaskTypeAndPayload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		newTask func() (*asynq.Task, error)
		typ     string
		payload string
	}{
		{"set-emails empty list", func() (*asynq.Task, error) {
			return tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}, Sequence: 7})
		}, "set-emails", `{"order_id":1,"additional_emails":[],"sequence":7}`},
		{"set-emails nil list", func() (*asynq.Task, error) {
			return tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1, Sequence: 7})
		}, "set-emails", `{"order_id":1,"additional_emails":[],"sequence":7}`},
		{"set-emails normalised with account", func() (*asynq.Task, error) {
			return tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 5, AdditionalEmails: []string{" a@EXAMPLE.com", "A@example.com", "b&c@example.com"}, Account: "eu", Sequence: 1})
		}, "set-emails", `{"order_id":5,"additional_emails":["a@example.com","b&c@example.com"],"account":"eu","sequence":1}`},
		{"resend-dcv order only", func() (*asynq.Task, error) {
			return tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 9, DomainApprovalEmails: []tasks.DomainApprovalEmail{}})
		}, "resend-dcv", `{"order_id":9}`},
		{"resend-dcv full", func() (*asynq.Task, error) {
			return tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 9, Locale: "en", Account: "eu", DomainApprovalEmails: []tasks.DomainApprovalEmail{
				{Domain: "Example.com", Email: "admin@example.com"},
				{Domain: "sub.example2.com", Email: "someone@example2.com", EmailDomain: "example2.com"},
			}})
		}, "resend-dcv", `{"order_id":9,"domain_approval_emails":[{"domain":"example.com","email":"admin@example.com"},{"domain":"sub.example2.com","email":"someone@example2.com","email_domain":"example2.com"}],"locale":"en","account":"eu"}`},
		{"send-cert without message", func() (*asynq.Task, error) {
			return tasks.NewSendCertTask(tasks.SendCert{CertificateID: 456, Emails: []string{"a@example.com"}, CertificateCollectFormat: "attachment"})
		}, "send-cert", `{"certificate_id":456,"emails":["a@example.com"],"certificate_collect_format":"attachment"}`},
		{"send-cert with message, not HTML-escaped", func() (*asynq.Task, error) {
			return tasks.NewSendCertTask(tasks.SendCert{CertificateID: 456, Emails: []string{"a@example.com"}, CertificateCollectFormat: "plaintext", CustomMessage: "<b>R&D</b>\n"})
		}, "send-cert", `{"certificate_id":456,"emails":["a@example.com"],"certificate_collect_format":"plaintext","custom_message":"<b>R&D</b>\n"}`},
		{"resend-dcv only if pending", func() (*asynq.Task, error) {
			return tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 9, Locale: "en", OnlyIfPending: true})
		}, "resend-dcv", `{"order_id":9,"locale":"en","only_if_pending":true}`},
		{"resend-domain-dcv domain only", func() (*asynq.Task, error) {
			return tasks.NewResendDomainDCVTask(tasks.ResendDomainDCV{DomainID: 1234, EmailArray: []string{}})
		}, "resend-domain-dcv", `{"domain_id":1234}`},
		{"resend-domain-dcv full", func() (*asynq.Task, error) {
			return tasks.NewResendDomainDCVTask(tasks.ResendDomainDCV{DomainID: 1234, NameScope: "Sub.Example.com", Locale: "en", Account: "eu",
				EmailArray: []string{"admin@example.com", "Admin@EXAMPLE.com"}})
		}, "resend-domain-dcv", `{"domain_id":1234,"name_scope":"sub.example.com","locale":"en","email_array":["admin@example.com"],"account":"eu"}`},
		{"pointer payload through NewTask", func() (*asynq.Task, error) {
			return tasks.NewTask(&tasks.SendCert{CertificateID: 1, Emails: []string{"a@example.com"}, CertificateCollectFormat: "downloadlink"})
		}, "send-cert", `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"downloadlink"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tt.newTask()
			if err != nil {
				t.Fatal(err)
			}
			if task.Type() != tt.typ {
				t.Errorf("Type() = %q, want %q", task.Type(), tt.typ)
			}
			if string(task.Payload()) != tt.payload {
				t.Errorf("Payload() =\n%s\nwant\n%s", task.Payload(), tt.payload)
			}
			back, err := tasks.Parse(task.Type(), task.Payload())
			if err != nil {
				t.Fatalf("Parse(own payload): %v", err)
			}
			if back.TaskType() != tt.typ {
				t.Errorf("round trip gave a %s", back.TaskType())
			}
		})
	}
}

// foreign implements tasks.Payload without being one of the package's types.
type foreign struct{ tasks.SetEmails }

func (foreign) TaskType() string { return "foreign" }

func TestNewTaskRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		p       tasks.Payload
		wantErr error
	}{
		{"invalid set-emails", tasks.SetEmails{}, tasks.ErrInvalidPayload},
		{"invalid resend-dcv", tasks.ResendDCV{Locale: "x"}, tasks.ErrInvalidPayload},
		{"invalid send-cert", tasks.SendCert{CertificateID: 1}, tasks.ErrInvalidPayload},
		{"invalid pointer", &tasks.SetEmails{OrderID: -1}, tasks.ErrInvalidPayload},
		{"nil payload", nil, tasks.ErrInvalidPayload},
		{"nil pointer", (*tasks.ResendDCV)(nil), tasks.ErrInvalidPayload},
		{"invalid resend-domain-dcv", tasks.ResendDomainDCV{NameScope: "example.com"}, tasks.ErrInvalidPayload},
		{"nil resend-domain-dcv pointer", (*tasks.ResendDomainDCV)(nil), tasks.ErrInvalidPayload},
		{"foreign type", foreign{tasks.SetEmails{OrderID: 1}}, tasks.ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tasks.NewTask(tt.p)
			if task != nil || !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewTask = %v, %v; want nil, %v", task, err, tt.wantErr)
			}
		})
	}
}

// everyConstructor is each constructor of a task, by name, building a
// valid payload of its type with the options given.
func everyConstructor() map[string]func(...asynq.Option) (*asynq.Task, error) {
	return map[string]func(...asynq.Option) (*asynq.Task, error){
		"NewSetEmailsTask": func(o ...asynq.Option) (*asynq.Task, error) {
			return tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a@example.com"}}, o...)
		},
		"NewResendDCVTask": func(o ...asynq.Option) (*asynq.Task, error) {
			return tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 1}, o...)
		},
		"NewSendCertTask": func(o ...asynq.Option) (*asynq.Task, error) {
			return tasks.NewSendCertTask(tasks.SendCert{CertificateID: 1, Emails: []string{"a@example.com"}, CertificateCollectFormat: "attachment"}, o...)
		},
		"NewResendDomainDCVTask": func(o ...asynq.Option) (*asynq.Task, error) {
			return tasks.NewResendDomainDCVTask(tasks.ResendDomainDCV{DomainID: 1}, o...)
		},
		"NewTask": func(o ...asynq.Option) (*asynq.Task, error) { return tasks.NewTask(tasks.ResendDCV{OrderID: 1}, o...) },
	}
}

// TestNewTaskRefusesALongTaskID: every constructor refuses an asynq.TaskID
// longer than MaxTaskIDBytes, among other options or last, with a short
// error that names the length and not the id; one of MaxTaskIDBytes is the
// task's id.
func TestNewTaskRefusesALongTaskID(t *testing.T) {
	t.Parallel()
	long := asynq.TaskID(strings.Repeat("L", 5000))
	over := asynq.TaskID(strings.Repeat("L", tasks.MaxTaskIDBytes+1))
	constructors := everyConstructor()
	for name, build := range constructors {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for i, opts := range [][]asynq.Option{{long}, {over}, {asynq.Queue("bulk"), over, asynq.MaxRetry(1)}} {
				task, err := build(opts...)
				if task != nil || !errors.Is(err, tasks.ErrTaskIDTooLong) {
					t.Fatalf("options %d: task %t, error %v; want no task and ErrTaskIDTooLong", i, task != nil, err)
				}
				if msg := err.Error(); len(msg) > 100 || strings.Contains(msg, "LLL") {
					t.Errorf("error %q: want a short one without the id", msg)
				}
			}
			at := strings.Repeat("L", tasks.MaxTaskIDBytes)
			if task, err := build(asynq.TaskID(at)); err != nil || task == nil {
				t.Errorf("an id of %d bytes: %v, %v", tasks.MaxTaskIDBytes, task, err)
			}
		})
	}
}

// TestNewTaskRefusesAnUnaddressableTaskID: every constructor refuses an
// asynq.TaskID the dashboard cannot put in the address of a single-task
// action (the browser resolves "." and ".." segments and cuts the path at
// "?" or "#", "/" and "\" split it, "%" escapes): with ErrInvalidTaskID,
// in a short error that quotes at most the id's first 64 characters. Ids
// with other characters, dots within, a colon (the scheduler's
// sched:<id>:<tick>) or non-ASCII letters are accepted, and ValidTaskID
// says the same as the constructors.
func TestNewTaskRefusesAnUnaddressableTaskID(t *testing.T) {
	t.Parallel()
	bad := []string{"crm/7781", "../pending_tasks:delete_all", `a\b`, "victim?", "a#b", "pct%2Fid", ".", "..", "victim ", " victim", " ",
		"a\x00b", "tab\tid", "nl\n", "del\x7f", "c1\u0085", strings.Repeat("x", 200) + "/"}
	good := []string{"crm-7781", "a.b", "...", "..a", "a..", "sched:renew.example:1700000000", "ü-ß", "a b", "x:run", "L"}
	for name, build := range everyConstructor() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, id := range bad {
				for _, opts := range [][]asynq.Option{{asynq.TaskID(id)}, {asynq.Queue("bulk"), asynq.TaskID(id), asynq.MaxRetry(1)}} {
					task, err := build(opts...)
					if task != nil || !errors.Is(err, tasks.ErrInvalidTaskID) {
						t.Fatalf("id %q: task %t, error %v; want no task and ErrInvalidTaskID", id, task != nil, err)
					}
					if msg := err.Error(); len(msg) > 300 || strings.Contains(msg, strings.Repeat("x", 65)) {
						t.Errorf("id %.70q: error %q (%d bytes): want a short one", id, msg, len(msg))
					}
				}
				if tasks.ValidTaskID(id) {
					t.Errorf("ValidTaskID(%q) = true", id)
				}
			}
			for _, id := range good {
				if task, err := build(asynq.TaskID(id)); err != nil || task == nil {
					t.Errorf("id %q: %v", id, err)
				}
				if !tasks.ValidTaskID(id) {
					t.Errorf("ValidTaskID(%q) = false", id)
				}
			}
		})
	}
	if tasks.ValidTaskID(strings.Repeat("L", tasks.MaxTaskIDBytes+1)) || tasks.ValidTaskID("") {
		t.Error("ValidTaskID accepts an id NewTask refuses: too long, or empty")
	}
}

// A queue name no certmail worker could serve (upper case, a space, a
// no-break space, a slash, too long) is refused by every constructor with
// ErrInvalidQueue, in a short error quoting at most the name's first 64
// characters; so is one that a later asynq.Queue overrides, as an
// over-long asynq.TaskID is. The names ValidQueueName accepts, and no Queue
// option at all (DefaultQueue), build a task.
func TestNewTaskRefusesAnInvalidQueue(t *testing.T) {
	t.Parallel()
	constructors := everyConstructor()
	long := strings.Repeat("q", 64) + strings.Repeat("Z", 5000)
	for _, tt := range []struct {
		name  string
		opts  []asynq.Option
		valid bool
	}{
		{"Default", []asynq.Option{asynq.Queue("Default")}, false},
		{"no-break space", []asynq.Option{asynq.Queue("default\u00a0")}, false},
		{"space", []asynq.Option{asynq.Queue("crit ical")}, false},
		{"slash", []asynq.Option{asynq.Queue("bulk/1")}, false},
		{"64 characters", []asynq.Option{asynq.Queue(strings.Repeat("q", 64))}, false},
		{"long", []asynq.Option{asynq.Queue(long)}, false},
		{"overridden", []asynq.Option{asynq.Queue("Bulk"), asynq.Queue("bulk")}, false},
		{"default", []asynq.Option{asynq.Queue("default")}, true},
		{"bulk", []asynq.Option{asynq.Queue("bulk"), asynq.MaxRetry(1)}, true},
		{"a_b-1", []asynq.Option{asynq.Queue("a_b-1")}, true},
		{"63 characters", []asynq.Option{asynq.Queue(strings.Repeat("q", 63))}, true},
		{"no Queue option", nil, true},
	} {
		for name, build := range constructors {
			task, err := build(tt.opts...)
			if tt.valid {
				if err != nil || task == nil {
					t.Errorf("%s, %s: task %t, error %v; want a task", name, tt.name, task != nil, err)
				}
				continue
			}
			if task != nil || !errors.Is(err, tasks.ErrInvalidQueue) {
				t.Errorf("%s, %s: task %t, error %v; want no task and ErrInvalidQueue", name, tt.name, task != nil, err)
				continue
			}
			if msg := err.Error(); len(msg) > 200 || strings.Contains(msg, "Z") || !strings.Contains(msg, "1-63 characters of a-z") {
				t.Errorf("%s, %s: error %q; want a short one naming the rule, with at most the name's first 64 characters", name, tt.name, msg)
			}
		}
	}
}

// A timeout (or deadline) that would leave no delivery the time a DigiCert
// call needs is refused with ErrTimeoutTooShort, as asynq keeps a timeout:
// in whole seconds, so 3.9 s is 3 s and 2.9 s is 2 s. MinTimeout itself,
// no timeout option, asynq.Timeout(0) (no timeout of the caller's) and a
// deadline far enough ahead build a task. A short timeout that a later
// option overrides is refused too, as an invalid queue name is.
func TestNewTaskRefusesATimeoutTooShort(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		opts  []asynq.Option
		valid bool
	}{
		{"1.5s", []asynq.Option{asynq.Timeout(1500 * time.Millisecond)}, false},
		{"2.9s", []asynq.Option{asynq.Timeout(2900 * time.Millisecond)}, false},
		{"negative", []asynq.Option{asynq.Timeout(-time.Minute)}, false},
		{"raised then lowered", []asynq.Option{asynq.Timeout(time.Minute), asynq.Timeout(time.Second)}, false},
		{"deadline 1s ahead", []asynq.Option{asynq.Deadline(time.Now().Add(time.Second))}, false},
		{"deadline past", []asynq.Option{asynq.Deadline(time.Now().Add(-time.Hour))}, false},
		{"MinTimeout", []asynq.Option{asynq.Timeout(tasks.MinTimeout)}, true},
		{"3.9s", []asynq.Option{asynq.Timeout(3900 * time.Millisecond)}, true},
		{"zero", []asynq.Option{asynq.Timeout(0)}, true},
		{"lowered then raised", []asynq.Option{asynq.Timeout(time.Second), asynq.Timeout(time.Minute)}, false},
		{"deadline a minute ahead", []asynq.Option{asynq.Deadline(time.Now().Add(time.Minute))}, true},
		{"no timeout option", nil, true},
	} {
		task, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 1}, tt.opts...)
		if tt.valid {
			if err != nil || task == nil {
				t.Errorf("%s: task %t, error %v; want a task", tt.name, task != nil, err)
			}
			continue
		}
		if task != nil || !errors.Is(err, tasks.ErrTimeoutTooShort) {
			t.Errorf("%s: task %t, error %v; want no task and ErrTimeoutTooShort", tt.name, task != nil, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "at least "+tasks.MinTimeout.String()) {
			t.Errorf("%s: error %q does not name the least timeout", tt.name, msg)
		}
	}
}

func TestNewTaskReportsIndexesAsSent(t *testing.T) {
	t.Parallel()
	_, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a@example.com", "A@example.com", "not an address"}})
	assertProblems(t, tasks.TypeSetEmails, err, []tasks.FieldError{fe("additional_emails[2]", msgBare)})
	_, err = tasks.NewSendCertTask(tasks.SendCert{CertificateID: 1, Emails: []string{"x"}})
	assertProblems(t, tasks.TypeSendCert, err, []tasks.FieldError{fe("emails[0]", msgBare), fe("certificate_collect_format", "required")})
	_, err = tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{{Domain: "example.com"}}})
	assertProblems(t, tasks.TypeResendDCV, err, []tasks.FieldError{fe("domain_approval_emails[0].email", "required")})
}

func TestMarshalSetEmails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"nil list", tasks.SetEmails{OrderID: 1}, `{"order_id":1,"additional_emails":[]}`},
		{"empty list", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}, `{"order_id":1,"additional_emails":[]}`},
		{"pointer", &tasks.SetEmails{OrderID: 1}, `{"order_id":1,"additional_emails":[]}`},
		{"nested", struct {
			P tasks.SetEmails `json:"p"`
		}{tasks.SetEmails{OrderID: 2, Account: "eu", Sequence: 3}}, `{"p":{"order_id":2,"additional_emails":[],"account":"eu","sequence":3}}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.v)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if string(b) != tt.want {
			t.Errorf("%s: json.Marshal = %s, want %s", tt.name, b, tt.want)
		}
	}
}

func TestDigiCertBody(t *testing.T) {
	t.Parallel()
	type bodier interface{ DigiCertBody() ([]byte, error) }
	tests := []struct {
		name string
		p    bodier
		want string
	}{
		{"set-emails nil list", tasks.SetEmails{OrderID: 1, Account: "eu", Sequence: 99}, `{"additional_emails":[]}`},
		{"set-emails empty list", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}, `{"additional_emails":[]}`},
		{"set-emails normalised", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"jill.valentine@Example.com ", "JILL.valentine@example.com", "leon.kennedy@example.com"}},
			`{"additional_emails":["jill.valentine@example.com","leon.kennedy@example.com"]}`},
		{"resend-dcv nothing optional", tasks.ResendDCV{OrderID: 1, Account: "eu"}, `{}`},
		{"resend-dcv empty entries", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{}}, `{}`},
		{"resend-dcv locale only", tasks.ResendDCV{OrderID: 1, Locale: "en"}, `{"locale":"en"}`},
		{"resend-dcv entries only", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{{Domain: "example.com", Email: "admin@example.com"}}},
			`{"domain_approval_emails":[{"domain":"example.com","email":"admin@example.com"}]}`},
		{"resend-dcv full", tasks.ResendDCV{OrderID: 1, Locale: "en", Account: "eu", DomainApprovalEmails: []tasks.DomainApprovalEmail{
			{Domain: "example.com", Email: "someone@example.com"},
			{Domain: "sub.example2.com", Email: "someone@example2.com", EmailDomain: "example2.com"},
		}}, `{"domain_approval_emails":[{"domain":"example.com","email":"someone@example.com"},{"domain":"sub.example2.com","email":"someone@example2.com","email_domain":"example2.com"}],"locale":"en"}`},
		{"resend-dcv only if pending is certmail's", tasks.ResendDCV{OrderID: 1, Locale: "en", OnlyIfPending: true}, `{"locale":"en"}`},
		{"resend-domain-dcv nothing optional", tasks.ResendDomainDCV{DomainID: 1234, Account: "eu"}, `{}`},
		{"resend-domain-dcv empty list", tasks.ResendDomainDCV{DomainID: 1234, EmailArray: []string{}}, `{}`},
		{"resend-domain-dcv name scope only", tasks.ResendDomainDCV{DomainID: 1234, NameScope: "Sub.Example.com."}, `{"name_scope":"sub.example.com"}`},
		{"resend-domain-dcv full", tasks.ResendDomainDCV{DomainID: 1234, NameScope: "sub.example.com", Locale: "en", EmailArray: []string{"admin@example.com", "ADMIN@example.com"}},
			`{"name_scope":"sub.example.com","locale":"en","email_array":["admin@example.com"]}`},
		{"send-cert without message", tasks.SendCert{CertificateID: 456, Emails: []string{"jill.valentine@example.com"}, CertificateCollectFormat: "attachment", Account: "eu"},
			`{"emails":["jill.valentine@example.com"],"certificate_collect_format":"attachment"}`},
		{"send-cert with message", tasks.SendCert{CertificateID: 456, Emails: []string{"jill.valentine@example.com"}, CertificateCollectFormat: "attachment", CustomMessage: "Please install this certificate!"},
			`{"emails":["jill.valentine@example.com"],"certificate_collect_format":"attachment","custom_message":"Please install this certificate!"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := tt.p.DigiCertBody()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("DigiCertBody() =\n%s\nwant\n%s", b, tt.want)
			}
		})
	}
}

func TestDigiCertBodyRejectsInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body func() ([]byte, error)
	}{
		{"set-emails", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"bad"}}.DigiCertBody},
		{"resend-dcv", tasks.ResendDCV{OrderID: 1, Locale: "english"}.DigiCertBody},
		{"send-cert", tasks.SendCert{CertificateID: 1, CertificateCollectFormat: "attachment"}.DigiCertBody},
		{"resend-domain-dcv", tasks.ResendDomainDCV{DomainID: 1, EmailArray: []string{"bad"}}.DigiCertBody},
	}
	for _, tt := range tests {
		b, err := tt.body()
		var ve *tasks.ValidationError
		if b != nil || !errors.As(err, &ve) {
			t.Errorf("%s: DigiCertBody = %s, %v; want nil, *ValidationError", tt.name, b, err)
		}
	}
}

func sequenceOf(t *testing.T, task *asynq.Task) int64 {
	t.Helper()
	var p tasks.SetEmails
	if err := json.Unmarshal(task.Payload(), &p); err != nil {
		t.Fatal(err)
	}
	return p.Sequence
}

func TestSequenceStamped(t *testing.T) {
	t.Parallel()
	before := time.Now().UnixNano()
	task, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := sequenceOf(t, task); got < before {
		t.Fatalf("stamped sequence %d is before the call (%d)", got, before)
	}
	task, err = tasks.NewTask(tasks.SetEmails{OrderID: 1, Sequence: 42})
	if err != nil {
		t.Fatal(err)
	}
	if got := sequenceOf(t, task); got != 42 {
		t.Fatalf("sequence = %d, want the caller's 42", got)
	}
	p := tasks.SetEmails{OrderID: 1}
	if _, err := tasks.NewTask(&p); err != nil {
		t.Fatal(err)
	}
	if p.Sequence != 0 {
		t.Fatal("NewTask changed the caller's payload")
	}
}

func TestSequenceStrictlyIncreasingUnderConcurrency(t *testing.T) {
	t.Parallel()
	const workers, each = 8, 500
	got := make([][]int64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				task, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1})
				if err != nil {
					t.Error(err)
					return
				}
				var p tasks.SetEmails
				if err := json.Unmarshal(task.Payload(), &p); err != nil {
					t.Error(err)
					return
				}
				got[w] = append(got[w], p.Sequence)
			}
		})
	}
	wg.Wait()
	seen := make(map[int64]bool, workers*each)
	for w, seqs := range got {
		if len(seqs) != each {
			t.Fatalf("worker %d made %d tasks, want %d", w, len(seqs), each)
		}
		for i, s := range seqs {
			if i > 0 && s <= seqs[i-1] {
				t.Fatalf("worker %d: sequence %d after %d", w, s, seqs[i-1])
			}
			if seen[s] {
				t.Fatalf("sequence %d handed out twice", s)
			}
			seen[s] = true
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	payloads := []tasks.Payload{
		tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"B@Example.com", "c@example.com"}, Account: "eu", Sequence: 5},
		tasks.SetEmails{OrderID: 1},
		tasks.ResendDCV{OrderID: 2, DomainApprovalEmails: []tasks.DomainApprovalEmail{{Domain: "a.example.com", Email: "x@example.com", EmailDomain: "example.com"}}, Locale: "de_DE"},
		tasks.SendCert{CertificateID: 3, Emails: []string{"a@example.com"}, CertificateCollectFormat: "plaintext", CustomMessage: "\u2028 \"quoted\" \\ é\t"},
		tasks.ResendDCV{OrderID: 4, OnlyIfPending: true},
		tasks.ResendDomainDCV{DomainID: 5, NameScope: "Sub.Example.com", Locale: "en", EmailArray: []string{"A@Example.com", "a@example.com"}, Account: "eu"},
	}
	for _, p := range payloads {
		task, err := tasks.NewTask(p)
		if err != nil {
			t.Fatal(err)
		}
		back, err := tasks.Parse(task.Type(), task.Payload())
		if err != nil {
			t.Fatal(err)
		}
		want := p.Normalized()
		if s, ok := want.(tasks.SetEmails); ok && s.Sequence == 0 {
			s.Sequence = back.(tasks.SetEmails).Sequence
			want = s
		}
		if !reflect.DeepEqual(back, want) {
			t.Errorf("round trip of %T:\n got %#v\nwant %#v", p, back, want)
		}
	}
}
