// Package enqueue is the one definition of a request to enqueue a task, as
// every producer entry point receives it (the HTTP API, the command line,
// the scheduler's ticks): its type, JSON payload and options (Request); the
// wire format that carries them as text (Parse, and DecodeLine for a line
// of `certmail enqueue --file`); and Check, which judges a request by the
// same rules everywhere. Check is a pure function of the request and the
// configured accounts and queues (Rules): it needs no Redis, so the API,
// the CLI, the scheduler and the schedule store validate without opening
// anything. Package ops enqueues what Check accepts.
package enqueue

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/tasks"
)

// MaxIdempotencyKey is the longest idempotency key accepted, in bytes.
const MaxIdempotencyKey = 255

// Request is one task to enqueue, as a producer sent it.
type Request struct {
	Type      string        // task type name
	Payload   []byte        // JSON as received
	Queue     string        // "" means tasks.DefaultQueue; one of Rules.Queues
	ProcessAt time.Time     // zero means now
	ProcessIn time.Duration // 0 means now; ProcessAt and ProcessIn together are an error
	// IdempotencyKey is "" for none; at most MaxIdempotencyKey printable
	// ASCII characters.
	IdempotencyKey string
	// IdempotencyScope is whose IdempotencyKey it is: equal keys in two
	// scopes are unrelated. The API sets it to a hash of the token that
	// sent the request, never the token itself; "" is the one scope of the
	// command line and of an API without authentication. It holds no NUL
	// and is not part of the wire format.
	IdempotencyScope string
	// TaskID, when not "", is the id the task gets (the scheduler's ticks
	// name theirs), one tasks.ValidTaskID accepts; it cannot be combined
	// with IdempotencyKey, which picks the id itself. It is not part of the
	// wire format.
	TaskID string
}

// Rules are what a request is judged by beyond its own form: the
// configuration every process reads.
type Rules struct {
	// Accounts are the names of the configured DigiCert accounts; a payload
	// naming another is refused. Empty means tasks.DefaultAccount alone, as
	// account.Load gives without an accounts file.
	Accounts []string
	// Queues are the queues the workers serve (CERTMAIL_QUEUES); a task for
	// any other queue is refused. Empty means those of queues.Default.
	Queues []string
}

// WithDefaults returns r with empty lists replaced by the defaults, sorted.
func (r Rules) WithDefaults() Rules {
	if len(r.Accounts) == 0 {
		r.Accounts = []string{tasks.DefaultAccount}
	}
	if len(r.Queues) == 0 {
		r.Queues = queues.DefaultNames()
	}
	r.Accounts = slices.Sorted(slices.Values(r.Accounts))
	r.Queues = slices.Sorted(slices.Values(r.Queues))
	return r
}

// Validate reports the first of r's queues that no worker may serve
// (queues.CheckServed): queues.Reserved, the metrics' label of the queues
// no process serves, or a name no queue may have. Every command that reads
// CERTMAIL_QUEUES refuses them when it parses the setting; Validate refuses
// them for a Go caller that builds Rules itself.
func (r Rules) Validate() error {
	for _, q := range r.Queues {
		if err := queues.CheckServed(q); err != nil {
			return err
		}
	}
	return nil
}

// normalised reports whether r is as WithDefaults returns it, so that Check
// need not copy and sort its lists again for every request. Check only reads
// them.
func (r Rules) normalised() bool {
	return len(r.Accounts) > 0 && len(r.Queues) > 0 && slices.IsSorted(r.Accounts) && slices.IsSorted(r.Queues)
}

// Checked is a request that passed Check, ready to become a task.
type Checked struct {
	Payload   tasks.Payload // parsed and normalised
	Queue     string        // the queue, its default filled in
	ProcessAt time.Time     // zero: now
	// Hash is a SHA-256 of the type, the normalised payload and the queue,
	// set with an idempotency key only: two requests with one key are the
	// same request when their hashes are (SameRequest). The default account
	// named explicitly is left out, as the default queue is filled in, so
	// that {"account":"default"} and no account are one request. The time
	// (ProcessAt) is left out, and stays out: a key remembered before a
	// change of the hash would no longer match, and a retry across an
	// upgrade would enqueue twice.
	Hash string
	// oldHash is Hash as versions before the default account was left
	// out computed it (the account kept as given); it differs from Hash
	// only for a payload that names the default account. SameRequest
	// accepts it for keys remembered by those versions.
	oldHash          string
	IdempotencyKey   string
	IdempotencyScope string
	TaskID           string
}

// Messages of the option checks, in the style of the tasks package.
const (
	msgQueue          = "must be " + queues.NameRule
	msgBothTimes      = "give process_at or process_in, not both"
	msgNegative       = "must not be negative"
	msgKeyLength      = "at most 255 characters"
	msgKeyPrintable   = "must be printable ASCII"
	msgKeyAndTaskID   = "a task with an idempotency key gets its id from the key: give one or the other"
	msgUnknownAccount = "unknown account"
)

// Check judges req by r: the payload is read with tasks.Parse, and every
// problem with it, an account that is not configured ({"account", "unknown
// account; the configured accounts are …"}) and bad options ("queue", also for a queue no worker serves,
// "process_at", "process_in", "idempotency_key", "task_id") come back
// together in one bounded *tasks.ValidationError. An unknown type gives an
// error wrapping tasks.ErrUnknownType.
func Check(req Request, r Rules) (Checked, error) {
	if !r.normalised() { // the callers' rules usually are: ops.Service's are
		r = r.WithDefaults()
	}
	p, err := tasks.Parse(req.Type, req.Payload)
	var errs, listed []tasks.FieldError
	if err != nil { // ve lives in here: errors.As moves it to the heap
		var ve *tasks.ValidationError
		switch {
		case errors.As(err, &ve):
			errs = slices.Clone(ve.Errors)
		case errors.Is(err, tasks.ErrUnknownType):
			return Checked{}, fmt.Errorf("task type %.64q: %w", req.Type, tasks.ErrUnknownType)
		default:
			return Checked{}, fmt.Errorf("parse %s payload: %w", req.Type, err)
		}
		listed = errs
		if ve.Omitted > 0 {
			listed = errs[:len(errs)-1] // the last entry counts the problems left out
		}
	}
	if name, ok := accountOf(p, req.Payload, listed); ok && !slices.Contains(r.Accounts, cmp.Or(name, tasks.DefaultAccount)) {
		errs = append(errs, tasks.FieldError{Field: "account", Message: msgUnknown(r.Accounts)})
	}
	errs = append(errs, checkOptions(req)...)
	queue := cmp.Or(req.Queue, tasks.DefaultQueue)
	if tasks.ValidQueueName(queue) && !slices.Contains(r.Queues, queue) {
		errs = append(errs, tasks.FieldError{Field: "queue", Message: msgNotServed(r.Queues, req.Queue == "")})
	}
	if len(errs) > 0 {
		return Checked{}, tasks.NewValidationError(req.Type, errs...)
	}

	c := Checked{Payload: p, Queue: queue, ProcessAt: req.ProcessAt, IdempotencyKey: req.IdempotencyKey,
		IdempotencyScope: req.IdempotencyScope, TaskID: req.TaskID}
	if req.ProcessIn > 0 {
		c.ProcessAt = time.Now().Add(req.ProcessIn)
	}
	if req.IdempotencyKey != "" { // only an idempotency key needs the request's fingerprint
		n, named := withoutDefaultAccount(p)
		if c.Hash, err = requestHash(n, c.Queue); err != nil {
			return Checked{}, err
		}
		c.oldHash = c.Hash
		if named {
			if c.oldHash, err = requestHash(p, c.Queue); err != nil {
				return Checked{}, err
			}
		}
	}
	return c, nil
}

// SameRequest reports whether stored, the hash remembered with c's
// idempotency key, is that of the same request as c: c.Hash, or the hash
// as versions before this one computed it, which kept an explicit
// "account":"default" in (a key remembered by one of them, for a body that
// names the default account, is replayed, not refused). Those keys live for
// the idempotency keys' TTL (ops.Config.IdempotencyTTL, 24 h by default):
// the old form must be accepted for that long after the last process of an
// older version stopped enqueueing, and can go once every key stored before
// has expired.
func (c Checked) SameRequest(stored string) bool {
	return stored != "" && (stored == c.Hash || stored == c.oldHash)
}

// requestHash is the hex SHA-256 of p's type, p as JSON and queue, each
// followed by a NUL.
func requestHash(p tasks.Payload, queue string) (string, error) {
	canonical, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("encode %s payload: %w", p.TaskType(), err)
	}
	sum := sha256.New()
	for _, part := range [][]byte{[]byte(p.TaskType()), canonical, []byte(queue)} {
		sum.Write(part)
		sum.Write([]byte{0})
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// withoutDefaultAccount returns p with an Account that names the default
// account emptied, which is what an absent account means, and whether it
// emptied one: the hash of a request is then the same whether it names the
// default account or not. Other payloads come back as they are.
func withoutDefaultAccount(p tasks.Payload) (tasks.Payload, bool) {
	var (
		account *string       // the Account of cp
		cp      tasks.Payload // a copy of p
	)
	switch v := p.(type) {
	case tasks.SetEmails:
		account, cp = &v.Account, &v
	case tasks.ResendDCV:
		account, cp = &v.Account, &v
	case tasks.SendCert:
		account, cp = &v.Account, &v
	case tasks.ResendDomainDCV:
		account, cp = &v.Account, &v
	}
	if account == nil || *account != tasks.DefaultAccount {
		return p, false
	}
	*account = ""
	return cp, true
}

// accountOf returns the account a payload names so that it can be checked
// against the configured ones: from the parsed payload, or, when the payload
// has other problems, from its "account" member if that is a well-formed
// name. ok is false when there is no name to check.
func accountOf(p tasks.Payload, raw []byte, errs []tasks.FieldError) (string, bool) {
	if p != nil {
		return p.AccountName(), true
	}
	for _, fe := range errs {
		if fe.Field == "account" || fe.Field == "" {
			return "", false // already reported, or the body is not an object
		}
	}
	// Only the member named account is decoded: a map of the members would
	// hold every one of them (100 000 unknown ones: 12 MiB). encoding/json
	// matches member names without regard to case, so the name must be
	// there as it is (or written with escapes).
	if !bytes.Contains(raw, []byte(`"account"`)) && !bytes.Contains(raw, []byte(`\u`)) {
		return "", false
	}
	var members struct {
		Account *string `json:"account"`
	}
	if json.Unmarshal(raw, &members) != nil || members.Account == nil || *members.Account == "" {
		return "", false
	}
	return *members.Account, true
}

// maxListed bounds the names an error lists (accounts come from a file of
// any length).
const maxListed = 10

// msgUnknown says that an account is not configured, and which are.
func msgUnknown(accounts []string) string {
	names := strings.Join(accounts[:min(len(accounts), maxListed)], ", ")
	if n := len(accounts) - maxListed; n > 0 {
		names += " and " + strconv.Itoa(n) + " more"
	}
	return msgUnknownAccount + "; the configured accounts are " + names
}

// msgNotServed says that a queue is not one the workers serve, and which
// they serve.
func msgNotServed(served []string, isDefault bool) string {
	msg := "no worker serves this queue; CERTMAIL_QUEUES serves " + strings.Join(served, ", ")
	if isDefault {
		msg = "the default queue " + tasks.DefaultQueue + " is not served (CERTMAIL_QUEUES serves " +
			strings.Join(served, ", ") + "): name one of them"
	}
	return msg
}

// taskIDMessage says which task ids tasks.ValidTaskID refuses, in the words
// of the tasks package, so that the two cannot tell different rules.
func taskIDMessage() string {
	return "must be at most " + strconv.Itoa(tasks.MaxTaskIDBytes) + " bytes; " + tasks.TaskIDRule
}

// MaxDelay is how far ahead a task may be set to run (process_at,
// process_in): 43800h (1825 days), the longest interval a schedule may
// have. A mistyped year (9999, 2999) would otherwise park a task for
// centuries, its only sign a scheduled state.
const MaxDelay = 5 * 365 * 24 * time.Hour

// msgTooFar refuses a process_at or process_in beyond MaxDelay.
const msgTooFar = "must be at most 43800h (1825 days) ahead"

func checkOptions(req Request) []tasks.FieldError {
	var errs []tasks.FieldError
	add := func(field, msg string) { errs = append(errs, tasks.FieldError{Field: field, Message: msg}) }
	if req.Queue != "" && !tasks.ValidQueueName(req.Queue) {
		add(OptionQueue, msgQueue)
	}
	if !req.ProcessAt.IsZero() && req.ProcessIn != 0 {
		add(OptionProcessAt, msgBothTimes)
	}
	if req.ProcessIn < 0 {
		add(OptionProcessIn, msgNegative)
	}
	if req.ProcessIn > MaxDelay {
		add(OptionProcessIn, msgTooFar)
	}
	if !req.ProcessAt.IsZero() && req.ProcessAt.After(time.Now().Add(MaxDelay)) {
		add(OptionProcessAt, msgTooFar)
	}
	if len(req.IdempotencyKey) > MaxIdempotencyKey {
		add(OptionIdempotencyKey, msgKeyLength)
	}
	for i := 0; i < len(req.IdempotencyKey); i++ {
		if c := req.IdempotencyKey[i]; c < 0x20 || c > 0x7e {
			add(OptionIdempotencyKey, msgKeyPrintable)
			break
		}
	}
	if req.TaskID != "" && !tasks.ValidTaskID(req.TaskID) {
		add("task_id", taskIDMessage())
	}
	if req.TaskID != "" && req.IdempotencyKey != "" {
		add("task_id", msgKeyAndTaskID)
	}
	return errs
}
