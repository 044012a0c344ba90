package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxPayloadBytes is the largest payload Parse reads (1 MiB, the HTTP API's
// body limit); a larger one is refused before it is decoded. The payloads the
// constructors build are far smaller (under 100 KiB with every list full).
const MaxPayloadBytes = 1 << 20

// Parse decodes a JSON payload of type taskType strictly, then normalises and
// validates it, and returns the normalised payload (a SetEmails, ResendDCV,
// SendCert or ResendDomainDCV value).
//
// Strict means: the body is exactly one JSON object of at most
// MaxPayloadBytes, in valid UTF-8 without a byte order mark; unknown and repeated fields, wrong JSON
// types, ids that are not integers or do not fit in an int64, and a missing
// order_id, certificate_id, domain_id or additional_emails are all errors. A
// member whose value is null counts as absent. The problems found,
// structural or not, are returned in one *ValidationError (bounded: see
// NewValidationError), each under the JSON path of the value (or "" for the
// body as a whole). A taskType other than those of Types gives an error
// wrapping ErrUnknownType.
func Parse(taskType string, data []byte) (Payload, error) {
	switch taskType {
	case TypeSetEmails:
		return parse(taskType, data, decodeSetEmails)
	case TypeResendDCV:
		return parse(taskType, data, decodeResendDCV)
	case TypeSendCert:
		return parse(taskType, data, decodeSendCert)
	case TypeResendDomainDCV:
		return parse(taskType, data, decodeResendDomainDCV)
	}
	return nil, fmt.Errorf("parse %.64q: %w", taskType, ErrUnknownType)
}

// checker is what the payload types have in common for parse.
type checker[T Payload] interface {
	Payload
	check() (T, []FieldError)
}

// parse reads the body, lets decodeFn fill in a T, and adds the problems
// check finds to the structural ones decodeFn found. A value decodeFn
// reported stands as a valid placeholder, so check does not report it again.
func parse[T checker[T]](taskType string, data []byte, decodeFn func(*decoder, json.RawMessage) T) (Payload, error) {
	if len(data) > MaxPayloadBytes {
		return nil, NewValidationError(taskType, FieldError{Message: "larger than " + strconv.Itoa(MaxPayloadBytes) + " bytes"})
	}
	if !utf8.Valid(data) {
		// JSON text is UTF-8; the decoder would replace the bad bytes and
		// accept the payload, whose raw form others may store and show.
		return nil, NewValidationError(taskType, FieldError{Message: "must be valid UTF-8"})
	}
	raw, msg := body(data)
	if msg != "" {
		return nil, NewValidationError(taskType, FieldError{Message: msg})
	}
	var d decoder
	p := decodeFn(&d, raw)
	n, checked := p.check()
	if err := result(taskType, append(d.problems, checked...)); err != nil {
		return nil, err
	}
	return n, nil
}

// body returns the single JSON value in data, or a message saying why there
// is not exactly one JSON object.
func body(data []byte) (json.RawMessage, string) {
	if json.Valid(data) { // one value and nothing else: the walk below may rely on it
		raw := json.RawMessage(bytes.TrimSpace(data))
		if kind(raw) != '{' {
			return nil, "must be a JSON object"
		}
		return raw, ""
	}
	if bytes.HasPrefix(data, byteOrderMark) { // encoding/json would name its first byte as 'ï'
		return nil, msgByteOrderMark
	}
	dec := json.NewDecoder(bytes.NewReader(data)) // only to say what is wrong
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
	return nil, "malformed JSON"
}

// byteOrderMark is U+FEFF in UTF-8, which some editors and Windows tools
// put at the start of a file; JSON text must not begin with it (RFC 8259).
var byteOrderMark = []byte("\xef\xbb\xbf")

// msgByteOrderMark is the problem of a body that starts with a byte order
// mark (internal/enqueue says the same of its JSON, in a copy a test holds
// equal).
const msgByteOrderMark = "starts with a byte order mark (U+FEFF): JSON must be sent without one"

// Placeholders stand for values the decoder reported as malformed: valid, so
// that validation, which judges the decoded payload, does not report the same
// value again as missing or invalid. A payload holding one is never returned.
const (
	placeholderID     = 1
	placeholderEmail  = "malformed@placeholder.invalid"
	placeholderDomain = "placeholder.invalid"
)

// decoder walks a JSON value that body found valid, recording the
// structural problems it finds.
type decoder struct {
	problems problems
}

func (d *decoder) add(path, msg string) {
	d.problems.add(path, msg)
}

// addIndex reports element i of the array at path, building the path only
// when the problem is listed.
func (d *decoder) addIndex(path string, i int, msg string) {
	if d.problems.full() {
		d.problems.skip()
		return
	}
	d.add(index(path, i), msg)
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
// not null, and reports unknown and repeated members; ok is false when v is
// not an object. known holds at most 64 names (a payload has five at most).
func (d *decoder) object(path string, v json.RawMessage, known []string, set func(key, path string, v json.RawMessage)) (ok bool) {
	if kind(v) != '{' {
		return false
	}
	// seen holds the known members met (bit i for known[i]) and the first
	// unknown ones: a repeated unknown member beyond those is reported as
	// unknown rather than as repeated, which counts the same and keeps the
	// map small. Most objects have only known members, and no map.
	var (
		seenKnown uint64
		seenOther map[string]bool
	)
	const maxSeen = 64
	eachRawMember(v, skipSpace(v, 0), func(raw, val []byte) {
		key, i := memberKey(raw, known)
		switch {
		case i >= 0 && seenKnown&(1<<i) != 0, i < 0 && seenOther[key]:
			d.addMember(path, key, "duplicate field")
		case i < 0:
			d.addMember(path, key, "unknown field")
		case kind(val) != 'n':
			set(key, member(path, key), val)
		}
		switch {
		case i >= 0:
			seenKnown |= 1 << i
		case bits.OnesCount64(seenKnown)+len(seenOther) < maxSeen:
			if seenOther == nil {
				seenOther = map[string]bool{}
			}
			seenOther[key] = true
		}
	})
	return true
}

// memberKey decodes the JSON string raw, a member name, and returns its
// index in known (-1 when it is not one of them). A known name comes back
// as the string of known, without allocating.
func memberKey(raw []byte, known []string) (string, int) {
	if bytes.IndexByte(raw, '\\') < 0 {
		name := raw[1 : len(raw)-1]
		for i, k := range known {
			if string(name) == k {
				return k, i
			}
		}
		return string(name), -1
	}
	key := unquote(raw)
	return key, slices.Index(known, key)
}

// addMember reports member key of the object at path, building the path
// only when the problem is listed.
func (d *decoder) addMember(path, key, msg string) {
	if d.problems.full() {
		d.problems.skip()
		return
	}
	d.add(member(path, key), msg)
}

// member returns the path of member key of the object at path. A key that
// is not a plain name (it can only be an unknown one) is quoted and cut to
// 64 characters, so that a path never echoes much of the input, and each of
// its words holding an '@' is replaced by redactedEmail first: a problem
// goes to the worker's log, asynq's last_error and the dead letter, where
// no address may go (the payload is where addresses live).
func member(path, key string) string {
	if !plainKey(key) {
		key = fmt.Sprintf("%.64q", withoutAddresses(key, 64*utf8.UTFMax))
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// redactedEmail stands for an address left out of a problem.
const redactedEmail = "[email]"

// withoutAddresses returns s with each word (a run of characters other than
// white space) that holds an '@' after its first character replaced by
// redactedEmail: an address, with whatever a producer wrote around it, is
// never echoed, while a JSON-LD name such as "@type" still is. Only the
// start of the result is built, at least its first limit bytes: a name of
// any length costs a bounded string.
func withoutAddresses(s string, limit int) string {
	if strings.IndexByte(s, '@') < 0 {
		return s
	}
	var b strings.Builder
	put := func(part string) { b.WriteString(part[:min(len(part), max(limit-b.Len(), 0))]) }
	for s != "" && b.Len() < limit {
		space := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsSpace(r) })
		if space < 0 {
			space = len(s)
		}
		put(s[:space])
		s = s[space:]
		end := strings.IndexFunc(s, unicode.IsSpace)
		if end < 0 {
			end = len(s)
		}
		if word := s[:end]; len(word) > 1 && strings.IndexByte(word[1:], '@') >= 0 {
			b.WriteString(redactedEmail)
		} else {
			put(word)
		}
		s = s[end:]
	}
	return b.String()
}

// plainKey reports whether key is 1 to 64 letters, digits, '_' or '-'.
func plainKey(key string) bool {
	if key == "" || len(key) > 64 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !isAlnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// integer decodes a JSON integer. Negative values too large for an int64
// become math.MinInt64 and are left to validation, which rejects them anyway.
// ok is false when the value was reported.
func (d *decoder) integer(path string, v json.RawMessage) (n int64, ok bool) {
	s := string(bytes.TrimSpace(v))
	if c := kind(v); c != '-' && (c < '0' || c > '9') {
		d.add(path, "must be an integer")
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err == nil:
		return n, true
	case errors.Is(err, strconv.ErrRange) && s[0] == '-':
		return math.MinInt64, true
	case errors.Is(err, strconv.ErrRange):
		d.add(path, "must be at most "+strconv.FormatInt(math.MaxInt64, 10))
	default:
		d.add(path, "must be an integer")
	}
	return 0, false
}

// id decodes a required positive id; an explicit 0 is reported here so that
// validation's "required" is kept for a missing one. A reported id stands as
// placeholderID.
func (d *decoder) id(path string, v json.RawMessage) int64 {
	n, ok := d.integer(path, v)
	switch {
	case !ok:
		return placeholderID
	case n == 0:
		d.add(path, msgPositive)
		return placeholderID
	}
	return n
}

// boolean decodes true or false; a value of another type is reported and
// stands as false.
func (d *decoder) boolean(path string, v json.RawMessage) bool {
	switch string(bytes.TrimSpace(v)) {
	case "true":
		return true
	case "false":
		return false
	}
	d.add(path, "must be true or false")
	return false
}

// str decodes a string; a value of another type is reported and stands as
// "", which validation accepts for optional members.
func (d *decoder) str(path string, v json.RawMessage) string {
	return d.strOr(path, v, "")
}

// strOr decodes a string; a value of another type is reported and stands as
// placeholder.
func (d *decoder) strOr(path string, v json.RawMessage, placeholder string) string {
	s, ok := stringValue(v)
	if !ok {
		d.add(path, "must be a string")
		return placeholder
	}
	return s
}

// stringValue decodes v when it is a JSON string.
func stringValue(v json.RawMessage) (string, bool) {
	v = bytes.TrimSpace(v)
	if kind(v) != '"' {
		return "", false
	}
	return unquote(v), true
}

// elements calls fn for each element of the array v, reading one element at a
// time and stopping after MaxListLength+1 of them (validation reports a list
// that long); ok is false when v is not an array.
func elements(v json.RawMessage, fn func(i int, e json.RawMessage)) (ok bool) {
	if kind(v) != '[' {
		return false
	}
	eachElement(v, skipSpace(v, 0), func(i int, e []byte) bool {
		fn(i, e)
		return i < MaxListLength
	})
	return true
}

// emails decodes an array of addresses; an element of another type is
// reported and stands as placeholderEmail so that later indexes keep their
// place, and a value that is not an array stands as one placeholder.
func (d *decoder) emails(path string, v json.RawMessage) []string {
	var out []string
	ok := elements(v, func(i int, e json.RawMessage) {
		s, ok := stringValue(e)
		if !ok {
			d.addIndex(path, i, "must be a string")
			s = placeholderEmail
		}
		out = append(out, s)
	})
	if !ok {
		d.add(path, "must be an array of strings")
		return []string{placeholderEmail}
	}
	if out == nil {
		out = []string{}
	}
	return out
}

func decodeSetEmails(d *decoder, raw json.RawMessage) SetEmails {
	var p SetEmails
	known := []string{"order_id", "additional_emails", "account", "sequence"}
	hasEmails := false // additional_emails is present and not null
	d.object("", raw, known, func(key, path string, v json.RawMessage) {
		switch key {
		case "order_id":
			p.OrderID = d.id(path, v)
		case "additional_emails":
			p.AdditionalEmails = d.emails(path, v)
			hasEmails = true
		case "account":
			p.Account = d.str(path, v)
		case "sequence":
			p.Sequence, _ = d.integer(path, v)
		}
	})
	if !hasEmails {
		d.add("additional_emails", "required (send [] to clear the list)")
	}
	return p
}

func decodeResendDCV(d *decoder, raw json.RawMessage) ResendDCV {
	var p ResendDCV
	known := []string{"order_id", "domain_approval_emails", "locale", "only_if_pending", "account"}
	d.object("", raw, known, func(key, path string, v json.RawMessage) {
		switch key {
		case "order_id":
			p.OrderID = d.id(path, v)
		case "domain_approval_emails":
			p.DomainApprovalEmails = d.approvals(path, v)
		case "locale":
			p.Locale = d.str(path, v)
		case "only_if_pending":
			p.OnlyIfPending = d.boolean(path, v)
		case "account":
			p.Account = d.str(path, v)
		}
	})
	return p
}

// approvals decodes domain_approval_emails; an element that is not an object
// is reported and stands as a valid placeholder entry so that later indexes
// keep their place, and so does a required member of the wrong type.
func (d *decoder) approvals(path string, v json.RawMessage) []DomainApprovalEmail {
	var out []DomainApprovalEmail
	known := []string{"domain", "email", "email_domain"}
	ok := elements(v, func(i int, e json.RawMessage) {
		var a DomainApprovalEmail
		badDomain := false
		ep := ""
		if kind(e) == '{' {
			ep = index(path, i) // members of an object are reported under it
		}
		isObject := d.object(ep, e, known, func(key, path string, v json.RawMessage) {
			switch key {
			case "domain":
				s, ok := stringValue(v)
				badDomain = !ok
				if !ok {
					d.add(path, "must be a string")
				}
				a.Domain = s
			case "email":
				a.Email = d.strOr(path, v, placeholderEmail)
			case "email_domain":
				a.EmailDomain = d.str(path, v)
			}
		})
		switch {
		case !isObject:
			d.addIndex(path, i, "must be an object")
			a = DomainApprovalEmail{Domain: placeholderDomain, Email: placeholderEmail}
		case badDomain:
			// Stand as the email domain when it is valid, so that the check
			// that relates the two finds nothing to say.
			a.Domain = placeholderDomain
			if nd := normalizeDomain(a.EmailDomain); ValidDNSName(nd) {
				a.Domain = nd
			}
		}
		out = append(out, a)
	})
	if !ok {
		d.add(path, "must be an array of objects")
		return nil
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
			p.Emails = d.emails(path, v)
		case "certificate_collect_format":
			p.CertificateCollectFormat = d.strOr(path, v, CollectAttachment)
		case "custom_message":
			p.CustomMessage = d.str(path, v)
		case "account":
			p.Account = d.str(path, v)
		}
	})
	return p
}

func decodeResendDomainDCV(d *decoder, raw json.RawMessage) ResendDomainDCV {
	var p ResendDomainDCV
	known := []string{"domain_id", "name_scope", "locale", "email_array", "account"}
	d.object("", raw, known, func(key, path string, v json.RawMessage) {
		switch key {
		case "domain_id":
			p.DomainID = d.id(path, v)
		case "name_scope":
			p.NameScope = d.str(path, v)
		case "locale":
			p.Locale = d.str(path, v)
		case "email_array":
			p.EmailArray = d.emails(path, v)
		case "account":
			p.Account = d.str(path, v)
		}
	})
	return p
}
