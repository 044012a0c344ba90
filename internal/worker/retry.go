package worker

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/tasks"
)

// The delivery retry schedule (between deliveries of one task, as opposed to
// the client's quick retries inside one delivery): exponential from 30 s,
// ×2.5 each time, capped at 4 h, each delay ±20 % at random. The first delays
// stay short (under an hour for the first six retries), and a task survives
// a DigiCert outage as long as its retries span before it is dead-lettered.
// README "Retries" gives the span of tasks.DefaultMaxRetry retries, which
// TestReadmeRetryFigures computes from these constants.
const (
	retryInitial    = 30 * time.Second
	retryMultiplier = 2.5
	retryMax        = 4 * time.Hour
	retryJitter     = 0.2
)

// leaseExpiredDelay is the pause before a task whose worker died is tried again.
const leaseExpiredDelay = time.Second

// RetryDelay is the pause before delivery n+1 of a task whose delivery n
// (counted from 0) failed transiently. It walks a backoff/v4 exponential
// schedule n steps, so the delays follow the library's definition of
// exponential growth with randomisation.
func RetryDelay(n int) time.Duration {
	return retryDelay(n, rand.Float64)
}

func retryDelay(n int, random func() float64) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     retryInitial,
		RandomizationFactor: 0,
		Multiplier:          retryMultiplier,
		MaxInterval:         retryMax,
		MaxElapsedTime:      0,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	d := b.NextBackOff()
	for range n {
		d = b.NextBackOff()
	}
	// Jitter applied here rather than by the library so that tests can pin it.
	delta := retryJitter * float64(d)
	return time.Duration(float64(d) - delta + random()*2*delta)
}

// taskError is what a handler returns when a delivery does not succeed. It
// carries what the error handler logs and dead-letters, and how the retry is
// to be scheduled, so that the decision is made once, in the handler.
type taskError struct {
	code       string        // stable short code: invalid_payload, not_found|order, http_503, ...
	status     int           // DigiCert's HTTP status, 0 when none
	class      string        // permanent, transient, rate_limited, auth, ...
	retryAfter time.Duration // when the task is retried (not used when permanent)
	failure    bool          // counts against the task's retries
	err        error
}

// Error returns the task's reason, "code: message" (for example
// "not_found|order: Order not found."): short, on one line and bounded, so
// that asynq's last_error, the dead-letter entry and the log line all say the
// same thing an operator can act on. The Go error chain is detail().
func (e *taskError) Error() string { return e.code + ": " + e.message() }

// Bounds of what a failed task carries, in bytes.
const (
	maxReasonMessage = 512  // the message of the reason
	maxErrorDetail   = 2048 // the Go error chain, logged beside the reason
)

// message is the operator-readable part of the reason: what DigiCert said,
// what is wrong with the payload, or the error's text, cut to
// maxReasonMessage.
func (e *taskError) message() string {
	return deadletter.Clip(oneLine(describe(e.err)), maxReasonMessage)
}

// detail is the Go error chain, cut to maxErrorDetail, or "" when it says
// no more than the message.
func (e *taskError) detail() string {
	if e.err == nil {
		return ""
	}
	d := deadletter.Clip(oneLine(e.err.Error()), maxErrorDetail)
	if d == e.message() {
		return ""
	}
	return d
}

// describe says what went wrong in an operator's words.
func describe(err error) string {
	var apiErr *digicert.APIError
	var reqErr *digicert.RequestError
	var ve *tasks.ValidationError
	var de *domainError
	var re *refusedEarlier
	switch {
	case err == nil:
		return "no error"
	case errors.As(err, &re): // before domainError, which it wraps
		return re.reason()
	case errors.As(err, &de):
		return "domain " + strconv.FormatInt(de.domainID, 10) + ": " + describe(de.err)
	case errors.As(err, &ve):
		return ve.Error()
	case errors.As(err, &apiErr):
		var msgs []string
		for _, entry := range apiErr.Errors {
			msgs = append(msgs, cmp.Or(entry.Message, entry.Code))
		}
		if len(msgs) == 0 {
			return strings.TrimSpace(fmt.Sprintf("DigiCert answered %d %s", apiErr.Status, http.StatusText(apiErr.Status)))
		}
		return strings.Join(msgs, "; ")
	case errors.As(err, &reqErr) && digicert.ErrorCode(err) == "rate_limiter":
		return limiterReason(reqErr)
	case errors.As(err, &reqErr) && digicert.ErrorCode(err) == "deadline_near":
		return "not sent to DigiCert, the delivery's deadline is too near: " + strings.TrimPrefix(reqErr.Err.Error(), "not sent: ")
	case errors.As(err, &reqErr):
		return "no answer from DigiCert: " + reqErr.Err.Error()
	}
	return err.Error()
}

// limiterReason says why certmail's own limiter held a request back, so
// that nothing was sent: the account's cool-down after DigiCert's 429, a
// wait for a slot of its windows, or the limiter's Redis out of reach.
func limiterReason(reqErr *digicert.RequestError) string {
	var we *ratelimit.WaitError
	switch {
	case errors.As(reqErr, &we) && we.CoolDown:
		return "not sent to DigiCert, held back by the account's cool-down after DigiCert answered 429: next request in " +
			we.Wait.Round(time.Millisecond).String()
	case errors.As(reqErr, &we):
		return "not sent to DigiCert, held back by certmail's own rate limiter: next request slot in " +
			we.Wait.Round(time.Millisecond).String()
	}
	return "not sent to DigiCert, held back by certmail's own rate limiter: " + strings.TrimPrefix(reqErr.Err.Error(), "rate limiter: ")
}

// oneLine replaces line breaks and other control characters with spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// Unwrap exposes the cause and, for a permanent error, asynq.SkipRetry, so
// that errors.Is(err, asynq.SkipRetry) tells asynq to archive the task.
func (e *taskError) Unwrap() []error {
	if e.class == classPermanent {
		return []error{e.err, asynq.SkipRetry}
	}
	return []error{e.err}
}

// Classes of taskError, as logged in error_class.
const (
	classPermanent   = "permanent"
	classTransient   = "transient"
	classRateLimited = "rate_limited"
	classAuth        = "auth"
	classWait        = "wait"
)

// permanent marks err so that asynq archives the task at once.
func permanent(code string, status int, err error) error {
	return &taskError{code: code, status: status, class: classPermanent, failure: true, err: err}
}

// IsFailure tells asynq whether a handler error consumes one of the task's
// retries: waits caused by rate limits and paused accounts do not.
func IsFailure(err error) bool {
	var te *taskError
	if errors.As(err, &te) {
		return te.failure
	}
	return true
}

// retryDelayFunc is the asynq RetryDelayFunc: the handler already chose the
// delay; errors raised outside a handler (deadline exceeded, lease expired,
// a panic) follow the transient schedule.
func retryDelayFunc(n int, err error, _ *asynq.Task) time.Duration {
	var te *taskError
	if errors.As(err, &te) && te.retryAfter > 0 {
		return te.retryAfter
	}
	if errors.Is(err, asynq.ErrLeaseExpired) {
		// The worker holding the task died; DigiCert did not fail. Go again soon.
		return leaseExpiredDelay
	}
	return RetryDelay(n)
}

// exhausted turns a failed delivery of a task that has no retries left into
// a permanent error, keeping its code for the dead-letter entry.
func exhausted(err error) error {
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return err
	}
	te := &taskError{code: "internal", err: err}
	if errors.As(err, &te) {
		cp := *te
		te = &cp
	}
	te.class = classPermanent
	te.failure = true
	return te
}
