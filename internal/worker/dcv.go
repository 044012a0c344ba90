package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// resendIfPending runs a resend-dcv with only_if_pending. It reads the
// order's validation status first and sends nothing (the outcome taskresult.NotPending)
// when the order is not pending or none of its domains waits for
// validation by email. Otherwise a DV order is resent through the order,
// exactly as without only_if_pending, under the task's duplicate guard; an
// OV or EV order through the domain endpoint, once per domain waiting for
// email validation, each under a guard of its own, so that a redelivery
// after some of them succeeded sends only the others.
//
// The task's guard is checked before the read (a redelivery of a task whose
// sends all succeeded reads nothing) and written once every send succeeded.
func (p *processor) resendIfPending(ctx context.Context, d *delivery, pl tasks.ResendDCV) error {
	if d.taskID != "" {
		d.dedupKey = deliveredKey(d.taskID)
	}
	defer p.settle(ctx, d)
	var v digicert.OrderValidation
	_, err := p.call(ctx, d, func(ctx context.Context) (res digicert.Result, err error) {
		v, res, err = d.account.client.OrderValidation(ctx, pl.OrderID)
		return res, err
	})
	if errors.Is(err, errAlreadyDelivered) {
		return p.finish(ctx, d, taskresult.Duplicate, 0)
	}
	if err != nil {
		return err
	}
	d.detail.OrderStatus = taskresult.CleanOrderStatus(v.OrderStatus)
	d.report.orderStatus = d.detail.OrderStatus
	pending := v.PendingEmailDomains()
	if !v.Pending() || len(pending) == 0 {
		return p.finish(ctx, d, taskresult.NotPending, d.report.httpStatus)
	}
	if v.DV() {
		return p.resendThroughOrder(ctx, d, pl)
	}
	return p.resendPerDomain(ctx, d, pl, pending)
}

// resendThroughOrder resends a DV order's DCV emails with the body a
// resend-dcv without only_if_pending sends, under the task's guard.
func (p *processor) resendThroughOrder(ctx context.Context, d *delivery, pl tasks.ResendDCV) error {
	body, err := pl.DigiCertBody()
	if err != nil {
		return permanent("invalid_payload", 0, err)
	}
	sent := taskresult.Sent{Via: taskresult.ViaOrder, OrderID: pl.OrderID}
	res, err := p.call(ctx, d, func(ctx context.Context) (digicert.Result, error) {
		return d.account.client.ResendDCVEmails(ctx, pl.OrderID, body)
	})
	if errors.Is(err, errAlreadyDelivered) { // a delivery running alongside got there first
		sent.Outcome = taskresult.Duplicate
		d.detail.Add(sent)
		return p.finish(ctx, d, taskresult.Duplicate, 0)
	}
	if err != nil {
		return err
	}
	sent.Outcome, sent.HTTPStatus = taskresult.Delivered, res.Status
	d.detail.Add(sent)
	if d.dedupKey == "" {
		p.sent(ctx, d)
		return p.finish(ctx, d, taskresult.Delivered, res.Status)
	}
	if d.result, err = p.outcome(d, taskresult.Delivered, res.Status); err != nil {
		return err
	}
	p.sent(ctx, d) // the guard and the result in one round trip
	return nil
}

// sent writes the guard of the call that just succeeded, if it has one
// (with d.result, when set, and the call's restamp), and runs the
// AfterDelivery hook.
func (p *processor) sent(ctx context.Context, d *delivery) {
	if d.dedupKey != "" {
		p.writeGuard(ctx, d)
	} else {
		p.settle(ctx, d)
	}
	if p.afterDelivery != nil {
		p.afterDelivery(ctx, d.taskID)
	}
}

// resendPerDomain resends the DCV emails of each domain of an OV or EV order
// that waits for email validation: PUT /domain/{domain_id}/dcv/emails with
// the domain's name scope, the payload's locale and, as email_array, the
// addresses domain_approval_emails gives for that domain (its name scope
// or one of its DNS names); none when it gives none. A permanent failure of
// one domain does not keep the others from being reminded: it is returned
// once all were tried. Any other failure (transient, or a wait) stops the
// delivery at once, with its own class. The retry skips the domains
// already sent and sends a refused one again (refused again, nothing
// emailed): once the others went, the task is dead-lettered with the
// refusal. Each failure's reason names its domain (aboutDomain); one that
// comes after a refusal names the refusal too (afterRefusal), so that the
// refusal is seen while the task is retried, and kept if its retries run
// out.
//
// An answer listing more domains than an order holds
// (digicert.MaxOrderNames) is not a real order's: the task fails for good
// as a bad answer, before any send, so that one task makes at most that
// many calls per delivery.
func (p *processor) resendPerDomain(ctx context.Context, d *delivery, pl tasks.ResendDCV, pending []digicert.DNSNameValidation) error {
	if len(pending) > digicert.MaxOrderNames {
		return permanent("bad_answer", d.report.httpStatus,
			fmt.Errorf("%w: order %d: %d domains wait for email validation, more than the %d an order holds",
				digicert.ErrBadAnswer, pl.OrderID, len(pending), digicert.MaxOrderNames))
	}
	for _, dom := range pending {
		if dom.DomainID <= 0 {
			return transient("bad_answer", d.report.httpStatus, RetryDelay(d.attempt-1),
				fmt.Errorf("%w: order %d: a domain waiting for email validation has no usable domain_id", digicert.ErrBadAnswer, pl.OrderID))
		}
	}
	taskGuard := d.dedupKey
	var failed error
	delivered, lastStatus := 0, 0
	for _, dom := range pending {
		body, scope, err := domainBody(pl, dom)
		if err != nil {
			return permanent("invalid_payload", 0, err)
		}
		sent := taskresult.Sent{Via: taskresult.ViaDomain, DomainID: dom.DomainID, NameScope: scope}
		d.dedupKey = ""
		if d.taskID != "" {
			d.dedupKey = domainDeliveredKey(d.taskID, dom.DomainID)
		}
		res, err := p.call(ctx, d, func(ctx context.Context) (digicert.Result, error) {
			return d.account.client.ResendDomainDCVEmails(ctx, dom.DomainID, body)
		})
		switch {
		case errors.Is(err, errAlreadyDelivered):
			sent.Outcome = taskresult.Duplicate
		case err == nil:
			p.sent(ctx, d)
			sent.Outcome, sent.HTTPStatus = taskresult.Delivered, res.Status
			delivered, lastStatus = delivered+1, res.Status
		case isPermanent(err):
			if failed == nil {
				failed = aboutDomain(err, dom.DomainID)
			}
			continue
		default:
			return afterRefusal(aboutDomain(err, dom.DomainID), failed)
		}
		d.detail.Add(sent)
	}
	if failed != nil {
		return failed
	}
	outcome := taskresult.Delivered
	if delivered == 0 {
		outcome, lastStatus = taskresult.Duplicate, 0
	}
	if d.dedupKey = taskGuard; d.dedupKey == "" {
		return p.finish(ctx, d, outcome, lastStatus)
	}
	// Every domain is done: a redelivery need not even read. The guard and
	// the result in one round trip.
	var err error
	if d.result, err = p.outcome(d, outcome, lastStatus); err != nil {
		return err
	}
	p.writeGuard(ctx, d)
	return nil
}

// domainError is the failure of one domain's resend within a resend-dcv:
// the task's reason names the domain.
type domainError struct {
	domainID int64
	err      error
}

func (e *domainError) Error() string { return fmt.Sprintf("domain %d: %v", e.domainID, e.err) }
func (e *domainError) Unwrap() error { return e.err }

// aboutDomain returns a copy of the delivery failure err whose reason names
// the domain it is about.
func aboutDomain(err error, domainID int64) error {
	var te *taskError
	if !errors.As(err, &te) {
		return &domainError{domainID: domainID, err: err}
	}
	cp := *te
	cp.err = &domainError{domainID: domainID, err: te.err}
	return &cp
}

// refusedEarlier is the retryable failure err (the cause, a *domainError)
// of one domain in a delivery in which an earlier domain was refused for
// good: its reason and its Go error chain say both, the refusal clipped to
// maxRefusalNote so that both stay within their bounds. It unwraps to err
// only: the task keeps the retryable failure's class, code and status.
type refusedEarlier struct {
	err      error
	domainID int64  // the domain refused
	code     string // the refusal's code
	cause    error  // the refusal's cause, without its domain
}

// maxRefusalNote bounds, in bytes, what a failure's reason or error chain
// says of the refusal before it.
const maxRefusalNote = 200

// Error is err's chain, then the refusal's, within maxErrorDetail.
func (e *refusedEarlier) Error() string {
	return joinRefusal(e.err.Error(), e.note(e.cause.Error()), maxErrorDetail)
}

func (e *refusedEarlier) Unwrap() error { return e.err }

// reason is describe's account of e, within maxReasonMessage.
func (e *refusedEarlier) reason() string {
	return joinRefusal(describe(e.err), e.note(describe(e.cause)), maxReasonMessage)
}

// note says, on one line and in at most maxRefusalNote bytes, that the
// domain was refused for good earlier and why.
func (e *refusedEarlier) note(why string) string {
	return deadletter.Clip(oneLine(fmt.Sprintf("domain %d refused for good earlier: %s: %s", e.domainID, e.code, why)), maxRefusalNote)
}

// joinRefusal is failure, clipped so that "; " and note follow it within
// limit bytes, on one line.
func joinRefusal(failure, note string, limit int) string {
	return deadletter.Clip(oneLine(failure), limit-len(note)-2) + "; " + note
}

// afterRefusal returns err, the retryable failure of a domain (as
// aboutDomain made it), with its reason also naming refused: the permanent
// failure of an earlier domain of the delivery (as aboutDomain made it),
// nil when there was none. err keeps its class, code and status: the task
// is retried or handed back, and the retry meets the refusal again.
func afterRefusal(err, refused error) error {
	var rt *taskError
	var rd *domainError
	if refused == nil || !errors.As(refused, &rt) || !errors.As(rt.err, &rd) {
		return err
	}
	wrap := func(cause error) error {
		return &refusedEarlier{err: cause, domainID: rd.domainID, code: rt.code, cause: rd.err}
	}
	var te *taskError
	if !errors.As(err, &te) {
		return wrap(err)
	}
	cp := *te
	cp.err = wrap(te.err)
	return &cp
}

// domainBody is the body of one domain's resend and the name scope it
// carries. A name scope that is not a DNS name certmail accepts (a
// wildcard, say) is left out: DigiCert then uses the domain's own.
func domainBody(pl tasks.ResendDCV, dom digicert.DNSNameValidation) ([]byte, string, error) {
	scope := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(dom.NameScope)), ".")
	if !tasks.ValidDNSName(scope) {
		scope = ""
	}
	names := []string{scope}
	for _, n := range dom.DNSNames {
		names = append(names, strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), "."))
	}
	var emails []string
	for _, e := range pl.DomainApprovalEmails { // normalised by Parse: lower-case domains
		if e.Domain != "" && slices.Contains(names, e.Domain) {
			emails = append(emails, e.Email)
		}
	}
	body, err := tasks.ResendDomainDCV{DomainID: dom.DomainID, NameScope: scope, Locale: pl.Locale, EmailArray: emails}.DigiCertBody()
	return body, scope, err
}

// domainDeliveredKey is the duplicate guard of one domain's resend within a
// resend-dcv task.
func domainDeliveredKey(taskID string, domainID int64) string {
	return deliveredKey(taskID) + ":domain:" + strconv.FormatInt(domainID, 10)
}

// isPermanent reports whether err is a delivery failure that retrying
// cannot fix.
func isPermanent(err error) bool {
	var te *taskError
	return errors.As(err, &te) && te.class == classPermanent
}
