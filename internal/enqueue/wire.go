package enqueue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/certmail/certmail/tasks"
)

// Names of the options of the wire format: the API's query parameters (its
// idempotency key comes in the Idempotency-Key header) and the members of a
// line of `certmail enqueue --file` besides type and payload.
const (
	OptionQueue          = "queue"
	OptionProcessAt      = "process_at"
	OptionProcessIn      = "process_in"
	OptionIdempotencyKey = "idempotency_key"
)

// optionNames returns the option names, in the order Parse reads them.
func optionNames() []string {
	return []string{OptionQueue, OptionProcessAt, OptionProcessIn, OptionIdempotencyKey}
}

// Messages of the wire format's problems.
const (
	msgEmptyQueue = "must not be empty (leave it out for the default queue)"
	msgEmptyKey   = "must not be empty (leave it out for none)"
	msgTime       = "must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z"
	msgDuration   = "must be a Go duration, e.g. 90s or 1h30m"
)

// Parse reads a request of the wire format: its type and payload as given,
// and the options present in opts, by name (OptionQueue, ...), as text. An option
// that cannot be read is a problem under its name (an empty queue or
// idempotency key, a process_at that is not an RFC 3339 time (ParseTime), a
// process_in that is not a Go duration or has a minus sign, -0 too), and so
// is a name Parse does not know; what can be read is judged by Check.
func Parse(typ string, payload []byte, opts map[string]string) (Request, []tasks.FieldError) {
	req := Request{Type: typ, Payload: payload}
	var errs []tasks.FieldError
	add := func(field, msg string) { errs = append(errs, tasks.FieldError{Field: field, Message: msg}) }
	if v, ok := opts[OptionQueue]; ok {
		if v == "" {
			add(OptionQueue, msgEmptyQueue)
		}
		req.Queue = v
	}
	if v, ok := opts[OptionProcessAt]; ok {
		t, err := ParseTime(v)
		if err != nil {
			add(OptionProcessAt, msgTime)
		}
		req.ProcessAt = t
	}
	if v, ok := opts[OptionProcessIn]; ok {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			add(OptionProcessIn, msgDuration)
		case strings.HasPrefix(v, "-"): // -0 too, which Go reads as 0: the API's document allows no sign but +
			add(OptionProcessIn, msgNegative)
		default:
			req.ProcessIn = d
		}
	}
	if v, ok := opts[OptionIdempotencyKey]; ok {
		if v == "" {
			add(OptionIdempotencyKey, msgEmptyKey)
		}
		req.IdempotencyKey = v
	}
	var unknown []string // sorted below; a request without any costs no allocation
	for name := range opts {
		if !slices.Contains(optionNames(), name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		add(memberName(name), "unknown field")
	}
	return req, errs
}

// ParseTime reads an RFC 3339 time, such as 2026-01-02T15:04:05Z. The
// letters T and Z may be lower case, as RFC 3339 (section 5.6) allows and
// Go's time.RFC3339 layout does not.
func ParseTime(v string) (time.Time, error) {
	return time.Parse(time.RFC3339, strings.ToUpper(v))
}

// ByteOrderMark returns the problem of JSON text that starts with a UTF-8
// byte order mark, in the words of tasks.Parse, or "" when data does not
// start with one. encoding/json would call it "invalid character 'ï'", its
// first byte read as a rune, which does not tell what to remove.
func ByteOrderMark(data []byte) string {
	if !bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return ""
	}
	return "starts with a byte order mark (U+FEFF): JSON must be sent without one"
}

// DecodeLine reads one line of `certmail enqueue --file`: a JSON object
// with the members type and payload (required) and the options (Parse),
// each option a string; null counts as absent. Problems name the member at
// fault, a member name that is not plain quoted and cut. Type, payload or
// an option given twice is a "duplicate field", as the API refuses a
// repeated option, and only that is said of it (which value was meant is
// unknown); a line with two types or payloads comes back without them.
func DecodeLine(line []byte) (Request, []tasks.FieldError) {
	if msg := ByteOrderMark(line); msg != "" {
		return Request{}, []tasks.FieldError{{Message: msg}}
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(line, &members); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Request{}, []tasks.FieldError{{Message: "must be a JSON object"}}
		}
		return Request{}, []tasks.FieldError{{Message: "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")}}
	}
	if members == nil { // the line is null
		return Request{}, []tasks.FieldError{{Message: "must be a JSON object"}}
	}
	var errs []tasks.FieldError
	str := func(name string, required bool) (string, bool) {
		raw, ok := members[name]
		delete(members, name)
		if !ok || string(raw) == "null" {
			if required {
				errs = append(errs, tasks.FieldError{Field: name, Message: "required"})
			}
			return "", false
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			errs = append(errs, tasks.FieldError{Field: name, Message: "must be a string"})
			return "", false
		}
		return s, true
	}
	typ, _ := str("type", true)
	var payload []byte
	if raw, ok := members["payload"]; ok && string(raw) != "null" {
		payload = raw
	} else {
		errs = append(errs, tasks.FieldError{Field: "payload", Message: "required"})
	}
	delete(members, "payload")
	opts := map[string]string{}
	for _, name := range optionNames() {
		if v, ok := str(name, false); ok {
			opts[name] = v
		}
	}
	for name := range members { // unknown: Parse reports them
		opts[name] = ""
	}
	req, optErrs := Parse(typ, payload, opts)
	errs = append(errs, optErrs...)
	if dups := repeated(line); len(dups) > 0 {
		errs = slices.DeleteFunc(errs, func(fe tasks.FieldError) bool { return slices.Contains(dups, fe.Field) })
		dupErrs := make([]tasks.FieldError, 0, len(dups)+len(errs))
		for _, name := range dups {
			dupErrs = append(dupErrs, tasks.FieldError{Field: name, Message: "duplicate field"})
			if name == "type" || name == "payload" {
				req.Type, req.Payload = "", nil // no payload problems of one of two
			}
		}
		errs = append(dupErrs, errs...)
	}
	return req, errs
}

// repeated returns the members of the JSON object line among type, payload
// and the options that it gives more than once, in the order they repeat.
func repeated(line []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var seen, dups []string
	var skip json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		if err := dec.Decode(&skip); err != nil {
			break
		}
		name, _ := tok.(string)
		switch {
		case name != "type" && name != "payload" && !slices.Contains(optionNames(), name):
		case !slices.Contains(seen, name):
			seen = append(seen, name)
		case !slices.Contains(dups, name):
			dups = append(dups, name)
		}
	}
	return dups
}

// plainName is a member name that is shown as it is in a problem.
var plainName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// memberName is name as a problem shows it: as it is when plain, otherwise
// quoted and cut, so that a problem never echoes much of the input.
func memberName(name string) string {
	if plainName.MatchString(name) {
		return name
	}
	return fmt.Sprintf("%.64q", name)
}
