package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/tasks"
)

// ProblemContentType is the media type of every error answer.
const ProblemContentType = "application/problem+json"

// TypeValidation is the problem type of a request whose payload, query or
// headers break a rule; its errors member lists every broken rule.
const TypeValidation = "tag:certmail,2025:problem:validation"

// statusClientClosed is logged and counted when the client went away before
// the answer was ready (nginx's convention; nobody receives it).
const statusClientClosed = 499

// Problem is an RFC 9457 problem details document, the body of every error
// answer. Type is "about:blank" (the status says it all, and Title is the
// status text) or TypeValidation.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// RequestID is the id of the request, as in the X-Request-Id header and
	// the API's log line.
	RequestID string `json:"request_id,omitempty"`
	// Errors lists every field-level problem of a validation problem, under
	// the JSON path of the field ("additional_emails[1]"), the query
	// parameter ("process_at") or the header ("Idempotency-Key").
	Errors []tasks.FieldError `json:"errors,omitempty"`
	// TaskID is, in a 503 answer to an enqueue that reached Redis without
	// word back, the id the task has if Redis stored it: look it up (GET
	// /v1/tasks/{id}) before sending the request again.
	TaskID string `json:"task_id,omitempty"`
}

// validationProblem is the 400 answer listing errs, bounded as a
// *tasks.ValidationError is: errs may be a ValidationError's Errors, and may
// come from any number of query parameters.
func validationProblem(errs []tasks.FieldError) Problem {
	ve := tasks.NewValidationError("", errs...)
	n := len(ve.Errors) + ve.Omitted
	if ve.Omitted > 0 {
		n-- // the last entry counts the others
	}
	detail := "the request breaks 1 rule; see errors"
	if n != 1 {
		detail = fmt.Sprintf("the request breaks %d rules; see errors", n)
	}
	return Problem{Type: TypeValidation, Title: "Invalid request", Status: http.StatusBadRequest, Detail: detail, Errors: ve.Errors}
}

// writeProblem is the one function that answers with an error. cause is the
// error behind a 5xx answer: it goes to the request's log line, never to the
// client, whose detail is a fixed sentence unless p has one. The dashboard's
// own page gets the detail as text (dashboardPage).
func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, p Problem, cause error) {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	info := infoOf(r.Context())
	if info != nil {
		p.RequestID = info.id
		if p.Status >= 500 {
			info.err = cause
		}
	}
	if p.Status >= 500 && p.Detail == "" {
		p.Detail = "the server could not complete the request; its log has the cause under this request_id"
	}
	if p.Errors == nil && p.Type == TypeValidation {
		p.Errors = []tasks.FieldError{}
	}
	body, err := json.Marshal(p)
	if err != nil { // a Problem always encodes; keep the status anyway
		body = []byte(`{"type":"about:blank","status":500}`)
	}
	ct := ProblemContentType
	if dashboardPage(r) {
		body, ct = []byte(p.Detail+" (request_id "+p.RequestID+")"), "text/plain; charset=utf-8"
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n')) // the client is gone when this fails
}

// dashboardPage reports whether r is a dashboard read (GET or HEAD) that
// the dashboard's own page made in a browser (Sec-Fetch-Site: same-origin).
// asynqmon's page shows the body of a failed read as it is, as text: it
// cannot show a JSON object, and goes blank on one. The body of a failed
// action it never shows: certmail's guard.js shows the problem's detail.
func dashboardPage(r *http.Request) bool {
	return r.Pattern == DashboardPath+"/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// writeOpsError answers with the problem matching an error of internal/ops:
// validation or invalid argument 400, not found 404 (with notFound as
// detail), idempotency conflict 409, unknown task type 404, Redis out of
// reach 503 with Retry-After (and the task's id for an *ops.EnqueueError:
// the task may have been stored), and so is a request the API's shutdown
// stopped (admin.ErrStopping); anything else 500.
func (s *Server) writeOpsError(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	var ve *tasks.ValidationError
	switch {
	case errors.As(err, &ve):
		s.writeProblem(w, r, validationProblem(ve.Errors), nil)
	case errors.Is(err, ops.ErrInvalidArgument):
		s.writeProblem(w, r, Problem{Status: http.StatusBadRequest, Detail: err.Error()}, nil)
	case errors.Is(err, ops.ErrNotFound):
		s.writeProblem(w, r, Problem{Status: http.StatusNotFound, Detail: notFound}, nil)
	case errors.Is(err, ops.ErrIdempotencyConflict):
		s.writeProblem(w, r, Problem{Status: http.StatusConflict,
			Detail: "this Idempotency-Key was used before with another request; use a new key for a new request"}, nil)
	case errors.Is(err, tasks.ErrUnknownType):
		s.writeProblem(w, r, unknownType(), nil)
	case errors.Is(r.Context().Err(), context.Canceled) && !stopping(r):
		s.writeProblem(w, r, Problem{Status: statusClientClosed, Title: "Client Closed Request",
			Detail: "the client went away before the answer was ready"}, nil)
	case stopping(r) || s.redisUnavailable(err):
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterUnavailable))
		p := Problem{Status: http.StatusServiceUnavailable,
			Detail: "Redis, where tasks are kept, cannot be reached right now; try again after Retry-After seconds"}
		if stopping(r) {
			p.Detail = "the API is shutting down, and Redis had not answered this request yet; try again after Retry-After seconds"
		}
		var ee *ops.EnqueueError
		if errors.As(err, &ee) {
			p.TaskID = ee.TaskID
			p.Detail = "Redis did not confirm the enqueue, and may have stored the task under task_id: look it up " +
				"(GET /v1/tasks/{task_id}) before sending the request again; a request with an Idempotency-Key can be sent again as it is"
		}
		s.writeProblem(w, r, p, err)
	default:
		s.writeProblem(w, r, Problem{Status: http.StatusInternalServerError}, err)
	}
}

// stopping reports whether r's context was cancelled because the API is
// shutting down (admin.ErrStopping): the request was still waiting on Redis
// near the shutdown timeout.
func stopping(r *http.Request) bool {
	return errors.Is(context.Cause(r.Context()), admin.ErrStopping)
}

// RetryAfterUnavailable is the Retry-After, in seconds, of a 503 answer while
// Redis is out of reach: about what a Redis restart or a Sentinel failover
// takes.
const RetryAfterUnavailable = 5

// pingTimeout bounds the PING redisUnavailable sends.
const pingTimeout = time.Second

// redisUnavailable reports whether err means that Redis cannot serve right
// now: a connection error of go-redis (a failed dial, a reset, a timeout, a
// full pool) or a state Redis reports (loading, read-only replica, master
// down), anywhere in err's chain. asynq turns some of these into text
// ("redis eval error: LOADING ..."), so its text is read too, and for any
// other error a PING decides. The PING alone would not do: Redis may be back
// by the time it is sent, as it is right after a restart that answered the
// request with LOADING.
func (s *Server) redisUnavailable(err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, &ne), // dial, read and write errors, timeouts, context deadlines
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted),
		redis.IsLoadingError(err), redis.IsReadOnlyError(err), redis.IsMasterDownError(err),
		redis.IsTryAgainError(err), redis.IsClusterDownError(err), redis.IsMaxClientsError(err),
		unavailableText(err.Error()):
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	return s.cfg.Redis.Client.Ping(ctx).Err() != nil
}

// unavailableTexts are what an error flattened to text by asynq ("redis eval
// error: %v", "redis command error: %v") says when Redis could not serve:
// Redis's own error prefixes, go-redis's and the network's messages.
var unavailableTexts = []string{
	"error: LOADING ", "error: READONLY ", "error: MASTERDOWN ", "error: TRYAGAIN ", "error: CLUSTERDOWN ",
	"error: ERR max number of clients",
	"failed: LOADING ", "failed: READONLY ", "failed: MASTERDOWN ", "failed: TRYAGAIN ", "failed: CLUSTERDOWN ",
	"redis: client is closed", "redis: connection pool timeout", "redis: connection pool exhausted",
	"connection refused", "connection reset by peer", "broken pipe", "i/o timeout",
	"dial tcp", "dial unix", ": EOF", "unexpected EOF",
}

// unavailableText reports whether an error's text is one of unavailableTexts.
func unavailableText(text string) bool {
	for _, t := range unavailableTexts {
		if strings.Contains(text, t) {
			return true
		}
	}
	return false
}

func unknownType() Problem {
	return Problem{Status: http.StatusNotFound, Detail: "unknown task type; known types are " + strings.Join(tasks.Types(), ", ")}
}

// problemsForUnmatched turns the mux's own 404 and 405 answers (requests no
// pattern matches) into problems. A 405 keeps the mux's Allow header. A
// path the mux would clean (an empty, . or .. segment) matches no route
// either: it is answered 404 here, where the mux would redirect to the
// cleaned path with 307 and an HTML body. These problems say
// Cache-Control: no-store, as those of the routes that need a token do.
func (s *Server) problemsForUnmatched(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !pathIsClean(r) {
			w.Header()["Cache-Control"] = []string{"no-store"}
			s.writeProblem(w, r, Problem{Status: http.StatusNotFound,
				Detail: "no such route: the path has an empty, . or .. segment; see /v1/openapi.json"}, nil)
			return
		}
		next.ServeHTTP(&unmatchedWriter{ResponseWriter: w, s: s, r: r}, r)
	})
}

// pathIsClean reports whether the mux takes r's path as it is: whether it
// has no empty, . or .. segment (a trailing slash aside), as net/http's
// ServeMux judges it, on the escaped path. CONNECT requests are not
// cleaned by the mux, so their paths always are.
func pathIsClean(r *http.Request) bool {
	return r.Method == http.MethodConnect || isCleanPath(r.URL.EscapedPath())
}

// isCleanPath reports whether p starts with / and has no empty, . or ..
// segment (a trailing slash aside): whether path.Clean leaves it as it is.
func isCleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np == p
}

// route is the pattern of the route the mux picks for r: the pattern of
// the handler that will run or, when the mux answers with a redirect to
// add a trailing slash, of the route the redirect leads to; "" when no
// route matches, or the path is not clean (problemsForUnmatched answers
// 404).
func (s *Server) route(r *http.Request) string {
	if !pathIsClean(r) {
		return ""
	}
	_, pattern := s.mux.Handler(r)
	return pattern
}

// unmatchedWriter replaces the answer of the mux when the request matched no
// pattern (the mux sets r.Pattern before it calls a handler).
type unmatchedWriter struct {
	http.ResponseWriter
	s        *Server
	r        *http.Request
	replaced bool
}

func (w *unmatchedWriter) WriteHeader(code int) {
	if w.r.Pattern == "" && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		w.replaced = true
		w.Header()["Cache-Control"] = []string{"no-store"}
		p := Problem{Status: code, Detail: "no such route; see /v1/openapi.json"}
		if code == http.StatusMethodNotAllowed {
			p.Detail = detailMethodNotAllowed
		}
		w.s.writeProblem(w.ResponseWriter, w.r, p, nil)
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *unmatchedWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *unmatchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// requestInfo is what the observe middleware logs about a request beyond
// what it sees itself.
type requestInfo struct {
	id    string
	role  Role  // the role of the request's token, once authenticated
	token int   // 1 + the position of the request's token in Config.Tokens, once authenticated; 0 for none
	err   error // the cause of a 5xx answer
}

type infoKey struct{}

func withInfo(ctx context.Context, info *requestInfo) context.Context {
	return context.WithValue(ctx, infoKey{}, info)
}

func infoOf(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(infoKey{}).(*requestInfo)
	return info
}
