package tasks_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// fe is shorthand for a FieldError in tables.
func fe(field, message string) tasks.FieldError {
	return tasks.FieldError{Field: field, Message: message}
}

// assertProblems fails unless err is a *ValidationError of type typ listing
// exactly want, in order; want nil means err must be nil.
func assertProblems(t *testing.T, typ string, err error, want []tasks.FieldError) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("got error %v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if !errors.Is(err, tasks.ErrInvalidPayload) {
		t.Errorf("errors.Is(%v, ErrInvalidPayload) = false", err)
	}
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %T %v, want *tasks.ValidationError", err, err)
	}
	if ve.Type != typ {
		t.Errorf("Type = %q, want %q", ve.Type, typ)
	}
	if !reflect.DeepEqual(ve.Errors, want) {
		t.Errorf("problems:\n got %v\nwant %v", ve.Errors, want)
	}
}

// emails returns n distinct valid addresses.
func emails(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user%d@example.com", i)
	}
	return out
}
