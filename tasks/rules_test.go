package tasks_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// name189 is a valid 189-character domain: 63 + 1 + 63 + 1 + 61.
var name189 = strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 61)

func TestValidateEmail(t *testing.T) {
	t.Parallel()
	local64 := strings.Repeat("l", 64)
	tests := []struct {
		in   string
		want string // "" for valid
	}{
		{"jill@example.com", ""},
		{"Jill.Valentine@Example.COM", ""},
		{"jill+certs@sub.example.co.uk", ""},
		{"o'brien@example.com", ""},
		{"a!#$%&'*+-/=?^_`{|}~@example.com", ""},
		{"admin@xn--bcher-kva.example", ""},
		{"x@a-b.c0", ""},
		{local64 + "@example.com", ""},
		{local64 + "@" + name189, ""}, // exactly 254 characters
		{"z@z.example", ""},           // the ends of the ranges of letters and digits
		{"Z@Z.EXAMPLE", ""},
		{"a09@a09.example", ""},

		{"", "must not be empty"},
		{local64 + "@" + name189 + "c", "longer than 254 characters"},
		{"jill", "not a bare email address"},
		{"Jill <jill@example.com>", "not a bare email address"},
		{"<jill@example.com>", "not a bare email address"},
		{`"jill"@example.com`, "not a bare email address"},
		{`"jill valentine"@example.com`, "not a bare email address"},
		{"jill(work)@example.com", "not a bare email address"},
		{"jill@example.com (Jill)", "not a bare email address"},
		{"jill @example.com", "not a bare email address"},
		{" jill@example.com", "not a bare email address"},
		{"jill@example.com\n", "not a bare email address"},
		{"jill\x00@example.com", "not a bare email address"},
		{"jill\x7f@example.com", "not a bare email address"},
		{"jill,leon@example.com", "not a bare email address"},
		{"jill;leon@example.com", "not a bare email address"},
		{"jill@leon@example.com", "not a bare email address"},
		{"jill@@example.com", "not a bare email address"},
		{"jill@[192.0.2.1]", "not a bare email address"},
		{`ji\ll@example.com`, "not a bare email address"},
		{"jöll@example.com", "must contain only ASCII characters"},
		{"jill@exämple.com", "must contain only ASCII characters"},
		{"\x80@example.com", "must contain only ASCII characters"}, // the first byte that is not ASCII
		{"@example.com", "local part is not a valid dot-atom"},
		{".jill@example.com", "local part is not a valid dot-atom"},
		{"jill.@example.com", "local part is not a valid dot-atom"},
		{"ji..ll@example.com", "local part is not a valid dot-atom"},
		{local64 + "l@example.com", "local part longer than 64 characters"},
		{"jill@", "domain is not a valid DNS name"},
		{"jill@localhost", "domain is not a valid DNS name"},
		{"jill@example.com.", "domain is not a valid DNS name"},
		{"jill@.example.com", "domain is not a valid DNS name"},
		{"jill@example..com", "domain is not a valid DNS name"},
		{"jill@-example.com", "domain is not a valid DNS name"},
		{"jill@example-.com", "domain is not a valid DNS name"},
		{"jill@exa_mple.com", "domain is not a valid DNS name"},
		{"jill@" + strings.Repeat("d", 64) + ".com", "domain is not a valid DNS name"},
		{"jill@192.0.2.1", "domain is not a valid DNS name"},
		{"jill@example.123", "domain is not a valid DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			err := tasks.ValidateEmail(tt.in)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Fatalf("ValidateEmail(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if err != nil && len(tt.in) > 3 && strings.Contains(got, tt.in) {
				t.Errorf("message %q repeats the address", got)
			}
		})
	}
}

func TestValidDNSName(t *testing.T) {
	t.Parallel()
	label63 := strings.Repeat("x", 63)
	name253 := label63 + "." + label63 + "." + label63 + "." + strings.Repeat("y", 61)
	tests := []struct {
		in   string
		want bool
	}{
		{"example.com", true},
		{"Sub.Example.COM", true},
		{"zz.ZZ", true},
		{"a.b", true},
		{"a-b.example", true},
		{"xn--bcher-kva.example", true},
		{"192.0.2.example", true}, // all-digit labels are letters-digits-hyphens too
		{"example.c0", true},
		{label63 + ".com", true},
		{name253, true},

		{"", false},
		{"com", false},
		{"example.com.", false},
		{".example.com", false},
		{"example..com", false},
		{"-example.com", false},
		{"example-.com", false},
		{"ex_ample.com", false},
		{"*.example.com", false},
		{"exa mple.com", false},
		{"exämple.com", false},
		{label63 + "x.com", false},
		{name253 + "y", false},
		{"192.0.2.1", false}, // an IPv4 address: no top-level domain is all digits
		{"example.123", false},
		{"example.0", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := tasks.ValidDNSName(tt.in); got != tt.want {
				t.Fatalf("ValidDNSName(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestAccountRule(t *testing.T) {
	t.Parallel()
	const msg = "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
	tests := []struct {
		account string
		ok      bool
	}{
		{"", true}, // absent: the default account
		{"default", true},
		{"eu", true},
		{"0", true},
		{"team_a-2", true},
		{"z9", true},
		{strings.Repeat("a", 63), true},

		{strings.Repeat("a", 64), false},
		{"EU", false},
		{"-eu", false},
		{"_eu", false},
		{"eu west", false},
		{"eu.west", false},
		{" eu", false},
		{"ü", false},
	}
	for _, tt := range tests {
		t.Run(tt.account, func(t *testing.T) {
			t.Parallel()
			var want []tasks.FieldError
			if !tt.ok {
				want = []tasks.FieldError{fe("account", msg)}
			}
			payloads := []tasks.Payload{
				tasks.SetEmails{OrderID: 1, Account: tt.account},
				tasks.ResendDCV{OrderID: 1, Account: tt.account},
				tasks.SendCert{CertificateID: 1, Emails: []string{"a@example.com"}, CertificateCollectFormat: "attachment", Account: tt.account},
			}
			for _, p := range payloads {
				assertProblems(t, p.TaskType(), p.Validate(), want)
			}
		})
	}
}

func TestAccountName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    tasks.Payload
		want string
	}{
		{tasks.SetEmails{}, tasks.DefaultAccount},
		{tasks.SetEmails{Account: "eu"}, "eu"},
		{tasks.ResendDCV{}, tasks.DefaultAccount},
		{tasks.ResendDCV{Account: "eu"}, "eu"},
		{tasks.SendCert{}, tasks.DefaultAccount},
		{&tasks.SendCert{Account: "eu"}, "eu"},
		{tasks.ResendDomainDCV{}, tasks.DefaultAccount},
		{tasks.ResendDomainDCV{Account: "eu"}, "eu"},
	}
	for _, tt := range tests {
		if got := tt.p.AccountName(); got != tt.want {
			t.Errorf("%T.AccountName() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

// TestTypes: the type names are a wire contract that changes only by
// addition. Types() starts with the names released so far, in their order,
// and names each type once; a new type goes at the end (TestEveryType then
// asks for its minimal payload).
func TestTypes(t *testing.T) {
	t.Parallel()
	got := tasks.Types()
	released := []string{"set-emails", "resend-dcv", "send-cert", "resend-domain-dcv"}
	if len(got) < len(released) || !slices.Equal(got[:len(released)], released) {
		t.Fatalf("Types() = %v, want it to start with %v", got, released)
	}
	seen := map[string]bool{}
	for _, typ := range got {
		if seen[typ] {
			t.Errorf("Types() names %s twice", typ)
		}
		seen[typ] = true
	}
	got[0] = "changed"
	if tasks.Types()[0] != "set-emails" {
		t.Fatal("Types returns a shared slice")
	}
}

func TestValidationErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *tasks.ValidationError
		want string
	}{
		{
			&tasks.ValidationError{Type: "set-emails", Errors: []tasks.FieldError{fe("order_id", "required"), fe("additional_emails[1]", "not a bare email address")}},
			"invalid set-emails payload: order_id: required; additional_emails[1]: not a bare email address",
		},
		{
			&tasks.ValidationError{Type: "send-cert", Errors: []tasks.FieldError{fe("", "empty body")}},
			"invalid send-cert payload: empty body",
		},
		{&tasks.ValidationError{Type: "resend-dcv"}, "invalid resend-dcv payload"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestValidQueueName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"default": true, "bulk": true, "critical": true, "a_b-1": true, "0": true, strings.Repeat("q", 63): true,
		"": false, "Default": false, "default\u00a0": false, " default": false, "crit ical": false, "bulk/1": false,
		"_bulk": false, "-bulk": false, "bülk": false, strings.Repeat("q", 64): false,
	} {
		if got := tasks.ValidQueueName(name); got != want {
			t.Errorf("ValidQueueName(%q) = %t, want %t", name, got, want)
		}
	}
}
