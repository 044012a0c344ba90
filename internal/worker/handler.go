package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// accountRuntime is what a worker holds for one configured DigiCert account.
type accountRuntime struct {
	name    string
	client  *digicert.Client
	gate    *authGate
	limiter *ratelimit.Limiter
	keyFile *keyFile // nil for a key given directly
}

// processor runs deliveries. It is shared by the handlers of the three types.
type processor struct {
	rdb       redis.UniversalClient
	accounts  map[string]*accountRuntime
	log       *zap.Logger
	metrics   *metrics
	retention time.Duration // how long duplicate guards and applied sequences are kept
	// replicas is how many replicas must acknowledge the round trip after
	// a successful call before it counts as written (replicas.go); 0: none.
	replicas int
	// replicaBound is how long a write too few replicas acknowledged is
	// tried again (GuardReplicasWaitBound); guard says whether the worker
	// is short of replicas (replicas.go).
	replicaBound time.Duration
	// behindGap is the longest pause between two round trips before calls
	// too few replicas acknowledged that still makes them one shortfall
	// (replicaGuard.behind): a task handed back comes again within it.
	behindGap time.Duration
	guard     replicaGuard
	// rateLimitPause is how long a task waits after a 429 before its next delivery.
	rateLimitPause time.Duration
	afterDelivery  func(ctx context.Context, taskID string)
	// pending are the round trips after successful calls that Redis did
	// not answer yet, tried again until it does or the worker stops.
	pending pendingWrites
	// stopping is set once the worker stops fetching: a delivery then starts
	// no new DigiCert call (see call).
	stopping atomic.Bool
	// stopped is done, by stopCalls, once stopping is set: a call waiting
	// for a rate-limit slot for its first request ends its wait
	// (stopLimiter). Nil in a processor built without New: never done.
	stopped   context.Context
	stopCalls context.CancelFunc
	// abandoned is done, by abandon, once a stopping worker's shutdown
	// timeout has passed: the deliveries still running end (detach). Nil
	// in a processor built without New: never done.
	abandoned context.Context
	abandon   context.CancelFunc
}

// report is filled by a handler and read by the logging middleware.
type report struct {
	orderID  int64
	certID   int64
	domainID int64
	account  string
	// orderStatus is what DigiCert said of the order to an only_if_pending read.
	orderStatus string
	outcome     string
	httpStatus  int
	calls       int
}

type reportKey struct{}

func reportFrom(ctx context.Context) *report {
	if r, ok := ctx.Value(reportKey{}).(*report); ok {
		return r
	}
	return &report{}
}

// delivery is one attempt at one task, after decoding.
type delivery struct {
	taskID   string
	queue    string
	attempt  int // 1 for the first delivery
	start    time.Time
	account  *accountRuntime
	rw       *asynq.ResultWriter
	report   *report
	dedupKey string // set for types whose effect must not repeat, and for set-emails (read in a sequence tie)
	// detail is what a resend-dcv with only_if_pending adds to the result:
	// the order's status and the resends.
	detail taskresult.Result
	// ticket is the limiter's admission of the current DigiCert call, taken
	// in the round trip before it and restamped in the one after it.
	ticket *ratelimit.Ticket
	// result, when set, is written by the round trip after the call (with
	// the guard) rather than by finish.
	result []byte
	// attempts counts the HTTP attempts of the delivery's last DigiCert
	// call, which may each have reached DigiCert: 0 before a call and for
	// one that sent nothing, -1 when its error does not say (callAttempts).
	attempts int
}

// begin decodes and validates the payload and resolves its account. Any
// problem here is permanent: the payload will not get better by waiting.
func (p *processor) begin(ctx context.Context, t *asynq.Task) (tasks.Payload, *delivery, error) {
	rep := reportFrom(ctx)
	d := &delivery{start: time.Now(), rw: t.ResultWriter(), report: rep}
	d.taskID, _ = asynq.GetTaskID(ctx)
	d.queue, _ = asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	d.attempt = retried + 1
	if n := len(d.taskID); n > tasks.MaxTaskIDBytes {
		// A raw producer's: no entry point makes such an id. What is built
		// from it (the dead letter, its marker, log lines) holds its
		// deadletter.BoundedID; from here on d.taskID is the id itself.
		return nil, nil, permanent(codeTaskIDTooLong, 0,
			fmt.Errorf("task id of %d bytes; at most %d are accepted", n, tasks.MaxTaskIDBytes))
	}
	if n := len(t.Payload()); n > tasks.MaxPayloadBytes {
		// Refused before it is decoded: no entry point makes such a payload.
		return nil, nil, permanent("payload_too_large", 0,
			fmt.Errorf("payload of %d bytes; at most %d are accepted", n, tasks.MaxPayloadBytes))
	}
	payload, err := tasks.Parse(t.Type(), t.Payload())
	if err != nil {
		return nil, nil, permanent("invalid_payload", 0, err)
	}
	acct, ok := p.accounts[payload.AccountName()]
	if !ok {
		return nil, nil, permanent("unknown_account", 0, fmt.Errorf("account %q is not configured on this worker", payload.AccountName()))
	}
	d.account = acct
	rep.account = acct.name
	if err := tooShort(ctx, acct.client.Headroom()); err != nil {
		return nil, nil, err
	}
	return payload, d, nil
}

// tooShort returns a permanent error when ctx's deadline, the delivery's,
// is nearer than need, what a DigiCert call needs left to start: every call
// of the delivery would be a deadline_near wait, and the next delivery gets
// no more time (the same timeout, or a deadline nearer still), so waiting
// would hand the task back for ever without a call.
func tooShort(ctx context.Context, need time.Duration) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		return nil
	}
	left := time.Until(deadline)
	if left >= need {
		return nil
	}
	// asynq counts a timeout in whole seconds: the least that leaves need.
	least := need.Truncate(time.Second) + time.Second
	return permanent(codeTimeoutTooShort, 0, fmt.Errorf(
		"the task's timeout or deadline leaves a delivery %s, and a DigiCert call needs %s left to start; give it a timeout of %s or more",
		max(left, 0).Truncate(10*time.Millisecond), need, least))
}

func (p *processor) handleSetEmails(ctx context.Context, t *asynq.Task) error {
	payload, d, err := p.begin(ctx, t)
	if err != nil {
		return err
	}
	pl := payload.(tasks.SetEmails)
	d.report.orderID = pl.OrderID
	seq := pl.Sequence
	if seq == 0 {
		// A producer that did not go through certmail's entry points: order
		// by the time the task is first processed, kept as long as the
		// duplicate guards and applied sequences, whatever becomes of the
		// task. A delivery again after the task ended (a worker that died
		// before asynq recorded the end, a requeued dead letter) then keeps
		// its place, and a task id used again is a duplicate, as for the
		// other types.
		if seq, err = firstSeen(ctx, p.rdb, d.taskID, p.retention); err != nil {
			return transient("redis", 0, RetryDelay(d.attempt-1), err)
		}
	}
	return p.setEmails(ctx, d, pl, seq)
}

// setEmails delivers a set-emails of sequence seq: one round trip before
// the call (the order lock, the applied and sending sequences' compare and
// the sending record, the task's duplicate guard in a sequence tie, the
// auth gate, the limiter) and one after it (result, duplicate guard,
// applied sequence, sending record, lock, restamp).
func (p *processor) setEmails(ctx context.Context, d *delivery, pl tasks.SetEmails, seq int64) (err error) {
	if err := p.holdBack(ctx); err != nil {
		return err // as call: before the order's lock and sending record are taken
	}
	k := newOrderKeys(p.rdb, d.account.name, pl.OrderID)
	d.dedupKey = deliveredKey(d.taskID)
	d.ticket = d.account.limiter.NewTicket()
	defer p.settle(ctx, d)
	verdict, wait, before, gateErr := d.account.gate.checkOrder(ctx, k, d.dedupKey, seq, p.retention, d.ticket)
	if gateErr != nil && !isUnconfirmed(gateErr) {
		return transient("redis", 0, RetryDelay(d.attempt-1), gateErr)
	}
	switch verdict {
	case gateBusy:
		// A busy order hands the task back at once rather than waiting for
		// the lock in place: a hot order must not hold worker slots that
		// other tasks wait for. The wait costs no retry.
		return &taskError{code: "order_busy", class: classWait, retryAfter: jitter(orderBusyWait),
			err: errors.New("another set-emails of this order is in progress")}
	case gateSuperseded:
		return p.finish(ctx, d, taskresult.Superseded, 0)
	case gateApplied:
		return p.finish(ctx, d, taskresult.Duplicate, 0)
	}
	if verdict == gateGo || verdict == gateProbe { // the lock is this delivery's: renewed while held
		stop := k.lock.KeepAlive()
		defer func() {
			stop()
			if d.result == nil { // else the round trip after the call ended the hold
				p.releaseOrder(ctx, d, k, seq, before, listUnchanged(d, err))
			}
		}()
	}
	if err := p.beforeCall(ctx, d, verdict, gateErr); err != nil {
		return err // the lock and the sending record go back: no call was made
	}
	body, err := pl.DigiCertBody()
	if err != nil {
		return permanent("invalid_payload", 0, err)
	}
	res, err := p.send(ctx, d, verdict, wait, func(ctx context.Context) (digicert.Result, error) {
		return d.account.client.SetAdditionalEmails(ctx, pl.OrderID, body)
	})
	if err != nil {
		return err
	}
	if d.result, err = p.outcome(d, taskresult.Delivered, res.Status); err != nil {
		return err
	}
	p.writeApplied(ctx, d, k, seq)
	if p.afterDelivery != nil {
		p.afterDelivery(ctx, d.taskID)
	}
	return nil
}

// releaseOrder ends a set-emails' hold on its order after a call that
// DigiCert did not answer with a 2xx, or that was not made: the lock, and
// the record that the task's list is being sent when that record is this
// delivery's to take back. It is when this delivery's round trip put the
// task's sequence there (before holds an older one, or none: a sequence
// already there stands for an earlier delivery's send, whose outcome is
// unknown) and the call left DigiCert's list unchanged (unchanged). The
// record then gets back what it held before, for the lifetime it had left
// (or goes, if it held nothing): an older list that another send put there
// may have been applied. Otherwise the record stays until the task's retry
// is recorded applied, or it expires with the applied sequences; a lock
// not released expires within orderLockTTL.
func (p *processor) releaseOrder(ctx context.Context, d *delivery, k orderKeys, seq int64, before sendingBefore, unchanged bool) {
	var sending, prev any = "", ""
	var left int64
	seqText := strconv.FormatInt(seq, 10)
	restore := unchanged && before.seq != seqText
	if restore {
		sending = seqText
		var ttl time.Duration
		prev, ttl = before.left()
		left = ttl.Milliseconds()
	}
	cmd := append(releaseOrderScript.command(6), k.lock.Key(), k.sending)
	keysEnd(cmd)
	cmd = append(cmd, k.lock.Token(), sending, prev, left)
	if err := releaseOrderScript.run(context.WithoutCancel(ctx), p.rdb, cmd).Err(); err != nil && restore {
		p.log.Warn("could not take back the record of a set-emails refused or not sent: older lists of its order stay superseded until it expires",
			zap.String("task_id", d.taskID), zap.Int64("order_id", d.report.orderID), zap.Error(err))
	}
}

// listUnchanged reports whether no attempt of the delivery's set-emails
// call can have changed DigiCert's list, err being the delivery's failure:
// none was made (certmail's limiter or the task's deadline held the call
// back, the task's context ended first, the payload built no request), or
// exactly one, which DigiCert refused for good (a permanent 4xx). After any
// other failure (no answer, a 5xx, a 429 or a rejected key, or a refusal
// after an attempt that may have gone through) the list may have been
// applied, and the task will send it again.
func listUnchanged(d *delivery, err error) bool {
	switch d.attempts {
	case 0:
		return true
	case 1:
		var apiErr *digicert.APIError
		return errors.As(err, &apiErr) && digicert.Classify(apiErr) == digicert.ClassPermanent
	}
	return false
}

// callAttempts is the number of HTTP attempts a DigiCert call made, which
// may each have reached DigiCert, from its result or its error; -1 when
// the error does not say.
func callAttempts(res digicert.Result, err error) int {
	if err == nil {
		return res.Attempts
	}
	var apiErr *digicert.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Attempts
	}
	var reqErr *digicert.RequestError
	if errors.As(err, &reqErr) {
		return reqErr.Attempts
	}
	return -1
}

func (p *processor) handleResendDCV(ctx context.Context, t *asynq.Task) error {
	payload, d, err := p.begin(ctx, t)
	if err != nil {
		return err
	}
	pl := payload.(tasks.ResendDCV)
	d.report.orderID = pl.OrderID
	if pl.OnlyIfPending {
		return p.resendIfPending(ctx, d, pl)
	}
	body, err := pl.DigiCertBody()
	if err != nil {
		return permanent("invalid_payload", 0, err)
	}
	return p.deliverOnce(ctx, d, func(ctx context.Context) (digicert.Result, error) {
		return d.account.client.ResendDCVEmails(ctx, pl.OrderID, body)
	})
}

func (p *processor) handleSendCert(ctx context.Context, t *asynq.Task) error {
	payload, d, err := p.begin(ctx, t)
	if err != nil {
		return err
	}
	pl := payload.(tasks.SendCert)
	d.report.certID = pl.CertificateID
	body, err := pl.DigiCertBody()
	if err != nil {
		return permanent("invalid_payload", 0, err)
	}
	return p.deliverOnce(ctx, d, func(ctx context.Context) (digicert.Result, error) {
		return d.account.client.SendCertificateEmail(ctx, pl.CertificateID, body)
	})
}

func (p *processor) handleResendDomainDCV(ctx context.Context, t *asynq.Task) error {
	payload, d, err := p.begin(ctx, t)
	if err != nil {
		return err
	}
	pl := payload.(tasks.ResendDomainDCV)
	d.report.domainID = pl.DomainID
	body, err := pl.DigiCertBody()
	if err != nil {
		return permanent("invalid_payload", 0, err)
	}
	return p.deliverOnce(ctx, d, func(ctx context.Context) (digicert.Result, error) {
		return d.account.client.ResendDomainDCVEmails(ctx, pl.DomainID, body)
	})
}

// deliverOnce calls DigiCert unless this task's call already succeeded in an
// earlier delivery: one round trip before the call (the duplicate guard,
// the auth gate, the limiter) and one after it (the result, the guard, the
// restamp).
func (p *processor) deliverOnce(ctx context.Context, d *delivery, call func(context.Context) (digicert.Result, error)) error {
	if d.taskID != "" {
		d.dedupKey = deliveredKey(d.taskID)
	}
	defer p.settle(ctx, d)
	res, err := p.call(ctx, d, call)
	if errors.Is(err, errAlreadyDelivered) {
		return p.finish(ctx, d, taskresult.Duplicate, 0)
	}
	if err != nil {
		return err
	}
	if d.dedupKey == "" {
		return p.finish(ctx, d, taskresult.Delivered, res.Status)
	}
	if d.result, err = p.outcome(d, taskresult.Delivered, res.Status); err != nil {
		return err
	}
	p.sent(ctx, d)
	return nil
}

// errAlreadyDelivered is returned by call when the delivery's duplicate
// guard is set: an earlier delivery's DigiCert call succeeded.
var errAlreadyDelivered = errors.New("already delivered")

// writeGuard records, in one round trip, that the task's DigiCert call
// succeeded (d.dedupKey), the task's result when d.result is set, and the
// restamp of the call's limiter admission.
func (p *processor) writeGuard(ctx context.Context, d *delivery) {
	cmd := p.afterCommand(afterScript, d, []any{queues.AsynqTaskKey(d.queue, d.taskID), d.dedupKey},
		d.result, time.Now().UTC().Format(time.RFC3339), p.retention.Milliseconds())
	p.persist(ctx, d, "duplicate guard", func(ctx context.Context) error {
		return p.runAfter(ctx, afterScript, cmd)
	})
}

// writeApplied records, in one round trip after a set-emails' 2xx, the
// task's result (d.result) and duplicate guard (d.dedupKey), the order's
// applied sequence seq, the end of its sending record and of the
// delivery's hold on its lock, and the restamp of the call's limiter
// admission (afterOrderScript).
func (p *processor) writeApplied(ctx context.Context, d *delivery, k orderKeys, seq int64) {
	cmd := p.afterCommand(afterOrderScript, d, []any{queues.AsynqTaskKey(d.queue, d.taskID), k.applied, k.lock.Key(), k.sending, d.dedupKey},
		d.result, seq, p.retention.Milliseconds(), k.lock.Token(), time.Now().UTC().Format(time.RFC3339))
	p.persist(ctx, d, "applied sequence", func(ctx context.Context) error {
		return p.runAfter(ctx, afterOrderScript, cmd)
	})
}

// persist runs write, the round trip after a successful call, and while
// Redis does not answer (a restart, a failover, an AOF being loaded), or
// fewer replicas than the worker asks acknowledged it (replicas.go), tries
// it again with backoff until it is written: DigiCert has acted, and what
// write records keeps a redelivery from acting again. No redelivery can
// happen before Redis is back, so there is no point in giving up earlier;
// only a stopping worker does, once its shutdown timeout has passed
// (p.pending). A shortfall of replicas alone is tried again for at most
// p.replicaBound (GuardReplicasWaitBound): then, or at once while the
// worker is short of replicas (replicaGuard), the delivery ends with its
// write on the master only. Neither the task's deadline nor the end of its
// lease stops the tries: the task's context is not theirs. It logs one
// WARN when the write first fails, one when it is first not acknowledged
// and one when it stops waiting for replicas (by itself or because the
// worker stops), one INFO when it is written, and one ERROR when the
// worker stops before the master took it.
func (p *processor) persist(ctx context.Context, d *delivery, what string, write func(context.Context) error) {
	ctx = context.WithoutCancel(ctx)
	err := write(ctx)
	if err == nil || p.guard.isShort() && isNotReplicated(err) {
		return // the usual case, without the retry's set-up
	}
	ctx, cancel := p.pending.begin(ctx)
	defer cancel()
	start := time.Now()
	var warned persistWarned
	warned.warn(p.log, d, what, err, p.replicaBound)
	b := persistBackOff()
	tries := 1
	for {
		if p.stopWaiting(d, what, err, &warned) {
			return
		}
		timer := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			timer.Stop()
			p.stoppedWriting(d, what, err, tries, start, &warned)
			return
		case <-timer.C:
		}
		tries++
		if err = write(ctx); err == nil {
			msg := what + " written after Redis came back"
			if warned.replicas {
				msg = what + " written and acknowledged by enough replicas"
			}
			p.log.Info(msg, zap.String("task_id", d.taskID), zap.Int("tries", tries), zap.Duration("took", time.Since(start)))
			return
		}
		warned.warn(p.log, d, what, err, p.replicaBound)
	}
}

// stopWaiting reports whether persist ends the tries of a write err says
// too few replicas acknowledged: once they have fallen short for
// p.replicaBound, or when the worker is short of replicas. Then it logs
// one WARN naming the task, and the worker is short of replicas.
func (p *processor) stopWaiting(d *delivery, what string, err error, warned *persistWarned) bool {
	var nr *notReplicatedError
	if !errors.As(err, &nr) {
		return false
	}
	waited := time.Since(warned.shortSince)
	if waited < p.replicaBound && !p.guard.isShort() {
		return false
	}
	p.warnOnMaster(d, what, nr, waited)
	p.guard.fallShort(p.log, nr, waited)
	return true
}

// warnOnMaster logs that the write of d, which nr says too few replicas
// acknowledged, ends on the master only.
func (p *processor) warnOnMaster(d *delivery, what string, nr *notReplicatedError, waited time.Duration) {
	p.log.Warn("the "+what+" is on the master only: too few replicas acknowledged it, and the delivery ends without them; "+
		"a failover before a replica copies it could email again",
		zap.String("task_id", d.taskID), zap.Int64("replicas_asked", nr.asked), zap.Int64("replicas_acknowledged", nr.acked),
		zap.Duration("waited", waited))
}

// stoppedWriting logs why persist ends, the worker stopping, after tries
// tries since start whose last failed with err: a write the master took
// and too few replicas acknowledged is on the master only (a WARN, as
// when the wait ends by itself); any other is not written (an ERROR).
func (p *processor) stoppedWriting(d *delivery, what string, err error, tries int, start time.Time, warned *persistWarned) {
	var nr *notReplicatedError
	if errors.As(err, &nr) {
		p.warnOnMaster(d, what, nr, time.Since(warned.shortSince))
		return
	}
	p.log.Error("could not write the "+what+" before the worker stopped: a redelivery of this task would email again",
		zap.String("task_id", d.taskID), zap.Int("tries", tries), zap.Duration("tried_for", time.Since(start)), zap.Error(err))
}

// isNotReplicated reports whether err is a write too few replicas
// acknowledged.
func isNotReplicated(err error) bool {
	var nr *notReplicatedError
	return errors.As(err, &nr)
}

// persistWarned is what persist has warned of: a write Redis did not
// take (unanswered), one too few replicas acknowledged (replicas, first
// at shortSince).
type persistWarned struct {
	unanswered, replicas bool
	shortSince           time.Time
}

// warn logs the first failure of each kind once; bound is how long a
// shortfall of replicas is tried again.
func (w *persistWarned) warn(log *zap.Logger, d *delivery, what string, err error, bound time.Duration) {
	var nr *notReplicatedError
	switch {
	case errors.As(err, &nr) && !w.replicas:
		w.replicas, w.shortSince = true, time.Now()
		log.Warn("the "+what+" was written but too few replicas acknowledged it, and a failover could lose it; "+
			"trying again, for wait_bound at most, until a master with enough replicas holds it",
			zap.String("task_id", d.taskID), zap.Int64("replicas_asked", nr.asked), zap.Int64("replicas_acknowledged", nr.acked),
			zap.Duration("wait_bound", bound))
	case nr == nil && !w.unanswered:
		w.unanswered = true
		log.Warn("could not write the "+what+"; trying again until Redis answers",
			zap.String("task_id", d.taskID), zap.Error(err))
	}
}

// persistBackOff times persist's retries: from 50 ms, growing by half to
// a second at most, without jitter (a recovering Redis gets at most one try
// a second from each waiting delivery), with no end of its own. The guard
// should land before asynq's recoverer hands the task back, a second after
// its first look (once a minute) once Redis answers.
func persistBackOff() *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMultiplier(1.5), backoff.WithRandomizationFactor(0),
		backoff.WithMaxInterval(time.Second), backoff.WithMaxElapsedTime(0))
}

// pendingWrites keeps count of the round trips after successful calls that
// persist is trying again, so that a stopping worker gives them its
// shutdown timeout (wait), then ends them. The zero value is ready.
type pendingWrites struct {
	mu      sync.Mutex
	n       int
	idle    chan struct{} // closed when n falls back to 0
	stopped bool
	next    uint64
	cancels map[uint64]context.CancelFunc // of the writes being tried again, by registration
}

// begin registers a write that is tried again, returning the context its
// tries use: ctx until the worker gives up on it (at once when it already
// has). The returned cancel ends the registration.
func (w *pendingWrites) begin(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		cancel()
		return ctx, cancel
	}
	if w.n == 0 {
		w.idle = make(chan struct{})
	}
	w.n++
	w.next++
	key := w.next
	if w.cancels == nil {
		w.cancels = map[uint64]context.CancelFunc{}
	}
	w.cancels[key] = cancel
	return ctx, func() {
		cancel()
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.cancels, key)
		if w.n--; w.n == 0 {
			close(w.idle)
		}
	}
}

// wait lets the writes being tried again go on until deadline, then ends
// those left, and every later one at once, and waits up to grace for them
// to log that they gave up.
func (w *pendingWrites) wait(deadline time.Time, grace time.Duration) {
	w.mu.Lock()
	idle := w.idle
	busy := w.n > 0
	w.mu.Unlock()
	if busy {
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-idle:
		case <-timer.C:
		}
		timer.Stop()
	}
	w.mu.Lock()
	w.stopped = true
	for _, cancel := range w.cancels {
		cancel()
	}
	idle, busy = w.idle, w.n > 0
	w.mu.Unlock()
	if busy {
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-idle:
		case <-timer.C:
		}
	}
}

// afterCommand builds the command of s, the round trip after a call, from
// its own keys and arguments and the limiter's restamp that it does: the
// limiter's keys after the script's, then the member ("" for none) and the
// limiter's arguments after the script's.
func (p *processor) afterCommand(s *script, d *delivery, keys []any, args ...any) []any {
	cmd := append(s.command(len(keys)+len(args)+1), keys...)
	if d.ticket != nil {
		cmd = d.ticket.AppendKeys(cmd)
	}
	keysEnd(cmd)
	cmd = append(cmd, args...)
	if d.ticket == nil {
		return append(cmd, "")
	}
	n := len(cmd)
	cmd = d.ticket.AppendArgs(cmd)
	cmd[n] = d.ticket.Due()
	return cmd
}

// settle ends the current call's limiter ticket where no round trip after
// the call did (a failure, a call not made).
func (p *processor) settle(ctx context.Context, d *delivery) {
	if d.ticket == nil {
		return
	}
	if err := d.ticket.Settle(ctx); err != nil {
		p.log.Warn("could not give back an unused rate-limit slot", zap.String("account", d.account.name), zap.Error(err))
	}
}

// call passes the account's auth gate (and the delivery's duplicate guard,
// if it has one: errAlreadyDelivered) and the limiter's admission in one
// round trip, then sends. Once the worker is stopping it starts nothing
// and hands the task back (a worker_stopping wait): a call started now
// might be cut by the shutdown timeout after DigiCert acted, and its
// redelivery would email again; a call already in flight finishes. Once
// asynq cancelled the delivery it starts nothing either (canceled): asynq
// has handed the task back already (cancel.go).
func (p *processor) call(ctx context.Context, d *delivery, fn func(context.Context) (digicert.Result, error)) (digicert.Result, error) {
	p.settle(ctx, d) // the previous call's, if any
	if err := p.holdBack(ctx); err != nil {
		d.ticket = nil
		return digicert.Result{}, err
	}
	d.ticket = d.account.limiter.NewTicket()
	verdict, wait, err := d.account.gate.check(ctx, d.dedupKey, d.ticket)
	if err := p.beforeCall(ctx, d, verdict, err); err != nil {
		return digicert.Result{}, err
	}
	return p.send(ctx, d, verdict, wait, fn)
}

// holdBack is the end of a delivery about to start a DigiCert call once
// asynq cancelled it (canceled) or the worker is stopping (a
// worker_stopping wait, handed back); nil otherwise.
//
// A stopping worker's reason comes first: asynq's abort at the shutdown
// timeout ends a delivery's context as a cancel does, and that delivery
// was handed back by the stop, not by an operator.
func (p *processor) holdBack(ctx context.Context) error {
	switch {
	case p.stopping.Load():
		return &taskError{code: codeWorkerStopping, class: classWait, retryAfter: jitter(workerStoppingWait),
			err: errors.New("not sent to DigiCert: the worker is stopping; another worker takes the task")}
	case cancelled(ctx):
		return canceledError()
	}
	return nil
}

// send acts on the gate's verdict: calls DigiCert (under the delivery's
// limiter ticket) and turns a failure into a taskError according to
// digicert.Classify, the one classification.
func (p *processor) send(ctx context.Context, d *delivery, verdict gateVerdict, wait time.Duration, fn func(context.Context) (digicert.Result, error)) (digicert.Result, error) {
	if verdict == gateDone {
		return digicert.Result{}, errAlreadyDelivered
	}
	if verdict == gateWait {
		return digicert.Result{}, &taskError{code: "account_paused", class: classAuth, retryAfter: jitter(wait),
			err: fmt.Errorf("account %s is paused: DigiCert rejected its API key", d.account.name)}
	}
	if verdict == gateProbe {
		d.account.keyFile.reload() // a replaced key file ends the pause with this probe
	}
	res, err := fn(context.WithValue(d.ticket.Context(ctx), callKey{}, &callState{ticket: d.ticket}))
	d.attempts = callAttempts(res, err)
	d.report.calls += res.Attempts
	if errors.Is(err, errNotSentStopping) {
		// The worker began stopping while the call waited for a slot for its
		// first request: nothing was sent, and nothing will be.
		p.settle(ctx, d)
		return res, &taskError{code: codeWorkerStopping, class: classWait, retryAfter: jitter(workerStoppingWait), err: errNotSentStopping}
	}
	if errors.Is(err, errNotSentCanceled) {
		// asynq cancelled the delivery while the call waited for a slot for
		// its first request: nothing was sent.
		p.settle(ctx, d)
		te := canceledError()
		te.err = errNotSentCanceled
		return res, te
	}
	if err == nil {
		d.report.httpStatus = res.Status
		p.keyWorks(ctx, d, verdict)
		return res, nil
	}
	p.settle(ctx, d)
	return res, p.failed(ctx, d, verdict, err)
}

// failed turns a DigiCert call's error into the delivery's taskError by
// digicert.Classify, pausing the account or starting the shared cool-down
// where the answer calls for it.
func (p *processor) failed(ctx context.Context, d *delivery, verdict gateVerdict, err error) error {
	var apiErr *digicert.APIError
	status := 0
	if errors.As(err, &apiErr) {
		status = apiErr.Status
		d.report.calls = max(d.report.calls, apiErr.Attempts)
	}
	d.report.httpStatus = status
	code := digicert.ErrorCode(err)
	switch digicert.Classify(err) {
	case digicert.ClassPermanent:
		if apiErr != nil && len(apiErr.Errors) > 0 {
			// DigiCert itself judged the request, past the key check.
			p.keyWorks(ctx, d, verdict)
		}
		return permanent(code, status, err)
	case digicert.ClassRateLimited:
		return p.rateLimited(ctx, d, code, status, err)
	case digicert.ClassAuth:
		return p.keyRejected(ctx, d, verdict, code, status, err)
	default:
		return transient(code, status, RetryDelay(d.attempt-1), err)
	}
}

// rateLimited is the taskError of a call the rate limit stopped: our own
// limiter or the deadline (not sent), or DigiCert's 429, which starts the
// cool-down every worker of the account shares.
func (p *processor) rateLimited(ctx context.Context, d *delivery, code string, status int, err error) error {
	if wait, ok := digicert.RetryAfter(err); ok {
		if code == "deadline_near" {
			// Too little of the delivery's deadline was left for the
			// call to finish: not sent; the next delivery has a new one.
			return &taskError{code: code, class: classWait, retryAfter: jitter(wait), err: err}
		}
		// Our own limiter: the request was not sent; come back when a slot frees.
		return &taskError{code: "rate_limit_wait", class: classRateLimited, retryAfter: jitter(wait), err: err}
	}
	// DigiCert said 429 anyway (another system shares the key, or the
	// limits changed): every worker of this account pauses. A 429 to a
	// request sent before the cool-down in force began starts none.
	pause, started, cerr := d.account.limiter.CoolDown(context.WithoutCancel(ctx), p.rateLimitPause, maxCoolDown)
	if cerr != nil {
		p.log.Warn("could not start the shared cool-down", zap.String("account", d.account.name), zap.Error(cerr))
		pause = p.rateLimitPause
	}
	if started {
		p.metrics.coolDowns.WithLabelValues(d.account.name).Inc()
	}
	return &taskError{code: code, status: status, class: classRateLimited, retryAfter: jitter(pause), err: err}
}

// keyRejected is the taskError of a call DigiCert refused for the API key:
// the account pauses (the first worker to see it logs so), unless the key
// file was replaced since this worker read it.
func (p *processor) keyRejected(ctx context.Context, d *delivery, verdict gateVerdict, code string, status int, err error) error {
	if verdict != gateProbe && d.account.keyFile.reload() {
		// The key was replaced since this worker read it (another
		// worker's probe may have ended the pause with it): try again
		// soon with the new one rather than pause the account again.
		return &taskError{code: code, status: status, class: classWait, retryAfter: jitter(keyChangedWait), err: err}
	}
	first, perr := d.account.gate.pause(context.WithoutCancel(ctx))
	if perr != nil {
		p.log.Warn("could not record auth pause", zap.String("account", d.account.name), zap.Error(perr))
	}
	if first {
		p.log.Error("DigiCert rejected the API key: account paused; tasks stay queued and a probe retries every interval",
			zap.String("account", d.account.name), zap.Int("http_status", status), zap.String("error_code", code),
			zap.Duration("probe_interval", d.account.gate.interval))
	}
	return &taskError{code: code, status: status, class: classAuth, retryAfter: jitter(d.account.gate.interval), err: err}
}

// keyWorks is called when DigiCert accepted the account's key: a probe ends
// the account's pause.
func (p *processor) keyWorks(ctx context.Context, d *delivery, verdict gateVerdict) {
	if verdict == gateProbe {
		resumed, err := d.account.gate.resume(context.WithoutCancel(ctx))
		if err != nil {
			p.log.Warn("could not end the auth pause; the next probe will", zap.String("account", d.account.name), zap.Error(err))
		} else if resumed {
			p.log.Info("DigiCert accepts the API key again; account resumed", zap.String("account", d.account.name))
		}
	}
}

// codeWorkerStopping is the code of a delivery handed back, before a
// DigiCert call, by a worker that is stopping.
const codeWorkerStopping = "worker_stopping"

// errNotSentStopping is the reason of a delivery handed back by a stopping
// worker once its call had begun to wait for a rate-limit slot.
var errNotSentStopping = errors.New("not sent to DigiCert: the worker began stopping while the call waited for a rate-limit slot; another worker takes the task")

// callKey carries a DigiCert call's callState on its context.
type callKey struct{}

// callState is what stopLimiter knows of one DigiCert call.
type callState struct {
	ticket   *ratelimit.Ticket // the admission taken in the round trip before the call, if any
	admitted atomic.Bool       // a request of the call was admitted: it is in flight
}

// stopLimiter is an account's limiter as its DigiCert client uses it. A
// call that has had no request admitted yet, waiting for a slot when its
// worker starts stopping, ends its wait and sends nothing (errNotSentStopping),
// as a delivery that has not reached its call starts none (holdBack):
// a request sent then could still be in flight at the shutdown timeout,
// be cut after DigiCert acted, and be sent again by the redelivery. A call
// with a request admitted goes on, its retries too: it is a call in flight,
// which the shutdown timeout lets finish. A call of a delivery asynq
// cancels is held back the same way (errNotSentCanceled): asynq no longer
// waits for it.
type stopLimiter struct {
	digicert.Limiter
	p *processor
}

func (l stopLimiter) Acquire(ctx context.Context) (release func(), err error) {
	c, _ := ctx.Value(callKey{}).(*callState)
	if c == nil || c.admitted.Load() || l.p.stopped == nil {
		return l.Limiter.Acquire(ctx)
	}
	if err := l.notSent(ctx); err != nil {
		return nil, err
	}
	acquire := ctx
	if c.ticket == nil || !c.ticket.Ready() {
		// Not admitted in the round trip before the call (the usual case,
		// which takes its admission at once): the wait the stop or a
		// cancel ends.
		wait, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(l.p.stopped, cancel)()
		defer afterCancel(ctx, cancel)()
		acquire = wait
	}
	release, err = l.Limiter.Acquire(acquire)
	held := l.notSent(ctx)
	switch {
	case err == nil && held != nil:
		release() // counted as sent: the slot frees a window from now
		return nil, held
	case err != nil && ctx.Err() == nil && held != nil:
		return nil, held
	case err == nil:
		c.admitted.Store(true)
	}
	return release, err
}

// notSent is why a call whose first request is not admitted yet sends
// nothing: its delivery was cancelled, or the worker is stopping; nil
// when neither.
func (l stopLimiter) notSent(ctx context.Context) error {
	switch { // the stop first, as in holdBack
	case l.p.stopping.Load():
		return errNotSentStopping
	case cancelled(ctx):
		return errNotSentCanceled
	}
	return nil
}

// workerStoppingWait is how long a task handed back by a stopping worker
// waits: briefly, so that another worker takes it soon.
const workerStoppingWait = time.Second

// keyChangedWait is how long a task refused with a key that has since been
// replaced in its file waits before it is tried with the new one.
const keyChangedWait = time.Second

// maxCoolDown caps the shared pause after repeated 429s.
const maxCoolDown = 5 * time.Minute

func transient(code string, status int, after time.Duration, err error) error {
	return &taskError{code: code, status: status, class: classTransient, retryAfter: after, failure: true, err: err}
}

// jitter spreads d by up to +25 % so that tasks paused together do not come
// back together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		d = time.Second
	}
	return d + time.Duration(float64(d)*0.25*rand.Float64())
}

// outcome records the delivery's outcome in its report and returns the
// result to keep with the task.
func (p *processor) outcome(d *delivery, outcome string, status int) ([]byte, error) {
	d.report.outcome = outcome
	res := d.detail
	res.Outcome, res.HTTPStatus, res.Attempts, res.DurationMS = outcome, status, d.attempt, time.Since(d.start).Milliseconds()
	return res.Encode()
}

// finish ends a delivery whose result no round trip after a call keeps:
// it writes the result through asynq, unless asynq cancelled the delivery
// (it refuses the write then, and the task's retry records its own).
func (p *processor) finish(ctx context.Context, d *delivery, outcome string, status int) error {
	b, err := p.outcome(d, outcome, status)
	if err != nil {
		return err
	}
	if d.rw != nil && !cancelled(ctx) {
		if _, err := d.rw.Write(b); err != nil {
			// The effect happened; failing now would repeat it. Say so and complete.
			p.log.Warn("could not store task result", zap.String("task_id", d.taskID), zap.Error(err))
		}
	}
	return nil
}
