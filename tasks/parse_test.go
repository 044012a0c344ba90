package tasks_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/certmail/certmail/tasks"
)

type parseCase struct {
	name string
	body string
	want tasks.Payload      // on success
	errs []tasks.FieldError // on failure
}

func runParseCases(t *testing.T, typ string, tests []parseCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tasks.Parse(typ, []byte(tt.body))
			assertProblems(t, typ, err, tt.errs)
			if err != nil {
				if got != nil {
					t.Errorf("Parse returned %#v with an error", got)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

const (
	msgInteger = "must be an integer"
	msgMaxInt  = "must be at most 9223372036854775807"
	msgString  = "must be a string"
	msgObject  = "must be a JSON object"
	msgUnknown = "unknown field"
	msgClear   = "required (send [] to clear the list)"
	msgBool    = "must be true or false"
)

func TestParseSetEmails(t *testing.T) {
	t.Parallel()
	runParseCases(t, tasks.TypeSetEmails, []parseCase{
		{name: "empty list", body: `{"order_id":1,"additional_emails":[]}`,
			want: tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}},
		{name: "normalised", body: `{"order_id": 123, "additional_emails": [" Jill@EXAMPLE.com ", "jill@example.com", "leon@example.com"], "account": "eu", "sequence": 17}`,
			want: tasks.SetEmails{OrderID: 123, AdditionalEmails: []string{"Jill@example.com", "leon@example.com"}, Account: "eu", Sequence: 17}},
		{name: "largest id", body: `{"order_id":9223372036854775807,"additional_emails":[]}`,
			want: tasks.SetEmails{OrderID: 9223372036854775807, AdditionalEmails: []string{}}},
		{name: "null optional fields are absent", body: `{"order_id":1,"additional_emails":[],"account":null,"sequence":null}`,
			want: tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}},
		{name: "surrounding whitespace", body: " \n{\"order_id\":1,\"additional_emails\":[]}\n\t",
			want: tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}},

		{name: "empty body", body: ``, errs: []tasks.FieldError{fe("", "empty body")}},
		{name: "blank body", body: " \n ", errs: []tasks.FieldError{fe("", "empty body")}},
		{name: "null body", body: `null`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "array body", body: `[{"order_id":1,"additional_emails":[]}]`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "empty array body", body: `[]`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "string body", body: `"set-emails"`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "number body", body: `123`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "truncated", body: `{"order_id":1,`, errs: []tasks.FieldError{fe("", "malformed JSON: unexpected EOF")}},
		{name: "trailing comma", body: `{"order_id":1,}`,
			errs: []tasks.FieldError{fe("", "malformed JSON: invalid character '}' looking for beginning of object key string")}},
		// encoding/json would say "invalid character 'ï'": the mark's first
		// byte read as a rune.
		{name: "byte order mark", body: "\ufeff{\"order_id\":1,\"additional_emails\":[]}",
			errs: []tasks.FieldError{fe("", "starts with a byte order mark (U+FEFF): JSON must be sent without one")}},
		{name: "second value", body: `{"order_id":1,"additional_emails":[]} {}`, errs: []tasks.FieldError{fe("", "trailing data after the JSON value")}},
		{name: "trailing garbage", body: `{"order_id":1,"additional_emails":[]}x`, errs: []tasks.FieldError{fe("", "trailing data after the JSON value")}},
		{name: "trailing brace", body: `{"order_id":1,"additional_emails":[]}}`, errs: []tasks.FieldError{fe("", "trailing data after the JSON value")}},
		{name: "unknown field", body: `{"order_id":1,"additional_emails":[],"colour":"red"}`, errs: []tasks.FieldError{fe("colour", msgUnknown)}},
		{name: "unknown null field", body: `{"order_id":1,"additional_emails":[],"colour":null}`, errs: []tasks.FieldError{fe("colour", msgUnknown)}},
		// An unknown member's path names it as sent when it is a plain name of
		// letters, digits, '_' and '-' of at most 64 characters, and quoted
		// (and cut to 64 characters) otherwise, so that it never echoes much.
		{name: "unknown plain name", body: `{"order_id":1,"additional_emails":[],"my_colour-2":1}`, errs: []tasks.FieldError{fe("my_colour-2", msgUnknown)}},
		{name: "unknown name of 64 characters", body: `{"order_id":1,"additional_emails":[],"` + strings.Repeat("k", 64) + `":1}`,
			errs: []tasks.FieldError{fe(strings.Repeat("k", 64), msgUnknown)}},
		{name: "unknown name of 65 characters", body: `{"order_id":1,"additional_emails":[],"` + strings.Repeat("k", 65) + `":1}`,
			errs: []tasks.FieldError{fe(`"`+strings.Repeat("k", 64)+`"`, msgUnknown)}},
		{name: "unknown name with a space", body: `{"order_id":1,"additional_emails":[],"my colour":1}`, errs: []tasks.FieldError{fe(`"my colour"`, msgUnknown)}},
		{name: "unknown name with a line break", body: `{"order_id":1,"additional_emails":[],"my\ncolour":1}`, errs: []tasks.FieldError{fe(`"my\ncolour"`, msgUnknown)}},
		// An address in a member's name is replaced, before the name is cut:
		// problems go to logs, asynq's last_error and the dead letter, where
		// no address may go (the payload keeps its own).
		{name: "unknown name that is an address", body: `{"order_id":1,"additional_emails":[],"jill@example.com":1}`,
			errs: []tasks.FieldError{fe(`"[email]"`, msgUnknown)}},
		{name: "unknown name holding addresses", body: `{"order_id":1,"additional_emails":[],"to jill@example.com,\tleon@example.com":1}`,
			errs: []tasks.FieldError{fe(`"to [email]\t[email]"`, msgUnknown)}},
		{name: "unknown name, an escaped address", body: `{"order_id":1,"additional_emails":[],"jill\u0040example.com":1}`,
			errs: []tasks.FieldError{fe(`"[email]"`, msgUnknown)}},
		{name: "unknown name, a long address", body: `{"order_id":1,"additional_emails":[],"` + strings.Repeat("j", 100) + `@example.com":1}`,
			errs: []tasks.FieldError{fe(`"[email]"`, msgUnknown)}},
		{name: "unknown name, an address after a long space", body: `{"order_id":1,"additional_emails":[],"x@y ` + strings.Repeat(" ", 1000) + `jill@example.com":1}`,
			errs: []tasks.FieldError{fe(`"[email]`+strings.Repeat(" ", 57)+`"`, msgUnknown)}},
		{name: "unknown name, an address past the cut", body: `{"order_id":1,"additional_emails":[],"` + strings.Repeat("k", 60) + ` jill.valentine@example.com":1}`,
			errs: []tasks.FieldError{fe(`"`+strings.Repeat("k", 60)+` [em"`, msgUnknown)}},
		{name: "unknown name of JSON-LD", body: `{"order_id":1,"additional_emails":[],"@type":1,"@x y@z":2}`,
			errs: []tasks.FieldError{fe(`"@type"`, msgUnknown), fe(`"@x [email]"`, msgUnknown)}},
		{name: "duplicate unknown address", body: `{"order_id":1,"additional_emails":[],"jill@example.com":1,"jill@example.com":2}`,
			errs: []tasks.FieldError{fe(`"[email]"`, msgUnknown), fe(`"[email]"`, "duplicate field")}},
		{name: "field names are case-sensitive", body: `{"Order_ID":1,"additional_emails":[]}`,
			errs: []tasks.FieldError{fe("Order_ID", msgUnknown), fe("order_id", "required")}},
		{name: "duplicate field", body: `{"order_id":1,"order_id":2,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", "duplicate field")}},
		// A name is compared once its escapes are decoded, as encoding/json does.
		{name: "escaped known name", body: `{"order\u005fid":1,"additional_emails":[]}`,
			want: tasks.SetEmails{OrderID: 1, AdditionalEmails: []string{}}},
		{name: "duplicate field, once escaped", body: `{"order_id":1,"order\u005fid":2,"additional_emails":[]}`,
			errs: []tasks.FieldError{fe("order_id", "duplicate field")}},
		{name: "duplicate unknown field, once escaped", body: `{"order_id":1,"additional_emails":[],"colour":1,"col\u006fur":2}`,
			errs: []tasks.FieldError{fe("colour", msgUnknown), fe("colour", "duplicate field")}},
		{name: "order id missing", body: `{"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", "required")}},
		{name: "order id null", body: `{"order_id":null,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", "required")}},
		{name: "order id string", body: `{"order_id":"1","additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgInteger)}},
		{name: "order id float", body: `{"order_id":1.5,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgInteger)}},
		{name: "order id integral float", body: `{"order_id":1.0,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgInteger)}},
		{name: "order id exponent", body: `{"order_id":1e3,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgInteger)}},
		{name: "order id bool", body: `{"order_id":true,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgInteger)}},
		{name: "order id object", body: `{"order_id":{},"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgInteger)}},
		{name: "order id above int64", body: `{"order_id":9223372036854775808,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgMaxInt)}},
		{name: "order id far above int64", body: `{"order_id":1` + strings.Repeat("0", 400) + `,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgMaxInt)}},
		{name: "order id below int64", body: `{"order_id":-9223372036854775809,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgPositive)}},
		{name: "order id zero", body: `{"order_id":0,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgPositive)}},
		{name: "order id minus zero", body: `{"order_id":-0,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgPositive)}},
		{name: "order id negative", body: `{"order_id":-5,"additional_emails":[]}`, errs: []tasks.FieldError{fe("order_id", msgPositive)}},
		{name: "list missing", body: `{"order_id":1}`, errs: []tasks.FieldError{fe("additional_emails", msgClear)}},
		{name: "list null", body: `{"order_id":1,"additional_emails":null}`, errs: []tasks.FieldError{fe("additional_emails", msgClear)}},
		{name: "list is a string", body: `{"order_id":1,"additional_emails":"jill@example.com"}`,
			errs: []tasks.FieldError{fe("additional_emails", "must be an array of strings")}},
		{name: "list elements of other types", body: `{"order_id":1,"additional_emails":[1,"bad",null,"jill@example.com",["x"]]}`,
			errs: []tasks.FieldError{fe("additional_emails[0]", msgString), fe("additional_emails[2]", msgString),
				fe("additional_emails[4]", msgString), fe("additional_emails[1]", msgBare)}},
		{name: "101 emails", body: `{"order_id":1,"additional_emails":["` + strings.Join(emails(101), `","`) + `"]}`,
			errs: []tasks.FieldError{fe("additional_emails", msgTooMany)}},
		{name: "account number", body: `{"order_id":1,"additional_emails":[],"account":7}`, errs: []tasks.FieldError{fe("account", msgString)}},
		{name: "account malformed", body: `{"order_id":1,"additional_emails":[],"account":"EU"}`, errs: []tasks.FieldError{fe("account", msgAccount)}},
		{name: "sequence negative", body: `{"order_id":1,"additional_emails":[],"sequence":-1}`, errs: []tasks.FieldError{fe("sequence", "must not be negative")}},
		{name: "sequence below int64", body: `{"order_id":1,"additional_emails":[],"sequence":-99999999999999999999}`,
			errs: []tasks.FieldError{fe("sequence", "must not be negative")}},
		{name: "sequence string", body: `{"order_id":1,"additional_emails":[],"sequence":"5"}`, errs: []tasks.FieldError{fe("sequence", msgInteger)}},
		{name: "every problem at once",
			body: `{"colour":1,"order_id":"x","additional_emails":["ok@example.com","Jill <j@example.com>",5],"account":"A","sequence":-3,"colour":2}`,
			errs: []tasks.FieldError{
				fe("colour", msgUnknown),
				fe("order_id", msgInteger),
				fe("additional_emails[2]", msgString),
				fe("colour", "duplicate field"),
				fe("additional_emails[1]", msgBare),
				fe("account", msgAccount),
				fe("sequence", "must not be negative"),
			}},
	})
}

func TestParseResendDCV(t *testing.T) {
	t.Parallel()
	runParseCases(t, tasks.TypeResendDCV, []parseCase{
		{name: "order id only", body: `{"order_id":123}`, want: tasks.ResendDCV{OrderID: 123}},
		{name: "empty entries", body: `{"order_id":123,"domain_approval_emails":[]}`, want: tasks.ResendDCV{OrderID: 123}},
		{name: "contract example", body: `{"order_id": 123, "domain_approval_emails": [
				{"domain": "example.com", "email": "someone@example.com"},
				{"domain": "Sub.Example2.com.", "email": "someone@example2.com", "email_domain": "example2.com"},
				{"domain": "example.com", "email": "SOMEONE@example.com"}],
			"locale": "en", "account": "eu"}`,
			want: tasks.ResendDCV{OrderID: 123, Locale: "en", Account: "eu", DomainApprovalEmails: []tasks.DomainApprovalEmail{
				{Domain: "example.com", Email: "someone@example.com"},
				{Domain: "sub.example2.com", Email: "someone@example2.com", EmailDomain: "example2.com"},
			}}},
		{name: "null entries and locale", body: `{"order_id":1,"domain_approval_emails":null,"locale":null}`, want: tasks.ResendDCV{OrderID: 1}},

		{name: "null body", body: `null`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "order id missing", body: `{"locale":"en"}`, errs: []tasks.FieldError{fe("order_id", "required")}},
		{name: "order id string", body: `{"order_id":"123"}`, errs: []tasks.FieldError{fe("order_id", msgInteger)}},
		{name: "unknown field", body: `{"order_id":1,"priority":"high"}`, errs: []tasks.FieldError{fe("priority", msgUnknown)}},
		{name: "entries not an array", body: `{"order_id":1,"domain_approval_emails":{"domain":"example.com"}}`,
			errs: []tasks.FieldError{fe("domain_approval_emails", "must be an array of objects")}},
		{name: "entries of other types", body: `{"order_id":1,"domain_approval_emails":[null,"example.com",{"domain":"example.com","email":"a@example.com","colour":1}]}`,
			errs: []tasks.FieldError{
				fe("domain_approval_emails[0]", "must be an object"),
				fe("domain_approval_emails[1]", "must be an object"),
				fe("domain_approval_emails[2].colour", msgUnknown),
			}},
		{name: "entry fields of other types", body: `{"order_id":1,"domain_approval_emails":[{"domain":1,"email":["a@example.com"],"email_domain":true}]}`,
			errs: []tasks.FieldError{
				fe("domain_approval_emails[0].domain", msgString),
				fe("domain_approval_emails[0].email", msgString),
				fe("domain_approval_emails[0].email_domain", msgString),
			}},
		{name: "entry duplicate field", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","domain":"example.org","email":"a@example.com"}]}`,
			errs: []tasks.FieldError{fe("domain_approval_emails[0].domain", "duplicate field")}},
		{name: "entry member named by an address", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.com","jill@example.com":1}]}`,
			errs: []tasks.FieldError{fe(`domain_approval_emails[0]."[email]"`, msgUnknown)}},
		{name: "entry missing fields", body: `{"order_id":1,"domain_approval_emails":[{}]}`,
			errs: []tasks.FieldError{fe("domain_approval_emails[0].domain", "required"), fe("domain_approval_emails[0].email", "required")}},
		{name: "email domain not a parent", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.org","email_domain":"example.org"}]}`,
			errs: []tasks.FieldError{fe("domain_approval_emails[0].email_domain", msgParent)}},
		{name: "locale number", body: `{"order_id":1,"locale":1}`, errs: []tasks.FieldError{fe("locale", msgString)}},
		{name: "locale malformed", body: `{"order_id":1,"locale":"en-GB"}`, errs: []tasks.FieldError{fe("locale", msgLocale)}},
		{name: "locale empty is absent", body: `{"order_id":1,"locale":""}`, want: tasks.ResendDCV{OrderID: 1}},
		{name: "email domain empty is absent", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.com","email_domain":""}]}`,
			want: tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{{Domain: "example.com", Email: "a@example.com"}}}},
		{name: "email domain a dot", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.com","email_domain":" . "}]}`,
			errs: []tasks.FieldError{fe("domain_approval_emails[0].email_domain", msgDNS)}},
		{name: "email domain null is absent", body: `{"order_id":1,"domain_approval_emails":[{"domain":"example.com","email":"a@example.com","email_domain":null}]}`,
			want: tasks.ResendDCV{OrderID: 1, DomainApprovalEmails: []tasks.DomainApprovalEmail{{Domain: "example.com", Email: "a@example.com"}}}},
		{name: "only if pending", body: `{"order_id":1,"only_if_pending":true}`, want: tasks.ResendDCV{OrderID: 1, OnlyIfPending: true}},
		{name: "only if pending false is absent", body: `{"order_id":1,"only_if_pending":false}`, want: tasks.ResendDCV{OrderID: 1}},
		{name: "only if pending null is absent", body: `{"order_id":1,"only_if_pending":null}`, want: tasks.ResendDCV{OrderID: 1}},
		{name: "only if pending as string", body: `{"order_id":1,"only_if_pending":"true"}`, errs: []tasks.FieldError{fe("only_if_pending", msgBool)}},
		{name: "only if pending as number", body: `{"order_id":1,"only_if_pending":1}`, errs: []tasks.FieldError{fe("only_if_pending", msgBool)}},
	})
}

func TestParseResendDomainDCV(t *testing.T) {
	t.Parallel()
	runParseCases(t, tasks.TypeResendDomainDCV, []parseCase{
		{name: "domain id only", body: `{"domain_id":1234}`, want: tasks.ResendDomainDCV{DomainID: 1234}},
		{name: "contract example", body: `{"domain_id": 1234, "name_scope": "Sub.Example.com.", "locale": "en",
			"email_array": [" admin@Example.com", "ADMIN@example.com", "hostmaster@example.com"], "account": "eu"}`,
			want: tasks.ResendDomainDCV{DomainID: 1234, NameScope: "sub.example.com", Locale: "en", Account: "eu",
				EmailArray: []string{"admin@example.com", "hostmaster@example.com"}}},
		{name: "empty list is absent", body: `{"domain_id":1,"email_array":[]}`, want: tasks.ResendDomainDCV{DomainID: 1}},
		{name: "nulls are absent", body: `{"domain_id":1,"name_scope":null,"locale":null,"email_array":null,"account":null}`,
			want: tasks.ResendDomainDCV{DomainID: 1}},

		{name: "empty object", body: `{}`, errs: []tasks.FieldError{fe("domain_id", "required")}},
		{name: "array body", body: `[]`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "domain id string", body: `{"domain_id":"1234"}`, errs: []tasks.FieldError{fe("domain_id", msgInteger)}},
		{name: "domain id zero", body: `{"domain_id":0}`, errs: []tasks.FieldError{fe("domain_id", msgPositive)}},
		{name: "domain id negative", body: `{"domain_id":-3}`, errs: []tasks.FieldError{fe("domain_id", msgPositive)}},
		{name: "domain id above int64", body: `{"domain_id":9223372036854775808}`, errs: []tasks.FieldError{fe("domain_id", msgMaxInt)}},
		{name: "order id is not a domain id", body: `{"order_id":1234}`,
			errs: []tasks.FieldError{fe("order_id", msgUnknown), fe("domain_id", "required")}},
		{name: "name scope number", body: `{"domain_id":1,"name_scope":5}`, errs: []tasks.FieldError{fe("name_scope", msgString)}},
		{name: "name scope not a DNS name", body: `{"domain_id":1,"name_scope":"*.example.com"}`, errs: []tasks.FieldError{fe("name_scope", msgDNS)}},
		{name: "locale malformed", body: `{"domain_id":1,"locale":"en-US"}`, errs: []tasks.FieldError{fe("locale", msgLocale)}},
		{name: "locale and name scope empty are absent", body: `{"domain_id":1,"locale":"","name_scope":""}`, want: tasks.ResendDomainDCV{DomainID: 1}},
		{name: "name scope spaces", body: `{"domain_id":1,"name_scope":"  "}`, errs: []tasks.FieldError{fe("name_scope", msgDNS)}},
		{name: "name scope a dot", body: `{"domain_id":1,"name_scope":"."}`, errs: []tasks.FieldError{fe("name_scope", msgDNS)}},
		{name: "emails not an array", body: `{"domain_id":1,"email_array":"admin@example.com"}`,
			errs: []tasks.FieldError{fe("email_array", "must be an array of strings")}},
		{name: "bad email", body: `{"domain_id":1,"email_array":["admin@example.com","Admin <admin@example.com>",7]}`,
			errs: []tasks.FieldError{fe("email_array[2]", msgString), fe("email_array[1]", msgBare)}},
		{name: "101 emails", body: `{"domain_id":1,"email_array":["` + strings.Join(emails(101), `","`) + `"]}`,
			errs: []tasks.FieldError{fe("email_array", msgTooMany)}},
		{name: "duplicate field", body: `{"domain_id":1,"domain_id":2}`, errs: []tasks.FieldError{fe("domain_id", "duplicate field")}},
		{name: "every problem at once", body: `{"domain_id":0,"name_scope":"bad_name","locale":"EN","email_array":["x"],"account":"A","emails":[]}`,
			errs: []tasks.FieldError{
				fe("domain_id", msgPositive),
				fe("emails", msgUnknown),
				fe("name_scope", msgDNS),
				fe("locale", msgLocale),
				fe("email_array[0]", msgBare),
				fe("account", msgAccount),
			}},
	})
}

func TestParseSendCert(t *testing.T) {
	t.Parallel()
	runParseCases(t, tasks.TypeSendCert, []parseCase{
		{name: "contract example", body: `{"certificate_id": 456, "emails": ["a@Example.com", "A@example.com"], "certificate_collect_format": "attachment", "custom_message": "Please install this certificate!"}`,
			want: tasks.SendCert{CertificateID: 456, Emails: []string{"a@example.com"}, CertificateCollectFormat: "attachment", CustomMessage: "Please install this certificate!"}},
		{name: "null message", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"plaintext","custom_message":null}`,
			want: tasks.SendCert{CertificateID: 1, Emails: []string{"a@example.com"}, CertificateCollectFormat: "plaintext"}},
		{name: "escaped newline in message", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"downloadlink","custom_message":"a\nb\u00e9"}`,
			want: tasks.SendCert{CertificateID: 1, Emails: []string{"a@example.com"}, CertificateCollectFormat: "downloadlink", CustomMessage: "a\nbé"}},

		{name: "array body", body: `[]`, errs: []tasks.FieldError{fe("", msgObject)}},
		{name: "empty object", body: `{}`, errs: []tasks.FieldError{
			fe("certificate_id", "required"), fe("emails", "required"), fe("certificate_collect_format", "required")}},
		{name: "order_id is not certificate_id", body: `{"order_id":1,"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"attachment"}`,
			errs: []tasks.FieldError{fe("order_id", msgUnknown)}},
		{name: "certificate id float", body: `{"certificate_id":4.56,"emails":["a@example.com"],"certificate_collect_format":"attachment"}`,
			errs: []tasks.FieldError{fe("certificate_id", msgInteger)}},
		{name: "certificate id too large", body: `{"certificate_id":18446744073709551616,"emails":["a@example.com"],"certificate_collect_format":"attachment"}`,
			errs: []tasks.FieldError{fe("certificate_id", msgMaxInt)}},
		{name: "emails empty", body: `{"certificate_id":1,"emails":[],"certificate_collect_format":"attachment"}`,
			errs: []tasks.FieldError{fe("emails", "must list at least one address")}},
		{name: "emails null", body: `{"certificate_id":1,"emails":null,"certificate_collect_format":"attachment"}`,
			errs: []tasks.FieldError{fe("emails", "required")}},
		{name: "emails not an array", body: `{"certificate_id":1,"emails":"a@example.com","certificate_collect_format":"attachment"}`,
			errs: []tasks.FieldError{fe("emails", "must be an array of strings")}},
		{name: "format number", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":1}`,
			errs: []tasks.FieldError{fe("certificate_collect_format", msgString)}},
		{name: "format unknown", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"zip"}`,
			errs: []tasks.FieldError{fe("certificate_collect_format", msgCollect)}},
		{name: "message control character", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":"a\u0007"}`,
			errs: []tasks.FieldError{fe("custom_message", msgCtrl)}},
		{name: "message too long", body: `{"certificate_id":1,"emails":["a@example.com"],"certificate_collect_format":"attachment","custom_message":"` + strings.Repeat("x", 2001) + `"}`,
			errs: []tasks.FieldError{fe("custom_message", msgTooLong)}},
	})
}

func TestParseUnknownType(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"", "set_emails", "Set-Emails", strings.Repeat("x", 1000)} {
		p, err := tasks.Parse(typ, []byte(`{}`))
		if p != nil || !errors.Is(err, tasks.ErrUnknownType) {
			t.Errorf("Parse(%.20q) = %v, %v; want nil, ErrUnknownType", typ, p, err)
		}
		if errors.Is(err, tasks.ErrInvalidPayload) {
			t.Errorf("Parse(%.20q): unknown type also matches ErrInvalidPayload", typ)
		}
		if err != nil && len(err.Error()) > 120 {
			t.Errorf("error repeats a long type name: %d bytes", len(err.Error()))
		}
	}
}

func TestParseNeverEchoesAddresses(t *testing.T) {
	t.Parallel()
	secret := "Jill Valentine <jill.valentine@umbrella.example>"
	for _, body := range []string{
		`{"order_id":1,"additional_emails":["` + secret + `"]}`,
		`{"order_id":1,"additional_emails":[],"jill.valentine@umbrella.example":1}`, // a member's name
		`{"order_id":1,"additional_emails":[],"` + secret + `":1}`,
	} {
		_, err := tasks.Parse(tasks.TypeSetEmails, []byte(body))
		if err == nil {
			t.Fatalf("Parse accepted %s", body)
		}
		if strings.Contains(err.Error(), "valentine") {
			t.Errorf("error %q repeats the address", err)
		}
	}
}
