package tasks_test

import (
	"testing"

	"github.com/certmail/certmail/tasks"
)

// BenchmarkParse measures Parse on the payloads the HTTP API and the worker
// see most: one address for set-emails, an order id for resend-dcv.
func BenchmarkParse(b *testing.B) {
	for _, c := range []struct{ typ, payload string }{
		{tasks.TypeSetEmails, `{"order_id": 4242, "additional_emails": ["bench@example.com"]}`},
		{tasks.TypeResendDCV, `{"order_id":4242}`},
		{tasks.TypeResendDCV, `{"order_id":4242,"domain_approval_emails":[{"domain":"example.com","email":"admin@example.com"}],"locale":"en"}`},
	} {
		b.Run(c.typ, func(b *testing.B) {
			data := []byte(c.payload)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tasks.Parse(c.typ, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNewTask measures NewTask on the set-emails payload the API bench
// sends, as the API makes its task after Check.
func BenchmarkNewTask(b *testing.B) {
	p := tasks.SetEmails{OrderID: 4242, AdditionalEmails: []string{"bench@example.com"}, Sequence: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tasks.NewTask(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNewTaskSetEmailsBytes holds the bytes of a set-emails task's payload, which
// marshal takes from SetEmails.MarshalJSON without a second pass:
// compact, '&' not escaped, fields in their order.
func TestNewTaskSetEmailsBytes(t *testing.T) {
	task, err := tasks.NewTask(tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a&b@example.com"}, Sequence: 7})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(task.Payload()), `{"order_id":1,"additional_emails":["a&b@example.com"],"sequence":7}`; got != want {
		t.Errorf("payload %s, want %s", got, want)
	}
}
