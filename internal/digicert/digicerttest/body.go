package digicerttest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// errorEntry is one entry of CertCentral's {"errors":[...]} body.
type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// apiError is an answer with one CertCentral error.
func apiError(status int, code, message string) answer {
	return errorsAnswer(status, []errorEntry{{Code: code, Message: message}})
}

// errorsAnswer is an answer with CertCentral's JSON error body.
func errorsAnswer(status int, entries []errorEntry) answer {
	body, err := json.Marshal(struct {
		Errors []errorEntry `json:"errors"`
	}{entries})
	if err != nil { // cannot happen for strings; answer something honest anyway
		return answer{status: http.StatusInternalServerError}
	}
	return answer{status: status, body: body, contentType: "application/json"}
}

// badFormat is the answer to a body that is not a JSON object.
func badFormat() []errorEntry {
	return []errorEntry{{Code: "bad_request_format", Message: "The request body is not a valid JSON object."}}
}

// required is the error of a missing field.
func required(field string) errorEntry {
	return errorEntry{Code: "required_param:" + field, Message: "Missing required parameter " + field + "."}
}

// invalid is the error of a field with a wrong type or value.
func invalid(field, why string) errorEntry {
	return errorEntry{Code: "invalid_value:" + field, Message: "Invalid value for " + field + ": " + why + "."}
}

// fields is a decoded JSON object.
type fields map[string]json.RawMessage

// decodeObject decodes a body that must be a JSON object.
func decodeObject(body []byte) (fields, bool) {
	var obj fields
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

// get returns a field's value; a null value counts as absent.
func (f fields) get(name string) (json.RawMessage, bool) {
	raw, ok := f[name]
	raw = bytes.TrimSpace(raw)
	if !ok || len(raw) == 0 || string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

// asString decodes a JSON string.
func asString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// asStrings decodes a JSON array of strings (never nil on success).
func asStrings(raw json.RawMessage) ([]string, bool) {
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, false
	}
	out := make([]string, 0, len(items))
	for _, item := range items {
		s, ok := asString(bytes.TrimSpace(item))
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// asObjects decodes a JSON array of objects.
func asObjects(raw json.RawMessage) ([]fields, bool) {
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, false
	}
	out := make([]fields, 0, len(items))
	for _, item := range items {
		obj, ok := decodeObject(item)
		if !ok {
			return nil, false
		}
		out = append(out, obj)
	}
	return out, true
}

// validEmail is CertCentral's loose check of an address: local@domain, no
// spaces, at most 254 characters.
func validEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	return len(s) <= 254 && at > 0 && at < len(s)-1 &&
		!strings.ContainsAny(s, " \t\r\n<>,;") && !strings.Contains(s[at+1:], "..")
}

// validLocale accepts the shapes ll and ll_CC.
func validLocale(s string) bool {
	lower := func(c byte) bool { return c >= 'a' && c <= 'z' }
	upper := func(c byte) bool { return c >= 'A' && c <= 'Z' }
	switch len(s) {
	case 2:
		return lower(s[0]) && lower(s[1])
	case 5:
		return lower(s[0]) && lower(s[1]) && s[2] == '_' && upper(s[3]) && upper(s[4])
	}
	return false
}

// emailList reads a required array of addresses.
func emailList(obj fields, field string, allowEmpty bool) ([]string, []errorEntry) {
	raw, ok := obj.get(field)
	if !ok {
		return nil, []errorEntry{required(field)}
	}
	emails, ok := asStrings(raw)
	switch {
	case !ok:
		return nil, []errorEntry{invalid(field, "expected an array of strings")}
	case len(emails) == 0 && !allowEmpty:
		return nil, []errorEntry{invalid(field, "at least one email address is required")}
	}
	for _, e := range emails {
		if !validEmail(e) {
			return nil, []errorEntry{invalid(field, "not a valid email address")}
		}
	}
	return emails, nil
}

// parseAdditionalEmails checks a body of PUT .../additional-emails.
func parseAdditionalEmails(body []byte) ([]string, []errorEntry) {
	obj, ok := decodeObject(body)
	if !ok {
		return nil, badFormat()
	}
	return emailList(obj, "additional_emails", true)
}

// parseResendEmails checks a body of PUT .../resend-emails.
func parseResendEmails(body []byte) (DCVSend, []errorEntry) {
	obj, ok := decodeObject(body)
	if !ok {
		return DCVSend{}, badFormat()
	}
	var send DCVSend
	var errs []errorEntry
	add := func(e errorEntry) {
		if !slices.Contains(errs, e) {
			errs = append(errs, e)
		}
	}
	if raw, ok := obj.get("domain_approval_emails"); ok {
		entries, ok := asObjects(raw)
		if !ok {
			add(invalid("domain_approval_emails", "expected an array of objects"))
		}
		for _, entry := range entries {
			approval, entryErrs := parseApproval(entry)
			for _, e := range entryErrs {
				add(e)
			}
			send.DomainApprovalEmails = append(send.DomainApprovalEmails, approval)
		}
	}
	if raw, ok := obj.get("locale"); ok {
		locale, ok := asString(raw)
		if !ok || !validLocale(locale) {
			add(invalid("locale", "expected a locale such as en or en_US"))
		}
		send.Locale = locale
	}
	if len(errs) > 0 {
		return DCVSend{}, errs
	}
	return send, nil
}

// parseApproval checks one entry of domain_approval_emails.
func parseApproval(entry fields) (ApprovalEmail, []errorEntry) {
	const prefix = "domain_approval_emails."
	var a ApprovalEmail
	var errs []errorEntry
	text := func(name string, mandatory bool) string {
		raw, ok := entry.get(name)
		if !ok {
			if mandatory {
				errs = append(errs, required(prefix+name))
			}
			return ""
		}
		s, ok := asString(raw)
		if !ok || s == "" {
			errs = append(errs, invalid(prefix+name, "expected a non-empty string"))
		}
		return s
	}
	a.Domain = text("domain", true)
	a.Email = text("email", true)
	a.EmailDomain = text("email_domain", false)
	if a.Email != "" && !validEmail(a.Email) {
		errs = append(errs, invalid(prefix+"email", "not a valid email address"))
	}
	return a, errs
}

// parseDomainEmails checks a body of PUT /domain/{domain_id}/dcv/emails, in
// which every field is optional.
func parseDomainEmails(body []byte) (DomainDCVSend, []errorEntry) {
	obj, ok := decodeObject(body)
	if !ok {
		return DomainDCVSend{}, badFormat()
	}
	var send DomainDCVSend
	var errs []errorEntry
	if raw, ok := obj.get("name_scope"); ok {
		name, ok := asString(raw)
		if !ok || name == "" || strings.ContainsAny(name, " /@") {
			errs = append(errs, invalid("name_scope", "expected a domain name"))
		}
		send.NameScope = name
	}
	if raw, ok := obj.get("locale"); ok {
		locale, ok := asString(raw)
		if !ok || !validLocale(locale) {
			errs = append(errs, invalid("locale", "expected a locale such as en or en_US"))
		}
		send.Locale = locale
	}
	if _, ok := obj.get("email_array"); ok {
		emails, listErrs := emailList(obj, "email_array", true)
		errs = append(errs, listErrs...)
		send.EmailArray = emails
	}
	if len(errs) > 0 {
		return DomainDCVSend{}, errs
	}
	return send, nil
}

// validCollectFormat reports whether s is a certificate_collect_format.
func validCollectFormat(s string) bool {
	switch s {
	case "attachment", "plaintext", "downloadlink":
		return true
	}
	return false
}

// parseSendEmail checks a body of PUT .../sendemail.
func parseSendEmail(body []byte) (CertSend, []errorEntry) {
	obj, ok := decodeObject(body)
	if !ok {
		return CertSend{}, badFormat()
	}
	var send CertSend
	emails, errs := emailList(obj, "emails", false)
	send.Emails = emails
	if raw, ok := obj.get("certificate_collect_format"); !ok {
		errs = append(errs, required("certificate_collect_format"))
	} else if format, ok := asString(raw); !ok || !validCollectFormat(format) {
		errs = append(errs, invalid("certificate_collect_format", "expected attachment, plaintext or downloadlink"))
	} else {
		send.Format = format
	}
	if raw, ok := obj.get("custom_message"); ok {
		msg, ok := asString(raw)
		if !ok {
			errs = append(errs, invalid("custom_message", "expected a string"))
		}
		send.CustomMessage = msg
	}
	if len(errs) > 0 {
		return CertSend{}, errs
	}
	return send, nil
}
