package tasks_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// The fuzz targets check, for any input:
//   - Parse never panics, and fails only with a *ValidationError;
//   - what Parse accepts validates, is already normalised, becomes a task, and
//     parses back from the task's payload to the same value;
//   - for what a lenient json.Unmarshal makes of the input, and for a payload
//     built straight from the input's bytes (which may be invalid UTF-8, which
//     JSON decoding never yields), NewTask succeeds exactly when Validate
//     passes: nothing Validate rejects ever becomes a task.

var (
	setEmailsSeeds = []string{
		`{"order_id":123,"additional_emails":["a@example.com"]}`,
		`{"order_id":1,"additional_emails":[]}`,
		`{"order_id":1,"additional_emails":[" Jill@EXAMPLE.com ","jill@example.com"],"account":"eu","sequence":5}`,
		`{"order_id":1,"additional_emails":null}`,
		`{"order_id":1}`,
		`{"order_id":1.5,"additional_emails":[]}`,
		`{"order_id":"1","additional_emails":[]}`,
		`{"order_id":9223372036854775808,"additional_emails":[]}`,
		`{"order_id":-1,"additional_emails":[1,null,"Jill <j@example.com>"]}`,
		`{"order_id":1,"additional_emails":[],"colour":"red"}`,
		`{"order_id":1,"additional_emails":[]} {}`,
		`{"order_id":1,"additional_emails":[]}x`,
		`{"order_id":1,"order_id":2,"additional_emails":[]}`,
		`{"order\u005fid":1,"additional_emails":[]}`,
		`{"order_id":1,"order\u005fid":2,"additional_emails":[]}`,
		`{"order_id":1,"additional_emails":["a@example.com."],"sequence":-1}`,
		`{"order_id":1,"additional_emails":["a@EXAMPLE.\u212Aom"]}`,
		`{"order_id":1,"additional_emails":["\u00a0a@example.com\u0085"]}`,
		`null`, ``, `[]`, `{`, `"x"`,
	}
	resendDCVSeeds = []string{
		`{"order_id":123}`,
		`{"order_id":123,"domain_approval_emails":[{"domain":"example.com","email":"someone@example.com"},{"domain":"sub.example2.com","email":"someone@example2.com","email_domain":"example2.com"}],"locale":"en"}`,
		`{"order_id":1,"domain_approval_emails":[{"domain":"Example.COM.","email":"A@Example.com"},{"domain":"example.com","email":"a@example.com"}],"locale":"en_US","account":"eu"}`,
		`{"order_id":1,"domain_approval_emails":[]}`,
		`{"order_id":1,"domain_approval_emails":[null,1,{}]}`,
		`{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.org","email_domain":"example.org"}]}`,
		`{"order_id":1,"domain_approval_emails":[{"domain":"example.com..","email":"a@example.com","colour":1}]}`,
		`{"order_id":1,"domain_approval_emails":{"domain":"example.com"}}`,
		`{"order_id":1,"locale":"EN"}`,
		`{"order_id":1,"only_if_pending":true}`,
		`{"order_id":1,"only_if_pending":"yes"}`,
		`{"order_id":"1"}`,
		`null`, ``, `[]`,
	}
	resendDomainDCVSeeds = []string{
		`{"domain_id":1234}`,
		`{"domain_id":1234,"name_scope":"sub.example.com","locale":"en","email_array":["admin@example.com"]}`,
		`{"domain_id":1,"name_scope":"Sub.Example.COM.","email_array":[" A@Example.com","a@example.com"],"account":"eu"}`,
		`{"domain_id":1,"email_array":[]}`,
		`{"domain_id":1,"email_array":[null,1,"x"]}`,
		`{"domain_id":1,"name_scope":"*.example.com","locale":"en-US"}`,
		`{"domain_id":"1","order_id":1}`,
		`{}`, `null`, ``, `[]`,
	}
	sendCertSeeds = []string{
		`{"certificate_id":456,"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":"Please install this certificate!"}`,
		`{"certificate_id":1,"emails":["a@example.com","A@EXAMPLE.COM"],"certificate_collect_format":"downloadlink"}`,
		`{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"plaintext","custom_message":"a\nb\tc\u2028"}`,
		`{"certificate_id":1,"emails":[],"certificate_collect_format":"attachment"}`,
		`{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"zip"}`,
		`{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":"\u0000\r"}`,
		`{"certificate_id":1.0,"emails":"a@example.com"}`,
		`{}`, `null`, ``, `[]`,
	}
)

func FuzzParseSetEmails(f *testing.F) {
	fuzzParse(f, tasks.TypeSetEmails, setEmailsSeeds,
		func(data []byte) (tasks.Payload, error) {
			var p tasks.SetEmails
			return p, json.Unmarshal(data, &p)
		},
		func(s []string) tasks.Payload {
			return tasks.SetEmails{OrderID: 1, AdditionalEmails: s[:3], Account: s[3]}
		})
}

func FuzzParseResendDCV(f *testing.F) {
	fuzzParse(f, tasks.TypeResendDCV, resendDCVSeeds,
		func(data []byte) (tasks.Payload, error) {
			var p tasks.ResendDCV
			return p, json.Unmarshal(data, &p)
		},
		func(s []string) tasks.Payload {
			return tasks.ResendDCV{OrderID: 1, Locale: s[0], DomainApprovalEmails: []tasks.DomainApprovalEmail{
				{Domain: s[1], Email: s[2], EmailDomain: s[3]},
			}}
		})
}

func FuzzParseResendDomainDCV(f *testing.F) {
	fuzzParse(f, tasks.TypeResendDomainDCV, resendDomainDCVSeeds,
		func(data []byte) (tasks.Payload, error) {
			var p tasks.ResendDomainDCV
			return p, json.Unmarshal(data, &p)
		},
		func(s []string) tasks.Payload {
			return tasks.ResendDomainDCV{DomainID: 1, NameScope: s[0], Locale: s[1], EmailArray: s[2:3], Account: s[3]}
		})
}

func FuzzParseSendCert(f *testing.F) {
	fuzzParse(f, tasks.TypeSendCert, sendCertSeeds,
		func(data []byte) (tasks.Payload, error) {
			var p tasks.SendCert
			return p, json.Unmarshal(data, &p)
		},
		func(s []string) tasks.Payload {
			return tasks.SendCert{CertificateID: 1, Emails: s[2:3], CertificateCollectFormat: s[1], CustomMessage: s[0], Account: s[3]}
		})
}

// fuzzParse runs the properties above. lenient decodes without Parse's
// strictness; direct builds a payload from four strings cut from the input.
func fuzzParse(f *testing.F, typ string, seeds []string, lenient func([]byte) (tasks.Payload, error), direct func([]string) tasks.Payload) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte("a@example.com\nB@Example.com\nb@example.com\nteam"))
	f.Add([]byte("Hello\tthere\nattachment\nb@Example.com\nteam"))
	f.Add([]byte("en\nSub.Example.com.\nadmin@Example.com\nexample.com"))
	f.Add([]byte("\xff\nx@y\x00.com\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := tasks.Parse(typ, data)
		if err != nil {
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) || ve.Type != typ || len(ve.Errors) == 0 || !errors.Is(err, tasks.ErrInvalidPayload) {
				t.Fatalf("Parse error %T %v, want a non-empty *ValidationError", err, err)
			}
			if p != nil {
				t.Fatalf("Parse returned %#v with an error", p)
			}
		} else {
			if p.TaskType() != typ {
				t.Fatalf("Parse(%s) returned a %s", typ, p.TaskType())
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("Parse accepted what Validate rejects: %v", err)
			}
			if n := p.Normalized(); !reflect.DeepEqual(n, p) {
				t.Fatalf("Parse result is not normalised:\n%#v\n%#v", p, n)
			}
			assertTaskRoundTrip(t, p)
		}

		if q, err := lenient(data); err == nil {
			assertValidateGatesNewTask(t, q)
		}
		parts := strings.SplitN(string(data), "\n", 4)
		for len(parts) < 4 {
			parts = append(parts, "")
		}
		assertValidateGatesNewTask(t, direct(parts))
	})
}

// assertValidateGatesNewTask checks that NewTask fails exactly when Validate
// does, and that an accepted payload survives the trip through a task.
func assertValidateGatesNewTask(t *testing.T, p tasks.Payload) {
	t.Helper()
	verr := p.Validate()
	task, err := tasks.NewTask(p)
	switch {
	case verr != nil && err == nil:
		t.Fatalf("NewTask accepted what Validate rejects (%v): %s", verr, task.Payload())
	case verr == nil && err != nil:
		t.Fatalf("NewTask rejected what Validate accepts: %v", err)
	case verr == nil:
		if err := p.Normalized().Validate(); err != nil {
			t.Fatalf("normalising a valid payload made it invalid: %v", err)
		}
		assertTaskRoundTrip(t, p)
	}
}

// assertTaskRoundTrip turns the valid p into a task, parses the task's payload
// back strictly, and compares with p normalised (and stamped).
func assertTaskRoundTrip(t *testing.T, p tasks.Payload) {
	t.Helper()
	task, err := tasks.NewTask(p)
	if err != nil {
		t.Fatalf("NewTask of a valid payload: %v", err)
	}
	back, err := tasks.Parse(task.Type(), task.Payload())
	if err != nil {
		t.Fatalf("Parse of NewTask's own payload %s: %v", task.Payload(), err)
	}
	want := p.Normalized()
	if s, ok := want.(tasks.SetEmails); ok && s.Sequence == 0 {
		got := back.(tasks.SetEmails).Sequence
		if got <= 0 {
			t.Fatalf("sequence not stamped: %d", got)
		}
		s.Sequence = got
		want = s
	}
	if !reflect.DeepEqual(back, want) {
		t.Fatalf("round trip:\n got %#v\nwant %#v", back, want)
	}
	type bodier interface{ DigiCertBody() ([]byte, error) }
	body, err := back.(bodier).DigiCertBody()
	if err != nil || !json.Valid(body) {
		t.Fatalf("DigiCertBody of a valid payload = %s, %v", body, err)
	}
}
