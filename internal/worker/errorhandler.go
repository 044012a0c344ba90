package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/tasks"
)

// errorHandler is asynq's ErrorHandler: the one place where a failed
// delivery is logged, and where a task that asynq is about to archive is
// written to the dead-letter stream.
type errorHandler struct {
	rdb       redis.UniversalClient
	log       *zap.Logger
	metrics   *metrics
	maxLen    int64
	isFailure func(error) bool
	// maxRetry is the worker's cap on a task's retries (CERTMAIL_MAX_RETRY):
	// the lower of it and the task's own is the cap that applies, and the
	// one logged.
	maxRetry int
	// parked wakes the worker's unparker after a park (capacity 1: wakes
	// that come while one is pending are one).
	parked chan struct{}
}

// HandleError implements asynq.ErrorHandler.
func (h *errorHandler) HandleError(ctx context.Context, t *asynq.Task, err error) {
	id := taskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx) // the task's own, by which asynq archives
	queue, _ := asynq.GetQueueName(ctx)

	te := &taskError{code: "internal", class: classTransient, failure: true, err: err}
	if !errors.As(err, &te) {
		// Raised outside a handler: the task's deadline, a lost lease
		// (asynq.ErrLeaseExpired, though asynq cancels the context too),
		// asynq's cancel (the context's own error, context.Canceled), a
		// panic.
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			te.code = "timeout"
		case errors.Is(err, asynq.ErrLeaseExpired):
			te.code = codeLeaseExpired
		case errors.Is(err, context.Canceled):
			te = canceledError()
		}
	}
	fields := []zap.Field{
		zap.String("task_id", id), zap.String("task_type", deadletter.Clip(t.Type(), maxLabelLength)), zap.String("queue", queue),
		zap.Int("attempt", retried+1), zap.Int("max_retry", min(maxRetry, h.maxRetry)),
		zap.String("error_code", te.code), zap.String("error_class", te.class),
		zap.Int("http_status", te.status), zap.String("error", te.Error()),
	}
	if d := te.detail(); d != "" {
		fields = append(fields, zap.String("error_detail", d))
	}
	fields = append(fields, subject(t.Payload())...)
	typ := h.metrics.taskType(t.Type())
	archived := errors.Is(err, asynq.SkipRetry) || (retried >= maxRetry && !errors.Is(err, asynq.RevokeTask))
	wait := !h.isFailure(err)
	if archived && wait {
		// asynq archives a task on its last delivery whatever the error;
		// a wait must not cost it its retries: park it (see
		// deadletter.ParkedKey).
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		perr := deadletter.Park(pctx, h.rdb, deadletter.Parked{Queue: queue, ID: id}, time.Now().Add(te.retryAfter))
		cancel()
		if perr == nil {
			select {
			case h.parked <- struct{}{}:
			default:
			}
			h.metrics.tasks.WithLabelValues(typ, "wait").Inc()
			h.log.Info("delivery deferred on the task's last retry: parked until the wait is over",
				append(fields, zap.Duration("next_delay", te.retryAfter))...)
			return
		}
		// Not parked, it would stay archived unseen: dead-letter it instead.
		fields = append(fields, zap.NamedError("park_error", perr))
	}
	switch {
	case archived:
		h.deadLetter(ctx, t, id, queue, retried+1, te)
		h.metrics.tasks.WithLabelValues(typ, "dead_lettered").Inc()
		h.metrics.deadLetters.WithLabelValues(typ, h.metrics.errorCode(te.code)).Inc()
		h.log.Error("task dead-lettered", fields...)
	case !wait:
		h.metrics.tasks.WithLabelValues(typ, "retry").Inc()
		next := te.retryAfter
		if next <= 0 {
			next = RetryDelay(retried)
		}
		h.log.Warn("delivery failed; will retry", append(fields, zap.Duration("next_delay", next))...)
	default: // a wait that does not count against the task's retries
		h.metrics.tasks.WithLabelValues(typ, "wait").Inc()
		h.deferred(te)("delivery deferred", append(fields, zap.Duration("next_delay", te.retryAfter))...)
	}
}

// deferred is how a wait is logged: at WARN when DigiCert answered 429 (a
// transient failure, which the contract logs at WARN even though it uses
// no retry), at INFO when certmail chose the wait itself (its limiter's slot
// or cool-down, the deadline, a paused account, a stopping worker, another
// set-emails of the order in progress).
func (h *errorHandler) deferred(te *taskError) func(string, ...zap.Field) {
	if te.status == http.StatusTooManyRequests {
		return h.log.Warn
	}
	return h.log.Info
}

// subject names what a failed task was about (its account and order,
// certificate or domain), read from the payload as far as it decodes: the operator
// reading a failure line needs them, and the handler's own report is not
// visible here. Emails are left out, and so is all of a payload too large to
// be read.
func subject(payload []byte) []zap.Field {
	var s struct {
		Account       string `json:"account"`
		OrderID       int64  `json:"order_id"`
		CertificateID int64  `json:"certificate_id"`
		DomainID      int64  `json:"domain_id"`
	}
	if len(payload) <= tasks.MaxPayloadBytes {
		_ = json.Unmarshal(payload, &s) // best effort: an invalid payload names what it can
	}
	s.Account = deadletter.Clip(cmp.Or(s.Account, tasks.DefaultAccount), maxLabelLength)
	return idFields([]zap.Field{zap.String("account", s.Account)}, s.OrderID, s.CertificateID, s.DomainID)
}

// idFields appends to fields the ids a task is about, those that are set.
func idFields(fields []zap.Field, orderID, certificateID, domainID int64) []zap.Field {
	for _, id := range []struct {
		key string
		id  int64
	}{{"order_id", orderID}, {"certificate_id", certificateID}, {"domain_id", domainID}} {
		if id.id != 0 {
			fields = append(fields, zap.Int64(id.key, id.id))
		}
	}
	return fields
}

// deadLetter appends the stream entry and, in the same round trip, clears
// any parked entry of the task, which would otherwise bring the dead letter
// back. The task's context may be over (a deadline): both are written anyway.
func (h *errorHandler) deadLetter(ctx context.Context, t *asynq.Task, id, queue string, attempts int, te *taskError) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	unparkErr, appendErr := deadletter.Append(ctx, h.rdb, deadletter.Entry{
		TaskID:       id,
		Type:         deadletter.Clip(t.Type(), maxLabelLength),
		Queue:        queue,
		Payload:      t.Payload(),
		ErrorCode:    te.code,
		ErrorMessage: te.message(),
		HTTPStatus:   te.status,
		Attempts:     attempts,
		FailedAt:     time.Now(),
	}, h.maxLen)
	if unparkErr != nil {
		h.log.Warn("could not clear the task's parked entry", zap.String("task_id", id),
			zap.String("key", deadletter.ParkedKey), zap.String("error", deadletter.Clip(unparkErr.Error(), maxReplyShown)))
	}
	if appendErr != nil {
		// The task is still archived by asynq; the stream entry is what is lost.
		h.log.Warn("could not append to the dead-letter stream",
			append([]zap.Field{zap.String("task_id", id)}, h.appendFailure(ctx, appendErr)...)...)
	}
}

// appendFailure names, for err, a dead-letter append's failure, the key it
// failed on and, for a refusal by Redis an operator must fix (WRONGTYPE,
// NOPERM), what to do: Redis's reply does not name the key, and every
// later dead letter fails alike until it is fixed. A WRONGTYPE costs one
// more round trip, which finds the keys of another type (the stream's
// index keys as well as the stream); the stream is named when it cannot.
func (h *errorHandler) appendFailure(ctx context.Context, err error) []zap.Field {
	key := deadletter.Stream
	if redis.HasErrorPrefix(err, "WRONGTYPE") {
		if keys, kerr := deadletter.WrongTypeKeys(ctx, h.rdb); kerr == nil && len(keys) > 0 {
			key = strings.Join(keys, ",")
		}
	}
	return append([]zap.Field{zap.String("key", key)}, refusalFields(err, key)...)
}

// refusalFields are the fields of a log line about err, a failed command
// on the certmail key named: Redis's reply (cut to maxReplyShown bytes)
// and, for another type under the key or an ACL refusal, what to do about
// it (redisconn.RefusalAdvice).
func refusalFields(err error, key string) []zap.Field {
	fields := []zap.Field{zap.String("error", deadletter.Clip(err.Error(), maxReplyShown))}
	if advice := redisconn.RefusalAdvice(err, key); advice != "" {
		fields = append(fields, zap.String("advice", advice))
	}
	return fields
}

// codeTaskIDTooLong: a task whose id is longer than tasks.MaxTaskIDBytes
// (a raw producer's), dead-lettered without a call under its
// deadletter.BoundedID.
const codeTaskIDTooLong = "task_id_too_long"

// codeTimeoutTooShort: a task whose timeout (or deadline) leaves a delivery
// less time than a DigiCert call needs to start (digicert.Client.Headroom),
// dead-lettered at the start of a delivery without a call.
const codeTimeoutTooShort = "timeout_too_short"

// taskID returns the id of the task ctx delivers as the worker's log lines
// and records hold it: its deadletter.BoundedID.
func taskID(ctx context.Context) string {
	id, _ := asynq.GetTaskID(ctx)
	return deadletter.BoundedID(id)
}

// Codes of the dead letters the worker writes for tasks its error handler
// never saw.
const (
	// codeLeaseExpired: asynq's recoverer archived the task after its
	// worker died during its last delivery (also the code of the error
	// handler's asynq.ErrLeaseExpired).
	codeLeaseExpired = "lease_expired"
	// codeLostFromArchive: a parked task deleted from asynq's archive
	// before the unparker moved it out.
	codeLostFromArchive = "lost_from_archive"
	// lostType stands for the type of a lost task, which went with it.
	lostType = "unknown"
)

// lostParked dead-letters the parked task p, which no longer exists: asynq
// deleted it from its archive (beyond 10 000 archived tasks in the queue)
// or an operator did, in the moment between asynq's archive and the
// unparker's move. Nothing tells the two apart; the message says so. Its
// type and payload went with it: the INFO line that parked it has its type
// and what it was about (account, order, certificate or domain). No marker
// is left (deadletter.MarkerKey): there is no archived task for a lease
// sweep to find, and a producer may send the task again under its id.
func (h *errorHandler) lostParked(ctx context.Context, p deadletter.Parked) {
	const msg = "the task, parked by a wait on its last delivery, was deleted from asynq's archive before it could be moved out: " +
		"by asynq (which keeps at most 10 000 archived tasks per queue) or by an operator; " +
		"its type, account and order, certificate or domain id are in the log line that parked it"
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, appendErr := deadletter.Append(ctx, h.rdb, deadletter.Entry{
		TaskID: p.ID, Type: lostType, Queue: p.Queue,
		ErrorCode: codeLostFromArchive, ErrorMessage: msg, FailedAt: time.Now(),
	}, h.maxLen)
	if appendErr == nil {
		appendErr = deadletter.Unmark(ctx, h.rdb, p.Queue, p.ID)
	}
	fields := []zap.Field{zap.String("task_id", p.ID), zap.String("queue", p.Queue),
		zap.String("error_code", codeLostFromArchive), zap.String("error_class", classPermanent),
		zap.String("error", codeLostFromArchive+": "+msg)}
	if appendErr != nil {
		fields = append(fields, zap.NamedError("deadletter_error", appendErr))
	}
	h.metrics.tasks.WithLabelValues(otherLabel, "dead_lettered").Inc()
	h.metrics.deadLetters.WithLabelValues(otherLabel, h.metrics.errorCode(codeLostFromArchive)).Inc()
	h.log.Error("task dead-lettered", fields...)
}

// leaseExpired dead-letters info, a task asynq's recoverer archived after
// its worker died during its last delivery, unless its dead letter was
// written already (deadletter.AppendOnce): by the error handler of a worker
// that lived on, or by another worker's sweep. deliveredAt is its duplicate
// guard, "" when not set: the worker may have died after DigiCert's answer,
// and then the entry says that nothing is left to send.
func (h *errorHandler) leaseExpired(ctx context.Context, info *asynq.TaskInfo, deliveredAt string) error {
	msg := "the worker stopped during the task's last delivery (killed, out of memory, or its node lost) " +
		"and asynq archived the task when its lease expired"
	var outcome string
	if r, err := taskresult.Decode(info.Result); len(info.Result) > 0 && err == nil {
		outcome = deadletter.Clip(r.Outcome, maxLabelLength)
	}
	deliveredAt = deadletter.Clip(deliveredAt, maxLabelLength)
	switch {
	case deliveredAt != "" || outcome == taskresult.Delivered:
		var when []string
		if deliveredAt != "" {
			when = append(when, "at "+deliveredAt)
		}
		if outcome != "" {
			when = append(when, "outcome "+outcome)
		}
		msg += "; its DigiCert call had succeeded before (" + strings.Join(when, ", ") + "): nothing is left to send"
	case outcome != "":
		msg += "; it had finished before (outcome " + outcome + "): nothing is left to do"
	}
	maxRetry := min(info.MaxRetry, h.maxRetry)
	appended, err := deadletter.AppendOnce(ctx, h.rdb, deadletter.Entry{
		TaskID:       info.ID,
		Type:         deadletter.Clip(info.Type, maxLabelLength),
		Queue:        info.Queue,
		Payload:      info.Payload,
		ErrorCode:    codeLeaseExpired,
		ErrorMessage: msg,
		Attempts:     info.Retried + 1,
		FailedAt:     info.LastFailedAt,
	}, h.maxLen)
	if err != nil || !appended {
		return err
	}
	typ := h.metrics.taskType(info.Type)
	h.metrics.tasks.WithLabelValues(typ, "dead_lettered").Inc()
	h.metrics.deadLetters.WithLabelValues(typ, h.metrics.errorCode(codeLeaseExpired)).Inc()
	fields := []zap.Field{
		zap.String("task_id", deadletter.BoundedID(info.ID)), zap.String("task_type", deadletter.Clip(info.Type, maxLabelLength)), zap.String("queue", info.Queue),
		zap.Int("attempt", info.Retried+1), zap.Int("max_retry", maxRetry),
		zap.String("error_code", codeLeaseExpired), zap.String("error_class", classTransient),
		zap.Int("http_status", 0), zap.String("error", codeLeaseExpired+": "+msg),
	}
	if deliveredAt != "" {
		fields = append(fields, zap.String("delivered_at", deliveredAt))
	}
	if outcome != "" {
		fields = append(fields, zap.String("outcome", outcome))
	}
	h.log.Error("task dead-lettered", append(fields, subject(info.Payload)...)...)
	return nil
}
