package digicert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	maxErrorBody    = 512 // bytes of a non-2xx body kept in APIError.Body
	maxEntryText    = 256 // bytes kept of one DigiCert error code or message
	maxErrorEntries = 20  // DigiCert error entries kept from one answer
	maxCodeLength   = 64  // bytes of the code ErrorCode returns
)

// ErrInvalidRequest is wrapped by the error of a call that was never sent
// because it could not be: an id that is not positive, a body that is not
// JSON. Retrying does not help (ClassPermanent).
var ErrInvalidRequest = errors.New("invalid request")

// ErrBadAnswer is wrapped by the error of a call whose 2xx answer could not
// be read as what the endpoint returns (a body that is not the JSON
// expected, or one too long). A CDN's page answered with 200 during
// maintenance looks like this; retrying later helps (ClassTransient).
var ErrBadAnswer = errors.New("unreadable answer")

// errLimiter is wrapped by the error of a call whose Limiter failed.
var errLimiter = errors.New("rate limiter")

// budgetSpentRetryAfter is when a call whose budget went on waiting for the
// Limiter may be tried again: its wait ended, so a slot is free about now.
const budgetSpentRetryAfter = time.Second

// budgetSpent is the error of a call whose budget went on waiting for the
// Limiter: nothing was sent.
type budgetSpent struct{}

func (budgetSpent) Error() string             { return "call budget spent waiting for a slot" }
func (budgetSpent) RetryAfter() time.Duration { return budgetSpentRetryAfter }

// errDeadlineNear is wrapped by the error of a call not sent because less
// of its deadline was left than an attempt needs (deadlineNear).
var errDeadlineNear = errors.New("deadline near")

// deadlineNear is the error of a call not sent because only left of its
// deadline remained, less than the need of an attempt: nothing was sent,
// and it may be tried again at once with a new deadline.
type deadlineNear struct{ left, need time.Duration }

func (e deadlineNear) Error() string {
	return fmt.Sprintf("not sent: %s of the call's deadline left, an attempt needs %s",
		max(e.left, 0).Round(time.Millisecond), e.need)
}
func (deadlineNear) Is(target error) bool      { return target == errDeadlineNear }
func (deadlineNear) RetryAfter() time.Duration { return budgetSpentRetryAfter }

// ErrorEntry is one entry of DigiCert's {"errors":[{"code","message"}]}.
type ErrorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// APIError is a non-2xx answer from CertCentral (or from the CDN in front of
// it). Errors holds DigiCert's entries when the body was DigiCert JSON, none
// for HTML, plain text or an empty body. Body is the raw body made printable,
// without the API key and truncated to 512 bytes. Attempts counts the HTTP
// attempts of the call.
type APIError struct {
	Endpoint string
	Status   int
	Errors   []ErrorEntry
	Body     string
	Attempts int
}

// Error reads like "digicert additional-emails: 404 not_found|order: Order not
// found", every entry listed, or the status text when DigiCert gave none.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "digicert %s: %d", e.Endpoint, e.Status)
	if len(e.Errors) == 0 {
		if text := http.StatusText(e.Status); text != "" {
			b.WriteString(" " + text)
		}
	}
	for i, entry := range e.Errors {
		if i > 0 {
			b.WriteString(";")
		}
		switch {
		case entry.Code == "":
			b.WriteString(" " + entry.Message)
		case entry.Message == "":
			b.WriteString(" " + entry.Code)
		default:
			b.WriteString(" " + entry.Code + ": " + entry.Message)
		}
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// HasCode reports whether an entry's code has the given base, the part before
// the first '|' or ':' ("access_denied" matches "access_denied|missing_permission").
func (e *APIError) HasCode(base string) bool {
	for _, entry := range e.Errors {
		if codeBase(entry.Code) == base {
			return true
		}
	}
	return false
}

// HasFullCode reports whether an entry's code is exactly code, e.g.
// "access_denied|access_denied_invalid_key".
func (e *APIError) HasFullCode(code string) bool {
	for _, entry := range e.Errors {
		if entry.Code == code {
			return true
		}
	}
	return false
}

// invalidKey reports whether DigiCert's codes say the key is invalid or revoked.
func (e *APIError) invalidKey() bool {
	for _, entry := range e.Errors {
		if strings.Contains(strings.ToLower(entry.Code), "invalid_key") {
			return true
		}
	}
	return false
}

// class sorts an answer; see Class for the table.
func (e *APIError) class() Class {
	switch s := e.Status; {
	case s == http.StatusTooManyRequests:
		return ClassRateLimited
	case s == http.StatusUnauthorized:
		return ClassAuth
	case s == http.StatusForbidden:
		// A 403 that DigiCert did not explain comes from the WAF in front of
		// the API or from the key itself: either way it concerns the whole
		// account, so pausing the account beats dead-lettering every task.
		if e.invalidKey() || len(e.Errors) == 0 {
			return ClassAuth
		}
		return ClassPermanent
	case s == http.StatusRequestTimeout:
		return ClassTransient
	case s == http.StatusNotAcceptable:
		// DigiCert sends 406 alongside validation errors; a bare 406 comes
		// from something in between.
		if len(e.Errors) > 0 {
			return ClassPermanent
		}
		return ClassTransient
	case s >= 500:
		return ClassTransient
	default:
		// Other 4xx, and 3xx (a redirect is a misconfigured base URL).
		return ClassPermanent
	}
}

// codeBase returns the part of a DigiCert code before the first '|' or ':'.
func codeBase(code string) string {
	if i := strings.IndexAny(code, "|:"); i >= 0 {
		return code[:i]
	}
	return code
}

// newAPIError builds the error of a non-2xx answer from its raw body.
func newAPIError(endpoint string, status int, body []byte, attempts int, r redactor) *APIError {
	return &APIError{
		Endpoint: endpoint,
		Status:   status,
		Errors:   parseErrors(body, r),
		Body:     printable(withoutEmails(r.apply(string(body))), maxErrorBody),
		Attempts: attempts,
	}
}

// parseErrors reads DigiCert's error entries from body, tolerating anything:
// a body that is not a JSON object with an errors array yields none, and a
// code or message that is not a string is kept as its JSON text.
func parseErrors(body []byte, r redactor) []ErrorEntry {
	var doc struct {
		Errors []map[string]json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil
	}
	var entries []ErrorEntry
	for _, raw := range doc.Errors {
		entry := ErrorEntry{
			Code:    printable(withoutEmails(r.apply(jsonText(raw["code"]))), maxEntryText),
			Message: printable(withoutEmails(r.apply(jsonText(raw["message"]))), maxEntryText),
		}
		if entry.Code == "" && entry.Message == "" {
			continue
		}
		entries = append(entries, entry)
		if len(entries) == maxErrorEntries {
			break
		}
	}
	return entries
}

// jsonText returns a JSON string's value, or the JSON text of anything else.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(raw)
}

// printable returns s on one line: invalid UTF-8 becomes U+FFFD, anything not
// printable a space, and the result is cut to at most limit bytes on a rune
// boundary.
func printable(s string, limit int) string {
	var b strings.Builder
	for _, r := range s {
		if r != utf8.RuneError && !unicode.IsPrint(r) {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > limit {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// RequestError is a call that got no answer to use: a network failure, an
// attempt that timed out, or the caller's context ending (Err is then
// ctx.Err()). Err never holds the API key or request headers.
type RequestError struct {
	Endpoint string
	Attempts int
	Err      error
}

// Error reads like "digicert sendemail: Put "https://...": connection reset by peer".
func (e *RequestError) Error() string {
	msg := fmt.Sprintf("digicert %s: %v", e.Endpoint, e.Err)
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *RequestError) Unwrap() error { return e.Err }

// Timeout reports whether the request timed out.
func (e *RequestError) Timeout() bool { return isTimeout(e.Err) }

// Class is what to do about a failed call.
type Class int

// The classes, decided by Classify alone.
const (
	// ClassNone is the class of a nil error.
	ClassNone Class = iota
	// ClassPermanent: do not retry. 400, 403 access_denied|missing_permission,
	// 404, 405, 406 with DigiCert errors, 409, 410, 422 and any other 4xx not
	// listed below, a 3xx, and a request that could not be built.
	ClassPermanent
	// ClassTransient: retry later. Network errors, timeouts, the caller's
	// context ending (so the task is redelivered), 408, 5xx, a 406 without
	// DigiCert errors, a 2xx answer that cannot be read (ErrBadAnswer), and
	// any error this package does not know.
	ClassTransient
	// ClassRateLimited: 429, or the call was not sent, kept back by the
	// Limiter or by a deadline too near for an attempt (RetryAfter says for
	// how long); wait without spending a retry.
	ClassRateLimited
	// ClassAuth: the key is refused (401, 403 with an invalid-key code such
	// as access_denied|access_denied_invalid_key, or a 403 without DigiCert
	// errors, which a WAF sends): pause the account.
	ClassAuth
)

// String returns "none", "permanent", "transient", "rate_limited" or "auth".
func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassPermanent:
		return "permanent"
	case ClassTransient:
		return "transient"
	case ClassRateLimited:
		return "rate_limited"
	case ClassAuth:
		return "auth"
	default:
		return "class(" + strconv.Itoa(int(c)) + ")"
	}
}

// Classify is the one place that decides what a failed call means for its
// task. It looks through wrapping (errors.As); an unknown non-nil error is
// ClassTransient.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.class()
	}
	if errors.Is(err, ErrInvalidRequest) {
		return ClassPermanent
	}
	if _, ok := RetryAfter(err); ok {
		return ClassRateLimited
	}
	return ClassTransient
}

// RetryAfter reports how long to wait when err is the Limiter's refusal to
// wait any longer (an error in its chain with a RetryAfter method), or a
// call not sent because its deadline was too near: the call was not sent,
// and may be tried again after the returned duration.
func RetryAfter(err error) (time.Duration, bool) {
	var ra interface{ RetryAfter() time.Duration }
	if (errors.Is(err, errLimiter) || errors.Is(err, errDeadlineNear)) && errors.As(err, &ra) {
		return ra.RetryAfter(), true
	}
	return 0, false
}

// ErrorCode returns a short stable code for logs and the dead-letter stream:
// DigiCert's first code when there is one ("not_found|order"), else
// "http_<status>", "invalid_request", "bad_answer", "canceled",
// "rate_limiter", "deadline_near" (not sent: too little of the call's
// deadline left), "timeout", "network", or "unknown" for an error this
// package did not make. It returns "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		for _, entry := range apiErr.Errors {
			if code := strings.ReplaceAll(entry.Code, " ", "_"); code != "" {
				return printable(code, maxCodeLength)
			}
		}
		return "http_" + strconv.Itoa(apiErr.Status)
	}
	var netErr net.Error
	var reqErr *RequestError
	switch {
	case errors.Is(err, ErrInvalidRequest):
		return "invalid_request"
	case errors.Is(err, ErrBadAnswer):
		return "bad_answer"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, errLimiter):
		return "rate_limiter"
	case errors.Is(err, errDeadlineNear):
		return "deadline_near"
	case isTimeout(err):
		return "timeout"
	case errors.As(err, &reqErr), errors.As(err, &netErr):
		return "network"
	default:
		return "unknown"
	}
}

// isTimeout reports whether err is a deadline or a network timeout.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// emailPattern matches what looks like an email address in text DigiCert
// sent back: a dot-atom local part, '@', and a domain of two or more labels.
var emailPattern = regexp.MustCompile("[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)+")

// redactedEmail stands for an address removed from DigiCert's answer.
const redactedEmail = "[email]"

// withoutEmails replaces every address in s with redactedEmail. DigiCert
// may echo a recipient in an error message ("jill@example.com is not
// allowed"); the message goes to logs, to asynq's last_error and to the
// dead-letter stream, and addresses are personal data that only the task's
// payload may carry.
func withoutEmails(s string) string {
	if strings.IndexByte(s, '@') < 0 {
		return s
	}
	return emailPattern.ReplaceAllString(s, redactedEmail)
}

// redactor removes the API key from text that came from elsewhere: the key
// itself and the forms a JSON encoder may give it, in any ASCII case (a
// proxy or a firewall may quote a header lower-cased).
type redactor struct {
	forms []string
}

// newRedactor returns a redactor for keys ("" ones ignored).
func newRedactor(keys ...string) redactor {
	var forms []string
	for _, key := range keys {
		if key == "" {
			continue
		}
		forms = append(forms, key)
		if escaped := strings.ReplaceAll(key, "/", `\/`); escaped != key {
			forms = append(forms, escaped) // PHP-style JSON escapes slashes
		}
		if encoded, err := json.Marshal(key); err == nil {
			if s := string(encoded[1 : len(encoded)-1]); s != key {
				forms = append(forms, s) // Go-style JSON escapes <, >, &
			}
		}
	}
	// Longest first: a key inside another must not leave the rest of it.
	slices.SortStableFunc(forms, func(a, b string) int { return len(b) - len(a) })
	return redactor{forms: forms}
}

// apply returns s without any form of the key, matched with ASCII case
// folding.
func (r redactor) apply(s string) string {
	for _, form := range r.forms {
		s = replaceFold(s, form, redactedPlaceholder)
	}
	return s
}

// replaceFold returns s with every occurrence of old, compared with ASCII
// case folding, replaced by repl.
func replaceFold(s, old, repl string) string {
	if old == "" || len(s) < len(old) {
		return s
	}
	// Folding ASCII letters keeps every byte where it is: an index into
	// the folded text is one into s.
	folded, want := asciiLower(s), asciiLower(old)
	i := strings.Index(folded, want)
	if i < 0 {
		return s
	}
	var b strings.Builder
	start := 0
	for i >= 0 {
		b.WriteString(s[start : start+i])
		b.WriteString(repl)
		start += i + len(want)
		i = strings.Index(folded[start:], want)
	}
	b.WriteString(s[start:])
	return b.String()
}

// asciiLower returns s with its ASCII upper-case letters lower-cased and
// every other byte as it is.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// err returns err itself, or, in the unlikely case its text holds the key, an
// error with the key removed that keeps answering errors.Is for the context
// errors and Timeout.
func (r redactor) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if clean := r.apply(msg); clean != msg {
		return &redactedError{msg: clean, timeout: isTimeout(err), canceled: errors.Is(err, context.Canceled)}
	}
	return err
}

// redactedError stands in for an error whose text held the key.
type redactedError struct {
	msg      string
	timeout  bool
	canceled bool
}

// Error returns the text without the key.
func (e *redactedError) Error() string { return e.msg }

// Timeout reports whether the original error was a timeout.
func (e *redactedError) Timeout() bool { return e.timeout }

// Temporary is false; it completes net.Error.
func (e *redactedError) Temporary() bool { return false }

// Is keeps errors.Is working for the context errors.
func (e *redactedError) Is(target error) bool {
	return (e.timeout && target == context.DeadlineExceeded) || (e.canceled && target == context.Canceled)
}
