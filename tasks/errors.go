package tasks

import (
	"errors"
	"strings"
)

// ErrInvalidPayload matches every *ValidationError with errors.Is.
var ErrInvalidPayload = errors.New("invalid payload")

// ErrUnknownType is wrapped by the error for a task type other than the three
// this package defines.
var ErrUnknownType = errors.New("unknown task type")

// FieldError is one problem with a payload. Field is the JSON path of the
// offending value, indexing arrays as the producer sent them:
// "order_id", "additional_emails[1]", "domain_approval_emails[0].email_domain",
// or "" for the body as a whole. Message is a short lower-case phrase naming
// the rule; it never repeats the value.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every problem found in a payload of type Type.
type ValidationError struct {
	Type   string
	Errors []FieldError
}

// Error returns "invalid <type> payload: <field>: <message>; ...".
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid ")
	b.WriteString(e.Type)
	b.WriteString(" payload")
	for i, fe := range e.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if fe.Field != "" {
			b.WriteString(fe.Field)
			b.WriteString(": ")
		}
		b.WriteString(fe.Message)
	}
	return b.String()
}

// Is reports whether target is ErrInvalidPayload.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalidPayload
}

// problems collects FieldErrors in the order they are found.
type problems []FieldError

func (ps *problems) add(field, message string) {
	*ps = append(*ps, FieldError{Field: field, Message: message})
}

// result returns nil for no problems, so callers never return a typed nil.
func result(typ string, ps []FieldError) error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Type: typ, Errors: ps}
}
