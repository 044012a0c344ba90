package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Parse decodes a JSON payload of type taskType strictly, then normalises and
// validates it, and returns the normalised payload (a SetEmails, ResendDCV or
// SendCert value).
//
// Strict means: the body is exactly one JSON object; unknown and repeated
// fields, wrong JSON types, ids that are not integers or do not fit in an
// int64, and a missing order_id, certificate_id or additional_emails are all
// errors. A member whose value is null counts as absent. Every problem found,
// structural or not, is returned in one *ValidationError, each under the JSON
// path of the value (or "" for the body as a whole). A taskType other than the
// three of this package gives an error wrapping ErrUnknownType.
func Parse(taskType string, data []byte) (Payload, error) {
	switch taskType {
	case TypeSetEmails:
		return parse(taskType, data, decodeSetEmails)
	case TypeResendDCV:
		return parse(taskType, data, decodeResendDCV)
	case TypeSendCert:
		return parse(taskType, data, decodeSendCert)
	}
	return nil, fmt.Errorf("parse %.64q: %w", taskType, ErrUnknownType)
}

// checker is what the three payload types have in common for parse.
type checker[T Payload] interface {
	Payload
	check() (T, []FieldError)
}

// parse reads the body, lets decodeFn fill in a T, and merges the structural
// problems decodeFn found with those check finds, dropping check's reports on
// values that are already reported as malformed.
func parse[T checker[T]](taskType string, data []byte, decodeFn func(*decoder, json.RawMessage) T) (Payload, error) {
	raw, msg := body(data)
	if msg != "" {
		return nil, &ValidationError{Type: taskType, Errors: []FieldError{{Message: msg}}}
	}
	d := decoder{reported: make(map[string]bool)}
	p := decodeFn(&d, raw)
	n, checked := p.check()
	errs := d.problems
	for _, fe := range checked {
		if !d.covers(fe.Field) {
			errs = append(errs, fe)
		}
	}
	if len(errs) > 0 {
		return nil, &ValidationError{Type: taskType, Errors: errs}
	}
	return n, nil
}

// body returns the single JSON value in data, or a message saying why there
// is not exactly one JSON object.
func body(data []byte) (json.RawMessage, string) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, "empty body"
		}
		return nil, "malformed JSON: " + err.Error()
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, "trailing data after the JSON value"
	}
	if kind(raw) != '{' {
		return nil, "must be a JSON object"
	}
	return raw, ""
}

// decoder walks an already syntactically valid JSON value, recording the
// structural problems it finds.
type decoder struct {
	problems problems
	reported map[string]bool // paths with a structural problem
}

func (d *decoder) add(path, msg string) {
	d.problems.add(path, msg)
	d.reported[path] = true
}

// covers reports whether path or one of its ancestors has a structural
// problem, in which case a validation message about it would only repeat it.
func (d *decoder) covers(path string) bool {
	for {
		if d.reported[path] {
			return true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return false
		}
		path = path[:i]
	}
}

// kind returns the first byte of a JSON value: '{', '[', '"', 'n', 't', 'f',
// or the first character of a number.
func kind(v json.RawMessage) byte {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

// object calls set for each member of the object v (at path) whose value is
// not null, and reports unknown and repeated members. It returns the names of
// the members set was called for, or ok false when v is not an object.
func (d *decoder) object(path string, v json.RawMessage, known []string, set func(key, path string, v json.RawMessage)) (present map[string]bool, ok bool) {
	if kind(v) != '{' {
		return nil, false
	}
	present = make(map[string]bool, len(known))
	seen := make(map[string]bool, len(known))
	dec := json.NewDecoder(bytes.NewReader(v))
	if _, err := dec.Token(); err != nil { // '{'
		d.add(path, "malformed JSON: "+err.Error())
		return present, true
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			d.add(path, "malformed JSON: "+err.Error())
			return present, true
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			d.add(path, "malformed JSON: "+err.Error())
			return present, true
		}
		p := member(path, key)
		switch {
		case seen[key]:
			d.add(p, "duplicate field")
		case !slices.Contains(known, key):
			d.add(p, "unknown field")
		case kind(val) != 'n':
			present[key] = true
			set(key, p, val)
		}
		seen[key] = true
	}
	return present, true
}

// member returns the path of member key of the object at path.
func member(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// integer decodes a JSON integer. Negative values too large for an int64
// become math.MinInt64 and are left to validation, which rejects them anyway.
func (d *decoder) integer(path string, v json.RawMessage) int64 {
	s := string(bytes.TrimSpace(v))
	if c := kind(v); c != '-' && (c < '0' || c > '9') {
		d.add(path, "must be an integer")
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err == nil:
		return n
	case errors.Is(err, strconv.ErrRange) && s[0] == '-':
		return math.MinInt64
	case errors.Is(err, strconv.ErrRange):
		d.add(path, "must be at most "+strconv.FormatInt(math.MaxInt64, 10))
	default:
		d.add(path, "must be an integer")
	}
	return 0
}

// id decodes a required positive id; an explicit 0 is reported here so that
// validation's "required" is kept for a missing one.
func (d *decoder) id(path string, v json.RawMessage) int64 {
	n := d.integer(path, v)
	if n == 0 && !d.reported[path] {
		d.add(path, msgPositive)
	}
	return n
}

func (d *decoder) str(path string, v json.RawMessage) string {
	var s string
	if kind(v) != '"' || json.Unmarshal(v, &s) != nil {
		d.add(path, "must be a string")
		return ""
	}
	return s
}

// strings decodes an array of strings; an element of another type is
// reported and stands as "" so that later indexes keep their place.
func (d *decoder) strings(path string, v json.RawMessage) []string {
	var elems []json.RawMessage
	if kind(v) != '[' || json.Unmarshal(v, &elems) != nil {
		d.add(path, "must be an array of strings")
		return nil
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = d.str(index(path, i), e)
	}
	return out
}

func decodeSetEmails(d *decoder, raw json.RawMessage) SetEmails {
	var p SetEmails
	known := []string{"order_id", "additional_emails", "account", "sequence"}
	present, _ := d.object("", raw, known, func(key, path string, v json.RawMessage) {
		switch key {
		case "order_id":
			p.OrderID = d.id(path, v)
		case "additional_emails":
			p.AdditionalEmails = d.strings(path, v)
		case "account":
			p.Account = d.str(path, v)
		case "sequence":
			p.Sequence = d.integer(path, v)
		}
	})
	if !present["additional_emails"] {
		d.add("additional_emails", "required (send [] to clear the list)")
	}
	return p
}

func decodeResendDCV(d *decoder, raw json.RawMessage) ResendDCV {
	var p ResendDCV
	known := []string{"order_id", "domain_approval_emails", "locale", "account"}
	d.object("", raw, known, func(key, path string, v json.RawMessage) {
		switch key {
		case "order_id":
			p.OrderID = d.id(path, v)
		case "domain_approval_emails":
			p.DomainApprovalEmails = d.approvals(path, v)
		case "locale":
			p.Locale = d.str(path, v)
		case "account":
			p.Account = d.str(path, v)
		}
	})
	return p
}

// approvals decodes domain_approval_emails; an element that is not an object
// is reported and stands as an empty entry so that later indexes keep their
// place.
func (d *decoder) approvals(path string, v json.RawMessage) []DomainApprovalEmail {
	var elems []json.RawMessage
	if kind(v) != '[' || json.Unmarshal(v, &elems) != nil {
		d.add(path, "must be an array of objects")
		return nil
	}
	out := make([]DomainApprovalEmail, len(elems))
	known := []string{"domain", "email", "email_domain"}
	for i, e := range elems {
		ep := index(path, i)
		_, ok := d.object(ep, e, known, func(key, path string, v json.RawMessage) {
			switch key {
			case "domain":
				out[i].Domain = d.str(path, v)
			case "email":
				out[i].Email = d.str(path, v)
			case "email_domain":
				out[i].EmailDomain = d.str(path, v)
			}
		})
		if !ok {
			d.add(ep, "must be an object")
		}
	}
	return out
}

func decodeSendCert(d *decoder, raw json.RawMessage) SendCert {
	var p SendCert
	known := []string{"certificate_id", "emails", "certificate_collect_format", "custom_message", "account"}
	d.object("", raw, known, func(key, path string, v json.RawMessage) {
		switch key {
		case "certificate_id":
			p.CertificateID = d.id(path, v)
		case "emails":
			p.Emails = d.strings(path, v)
		case "certificate_collect_format":
			p.CertificateCollectFormat = d.str(path, v)
		case "custom_message":
			p.CustomMessage = d.str(path, v)
		case "account":
			p.Account = d.str(path, v)
		}
	})
	return p
}
