package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/tasks"
)

// TaskRef is the answer to an enqueue or a requeue: where the task is and
// where to ask about it.
type TaskRef struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue"`
	// State is pending, or scheduled for a task with process_at or
	// process_in; in the answer to an idempotent replay, the state the task
	// is in now (as GET /v1/tasks/{id} says), or ops.StateUnknown.
	State string `json:"state"`
	// StatusURL is the path of GET /v1/tasks/{id} for this task.
	StatusURL string `json:"status_url"`
}

func taskRef(ref ops.TaskRef) TaskRef {
	return TaskRef{ID: ref.ID, Type: ref.Type, Queue: ref.Queue, State: ref.State, StatusURL: statusURL(ref.ID)}
}

func statusURL(id string) string { return "/v1/tasks/" + url.PathEscape(id) }

// idempotencyKeyHeader carries a request's idempotency key (the option
// idempotency_key of the wire format); its problems are reported under the
// header's name.
const idempotencyKeyHeader = "Idempotency-Key"

// enqueue is POST /v1/tasks/{type}: 202 with the new task, 200 with the
// earlier one, as it is now, for a replayed Idempotency-Key.
func (s *Server) enqueue(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if !slices.Contains(tasks.Types(), typ) {
		s.writeProblem(w, r, unknownType(), nil)
		return
	}
	body, release, ok := s.readJSONBody(w, r)
	if !ok {
		return
	}
	defer release()
	req, errs := enqueueRequest(r, typ, body)
	if req.IdempotencyKey != "" {
		req.IdempotencyScope = s.idempotencyScope(r)
	}
	if len(errs) > 0 {
		// Add what the request's check finds wrong with the rest, so that
		// one answer lists everything to fix.
		var ve *tasks.ValidationError
		if errors.As(s.ops.Validate(req), &ve) {
			errs = append(errs, headerNamed(ve.Errors)...)
		}
		s.writeProblem(w, r, validationProblem(errs), nil)
		return
	}
	ref, existing, err := s.ops.Enqueue(r.Context(), req)
	if err != nil {
		// ve lives in this block: errors.As moves it to the heap, which
		// would otherwise cost every request an allocation.
		var ve *tasks.ValidationError
		if errors.As(err, &ve) {
			s.writeProblem(w, r, validationProblem(headerNamed(ve.Errors)), nil)
			return
		}
		s.writeOpsError(w, r, err, "")
		return
	}
	out := taskRef(ref)
	w.Header()["Location"] = []string{out.StatusURL} // a canonical key: no need of Header.Set
	status := http.StatusAccepted
	if existing {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	s.writeJSON(w, r, status, out)
}

// isJSON reports whether a Content-Type is application/json, with at most a
// charset parameter of utf-8.
func isJSON(contentType string) bool {
	if contentType == "application/json" { // what nearly every client sends
		return true
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}

// contentCoding returns the first content coding of a request's body other
// than identity, from every Content-Encoding line; "" when there is none.
func contentCoding(h http.Header) string {
	for _, line := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(line, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return c
			}
		}
	}
	return ""
}

// readJSONBody checks that the body is sent as JSON and without a content
// coding (415 otherwise, before any of it is read: the API decompresses
// nothing) and reads it as readBody does.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), ok bool) {
	if !isJSON(r.Header.Get("Content-Type")) {
		s.writeProblem(w, r, Problem{Status: http.StatusUnsupportedMediaType,
			Detail: "the body must be sent as Content-Type: application/json"}, nil)
		return nil, nil, false
	}
	if c := contentCoding(r.Header); c != "" {
		w.Header().Set("Accept-Encoding", "identity") // RFC 9110 §12.5.3: tells it from a media type problem
		s.writeProblem(w, r, Problem{Status: http.StatusUnsupportedMediaType,
			Detail: fmt.Sprintf("Content-Encoding %.64q is not supported: send the body as is, without a content coding", c)}, nil)
		return nil, nil, false
	}
	return s.readBody(w, r)
}

// bodyShare is the quarters of the time left to a handler's deadline that a
// request body has to arrive (15 s of the API's 20), leaving the rest for
// the work it asks for; the answer's write deadline comes 10 s after.
const bodyShare = 3

// readBody reads at most MaxBodyBytes of the body, taking room for it under
// MaxBodiesInFlight and the token's MaxBodiesPerToken as it arrives; the
// caller calls release once it has answered. It answers 413, 503, 408 (the
// body did not arrive in time: bodyDeadline) or 400 itself and returns false
// when the body cannot be had.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), ok bool) {
	tooLarge := Problem{Status: http.StatusRequestEntityTooLarge, Detail: "the body must be at most 1 MiB (1048576 bytes)"}
	if r.ContentLength > MaxBodyBytes {
		s.writeProblem(w, r, tooLarge, nil)
		return nil, nil, false
	}
	most := int64(MaxBodyBytes) // chunked: it may be that large
	if r.ContentLength >= 0 {
		most = r.ContentLength
	}
	token := 0
	if info := infoOf(r.Context()); info != nil {
		token = info.token
	}
	within := bodyDeadline(w, r)
	room := s.bodies.room(token)
	body, err := readAll(r.Context(), http.MaxBytesReader(w, r.Body, MaxBodyBytes), room, most)
	if err == nil {
		return body, room.release, true
	}
	room.release()
	var mbe *http.MaxBytesError // here, not above: errors.As moves it to the heap
	switch {
	case errors.Is(err, errNoTokenRoom):
		w.Header().Set("Retry-After", "1")
		s.writeProblem(w, r, Problem{Status: http.StatusServiceUnavailable,
			Detail: "this token's request bodies being received take its share (8 MiB); retry in a second"}, nil)
	case errors.Is(err, errNoRoom):
		w.Header().Set("Retry-After", "1")
		s.writeProblem(w, r, Problem{Status: http.StatusServiceUnavailable,
			Detail: "too many request bodies being received at once; retry in a second"}, nil)
	case errors.As(err, &mbe):
		s.writeProblem(w, r, tooLarge, nil)
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close") // what is left of the body is not read
		s.writeProblem(w, r, bodyLateProblem(within), nil)
	default:
		s.writeProblem(w, r, Problem{Status: http.StatusBadRequest, Detail: "the body could not be read"}, nil)
	}
	return nil, nil, false
}

// bodyDeadline gives the body of r, which a handler is about to read,
// bodyShare of the time left to the handler's deadline to arrive, and
// returns that time, rounded to a tenth of a second. Without it the body would have
// the server's ReadTimeout from the start of the request, which ends when
// the write deadline does: a client whose body stalls would get no answer,
// and one whose body came late would leave the handler no time for Redis.
func bodyDeadline(w http.ResponseWriter, r *http.Request) time.Duration {
	deadline, ok := r.Context().Deadline()
	if !ok {
		return 0
	}
	within := time.Until(deadline) * bodyShare / 4
	if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(within)); err != nil {
		return 0 // the server's ReadTimeout applies
	}
	return within.Round(100 * time.Millisecond)
}

// bodyLateProblem answers a request whose body did not arrive within the
// time bodyDeadline gave it.
func bodyLateProblem(within time.Duration) Problem {
	return Problem{Status: http.StatusRequestTimeout,
		Detail: fmt.Sprintf("the body did not arrive within %v of the request's headers; send it again", within)}
}

// enqueueRequest reads POST /v1/tasks/{type} in the wire format
// (enqueue.Parse): the type, the body, the query's options (queue,
// process_at, process_in) and the Idempotency-Key header. What can be read
// is judged by the request's check.
func enqueueRequest(r *http.Request, typ string, body []byte) (enqueue.Request, []tasks.FieldError) {
	opts, errs := queryParams(r.URL.RawQuery, enqueue.OptionQueue, enqueue.OptionProcessAt, enqueue.OptionProcessIn)
	switch keys := r.Header.Values(idempotencyKeyHeader); {
	case len(keys) > 1:
		errs = append(errs, tasks.FieldError{Field: idempotencyKeyHeader, Message: "must be sent once"})
	case len(keys) == 1:
		opts[enqueue.OptionIdempotencyKey] = keys[0]
	}
	req, parseErrs := enqueue.Parse(typ, body, opts)
	return req, append(errs, headerNamed(parseErrs)...)
}

// headerNamed reports the problems of the idempotency key under the name of
// the header that carries it.
func headerNamed(errs []tasks.FieldError) []tasks.FieldError {
	for i := range errs {
		if errs[i].Field == enqueue.OptionIdempotencyKey {
			errs[i].Field = idempotencyKeyHeader
		}
	}
	return errs
}

// queryParams parses a raw query that may hold each of known at most once
// (none, for a route that takes no parameter). Malformed, unknown and
// repeated parameters are reported under their name, or under "query" for
// a query that cannot be parsed at all and for a name that is not a plain
// identifier (it is not repeated back to the client).
func queryParams(raw string, known ...string) (map[string]string, []tasks.FieldError) {
	var errs []tasks.FieldError
	values, err := url.ParseQuery(raw)
	if err != nil {
		errs = append(errs, tasks.FieldError{Field: "query", Message: "malformed query string"})
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make(map[string]string, len(values))
	for _, name := range names {
		switch {
		case !slices.Contains(known, name):
			field := name
			if !identifier(name) {
				field = "query"
			}
			errs = append(errs, tasks.FieldError{Field: field, Message: msgUnknownParam(known)})
		case len(values[name]) > 1:
			errs = append(errs, tasks.FieldError{Field: name, Message: "must be given once"})
		default:
			out[name] = values[name][0]
		}
	}
	return out, errs
}

// msgUnknownParam refuses a query parameter of a route that knows others,
// or none.
func msgUnknownParam(known []string) string {
	if len(known) == 0 {
		return "unknown query parameter; this route takes none"
	}
	return "unknown query parameter; known: " + strings.Join(known, ", ")
}

// task is GET /v1/tasks/{id}?queue=: the task of the queue given, or else
// of the first queue asynq lists that holds the id, with the others that
// hold it in other_queues (a task id is unique within a queue only).
func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	q, errs := queryParams(r.URL.RawQuery, enqueue.OptionQueue)
	queue, inQueue := q[enqueue.OptionQueue]
	if inQueue && !tasks.ValidQueueName(queue) {
		errs = append(errs, tasks.FieldError{Field: enqueue.OptionQueue, Message: "must be " + queues.NameRule})
	}
	if len(errs) > 0 {
		s.writeProblem(w, r, validationProblem(errs), nil)
		return
	}
	var st ops.TaskStatus
	var err error
	notFound := "no queue holds a task with this id (results are kept for CERTMAIL_RESULT_RETENTION)"
	if inQueue {
		st, err = s.ops.TaskInQueue(r.Context(), queue, r.PathValue("id"))
		// queue is a valid name: at most 63 plain characters.
		notFound = "queue " + queue + " holds no task with this id (results are kept for CERTMAIL_RESULT_RETENTION)"
	} else {
		st, err = s.ops.Task(r.Context(), r.PathValue("id"))
	}
	var unknown *ops.UnknownQueueError
	if errors.As(err, &unknown) { // likely a mistyped name: say which asynq knows
		notFound = "queue " + queue + " holds no task with this id: " + unknown.Error()
	}
	if err != nil {
		s.writeOpsError(w, r, err, notFound)
		return
	}
	s.writeJSON(w, r, http.StatusOK, st)
}

// writeJSON answers with v as JSON.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.writeProblem(w, r, Problem{Status: http.StatusInternalServerError}, err)
		return
	}
	w.Header()["Content-Type"] = []string{"application/json"} // a canonical key: no need of Header.Set
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n')) // the client is gone when this fails
}

// identifier reports whether s is 1 to 64 letters, digits and underscores.
func identifier(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '_' {
			return false
		}
	}
	return true
}
