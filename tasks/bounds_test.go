package tasks_test

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/tasks"
)

// maxErrorText is what the text of a *ValidationError may reach whatever the
// input: MaxFieldErrors entries of the longest field and message, and the
// count of the rest.
const maxErrorText = (tasks.MaxFieldErrors+1)*(tasks.MaxFieldLength+tasks.MaxMessageLength+4) + 128

// arrayBody returns a set-emails (or resend-dcv) body whose list is filled
// with elem until the body is about size bytes.
func arrayBody(member, elem string, size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"order_id":1,"` + member + `":[`)
	for b.Len()+2*(len(elem)+1)+2 <= size {
		b.WriteString(elem + ",")
	}
	b.WriteString(elem + "]}")
	return b.Bytes()
}

// hugeInputs are bodies of about 1 MiB (the API's limit) that break rules in
// every way that grows with the input.
func hugeInputs() []struct {
	name, typ string
	body      []byte
} {
	var keys bytes.Buffer
	keys.WriteString(`{"order_id":1,"additional_emails":[]`)
	for i := 0; keys.Len() < tasks.MaxPayloadBytes-32; i++ {
		fmt.Fprintf(&keys, `,"k%d":1`, i)
	}
	keys.WriteString("}")
	return []struct {
		name, typ string
		body      []byte
	}{
		{"bad emails", tasks.TypeSetEmails, arrayBody("additional_emails", `"not an address"`, tasks.MaxPayloadBytes)},
		{"numbers for emails", tasks.TypeSetEmails, arrayBody("additional_emails", `1`, tasks.MaxPayloadBytes)},
		{"numbers for approvals", tasks.TypeResendDCV, arrayBody("domain_approval_emails", `1`, tasks.MaxPayloadBytes)},
		{"bad approval objects", tasks.TypeResendDCV, arrayBody("domain_approval_emails", `{"domain":"x","email":"y","z":1}`, tasks.MaxPayloadBytes)},
		{"unknown members", tasks.TypeSetEmails, keys.Bytes()},
		{"one long unknown member", tasks.TypeSetEmails, []byte(`{"order_id":1,"additional_emails":[],"` + strings.Repeat("k", tasks.MaxPayloadBytes-64) + `":1}`)},
		{"deeply nested", tasks.TypeSetEmails, []byte(`{"order_id":1,"additional_emails":` + strings.Repeat("[", 400000) + strings.Repeat("]", 400000) + "}")},
		{"over the size limit", tasks.TypeSetEmails, arrayBody("additional_emails", `"a@example.com"`, 10*tasks.MaxPayloadBytes)},
	}
}

// TestValidationErrorBoundedWhateverTheInput parses inputs of up to 10 MiB
// and checks that the error stays within a fixed size.
func TestValidationErrorBoundedWhateverTheInput(t *testing.T) {
	t.Parallel()
	for _, in := range hugeInputs() {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			_, err := tasks.Parse(in.typ, in.body)
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse = %v, want a *ValidationError", err)
			}
			if len(ve.Errors) > tasks.MaxFieldErrors+1 {
				t.Errorf("%d entries, want at most %d", len(ve.Errors), tasks.MaxFieldErrors+1)
			}
			for _, fe := range ve.Errors {
				if len(fe.Field) > tasks.MaxFieldLength || len(fe.Message) > tasks.MaxMessageLength {
					t.Errorf("entry of %d+%d bytes: %.80q", len(fe.Field), len(fe.Message), fe.Field)
				}
			}
			if n := len(err.Error()); n > maxErrorText {
				t.Errorf("error text is %d bytes, want at most %d", n, maxErrorText)
			}
			t.Logf("%d bytes in: %d entries, %d left out, text %d bytes", len(in.body), len(ve.Errors), ve.Omitted, len(err.Error()))
		})
	}
}

// TestValidationErrorCountsWhatItLeavesOut checks the exact count in the last
// entry, for the constructors and Parse alike.
func TestValidationErrorCountsWhatItLeavesOut(t *testing.T) {
	t.Parallel()
	bad := make([]string, 50)
	for i := range bad {
		bad[i] = fmt.Sprintf("bad%d", i)
	}
	body := setEmailsBody(0, bad)
	_, perr := tasks.Parse(tasks.TypeSetEmails, body)
	_, cerr := tasks.NewSetEmailsTask(tasks.SetEmails{AdditionalEmails: bad})
	for name, err := range map[string]error{"Parse": perr, "NewSetEmailsTask": cerr} {
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%s: %v, want a *ValidationError", name, err)
		}
		// order_id and 50 addresses: 51 problems, 20 listed.
		if len(ve.Errors) != tasks.MaxFieldErrors+1 || ve.Omitted != 31 {
			t.Fatalf("%s: %d entries, %d omitted; want %d and 31", name, len(ve.Errors), ve.Omitted, tasks.MaxFieldErrors+1)
		}
		if last := ve.Errors[len(ve.Errors)-1]; last.Field != "" || last.Message != "and 31 more problems not listed" {
			t.Errorf("%s: last entry %+v", name, last)
		}
		if !strings.HasSuffix(err.Error(), "; and 31 more problems not listed") {
			t.Errorf("%s: text %q", name, err.Error())
		}
	}
}

// setEmailsBody returns the JSON of a set-emails payload, addresses as given.
func setEmailsBody(orderID int, emails []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"order_id":%d,"additional_emails":[`, orderID)
	for i, e := range emails {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(strconv.Quote(e))
	}
	b.WriteString("]}")
	return b.Bytes()
}

// TestNewValidationErrorMerges checks that problems added to a bounded list
// keep it bounded and keep the count exact.
func TestNewValidationErrorMerges(t *testing.T) {
	t.Parallel()
	var errs []tasks.FieldError
	for i := range 30 {
		errs = append(errs, tasks.FieldError{Field: fmt.Sprintf("f%d", i), Message: "bad"})
	}
	ve := tasks.NewValidationError(tasks.TypeSendCert, errs...)
	if ve.Omitted != 10 {
		t.Fatalf("Omitted = %d, want 10", ve.Omitted)
	}
	merged := tasks.NewValidationError(ve.Type, append(ve.Errors, tasks.FieldError{Field: "queue", Message: "bad"})...)
	if merged.Omitted != 11 || len(merged.Errors) != tasks.MaxFieldErrors+1 {
		t.Fatalf("merged: %d entries, %d omitted; want %d and 11", len(merged.Errors), merged.Omitted, tasks.MaxFieldErrors+1)
	}
	if last := merged.Errors[tasks.MaxFieldErrors]; last.Message != "and 11 more problems not listed" {
		t.Errorf("last entry %+v", last)
	}
	few := tasks.NewValidationError("x", tasks.FieldError{Field: strings.Repeat("f", 1000), Message: strings.Repeat("é", 1000)})
	if fe := few.Errors[0]; len(fe.Field) > tasks.MaxFieldLength || len(fe.Message) > tasks.MaxMessageLength ||
		!strings.HasSuffix(fe.Field, "…") || !strings.HasSuffix(fe.Message, "é…") {
		t.Errorf("long entry not cut with a marker: %d %d %q", len(fe.Field), len(fe.Message), fe.Message[len(fe.Message)-8:])
	}
	// A ValidationError built by hand is bounded when printed too.
	raw := &tasks.ValidationError{Type: "x", Errors: make([]tasks.FieldError, 100000)}
	if n := len(raw.Error()); n > maxErrorText {
		t.Errorf("hand-built error text is %d bytes", n)
	}
}

// TestParseRefusesLongLists checks the limit on a list as sent, duplicates
// included.
func TestParseRefusesLongLists(t *testing.T) {
	t.Parallel()
	same := arrayBody("additional_emails", `"a@example.com"`, 16*(tasks.MaxListLength+10))
	_, err := tasks.Parse(tasks.TypeSetEmails, same)
	assertProblems(t, tasks.TypeSetEmails, err, []tasks.FieldError{fe("additional_emails", "at most 1000 elements as sent, duplicates included")})
	ok := arrayBody("additional_emails", `"a@example.com"`, 16*(tasks.MaxListLength-10))
	if _, err := tasks.Parse(tasks.TypeSetEmails, ok); err != nil {
		t.Errorf("a list of fewer than %d duplicates: %v", tasks.MaxListLength, err)
	}
}

// TestSequenceBound checks that a producer's sequence cannot be set far
// ahead of the clock, where it would win over every later update.
func TestSequenceBound(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tt := range []struct {
		name string
		seq  int64
		ok   bool
	}{
		{"now", now.UnixNano(), true},
		{"half a minute ahead", now.Add(30 * time.Second).UnixNano(), true},
		{"two minutes ahead", now.Add(2 * time.Minute).UnixNano(), false},
		{"largest int64", 1<<63 - 1, false},
		{"seconds instead of nanoseconds", now.Unix(), true},
	} {
		body := fmt.Sprintf(`{"order_id":1,"additional_emails":[],"sequence":%d}`, tt.seq)
		_, err := tasks.Parse(tasks.TypeSetEmails, []byte(body))
		if tt.ok {
			assertProblems(t, tasks.TypeSetEmails, err, nil)
		} else {
			assertProblems(t, tasks.TypeSetEmails, err, []tasks.FieldError{fe("sequence", "must not be more than 1m ahead of the current time in Unix nanoseconds")})
		}
	}
}

// TestParseMemoryBounded measures the heap Parse needs for the huge inputs.
// Not parallel: it measures the process's heap.
func TestParseMemoryBounded(t *testing.T) {
	const limit = 32 << 20
	for _, in := range hugeInputs() {
		peak := certmailtest.HeapPeak(func() { _, _ = tasks.Parse(in.typ, in.body) })
		t.Logf("%s (%d bytes): heap rose %.1f MiB", in.name, len(in.body), float64(peak)/(1<<20))
		if peak > limit {
			t.Errorf("%s: heap rose %.1f MiB, want at most %d MiB", in.name, float64(peak)/(1<<20), limit>>20)
		}
	}
}

// A payload that is not valid UTF-8 is refused as a whole, even where the
// decoder would have replaced the bad bytes: others keep and show the raw
// form (a schedule's payload).
func TestParseRefusesInvalidUTF8(t *testing.T) {
	t.Parallel()
	body := "{\"certificate_id\":1,\"emails\":[\"a@example.com\"],\"certificate_collect_format\":\"attachment\",\"custom_message\":\"hi \xff\"}"
	_, err := tasks.Parse(tasks.TypeSendCert, []byte(body))
	assertProblems(t, tasks.TypeSendCert, err, []tasks.FieldError{fe("", "must be valid UTF-8")})
}

// A Go producer's list of 100 000 bad addresses gives a bounded error too.
func TestConstructorErrorBounded(t *testing.T) {
	t.Parallel()
	bad := make([]string, 100000)
	for i := range bad {
		bad[i] = "nobody"
	}
	_, err := tasks.NewSetEmailsTask(tasks.SetEmails{OrderID: 1, AdditionalEmails: bad})
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != tasks.MaxFieldErrors+1 || len(err.Error()) > maxErrorText {
		t.Fatalf("error of %d bytes: %.200v", len(fmt.Sprint(err)), err)
	}
	// The list is too long, and each of its first 1000 elements is bad.
	if ve.Errors[0] != fe("additional_emails", "at most 1000 elements as sent, duplicates included") || ve.Omitted != 1001-tasks.MaxFieldErrors {
		t.Errorf("first %+v, %d omitted", ve.Errors[0], ve.Omitted)
	}
}

// TestBoundsKeepWhatFits checks that each bound is a limit, not a cut below
// it: a field and a message of exactly the longest length are kept whole, a
// payload of exactly MaxPayloadBytes is read, and a list of exactly
// MaxListLength elements as sent is accepted.
func TestBoundsKeepWhatFits(t *testing.T) {
	t.Parallel()
	field, message := strings.Repeat("f", tasks.MaxFieldLength), strings.Repeat("m", tasks.MaxMessageLength)
	ve := tasks.NewValidationError(tasks.TypeSetEmails, fe(field, message), fe(field+"f", message+"m"))
	if got := ve.Errors[0]; got.Field != field || got.Message != message {
		t.Errorf("a field of %d bytes and a message of %d bytes were cut: %q, %q", len(field), len(message), got.Field, got.Message)
	}
	if got := ve.Errors[1]; len(got.Field) > tasks.MaxFieldLength || len(got.Message) > tasks.MaxMessageLength ||
		!strings.HasSuffix(got.Field, "…") || !strings.HasSuffix(got.Message, "…") {
		t.Errorf("a field and a message one byte longer were not cut with a marker: %q, %q", got.Field, got.Message)
	}

	body := []byte(`{"order_id":1,"additional_emails":[]}`)
	exact := append(body, bytes.Repeat([]byte(" "), tasks.MaxPayloadBytes-len(body))...)
	if _, err := tasks.Parse(tasks.TypeSetEmails, exact); err != nil {
		t.Errorf("a payload of exactly MaxPayloadBytes: %v", err)
	}
	_, err := tasks.Parse(tasks.TypeSetEmails, append(exact, ' '))
	assertProblems(t, tasks.TypeSetEmails, err, []tasks.FieldError{fe("", "larger than 1048576 bytes")})

	list := make([]string, tasks.MaxListLength)
	for i := range list {
		list[i] = "jill@example.com"
	}
	assertProblems(t, tasks.TypeSetEmails, tasks.SetEmails{OrderID: 1, AdditionalEmails: list}.Validate(), nil)
	assertProblems(t, tasks.TypeSetEmails, tasks.SetEmails{OrderID: 1, AdditionalEmails: append(list, "jill@example.com")}.Validate(),
		[]tasks.FieldError{fe("additional_emails", "at most 1000 elements as sent, duplicates included")})
}
