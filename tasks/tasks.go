// Package tasks is certmail's public producer package: the asynq task type
// names, the payload of each task type, the validation rules every entry point
// shares, and constructors that turn a payload into an *asynq.Task.
//
// Another Go service enqueues a DigiCert CertCentral email operation by building
// a payload, turning it into a task with the matching constructor and handing
// it to its own asynq client:
//
//	client := asynq.NewClient(asynq.RedisClientOpt{Addr: "redis:6379"})
//	defer client.Close()
//	task, err := tasks.NewSetEmailsTask(tasks.SetEmails{
//		OrderID:          123,
//		AdditionalEmails: []string{"jill.valentine@example.com"},
//	})
//	if err != nil {
//		return err // a *tasks.ValidationError listing every problem
//	}
//	info, err := client.EnqueueContext(ctx, task)
//
// The constructors normalise the payload (trimmed addresses, lower-case
// domains, duplicates removed), validate it, refuse an asynq.TaskID longer
// than MaxTaskIDBytes or one the dashboard cannot address (ValidTaskID: no
// '/', '\\', '?', '#', '%' or control character, not "." or "..", nor
// beginning or ending with a space), an asynq.Queue that ValidQueueName
// refuses and an asynq.Timeout (or asynq.Deadline) shorter than MinTimeout,
// and prepend DefaultOptions, so a task that reaches Redis is always one the certmail
// worker accepts. Give the queue and the timeout to the constructor: those
// given to the asynq client's Enqueue are not checked, no worker serves a
// name such as "Default" or "bulk/1", and a task with too short a timeout
// is dead-lettered without a call (timeout_too_short). Whether the workers serve a valid name
// (CERTMAIL_QUEUES) the constructors cannot tell. A producer that builds a
// task with asynq.NewTask itself passes DefaultOptions (or at least
// asynq.Retention(DefaultRetention)) too: without a retention, asynq deletes
// a completed task and its result at once, and no one can read its outcome.
// Parse is the strict reader used by the worker, the HTTP API and the CLI for
// payloads that arrive as JSON.
//
// What validation builds from its input is bounded whatever the input: a
// *ValidationError lists at most MaxFieldErrors problems and counts the rest,
// Parse reads at most MaxPayloadBytes, and a list is read no further than
// MaxListLength elements.
//
// The package imports asynq and the standard library only, so producers never
// pull in the worker.
package tasks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/hibiken/asynq"
)

// Task type names. They are a wire contract and are never renamed.
const (
	// TypeSetEmails replaces the additional notification emails of an order.
	TypeSetEmails = "set-emails"
	// TypeResendDCV resends the domain-control-validation emails of an order.
	TypeResendDCV = "resend-dcv"
	// TypeSendCert emails a copy of an issued certificate.
	TypeSendCert = "send-cert"
	// TypeResendDomainDCV resends the domain-control-validation emails of
	// one domain (the domains of OV and EV orders, pre-validated domains).
	TypeResendDomainDCV = "resend-domain-dcv"
)

// Defaults and limits shared by every entry point.
const (
	// DefaultAccount is the DigiCert account used when a payload names none.
	DefaultAccount = "default"
	// DefaultQueue is the asynq queue NewTask puts tasks in unless told otherwise.
	DefaultQueue = "default"
	// DefaultMaxRetry is how many times a task is retried before it is dead-lettered.
	DefaultMaxRetry = 12
	// DefaultTimeout bounds one delivery attempt.
	DefaultTimeout = 2 * time.Minute
	// DefaultRetention is how long the result of a completed task is kept.
	DefaultRetention = 24 * time.Hour
	// MaxEntries is the most emails or approval entries one task may carry,
	// counted after duplicates are removed.
	MaxEntries = 100
	// MaxListLength is the most elements an email or approval list may
	// have as sent, duplicates included; a longer list is refused without
	// reading the elements beyond it.
	MaxListLength = 10 * MaxEntries
	// MaxEmailLength is the longest email address accepted, in characters.
	MaxEmailLength = 254
	// MaxSequenceAhead is how far ahead of the clock a set-emails Sequence
	// (Unix nanoseconds) may be.
	MaxSequenceAhead = time.Minute
	// MaxCustomMessage is the longest custom_message accepted, in characters (runes).
	MaxCustomMessage = 2000
	// MaxTaskIDBytes is the longest task id (asynq.TaskID) accepted, in
	// bytes: NewTask refuses a longer one, and the worker dead-letters a task
	// whose id is longer without processing it.
	MaxTaskIDBytes = 256
	// MinTimeout is the shortest asynq.Timeout NewTask accepts, and the
	// least an asynq.Deadline must be ahead of now. A worker starts a
	// DigiCert call only with a tenth of the call's 20 s budget (2 s) left
	// of its delivery's deadline, and asynq counts a timeout in whole
	// seconds: a task with less is dead-lettered at its first delivery,
	// without a call (error code timeout_too_short).
	MinTimeout = 3 * time.Second
)

// Types returns the task type names in a stable order.
func Types() []string {
	return []string{TypeSetEmails, TypeResendDCV, TypeSendCert, TypeResendDomainDCV}
}

// Payload is implemented by SetEmails, ResendDCV, SendCert and
// ResendDomainDCV (value receivers; pointers to them work too).
type Payload interface {
	// TaskType returns the asynq type name of the payload.
	TaskType() string
	// AccountName returns the DigiCert account to use: Account, or
	// DefaultAccount when it is empty.
	AccountName() string
	// Validate returns nil, or a *ValidationError listing every problem. It
	// judges the payload as NewTask would send it, that is after
	// normalisation, but reports array indexes as they are in the payload.
	Validate() error
	// Normalized returns a copy with surrounding spaces trimmed, domains
	// lower-cased and duplicates removed.
	Normalized() Payload
}

// DefaultOptions returns the options NewTask puts before the caller's own:
// queue DefaultQueue, DefaultMaxRetry retries, DefaultTimeout per attempt and
// DefaultRetention for the result. Give them to asynq.NewTask when building a
// task from a type name and JSON: asynq's own default keeps no result.
func DefaultOptions() []asynq.Option {
	return []asynq.Option{
		asynq.Queue(DefaultQueue),
		asynq.MaxRetry(DefaultMaxRetry),
		asynq.Timeout(DefaultTimeout),
		asynq.Retention(DefaultRetention),
	}
}

// NewTask normalises and validates p, stamps the Sequence of a SetEmails whose
// Sequence is zero, and returns an asynq task carrying the JSON payload.
// DefaultOptions come first and opts after them, so the caller's options win.
// An invalid payload gives a nil task and a *ValidationError; an
// asynq.TaskID longer than MaxTaskIDBytes, a nil task and an error wrapping
// ErrTaskIDTooLong; one that ValidTaskID refuses for what it holds, a nil
// task and an error wrapping ErrInvalidTaskID; an asynq.Queue whose name ValidQueueName refuses, a nil
// task and an error wrapping ErrInvalidQueue; an asynq.Timeout shorter than
// MinTimeout, or an asynq.Deadline less than MinTimeout away, a nil task and
// an error wrapping ErrTimeoutTooShort.
func NewTask(p Payload, opts ...asynq.Option) (*asynq.Task, error) {
	if err := checkTaskID(opts); err != nil {
		return nil, err
	}
	if err := checkQueue(opts); err != nil {
		return nil, err
	}
	if err := checkTimeout(opts, time.Now()); err != nil {
		return nil, err
	}
	var (
		n    Payload
		errs []FieldError
	)
	switch v := concrete(p).(type) {
	case SetEmails:
		s, e := v.check()
		if len(e) == 0 && s.Sequence == 0 {
			s.Sequence = nextSequence()
		}
		n, errs = s, e
	case ResendDCV:
		n, errs = v.check()
	case SendCert:
		n, errs = v.check()
	case ResendDomainDCV:
		n, errs = v.check()
	case nil:
		return nil, fmt.Errorf("new task: %w: nil payload", ErrInvalidPayload)
	default:
		return nil, fmt.Errorf("new task: %w: %T", ErrUnknownType, p)
	}
	if len(errs) > 0 {
		return nil, NewValidationError(n.TaskType(), errs...)
	}
	b, err := marshal(n)
	if err != nil {
		return nil, fmt.Errorf("new %s task: %w", n.TaskType(), err)
	}
	defaults := DefaultOptions()
	all := make([]asynq.Option, 0, len(defaults)+len(opts)) // one slice for both, not a second to grow into
	all = append(append(all, defaults...), opts...)
	return asynq.NewTask(n.TaskType(), b, all...), nil
}

// checkTaskID refuses an asynq.TaskID among opts longer than
// MaxTaskIDBytes, naming its length, never the id; and one that holds what
// ValidTaskID refuses, quoting at most its first 64 characters.
func checkTaskID(opts []asynq.Option) error {
	for _, o := range opts {
		if o == nil || o.Type() != asynq.TaskIDOpt {
			continue
		}
		id, _ := o.Value().(string)
		if len(id) > MaxTaskIDBytes {
			return fmt.Errorf("new task: %w: asynq.TaskID of %d bytes, at most %d", ErrTaskIDTooLong, len(id), MaxTaskIDBytes)
		}
		if id != "" && !addressableID(id) {
			return fmt.Errorf("new task: %w: asynq.TaskID %.64q: %s", ErrInvalidTaskID, id, TaskIDRule)
		}
	}
	return nil
}

// TaskIDRule says which task ids ValidTaskID refuses for what they hold, in
// the words of every message that refuses one (besides its length, at most
// MaxTaskIDBytes).
const TaskIDRule = `a task id may not hold / \ ? # % or a control character, nor begin or end with a space, nor be "." or ".."`

// ValidTaskID reports whether id is a task id certmail accepts: 1 to
// MaxTaskIDBytes bytes, not "." or "..", with no '/', '\\', '?', '#', '%'
// and no control character, neither beginning nor ending with a space. The
// dashboard builds the address of a single-task action (Run, Delete,
// Archive) by putting the id into the path as it is: the browser resolves
// "." and ".." segments, cuts the path at '?' and '#', splits it at '/' and
// '\\' and drops the spaces that end the address (a Delete's ends with the
// id), and the server decodes '%', so such an action on another id would
// act on other tasks or on none. NewTask refuses such an id; a task that a raw asynq producer enqueued under one is
// still processed (the dashboard's bulk actions, which send ids in a body,
// and certmail dlq address it).
func ValidTaskID(id string) bool {
	return id != "" && len(id) <= MaxTaskIDBytes && addressableID(id)
}

// addressableID reports whether id holds nothing ValidTaskID refuses but
// for its length.
func addressableID(id string) bool {
	if id == "." || id == ".." || strings.HasPrefix(id, " ") || strings.HasSuffix(id, " ") {
		return false
	}
	for _, r := range id {
		switch {
		case r == '/', r == '\\', r == '?', r == '#', r == '%':
			return false
		case unicode.IsControl(r):
			return false
		}
	}
	return true
}

// checkQueue refuses an asynq.Queue among opts whose name ValidQueueName
// refuses, quoting at most its first 64 characters.
func checkQueue(opts []asynq.Option) error {
	for _, o := range opts {
		if o == nil || o.Type() != asynq.QueueOpt {
			continue
		}
		if name, _ := o.Value().(string); !ValidQueueName(name) {
			return fmt.Errorf("new task: %w: asynq.Queue %.64q: a queue name is 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
				ErrInvalidQueue, name)
		}
	}
	return nil
}

// checkTimeout refuses an asynq.Timeout among opts shorter than MinTimeout
// (as asynq keeps it, in whole seconds; 0, no timeout of the caller's, is
// accepted) and an asynq.Deadline less than MinTimeout after now.
func checkTimeout(opts []asynq.Option, now time.Time) error {
	for _, o := range opts {
		if o == nil {
			continue
		}
		switch o.Type() {
		case asynq.TimeoutOpt:
			if d, _ := o.Value().(time.Duration); d != 0 && d.Truncate(time.Second) < MinTimeout {
				return fmt.Errorf("new task: %w: asynq.Timeout %s, at least %s", ErrTimeoutTooShort, d, MinTimeout)
			}
		case asynq.DeadlineOpt:
			if t, _ := o.Value().(time.Time); !t.IsZero() && t.Sub(now) < MinTimeout {
				return fmt.Errorf("new task: %w: asynq.Deadline %s from now, at least %s",
					ErrTimeoutTooShort, t.Sub(now).Truncate(time.Millisecond), MinTimeout)
			}
		}
	}
	return nil
}

// NewSetEmailsTask is NewTask for a SetEmails payload.
func NewSetEmailsTask(p SetEmails, opts ...asynq.Option) (*asynq.Task, error) {
	return NewTask(p, opts...)
}

// NewResendDCVTask is NewTask for a ResendDCV payload.
func NewResendDCVTask(p ResendDCV, opts ...asynq.Option) (*asynq.Task, error) {
	return NewTask(p, opts...)
}

// NewSendCertTask is NewTask for a SendCert payload.
func NewSendCertTask(p SendCert, opts ...asynq.Option) (*asynq.Task, error) {
	return NewTask(p, opts...)
}

// NewResendDomainDCVTask is NewTask for a ResendDomainDCV payload.
func NewResendDomainDCVTask(p ResendDomainDCV, opts ...asynq.Option) (*asynq.Task, error) {
	return NewTask(p, opts...)
}

// concrete returns p as one of the package's payload values, dereferencing
// pointers; nil for a nil payload or nil pointer; p itself for foreign types.
func concrete(p Payload) Payload {
	switch v := p.(type) {
	case *SetEmails:
		if v == nil {
			return nil
		}
		return *v
	case *ResendDCV:
		if v == nil {
			return nil
		}
		return *v
	case *SendCert:
		if v == nil {
			return nil
		}
		return *v
	case *ResendDomainDCV:
		if v == nil {
			return nil
		}
		return *v
	}
	return p
}

// lastSequence is the last Sequence handed out by nextSequence. It is package
// state on purpose: the ordering it provides must hold across every caller in
// the process, and the constructors are plain functions.
var lastSequence atomic.Int64

// nextSequence returns the current time in Unix nanoseconds, or one more than
// the previous value when the clock has not moved past it, so values are
// strictly increasing within the process even under concurrent calls.
func nextSequence() int64 {
	for {
		last := lastSequence.Load()
		next := max(time.Now().UnixNano(), last+1)
		if lastSequence.CompareAndSwap(last, next) {
			return next
		}
	}
}

// marshal encodes v as compact JSON without escaping <, > and &, which keeps
// addresses and messages readable in the dashboard and in logs.
func marshal(v any) ([]byte, error) {
	if m, ok := v.(json.Marshaler); ok {
		// Its own encoding comes from marshal: the Encoder would only run
		// it and copy its output through a second, compacting pass.
		return m.MarshalJSON()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
