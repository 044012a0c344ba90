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
