package tasks_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/certmail/certmail/tasks"
)

const (
	msgBare     = "not a bare email address"
	msgTooMany  = "at most 100 entries"
	msgDNS      = "not a valid DNS name"
	msgParent   = "domain must equal it or be a subdomain of it"
	msgLocale   = "must look like ll or ll_CC (e.g. en, en_US)"
	msgAccount  = "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
	msgCollect  = "must be one of attachment, plaintext, downloadlink"
	msgCtrl     = "must not contain control characters other than newline and tab"
	msgTooLong  = "at most 2000 characters"
	msgUTF8     = "must be valid UTF-8"
	msgPositive = "must be greater than 0"
)

func TestSetEmailsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    tasks.SetEmails
		want []tasks.FieldError
	}{
		{"one email", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"jill@example.com"}}, nil},
		{"nil list clears", tasks.SetEmails{OrderID: 1}, nil},
		{"empty list clears", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}, nil},
		{"surrounding spaces are trimmed", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{" jill@Example.com\t"}}, nil},
		{"100 emails", tasks.SetEmails{OrderID: 1, AdditionalEmails: emails(100)}, nil},
		{"101 with a duplicate", tasks.SetEmails{OrderID: 1, AdditionalEmails: append(emails(100), "USER7@EXAMPLE.COM")}, nil},
		{"account and sequence", tasks.SetEmails{OrderID: 1 << 62, Account: "eu", Sequence: 5}, nil},

		{"order id missing", tasks.SetEmails{}, []tasks.FieldError{fe("order_id", "required")}},
		{"order id negative", tasks.SetEmails{OrderID: -3}, []tasks.FieldError{fe("order_id", msgPositive)}},
		{"101 emails", tasks.SetEmails{OrderID: 1, AdditionalEmails: emails(101)}, []tasks.FieldError{fe("additional_emails", msgTooMany)}},
		{"bad email", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"jill@example.com", "Jill <jill@example.com>"}},
			[]tasks.FieldError{fe("additional_emails[1]", msgBare)}},
		{"empty email", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"  "}},
			[]tasks.FieldError{fe("additional_emails[0]", "must not be empty")}},
		{"index as sent, before de-duplication", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a@example.com", "A@EXAMPLE.COM", "bad"}},
			[]tasks.FieldError{fe("additional_emails[2]", msgBare)}},
		{"duplicate bad emails each reported", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"bad", "BAD"}},
			[]tasks.FieldError{fe("additional_emails[0]", msgBare), fe("additional_emails[1]", msgBare)}},
		{"bad account", tasks.SetEmails{OrderID: 1, Account: "EU"}, []tasks.FieldError{fe("account", msgAccount)}},
		{"negative sequence", tasks.SetEmails{OrderID: 1, Sequence: -1}, []tasks.FieldError{fe("sequence", "must not be negative")}},
		{"every problem at once",
			tasks.SetEmails{OrderID: -1, AdditionalEmails: append([]string{"x"}, emails(101)...), Account: "-", Sequence: -2},
			[]tasks.FieldError{
				fe("order_id", msgPositive),
				fe("additional_emails[0]", msgBare),
				fe("additional_emails", msgTooMany),
				fe("account", msgAccount),
				fe("sequence", "must not be negative"),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assertProblems(t, tasks.TypeSetEmails, tt.p.Validate(), tt.want)
			assertProblems(t, tasks.TypeSetEmails, (&tt.p).Validate(), tt.want)
		})
	}
}

func TestSetEmailsNormalized(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   tasks.SetEmails
		want tasks.SetEmails
	}{
		{
			"trim, lower-case domain, drop case-insensitive duplicates keeping the first",
			tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{" Jill@Example.COM ", "jill@example.com", "JILL@EXAMPLE.COM", "leon@example.com"}, Account: "eu", Sequence: 9},
			tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"Jill@example.com", "leon@example.com"}, Account: "eu", Sequence: 9},
		},
		{"nil becomes empty", tasks.SetEmails{OrderID: 1}, tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}},
		{"only ASCII letters are folded", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a@EXAMPLE.\u212Aom"}},
			tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a@example.\u212Aom"}}},
		{"Z is folded, first or later", tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a@Zeta.example", "b@AZ.example"}},
			tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{"a@zeta.example", "b@az.example"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := tt.in
			in.AdditionalEmails = append([]string(nil), tt.in.AdditionalEmails...)
			got := tt.in.Normalized()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Normalized() = %#v, want %#v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.in.AdditionalEmails, in.AdditionalEmails) {
				t.Errorf("Normalized changed its receiver: %q", tt.in.AdditionalEmails)
			}
			if again := got.Normalized(); !reflect.DeepEqual(again, got) {
				t.Errorf("Normalized is not idempotent: %#v", again)
			}
		})
	}
}

func TestResendDCVValidate(t *testing.T) {
	t.Parallel()
	entry := func(domain, email, emailDomain string) tasks.DomainApprovalEmail {
		return tasks.DomainApprovalEmail{Domain: domain, Email: email, EmailDomain: emailDomain}
	}
	many := func(n int) []tasks.DomainApprovalEmail {
		out := make([]tasks.DomainApprovalEmail, n)
		for i, e := range emails(n) {
			out[i] = entry("example.com", e, "")
		}
		return out
	}
	tests := []struct {
		name string
		p    tasks.ResendDCV
		want []tasks.FieldError
	}{
		{"order id only", tasks.ResendDCV{OrderID: 1}, nil},
		{"empty entries", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{}}, nil},
		{"entry without email domain", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com", "admin@example.com", "")}}, nil},
		{"email domain equal", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com", "admin@example.com", "example.com")}}, nil},
		{"subdomain of email domain", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("a.sub.example2.com", "someone@example2.com", "example2.com")}}, nil},
		{"case, spaces and one trailing dot", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry(" Sub.Example.COM. ", " admin@Example.com ", "EXAMPLE.com.")}}, nil},
		{"locale ll", tasks.ResendDCV{OrderID: 1, Locale: "en"}, nil},
		{"locale ll_CC", tasks.ResendDCV{OrderID: 1, Locale: "pt_BR"}, nil},
		{"locale with the first and last letters", tasks.ResendDCV{OrderID: 1, Locale: "az_AZ"}, nil},
		{"locale with the last and first letters", tasks.ResendDCV{OrderID: 1, Locale: "za_ZA"}, nil},
		{"100 entries", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: many(100)}, nil},
		{"101 entries with a duplicate", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: append(many(100), entry("EXAMPLE.COM.", "USER3@example.com", ""))}, nil},

		{"order id missing", tasks.ResendDCV{}, []tasks.FieldError{fe("order_id", "required")}},
		{"order id negative", tasks.ResendDCV{OrderID: -1}, []tasks.FieldError{fe("order_id", msgPositive)}},
		{"domain and email missing", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{{}}},
			[]tasks.FieldError{fe("domain_approval_emails[0].domain", "required"), fe("domain_approval_emails[0].email", "required")}},
		{"bad domain", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com", "a@example.com", ""), entry("exa_mple.com", "a@example.com", "")}},
			[]tasks.FieldError{fe("domain_approval_emails[1].domain", msgDNS)}},
		{"two trailing dots", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com..", "a@example.com", "")}},
			[]tasks.FieldError{fe("domain_approval_emails[0].domain", msgDNS)}},
		{"single label", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("localhost", "a@example.com", "")}},
			[]tasks.FieldError{fe("domain_approval_emails[0].domain", msgDNS)}},
		{"bad email", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com", "admin at example.com", "")}},
			[]tasks.FieldError{fe("domain_approval_emails[0].email", msgBare)}},
		{"bad email domain", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com", "a@example.com", "-example.com")}},
			[]tasks.FieldError{fe("domain_approval_emails[0].email_domain", msgDNS)}},
		{"email domain is a subdomain of domain", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com", "a@sub.example.com", "sub.example.com")}},
			[]tasks.FieldError{fe("domain_approval_emails[0].email_domain", msgParent)}},
		{"suffix but not a subdomain", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("notexample.com", "a@example.com", "example.com")}},
			[]tasks.FieldError{fe("domain_approval_emails[0].email_domain", msgParent)}},
		{"unrelated email domain", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{entry("example.com", "a@example.org", "example.org")}},
			[]tasks.FieldError{fe("domain_approval_emails[0].email_domain", msgParent)}},
		{"101 entries", tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: many(101)}, []tasks.FieldError{fe("domain_approval_emails", msgTooMany)}},
		{"locale upper case", tasks.ResendDCV{OrderID: 1, Locale: "EN"}, []tasks.FieldError{fe("locale", msgLocale)}},
		{"locale with hyphen", tasks.ResendDCV{OrderID: 1, Locale: "en-US"}, []tasks.FieldError{fe("locale", msgLocale)}},
		{"locale lower-case country", tasks.ResendDCV{OrderID: 1, Locale: "en_us"}, []tasks.FieldError{fe("locale", msgLocale)}},
		{"locale three letters", tasks.ResendDCV{OrderID: 1, Locale: "eng"}, []tasks.FieldError{fe("locale", msgLocale)}},
		{"bad account", tasks.ResendDCV{OrderID: 1, Account: "a b"}, []tasks.FieldError{fe("account", msgAccount)}},
		{"every problem at once",
			tasks.ResendDCV{OrderID: 0, DomainApprovalEmails: append([]tasks.DomainApprovalEmail{
				entry("", "", "bad_domain"),
				entry("example.com", "x", "sub.example.com"),
			}, many(101)...), Locale: "english", Account: "A"},
			[]tasks.FieldError{
				fe("order_id", "required"),
				fe("domain_approval_emails[0].domain", "required"),
				fe("domain_approval_emails[0].email", "required"),
				fe("domain_approval_emails[0].email_domain", msgDNS),
				fe("domain_approval_emails[1].email", msgBare),
				fe("domain_approval_emails[1].email_domain", msgParent),
				fe("domain_approval_emails", msgTooMany),
				fe("locale", msgLocale),
				fe("account", msgAccount),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assertProblems(t, tasks.TypeResendDCV, tt.p.Validate(), tt.want)
		})
	}
}

func TestResendDCVNormalized(t *testing.T) {
	t.Parallel()
	in := tasks.ResendDCV{OrderID: 7, Locale: "en", Account: "eu", DomainApprovalEmails: []tasks.DomainApprovalEmail{
		{Domain: " Sub.Example2.COM. ", Email: " Someone@Example2.COM ", EmailDomain: "Example2.com."},
		{Domain: "sub.example2.com", Email: "someone@example2.com"}, // same domain and email: dropped
		{Domain: "example.com", Email: "Admin@example.com"},
		{Domain: "example.com", Email: "admin@EXAMPLE.com"}, // duplicate case-insensitively
		{Domain: "www.example.com", Email: "admin@example.com"},
	}}
	want := tasks.ResendDCV{OrderID: 7, Locale: "en", Account: "eu", DomainApprovalEmails: []tasks.DomainApprovalEmail{
		{Domain: "sub.example2.com", Email: "Someone@example2.com", EmailDomain: "example2.com"},
		{Domain: "example.com", Email: "Admin@example.com"},
		{Domain: "www.example.com", Email: "admin@example.com"},
	}}
	if got := in.Normalized(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Normalized() =\n%#v\nwant\n%#v", got, want)
	}
	empty := tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{}}
	if got := empty.Normalized().(tasks.ResendDCV); got.DomainApprovalEmails != nil {
		t.Errorf("empty entries normalised to %#v, want nil", got.DomainApprovalEmails)
	}
}

func TestSendCertValidate(t *testing.T) {
	t.Parallel()
	good := func(mod func(*tasks.SendCert)) tasks.SendCert {
		p := tasks.SendCert{CertificateID: 456, Emails: []string{"jill@example.com"}, CertificateCollectFormat: "attachment"}
		mod(&p)
		return p
	}
	tests := []struct {
		name string
		p    tasks.SendCert
		want []tasks.FieldError
	}{
		{"minimal", good(func(*tasks.SendCert) {}), nil},
		{"plaintext", good(func(p *tasks.SendCert) { p.CertificateCollectFormat = "plaintext" }), nil},
		{"downloadlink", good(func(p *tasks.SendCert) { p.CertificateCollectFormat = "downloadlink" }), nil},
		{"message with newline and tab", good(func(p *tasks.SendCert) { p.CustomMessage = "Hello,\n\tplease install <this> & that." }), nil},
		{"message of 2000 multi-byte characters", good(func(p *tasks.SendCert) { p.CustomMessage = strings.Repeat("é", 2000) }), nil},
		{"100 emails", good(func(p *tasks.SendCert) { p.Emails = emails(100) }), nil},
		{"duplicates removed before counting", good(func(p *tasks.SendCert) { p.Emails = append(emails(100), " user1@EXAMPLE.com") }), nil},
		{"account", good(func(p *tasks.SendCert) { p.Account = "eu" }), nil},

		{"certificate id missing", good(func(p *tasks.SendCert) { p.CertificateID = 0 }), []tasks.FieldError{fe("certificate_id", "required")}},
		{"certificate id negative", good(func(p *tasks.SendCert) { p.CertificateID = -456 }), []tasks.FieldError{fe("certificate_id", msgPositive)}},
		{"emails nil", good(func(p *tasks.SendCert) { p.Emails = nil }), []tasks.FieldError{fe("emails", "required")}},
		{"emails empty", good(func(p *tasks.SendCert) { p.Emails = []string{} }), []tasks.FieldError{fe("emails", "must list at least one address")}},
		{"bad email", good(func(p *tasks.SendCert) { p.Emails = []string{"jill@example.com", "jill@example", "leon@example.com"} }),
			[]tasks.FieldError{fe("emails[1]", "domain is not a valid DNS name")}},
		{"101 emails", good(func(p *tasks.SendCert) { p.Emails = emails(101) }), []tasks.FieldError{fe("emails", msgTooMany)}},
		{"format missing", good(func(p *tasks.SendCert) { p.CertificateCollectFormat = "" }), []tasks.FieldError{fe("certificate_collect_format", "required")}},
		{"format unknown", good(func(p *tasks.SendCert) { p.CertificateCollectFormat = "pdf" }), []tasks.FieldError{fe("certificate_collect_format", msgCollect)}},
		{"format is case-sensitive", good(func(p *tasks.SendCert) { p.CertificateCollectFormat = "Attachment" }), []tasks.FieldError{fe("certificate_collect_format", msgCollect)}},
		{"message too long", good(func(p *tasks.SendCert) { p.CustomMessage = strings.Repeat("é", 2001) }), []tasks.FieldError{fe("custom_message", msgTooLong)}},
		{"carriage return", good(func(p *tasks.SendCert) { p.CustomMessage = "a\r\nb" }), []tasks.FieldError{fe("custom_message", msgCtrl)}},
		{"NUL", good(func(p *tasks.SendCert) { p.CustomMessage = "a\x00" }), []tasks.FieldError{fe("custom_message", msgCtrl)}},
		{"DEL", good(func(p *tasks.SendCert) { p.CustomMessage = "a\x7f" }), []tasks.FieldError{fe("custom_message", msgCtrl)}},
		{"C1 control", good(func(p *tasks.SendCert) { p.CustomMessage = "a\u0085" }), []tasks.FieldError{fe("custom_message", msgCtrl)}},
		{"invalid UTF-8", good(func(p *tasks.SendCert) { p.CustomMessage = "a\xffb" }), []tasks.FieldError{fe("custom_message", msgUTF8)}},
		{"bad account", good(func(p *tasks.SendCert) { p.Account = "Team" }), []tasks.FieldError{fe("account", msgAccount)}},
		{"every problem at once",
			tasks.SendCert{CertificateID: -1, Emails: append([]string{"<a@example.com>"}, emails(101)...), CertificateCollectFormat: "zip",
				CustomMessage: strings.Repeat("x", 2001) + "\x01\xff", Account: "_"},
			[]tasks.FieldError{
				fe("certificate_id", msgPositive),
				fe("emails[0]", msgBare),
				fe("emails", msgTooMany),
				fe("certificate_collect_format", msgCollect),
				fe("custom_message", msgUTF8),
				fe("custom_message", msgTooLong),
				fe("custom_message", msgCtrl),
				fe("account", msgAccount),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assertProblems(t, tasks.TypeSendCert, tt.p.Validate(), tt.want)
		})
	}
}

func TestSendCertNormalized(t *testing.T) {
	t.Parallel()
	in := tasks.SendCert{CertificateID: 1, Emails: []string{" Jill@Example.com", "jill@example.COM", "leon@example.com "},
		CertificateCollectFormat: "attachment", CustomMessage: "  kept as is  ", Account: "eu"}
	want := tasks.SendCert{CertificateID: 1, Emails: []string{"Jill@example.com", "leon@example.com"},
		CertificateCollectFormat: "attachment", CustomMessage: "  kept as is  ", Account: "eu"}
	if got := in.Normalized(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Normalized() = %#v, want %#v", got, want)
	}
}

func TestResendDomainDCVValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    tasks.ResendDomainDCV
		want []tasks.FieldError
	}{
		{"domain id only", tasks.ResendDomainDCV{DomainID: 1}, nil},
		{"everything", tasks.ResendDomainDCV{DomainID: 1, NameScope: "sub.example.com", Locale: "de_DE", EmailArray: []string{"admin@example.com"}, Account: "eu"}, nil},
		{"name scope with case, spaces and a trailing dot", tasks.ResendDomainDCV{DomainID: 1, NameScope: " Sub.Example.COM. "}, nil},
		{"100 emails", tasks.ResendDomainDCV{DomainID: 1, EmailArray: emails(100)}, nil},
		{"101 emails with a duplicate", tasks.ResendDomainDCV{DomainID: 1, EmailArray: append(emails(100), "USER7@example.com")}, nil},
		{"empty list", tasks.ResendDomainDCV{DomainID: 1, EmailArray: []string{}}, nil},

		{"domain id missing", tasks.ResendDomainDCV{}, []tasks.FieldError{fe("domain_id", "required")}},
		{"domain id negative", tasks.ResendDomainDCV{DomainID: -1}, []tasks.FieldError{fe("domain_id", msgPositive)}},
		{"name scope single label", tasks.ResendDomainDCV{DomainID: 1, NameScope: "localhost"}, []tasks.FieldError{fe("name_scope", msgDNS)}},
		{"name scope wildcard", tasks.ResendDomainDCV{DomainID: 1, NameScope: "*.example.com"}, []tasks.FieldError{fe("name_scope", msgDNS)}},
		{"locale", tasks.ResendDomainDCV{DomainID: 1, Locale: "en_us"}, []tasks.FieldError{fe("locale", msgLocale)}},
		{"bad email", tasks.ResendDomainDCV{DomainID: 1, EmailArray: []string{"admin@example.com", "admin@"}}, []tasks.FieldError{fe("email_array[1]", "domain is not a valid DNS name")}},
		{"101 emails", tasks.ResendDomainDCV{DomainID: 1, EmailArray: emails(101)}, []tasks.FieldError{fe("email_array", msgTooMany)}},
		{"bad account", tasks.ResendDomainDCV{DomainID: 1, Account: "EU"}, []tasks.FieldError{fe("account", msgAccount)}},
		{"every problem at once", tasks.ResendDomainDCV{DomainID: -5, NameScope: "-x.example.com", Locale: "e", EmailArray: append([]string{"<a@example.com>"}, emails(101)...), Account: "_"},
			[]tasks.FieldError{
				fe("domain_id", msgPositive),
				fe("name_scope", msgDNS),
				fe("locale", msgLocale),
				fe("email_array[0]", msgBare),
				fe("email_array", msgTooMany),
				fe("account", msgAccount),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assertProblems(t, tasks.TypeResendDomainDCV, tt.p.Validate(), tt.want)
		})
	}
}

func TestResendDomainDCVNormalized(t *testing.T) {
	t.Parallel()
	in := tasks.ResendDomainDCV{DomainID: 9, NameScope: " Sub.Example.COM. ", Locale: "en", Account: "eu",
		EmailArray: []string{" Admin@Example.COM ", "admin@example.com", "hostmaster@example.com"}}
	want := tasks.ResendDomainDCV{DomainID: 9, NameScope: "sub.example.com", Locale: "en", Account: "eu",
		EmailArray: []string{"Admin@example.com", "hostmaster@example.com"}}
	got := in.Normalized()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Normalized() =\n%#v\nwant\n%#v", got, want)
	}
	if again := got.Normalized(); !reflect.DeepEqual(again, got) {
		t.Errorf("Normalized is not idempotent: %#v", again)
	}
	if in.EmailArray[0] != " Admin@Example.COM " {
		t.Error("Normalized changed its receiver")
	}
	empty := tasks.ResendDomainDCV{DomainID: 1, EmailArray: []string{}}
	if got := empty.Normalized().(tasks.ResendDomainDCV); got.EmailArray != nil {
		t.Errorf("empty list normalised to %#v, want nil", got.EmailArray)
	}
}
