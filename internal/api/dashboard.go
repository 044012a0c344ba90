package api

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redisconn"
)

// newDashboard returns the asynq dashboard on conn's Redis, mounted at
// DashboardPath.
func newDashboard(conn *redisconn.Conn, readOnly bool) *asynqmon.HTTPHandler {
	return asynqmon.New(asynqmon.Options{
		RootPath:         DashboardPath,
		RedisConnOpt:     conn.Opt,
		ReadOnly:         readOnly,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(formatPayload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(formatPayload),
	})
}

// securityHeaders forbids framing every answer (the dashboard's pages above
// all: no other site may show them under a click-jacking overlay) and
// content sniffing, and sends no Referer from any of them: asynqmon's page
// loads its stylesheets from fonts.googleapis.com, which would otherwise
// learn the dashboard's origin on every load.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Set without Header.Set, which canonicalises keys that already are
		// and allocates one slice per value: the values are slices of one
		// array of this request, each of capacity 1 so that an append
		// copies.
		v := &[...]string{"DENY", "frame-ancestors 'none'", "nosniff", "no-referrer"}
		h := w.Header()
		h["X-Frame-Options"] = v[0:1:1]
		h["Content-Security-Policy"] = v[1:2:2]
		h["X-Content-Type-Options"] = v[2:3:3]
		h["Referrer-Policy"] = v[3:4:4]
		next.ServeHTTP(w, r)
	})
}

// crossOrigin refuses, 403, every request but GET, HEAD and OPTIONS that a
// browser sends from another origin (net/http.CrossOriginProtection: by
// Sec-Fetch-Site, or Origin against Host for older browsers). Browsers
// resend cached basic-auth credentials with a form post from any page, so
// without this any site an operator visits could run or delete tasks
// through the dashboard. It guards the whole API: bearer tokens are never
// sent by a browser on its own, but with --insecure-no-auth a form post
// could requeue a dead letter. Clients that are not browsers send neither
// header and pass.
func (s *Server) crossOrigin(next http.Handler) http.Handler {
	c := http.NewCrossOriginProtection()
	c.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, Problem{Status: http.StatusForbidden,
			Detail: "cross-origin request refused: a page of another site may not change anything here"}, nil)
	}))
	return c.Handler(next)
}

// maxDashboardPageSize is the most tasks one dashboard page may list: the
// dashboard's own page sizes go up to 100, and asynqmon passes any other size
// on to asynq, which reads a whole queue for a size of 0 or less.
const maxDashboardPageSize = 100

// maxDashboardPage bounds the page number, so that its offset (the page
// times its size) stays far from overflowing.
const maxDashboardPage = 1_000_000_000

// dashboardPageProblem checks the paging parameters of a dashboard request,
// which asynqmon itself takes as given: size an integer from 1 to
// maxDashboardPageSize and page one from 1 to maxDashboardPage, each given
// at most once. It returns what is wrong, or "".
func dashboardPageProblem(q url.Values) string {
	for _, p := range []struct {
		name string
		max  int
	}{{"size", maxDashboardPageSize}, {"page", maxDashboardPage}} {
		vs, ok := q[p.name]
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(vs[0]); len(vs) > 1 || err != nil || n < 1 || n > p.max {
			return "query parameter " + p.name + " must be given once, as an integer from 1 to " + strconv.Itoa(p.max)
		}
	}
	return ""
}

// dashboardAPIPrefix is where the dashboard's JSON API is: asynqmon answers
// every path under it that none of its routes matches with its page.
const dashboardAPIPrefix = DashboardPath + "/api/"

// detailNoAPIPath answers a path under dashboardAPIPrefix that asynqmon
// routes nowhere. The dashboard's page asks for such paths when it puts a
// task id or a queue name with a slash (or another character a path does
// not carry as it is) into the address of a single-task action.
const detailNoAPIPath = "the dashboard's API has no such path: a task id or queue name with / ? # % or a dot segment " +
	"cannot be addressed by the dashboard's single-task actions; select the task's checkbox and use the bulk action, " +
	"or certmail dlq delete/requeue"

// detailActionQuery answers a request under dashboardAPIPrefix that would
// change something and carries a query. None of the dashboard's actions has
// one: the page made it from a task id or queue name holding a '?', and the
// path before it names another task or queue.
const detailActionQuery = "a dashboard action takes no query: a task id or queue name with ? " +
	"cannot be addressed by the dashboard's single-task actions; select the task's checkbox and use the bulk action, " +
	"or certmail dlq delete/requeue"

// dashboardAssets are what certmail adds to asynqmon's page: guard.js,
// which refuses a single-task action whose address the browser would
// resolve to another one (a task id or queue name with ".", "..", "?", "#",
// "%", "\" or a control character, or ending with a space) and shows why an
// action failed (the problem's detail), which asynqmon's page does not; and
// guard.css, which styles its message and wraps long task ids in the tables.
//
//go:embed dashboard/guard.js dashboard/guard.css
var dashboardAssets embed.FS

// dashboardAssetsPath is where dashboardAssets are served.
const dashboardAssetsPath = DashboardPath + "/certmail/"

// dashboardAssetTags are put at the start of the head of asynqmon's page, so
// that guard.js wraps XMLHttpRequest and fetch before asynqmon's scripts run.
const dashboardAssetTags = `<link rel="stylesheet" href="` + dashboardAssetsPath + `guard.css"/>` +
	`<script src="` + dashboardAssetsPath + `guard.js"></script>`

// serveDashboardAsset answers a request under dashboardAssetsPath.
func (s *Server) serveDashboardAsset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, dashboardAssetsPath)
	types := map[string]string{"guard.js": "text/javascript; charset=utf-8", "guard.css": "text/css; charset=utf-8"}
	b, err := dashboardAssets.ReadFile("dashboard/" + name)
	if types[name] == "" || err != nil {
		s.writeProblem(w, r, Problem{Status: http.StatusNotFound, Detail: "the dashboard has no such file"}, nil)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		s.writeProblem(w, r, Problem{Status: http.StatusMethodNotAllowed, Detail: "only GET and HEAD read the dashboard's files"}, nil)
		return
	}
	w.Header().Set("Content-Type", types[name])
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}

// withAssetTags returns asynqmon's page with dashboardAssetTags at the
// start of its head (or of the page, should it have no head).
func withAssetTags(page []byte) []byte {
	i := bytes.Index(page, []byte("<head>"))
	if i >= 0 {
		i += len("<head>")
	} else {
		i = 0
	}
	out := make([]byte, 0, len(page)+len(dashboardAssetTags))
	out = append(append(append(out, page[:i]...), dashboardAssetTags...), page[i:]...)
	return out
}

// dashboardMetricsPath is asynqmon's view of Prometheus time series, which
// needs a Prometheus address; certmail gives it none.
const dashboardMetricsPath = DashboardPath + "/api/metrics"

// dashboardRedisInfoPath is asynqmon's view of the Redis server's INFO: the
// whole instance's, with every database's key count, the clients, the
// server's version, executable and OS. On an instance shared with other
// services that describes their data too, so only operators see it.
const dashboardRedisInfoPath = DashboardPath + "/api/redis_info"

// dashboardRefusal is the problem that answers a dashboard request before
// asynqmon sees it, if any: a path with an empty, . or .. segment once
// decoded (%2e%2e, %2F), which asynqmon's router would clean and redirect
// to, out of the dashboard too; the metrics view, which has no Prometheus;
// the Redis server's INFO, to a role other than operator; an action under
// the JSON API that carries a query (detailActionQuery).
func dashboardRefusal(r *http.Request, role Role) (Problem, bool) {
	switch {
	case !isCleanPath(r.URL.Path):
		return Problem{Status: http.StatusNotFound,
			Detail: "the dashboard has no such path: it has an empty, . or .. segment once decoded (%2e%2e, %2F)"}, true
	case r.URL.Path == dashboardMetricsPath:
		// Without Prometheus asynqmon fails every request here (500), and
		// its error repeats the query.
		return Problem{Status: http.StatusNotFound,
			Detail: "the dashboard has no Prometheus configured, so no metrics view: the workers' /metrics have the queues' figures"}, true
	case r.URL.Path == dashboardRedisInfoPath && role != RoleOperator:
		return Problem{Status: http.StatusForbidden,
			Detail: "the Redis server's INFO describes the whole instance, other services' data too: operators only"}, true
	case r.Method != http.MethodGet && r.Method != http.MethodHead && strings.HasPrefix(r.URL.Path, dashboardAPIPrefix) &&
		(r.URL.RawQuery != "" || r.URL.ForceQuery):
		return Problem{Status: http.StatusBadRequest, Detail: detailActionQuery}, true
	}
	return Problem{}, false
}

// serveDashboard serves the dashboard as the request's role may see it:
// read-only for readers, as configured for operators. A page of tasks is at
// most maxDashboardPageSize long: asynqmon would otherwise list a whole
// queue in one answer, and block Redis while it reads it, for any reader
// who asks. asynqmon's failures become problems (dashboardError); every
// other answer streams through as asynqmon writes it. asynqmon sees no
// query parameter but size and page, checked: the text of its failures goes
// to the log, which never holds a request's query. A path under the JSON API
// that asynqmon routes nowhere is a 404 problem, not asynqmon's page with
// 200, which its page would take for an action that succeeded; what
// dashboardRefusal refuses never reaches asynqmon.
// asynqmon's page gets certmail's dashboardAssets. A Cancel of active
// tasks is refused 409 (refuseCancel), and so is an "Archive all" that
// would take the queue's archive to asynq's cap (refuseArchiveOverCap); a
// Pause of a queue asynq does not know is 404 (refuseUnknownPause);
// readers and a read-only dashboard get 405 for all three. asynqmon's 405s
// (a method no route of the path takes, an action of a read-only
// dashboard) become problems with Allow (dashboardMethodNotAllowed).
func (s *Server) serveDashboard(w http.ResponseWriter, r *http.Request) {
	var role Role
	if info := infoOf(r.Context()); info != nil {
		role = info.role
	}
	if p, refused := dashboardRefusal(r, role); refused {
		s.writeProblem(w, r, p, nil)
		return
	}
	if strings.HasPrefix(r.URL.Path, dashboardAssetsPath) {
		s.serveDashboardAsset(w, r)
		return
	}
	q := r.URL.Query()
	if detail := dashboardPageProblem(q); detail != "" {
		s.writeProblem(w, r, Problem{Status: http.StatusBadRequest, Detail: detail}, nil)
		return
	}
	if r.URL.RawQuery != "" {
		r = withPaging(r, q)
	}
	h := s.dashboardRO
	if role == RoleOperator {
		h = s.dashboard
	}
	if h == s.dashboard && !s.cfg.DashboardReadOnly && (s.refuseCancel(w, r) || s.refuseArchiveOverCap(w, r) || s.refuseUnknownPause(w, r)) {
		return
	}
	dw := &dashboardWriter{ResponseWriter: w, api: strings.HasPrefix(r.URL.Path, dashboardAPIPrefix)}
	var body *lateBody
	var within time.Duration
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		// asynqmon reads an action's body itself: it gets the time
		// readBody gives, and a body that stops arriving is answered 408.
		within = bodyDeadline(w, r)
		body = &lateBody{ReadCloser: r.Body}
		r.Body, dw.late = body, body
	}
	h.ServeHTTP(dw, r)
	if body != nil && body.late && !dw.started {
		w.Header().Set("Connection", "close")
		s.writeProblem(w, r, bodyLateProblem(within), nil)
		return
	}
	if dw.index != nil {
		page := withAssetTags(dw.index.Bytes())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(page)))
		_, _ = w.Write(page)
		return
	}
	if dw.page {
		s.writeProblem(w, r, Problem{Status: http.StatusNotFound, Detail: detailNoAPIPath}, nil)
		return
	}
	switch dw.held {
	case 0:
	case http.StatusMethodNotAllowed:
		s.dashboardMethodNotAllowed(w, r, h == s.dashboardRO || s.cfg.DashboardReadOnly, dw.text, dw.total)
	default:
		s.dashboardError(w, r, dw.held, dw.text, dw.total)
	}
}

// detailCancelRefused answers a dashboard Cancel of active tasks, refused
// by refuseCancel.
const detailCancelRefused = "Cancel refused: certmail does not cut a DigiCert call in flight (DigiCert may already " +
	"have acted on it: cut, its retry could email again, or an older address list land after a newer one), so a " +
	"cancel would not stop the call, only hand the task back for a retry. A delivery ends by itself within its call " +
	"budget (20 s by default). To keep a task from running again, delete or archive it once it is no longer active, " +
	"or pause the queue"

// isCancelPath reports whether path is one of the dashboard's Cancel
// actions, as asynqmon routes them: a task's
// (queues/{qname}/active_tasks/{task_id}:cancel), all of a queue's active
// tasks (active_tasks:cancel_all) or those selected (active_tasks:batch_cancel).
func isCancelPath(path string) bool {
	rest, found := strings.CutPrefix(path, dashboardAPIPrefix+"queues/")
	if !found {
		return false
	}
	queue, action, _ := strings.Cut(rest, "/")
	if queue == "" {
		return false
	}
	if action == "active_tasks:cancel_all" || action == "active_tasks:batch_cancel" {
		return true
	}
	id, found := strings.CutPrefix(action, "active_tasks/")
	id, cancel := strings.CutSuffix(id, ":cancel")
	return found && cancel && id != "" && !strings.Contains(id, "/")
}

// refuseCancel answers 409, and reports true, for a dashboard Cancel of
// active tasks. asynq cancels a task by cancelling its handler's context
// and retrying it at once; the worker lets a DigiCert call in flight finish
// all the same (cut after DigiCert may have received it, its retry would
// email again, and a set-emails' older list could land after a newer one),
// so a Cancel cannot stop what an operator would want it to stop, and its
// retry could be run by hand while the call still runs.
func (s *Server) refuseCancel(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost || !isCancelPath(r.URL.Path) {
		return false
	}
	s.writeProblem(w, r, Problem{Status: http.StatusConflict, Detail: detailCancelRefused}, nil)
	return true
}

// detailArchiveOverCap answers an "Archive all" refused by
// refuseArchiveOverCap, given the tasks it would archive, the archive's size
// and the most asynq keeps there.
const detailArchiveOverCap = "Archive all refused: it would move %d tasks into this queue's archive, which holds %d, " +
	"and asynq keeps at most %d there: it would drop the oldest and leave their data in Redis for good. " +
	"Delete these tasks instead, or make room first (delete archived tasks, or certmail dlq purge)"

// archiveAllSource returns the queue and the Redis key of the tasks that
// path, a dashboard "Archive all" (of pending, scheduled or retry tasks, or
// of a group's aggregating tasks), moves to the archive, and whether that
// key is a list (pending tasks) rather than a sorted set; ok is false for
// any other path.
func archiveAllSource(path string) (queue, key string, list, ok bool) {
	rest, found := strings.CutPrefix(path, dashboardAPIPrefix+"queues/")
	if !found {
		return "", "", false, false
	}
	queue, action, _ := strings.Cut(rest, "/")
	switch action {
	case "pending_tasks:archive_all":
		return queue, queues.AsynqKey(queue, "pending"), true, queue != ""
	case "scheduled_tasks:archive_all":
		return queue, queues.AsynqKey(queue, "scheduled"), false, queue != ""
	case "retry_tasks:archive_all":
		return queue, queues.AsynqKey(queue, "retry"), false, queue != ""
	}
	group, found := strings.CutSuffix(strings.TrimPrefix(action, "groups/"), "/aggregating_tasks:archive_all")
	if !found || !strings.HasPrefix(action, "groups/") || group == "" || strings.Contains(group, "/") || queue == "" {
		return "", "", false, false
	}
	return queue, queues.AsynqKey(queue, "g:"+group), false, true
}

// refuseArchiveOverCap answers 409, and reports true, for a dashboard
// "Archive all" whose tasks and the queue's archive would together reach
// ops.ArchiveCap. asynq's script for it moves every task in one step
// (Redis is blocked for about half a second at 100 000) and then trims the
// archive without deleting the trimmed tasks, whose hashes stay in Redis
// for good (see ops.ArchiveCap). The counts are read in one round trip
// just before, so an archive that grows meanwhile can still be trimmed.
func (s *Server) refuseArchiveOverCap(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	queue, key, list, ok := archiveAllSource(r.URL.Path)
	if !ok {
		return false
	}
	ctx := r.Context()
	pipe := s.cfg.Redis.Client.Pipeline()
	var moving *redis.IntCmd
	if list {
		moving = pipe.LLen(ctx, key)
	} else {
		moving = pipe.ZCard(ctx, key)
	}
	archived := pipe.ZCard(ctx, queues.AsynqKey(queue, "archived"))
	if _, err := pipe.Exec(ctx); err != nil {
		s.writeOpsError(w, r, fmt.Errorf("dashboard: count the tasks to archive: %w", err), "")
		return true
	}
	if moving.Val()+archived.Val() < ops.ArchiveCap {
		return false
	}
	s.writeProblem(w, r, Problem{Status: http.StatusConflict,
		Detail: fmt.Sprintf(detailArchiveOverCap, moving.Val(), archived.Val(), ops.ArchiveCap-1)}, nil)
	return true
}

// detailUnknownPause answers a dashboard Pause of a queue asynq does not
// know, refused by refuseUnknownPause.
const detailUnknownPause = "Pause refused: asynq knows no queue of this name (the dashboard lists those it knows). " +
	"A pause of it would leave a key in Redis for good and hold nothing"

// refuseUnknownPause answers 404, and reports true, for a dashboard Pause
// of a queue that is not in asynq's set of queues: asynq would store the
// pause, a key of that name without expiry that no listing shows, for any
// name an operator's request holds (a mistyped one, or thousands).
func (s *Server) refuseUnknownPause(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	rest, found := strings.CutPrefix(r.URL.Path, dashboardAPIPrefix+"queues/")
	queue, pause := strings.CutSuffix(rest, ":pause")
	if !found || !pause || strings.Contains(queue, "/") {
		return false
	}
	known, err := s.cfg.Redis.Client.SIsMember(r.Context(), queues.AsynqQueuesKey, queue).Result()
	if err != nil {
		s.writeOpsError(w, r, fmt.Errorf("dashboard: look up the queue to pause: %w", err), "")
		return true
	}
	if known {
		return false
	}
	s.writeProblem(w, r, Problem{Status: http.StatusNotFound, Detail: detailUnknownPause}, nil)
	return true
}

// withPaging returns a shallow copy of r whose query holds only the size and
// page of q, the only parameters asynqmon reads but for its metrics view.
func withPaging(r *http.Request, q url.Values) *http.Request {
	kept := url.Values{}
	for _, name := range []string{"size", "page"} {
		if v, ok := q[name]; ok {
			kept[name] = v
		}
	}
	u := *r.URL
	u.RawQuery = kept.Encode()
	r2 := *r
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	return &r2
}

// maxDashboardErrorText is how much of the text of a failure asynqmon
// reports is kept: enough to tell a missing queue or task, and for the log.
const maxDashboardErrorText = 256

// dashboardNotFound are the beginnings of what asynqmon writes, as plain
// text with status 500 or 404, when a queue or a task does not exist: the
// text of asynq's errors, which repeats the queue's name (and the path
// names it, up to the 20 KiB or so of a request's headers).
var dashboardNotFound = []struct {
	prefix, detail string
}{
	{"asynq: queue not found", detailNoQueue}, // the Inspector's ErrQueueNotFound
	{"asynq: task not found", detailNoTask},   // and ErrTaskNotFound
	{"queue not found", detailNoQueue},        // the same, with asynqmon's own 404
	{"task not found", detailNoTask},
	{`NOT_FOUND: queue "`, detailNoQueue}, // asynq's internal errors, which some Inspector methods return as they are
	{"NOT_FOUND: cannot find task", detailNoTask},
}

const (
	detailNoQueue = "the dashboard knows no queue of this name"
	detailNoTask  = "the dashboard knows no task of this id in this queue"
)

// dashboardConflict are the beginnings of what asynqmon writes, as plain
// text with status 500, when asynq refuses to act on a task in the state it
// is in (asynq's FAILED_PRECONDITION): a Delete, Run or Archive of a task
// that a worker took since the page was loaded, or one that another action
// moved. The first that matches applies.
var dashboardConflict = []struct {
	prefix, detail string
}{
	{"asynq: FAILED_PRECONDITION: cannot delete task in active state", detailTaskActive},
	{"asynq: FAILED_PRECONDITION: cannot archive task in active state", detailTaskActive},
	{"asynq: FAILED_PRECONDITION: task is already running", detailTaskActive},
	{"asynq: FAILED_PRECONDITION: ", detailTaskMoved},
}

const (
	detailTaskActive = "the task is running now: a worker is delivering it, and it can be deleted, run or archived " +
		"only once that delivery ends (within its call budget, 20 s by default); wait for it to end and act again"
	detailTaskMoved = "the task is no longer in the state this page shows: a worker or another action moved it; " +
		"act again on the page as it is now"
)

// dashboardError answers for asynqmon, which answered status with text, the
// first bytes of total: a queue or a task that does not exist is 404, and a
// task in a state asynq does not act on (dashboardConflict) 409, each with a
// fixed detail that does not repeat the name; any other failure is answered
// as the API answers a failure of Redis (503 while Redis cannot be reached,
// else 500), the text clipped in the request's log line.
func (s *Server) dashboardError(w http.ResponseWriter, r *http.Request, status int, text []byte, total int) {
	for _, c := range dashboardConflict {
		if bytes.HasPrefix(text, []byte(c.prefix)) {
			s.writeProblem(w, r, Problem{Status: http.StatusConflict, Detail: c.detail}, nil)
			return
		}
	}
	detail := ""
	for _, nf := range dashboardNotFound {
		if bytes.HasPrefix(text, []byte(nf.prefix)) {
			detail = nf.detail
			break
		}
	}
	if detail == "" && status == http.StatusNotFound {
		detail = "the dashboard knows no queue or task of this name"
	}
	if detail != "" {
		s.writeProblem(w, r, Problem{Status: http.StatusNotFound, Detail: detail}, nil)
		return
	}
	s.writeOpsError(w, r, dashboardCause(text, total), "")
}

// dashboardCause is the error behind a failure asynqmon reported with text,
// the first bytes of total: valid UTF-8, and saying how long it was when
// text is not all of it.
func dashboardCause(text []byte, total int) error {
	return errors.New("dashboard: " + clippedText(text, total))
}

// clippedText is text, the first bytes of total, trimmed and made valid
// UTF-8, saying how long it was when text is not all of it.
func clippedText(text []byte, total int) string {
	msg := strings.ToValidUTF8(strings.TrimSpace(string(text)), "\uFFFD")
	if total > len(text) {
		msg += " [clipped: " + strconv.Itoa(total) + " bytes]"
	}
	return msg
}

// dashboardJSONType is the Content-Type of the dashboard's JSON answers.
const dashboardJSONType = "application/json; charset=utf-8"

// dashboardWriter holds back an answer of asynqmon that reports a failure
// (status 404, 405 or 5xx, plain text or none) so that serveDashboard can
// answer a problem instead, keeping the first maxDashboardErrorText bytes
// of its text; and, for a request under the JSON API, asynqmon's page (HTML, which
// its page handler serves with 200 for any path no route matches), which it
// drops; outside the API, asynqmon's page itself (a few KiB of a file it
// embeds), which serveDashboard sends with dashboardAssetTags added. Any
// other answer goes through as it is written: a page of tasks is never
// held. asynqmon sets no Content-Type on its JSON: an answer of the API
// that goes through with 200 and none set gets dashboardJSONType.
type dashboardWriter struct {
	http.ResponseWriter
	api     bool          // the request is under dashboardAPIPrefix
	page    bool          // asynqmon answered it with its page, dropped
	index   *bytes.Buffer // asynqmon's page, outside the API: held to add dashboardAssetTags
	held    int           // the status held back, 0 when none
	started bool          // an answer went through
	text    []byte        // the beginning of the held answer
	total   int           // the length of the held answer
	late    *lateBody     // the request's body, when it has one: a 400 after it came late is held too
}

// lateBody is a request body that notes whether a read ended at its
// deadline (bodyDeadline).
type lateBody struct {
	io.ReadCloser
	late bool
}

func (b *lateBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		b.late = true
	}
	return n, err
}

func (w *dashboardWriter) WriteHeader(code int) {
	switch {
	case w.held != 0:
	case !w.started && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed || code >= 500 ||
		code == http.StatusBadRequest && w.late != nil && w.late.late):
		w.held = code
	default:
		w.started = w.started || code >= 200
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *dashboardWriter) Write(b []byte) (int, error) {
	// asynqmon's JSON answers set no Content-Type: the first bytes of its
	// page are told from JSON as net/http would sniff them.
	if w.api && !w.started && w.held == 0 && w.Header().Get("Content-Type") == "" &&
		strings.HasPrefix(http.DetectContentType(b), "text/html") {
		w.page = true
	}
	if !w.api && !w.started && w.held == 0 && w.index == nil && w.Header().Get("Content-Type") == "" &&
		strings.HasPrefix(http.DetectContentType(b), "text/html") {
		w.index = new(bytes.Buffer)
	}
	if w.index != nil {
		return w.index.Write(b)
	}
	if w.page {
		return len(b), nil
	}
	if w.api && !w.started && w.held == 0 && w.Header().Get("Content-Type") == "" {
		// An answer of the JSON API that goes through with the implicit
		// 200: JSON, which net/http would otherwise sniff as text/plain.
		w.Header().Set("Content-Type", dashboardJSONType)
	}
	if w.held != 0 {
		w.text = append(w.text, b[:min(len(b), maxDashboardErrorText-len(w.text))]...)
		w.total += len(b)
		return len(b), nil
	}
	w.started = true
	return w.ResponseWriter.Write(b)
}

// Flush lets a page stream; a held or dropped answer is not flushed.
func (w *dashboardWriter) Flush() {
	if w.held == 0 && !w.page && w.index == nil {
		w.started = true
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *dashboardWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// maxIndentDepth is the deepest JSON the dashboard indents: indenting costs
// the depth for every line, so deeper JSON is shown as it is.
const maxIndentDepth = 16

// exactNote ends the JSON the dashboard shows when the page would round a
// number of it: it makes the text no JSON for the page, which shows it as
// it is.
const exactNote = "\n[shown as stored: the page would round integers beyond 2^53, such as a set-emails sequence]"

// formatPayload shows a task's payload or result in the dashboard as
// ops.Show bounds it: JSON of at most ops.MaxShownBytes indented by two
// spaces (an array, a number or null too, which ops.Show gives as text so
// that the API's answers hold an object or a string); anything else as
// text, or as base64 when it is not valid UTF-8, the first
// ops.MaxShownBytes of it, with a line saying which and how much was left
// out. The text is always valid UTF-8. asynqmon's page parses text that is
// JSON again, with JavaScript's numbers: JSON with a number they cannot
// hold (a set-emails sequence, in Unix nanoseconds) ends with exactNote, so
// that the page shows its digits as stored.
func formatPayload(_ string, b []byte) string {
	sh := ops.Show(b, len(b))
	if sh.Encoding == "" || (sh.Encoding == ops.EncodingText && !sh.Truncated && json.Valid(b)) {
		return formatJSON(b) // whole valid UTF-8 JSON of at most ops.MaxShownBytes
	}
	var s string
	_ = json.Unmarshal(sh.Value, &s) // Show made it a JSON string
	if sh.Encoding == ops.EncodingBase64 {
		s = "[base64: not valid UTF-8]\n" + s
	}
	if sh.Truncated {
		s += "\n[truncated: first " + strconv.Itoa(ops.MaxShownBytes) + " of " + strconv.Itoa(sh.Size) + " bytes shown]"
	}
	return s
}

// formatJSON indents the valid JSON b, unless it nests deeper than
// maxIndentDepth, and adds exactNote when the page would round a number of
// it.
func formatJSON(b []byte) string {
	var buf bytes.Buffer
	out := string(b)
	if jsonDepth(b) <= maxIndentDepth && json.Indent(&buf, b, "", "  ") == nil {
		out = buf.String()
	}
	if !exactInJavaScript(b) {
		out += exactNote
	}
	return out
}

// maxExactInteger is the largest integer from which every smaller one is a
// JavaScript number exactly (2^53).
const maxExactInteger = 1 << 53

// exactInJavaScript reports whether every number of the JSON b reads back
// as written once JavaScript parsed and printed it, as far as an integer
// goes: false for a number beyond ±2^53 (printed rounded) and for one out
// of a float64's range (printed as null or 0). b must be valid JSON.
func exactInJavaScript(b []byte) bool {
	return outsideStrings(b, func(i int) (int, bool) {
		if c := b[i]; c != '-' && (c < '0' || '9' < c) {
			return i + 1, true
		}
		j := i + 1
		for j < len(b) && strings.IndexByte("0123456789.eE+-", b[j]) >= 0 {
			j++
		}
		return j, exactNumber(string(b[i:j]))
	})
}

// exactNumber is exactInJavaScript for one number: one written with a
// fraction or an exponent is not exact when it is out of range (Inf), when
// it is not 0 but reads as 0 (below the smallest float64), or when it is
// beyond ±2^53, where the page prints it with other digits.
func exactNumber(n string) bool {
	if strings.ContainsAny(n, ".eE") {
		f, err := strconv.ParseFloat(n, 64)
		mantissa, _, _ := strings.Cut(strings.ToLower(n), "e")
		switch {
		case errors.Is(err, strconv.ErrRange):
			return false
		case f == 0:
			return strings.Trim(mantissa, "-0.") == ""
		}
		return math.Abs(f) < maxExactInteger
	}
	i, err := strconv.ParseInt(n, 10, 64)
	return err == nil && -maxExactInteger <= i && i <= maxExactInteger
}

// jsonDepth returns the deepest nesting of arrays and objects in valid JSON.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	outsideStrings(b, func(i int) (int, bool) {
		switch b[i] {
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth--
		}
		return i + 1, true
	})
	return deepest
}

// outsideStrings calls f with the index of each byte of the JSON b that is
// outside its strings (their quotes excluded), in order, and goes on from
// the index f returns while f reports true; it reports whether f always did.
func outsideStrings(b []byte, f func(i int) (next int, ok bool)) bool {
	inString, escaped := false, false
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		default:
			next, ok := f(i)
			if !ok {
				return false
			}
			i = next
			continue
		}
		i++
	}
	return true
}
