package tasks

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalidPayload matches every *ValidationError with errors.Is.
var ErrInvalidPayload = errors.New("invalid payload")

// ErrUnknownType is wrapped by the error for a task type other than the ones
// this package defines (Types).
var ErrUnknownType = errors.New("unknown task type")

// ErrTaskIDTooLong is wrapped by NewTask's error for an asynq.TaskID longer
// than MaxTaskIDBytes.
var ErrTaskIDTooLong = errors.New("task id too long")

// ErrInvalidTaskID is wrapped by NewTask's error for an asynq.TaskID that
// ValidTaskID refuses for what it holds: the dashboard could not address
// it.
var ErrInvalidTaskID = errors.New("invalid task id")

// ErrInvalidQueue is wrapped by NewTask's error for an asynq.Queue whose
// name ValidQueueName refuses: no certmail worker could serve that queue.
var ErrInvalidQueue = errors.New("invalid queue name")

// ErrTimeoutTooShort is wrapped by NewTask's error for an asynq.Timeout
// shorter than MinTimeout, or an asynq.Deadline nearer than that: no
// delivery of the task would have the time a DigiCert call needs.
var ErrTimeoutTooShort = errors.New("timeout too short")

// Bounds of a *ValidationError, so that an error about input of any size
// stays small wherever it is shown (an HTTP answer, a log line, asynq's
// last_error, a dead-letter entry).
const (
	// MaxFieldErrors is the most problems a *ValidationError lists; the
	// others are counted in one last entry.
	MaxFieldErrors = 20
	// MaxFieldLength is the longest Field kept, in bytes; a longer one is
	// cut and ends with "…".
	MaxFieldLength = 128
	// MaxMessageLength is the longest Message kept, in bytes; a longer one
	// is cut and ends with "…".
	MaxMessageLength = 256
	// maxTypeLength is the longest ValidationError.Type kept, in bytes.
	maxTypeLength = 64
)

// FieldError is one problem with a payload. Field is the JSON path of the
// offending value, indexing arrays as the producer sent them:
// "order_id", "additional_emails[1]", "domain_approval_emails[0].email_domain",
// or "" for the body as a whole. A member name other than 1 to 64 letters,
// digits, '_' or '-' (an unknown one) is quoted and cut to 64 characters,
// each of its words holding an address replaced by "[email]". Message is a
// short lower-case phrase naming the rule; it never repeats the value.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`

	omitted int // > 0 only in the entry that counts the problems left out
}

// ValidationError lists the problems found in a payload of type Type. It is
// bounded whatever the input: at most MaxFieldErrors problems are listed,
// each cut to MaxFieldLength and MaxMessageLength; when more were found, one
// last entry of Errors, with Field "", says how many ("and 1234 more
// problems not listed") and Omitted holds that number. Build one with
// NewValidationError, which applies these bounds.
type ValidationError struct {
	Type    string
	Errors  []FieldError
	Omitted int
}

// NewValidationError returns the *ValidationError of a payload of type typ
// listing errs within the bounds above. errs may hold the Errors of another
// *ValidationError (its count of omitted problems is carried over), so that
// problems found by several checks are merged with
// NewValidationError(typ, append(ve.Errors, more...)...).
func NewValidationError(typ string, errs ...FieldError) *ValidationError {
	e := &ValidationError{Type: clip(typ, maxTypeLength)}
	for _, fe := range errs {
		if fe.omitted > 0 {
			e.Omitted += fe.omitted
			continue
		}
		if len(e.Errors) == MaxFieldErrors {
			e.Omitted++
			continue
		}
		e.Errors = append(e.Errors, FieldError{Field: clip(fe.Field, MaxFieldLength), Message: clip(fe.Message, MaxMessageLength)})
	}
	if e.Omitted > 0 {
		e.Errors = append(e.Errors, omittedEntry(e.Omitted))
	}
	return e
}

// omittedEntry is the last entry of a list that left n problems out.
func omittedEntry(n int) FieldError {
	msg := "and " + strconv.Itoa(n) + " more problems not listed"
	if n == 1 {
		msg = "and 1 more problem not listed"
	}
	return FieldError{Message: msg, omitted: n}
}

// Error returns "invalid <type> payload: <field>: <message>; ...", bounded
// like the list even for a ValidationError not built by NewValidationError.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid ")
	b.WriteString(clip(e.Type, maxTypeLength))
	b.WriteString(" payload")
	errs := e.Errors
	if len(errs) > MaxFieldErrors+1 {
		errs = NewValidationError(e.Type, errs...).Errors
	}
	for i, fe := range errs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if fe.Field != "" {
			b.WriteString(clip(fe.Field, MaxFieldLength))
			b.WriteString(": ")
		}
		b.WriteString(clip(fe.Message, MaxMessageLength))
	}
	return b.String()
}

// Is reports whether target is ErrInvalidPayload.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalidPayload
}

// clip returns s as valid UTF-8 of at most limit bytes, cut on a rune
// boundary and ending with "…" when it was longer.
func clip(s string, limit int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= limit {
		return s
	}
	const mark = "…"
	cut := limit - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// problems collects FieldErrors in the order they are found: the first
// MaxFieldErrors of them, and a count of the others in one last entry, so
// that input of any size costs a fixed amount of memory to report.
type problems []FieldError

func (ps *problems) add(field, message string) {
	if ps.full() {
		ps.skip()
		return
	}
	*ps = append(*ps, FieldError{Field: field, Message: message})
}

// full reports whether further problems are only counted: callers that
// build an expensive path may test it first and call skip.
func (ps *problems) full() bool { return len(*ps) >= MaxFieldErrors }

// skip counts a problem that is not listed.
func (ps *problems) skip() {
	n := len(*ps)
	if n == MaxFieldErrors {
		*ps = append(*ps, FieldError{})
		n++
	}
	(*ps)[n-1].omitted++
}

// result returns nil for no problems, so callers never return a typed nil.
func result(typ string, ps []FieldError) error {
	if len(ps) == 0 {
		return nil
	}
	return NewValidationError(typ, ps...)
}
