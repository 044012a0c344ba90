package main_test

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/tasks"
)

// TestFakeDigicertBinary calls each endpoint with the client against
// `certmail fake-digicert` run as a process, the way the README starts it.
func TestFakeDigicertBinary(t *testing.T) {
	t.Parallel()
	// Port 0: the fake prints the address it listens on (a port found free
	// beforehand could be another test's by the time the fake binds it).
	fake := start(t, "fake-digicert", nil, "fake-digicert", "--addr", "127.0.0.1:0", "--api-key", "good-key",
		"--orders", "1001", "--certs", "2002", "--approve-after", "2")
	listening := regexp.MustCompile(`\bat (http://127\.0\.0\.1:[0-9]+/services/v2)\n`)
	var baseURL string
	waitFor(t, 20*time.Second, func() bool {
		m := listening.FindStringSubmatch(fake.output())
		if m != nil {
			baseURL = m[1]
		}
		return m != nil
	}, func() string { return "fake-digicert printed no address it listens on: " + fake.output() })
	client := func(key string) *digicert.Client {
		c, err := digicert.New(digicert.Config{BaseURL: baseURL, APIKey: key, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good, bad := client("good-key"), client("bad-key")

	body := func(p interface{ DigiCertBody() ([]byte, error) }) []byte {
		b, err := p.DigiCertBody()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	setEmails := body(tasks.SetEmails{OrderID: 1001, AdditionalEmails: []string{}})
	resend := body(tasks.ResendDCV{OrderID: 1001})
	send := body(tasks.SendCert{CertificateID: 2002, Emails: []string{"ops@example.com"}, CertificateCollectFormat: "attachment"})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tests := []struct {
		name   string
		call   func() (digicert.Result, error)
		status int
		class  digicert.Class
	}{
		{"set-emails", func() (digicert.Result, error) { return good.SetAdditionalEmails(ctx, 1001, setEmails) }, 204, digicert.ClassNone},
		{"resend-dcv", func() (digicert.Result, error) { return good.ResendDCVEmails(ctx, 1001, resend) }, 204, digicert.ClassNone},
		{"send-cert", func() (digicert.Result, error) { return good.SendCertificateEmail(ctx, 2002, send) }, 204, digicert.ClassNone},
		{"unknown order", func() (digicert.Result, error) { return good.ResendDCVEmails(ctx, 9, resend) }, 404, digicert.ClassPermanent},
		{"unknown certificate", func() (digicert.Result, error) { return good.SendCertificateEmail(ctx, 9, send) }, 404, digicert.ClassPermanent},
		{"wrong key", func() (digicert.Result, error) { return bad.SetAdditionalEmails(ctx, 1001, setEmails) }, 403, digicert.ClassAuth},
	}
	for _, tt := range tests {
		res, err := tt.call()
		if tt.status == 204 {
			if err != nil || res.Status != 204 {
				t.Errorf("%s: status %d, error %v; want 204", tt.name, res.Status, err)
			}
			continue
		}
		var apiErr *digicert.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != tt.status || digicert.Classify(err) != tt.class {
			t.Errorf("%s: error %v (class %v), want a %d classified %v", tt.name, err, digicert.Classify(err), tt.status, tt.class)
		}
	}
	// Order 1001 is a pending DV order whose one domain has its id; the
	// second resend that reaches the domain (--approve-after 2) approves it
	// and issues the order.
	if v, _, err := good.OrderValidation(ctx, 1001); err != nil || !v.Pending() || !v.DV() || len(v.PendingEmailDomains()) != 1 {
		t.Fatalf("validation before: %+v, %v", v, err)
	}
	if res, err := good.ResendDomainDCVEmails(ctx, 1001, body(tasks.ResendDomainDCV{DomainID: 1001})); err != nil || res.Status != 204 {
		t.Fatalf("domain resend: %+v, %v", res, err)
	}
	if v, _, err := good.OrderValidation(ctx, 1001); err != nil || v.OrderStatus != "issued" || len(v.PendingEmailDomains()) != 0 {
		t.Errorf("validation after two resends: %+v, %v; want the order issued", v, err)
	}
}
