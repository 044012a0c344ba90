package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/gorilla/mux"
)

// dashboardRoutes are the routes of asynqmon's JSON API (hibiken/asynqmon
// v0.7.2, handler.go), under dashboardAPIPrefix: the method and the path
// template of each, as asynqmon gives them to its gorilla/mux router.
// asynqmon keeps its router to itself, and its router answers a method that
// no route of the path takes with an empty 405 without Allow: certmail
// matches the path against these routes itself to know what Allow holds
// (dashboardAllow). TestDashboardRoutesAreAsynqmons holds the table to
// asynqmon's router, so that an upgrade of asynqmon that changes its routes
// fails it.
var dashboardRoutes = []struct{ method, path string }{
	{"GET", "queues"},
	{"GET", "queues/{qname}"},
	{"DELETE", "queues/{qname}"},
	{"POST", "queues/{qname}:pause"},
	{"POST", "queues/{qname}:resume"},
	{"GET", "queue_stats"},
	{"GET", "queues/{qname}/active_tasks"},
	{"POST", "queues/{qname}/active_tasks/{task_id}:cancel"},
	{"POST", "queues/{qname}/active_tasks:cancel_all"},
	{"POST", "queues/{qname}/active_tasks:batch_cancel"},
	{"GET", "queues/{qname}/pending_tasks"},
	{"DELETE", "queues/{qname}/pending_tasks/{task_id}"},
	{"DELETE", "queues/{qname}/pending_tasks:delete_all"},
	{"POST", "queues/{qname}/pending_tasks:batch_delete"},
	{"POST", "queues/{qname}/pending_tasks/{task_id}:archive"},
	{"POST", "queues/{qname}/pending_tasks:archive_all"},
	{"POST", "queues/{qname}/pending_tasks:batch_archive"},
	{"GET", "queues/{qname}/scheduled_tasks"},
	{"DELETE", "queues/{qname}/scheduled_tasks/{task_id}"},
	{"DELETE", "queues/{qname}/scheduled_tasks:delete_all"},
	{"POST", "queues/{qname}/scheduled_tasks:batch_delete"},
	{"POST", "queues/{qname}/scheduled_tasks/{task_id}:run"},
	{"POST", "queues/{qname}/scheduled_tasks:run_all"},
	{"POST", "queues/{qname}/scheduled_tasks:batch_run"},
	{"POST", "queues/{qname}/scheduled_tasks/{task_id}:archive"},
	{"POST", "queues/{qname}/scheduled_tasks:archive_all"},
	{"POST", "queues/{qname}/scheduled_tasks:batch_archive"},
	{"GET", "queues/{qname}/retry_tasks"},
	{"DELETE", "queues/{qname}/retry_tasks/{task_id}"},
	{"DELETE", "queues/{qname}/retry_tasks:delete_all"},
	{"POST", "queues/{qname}/retry_tasks:batch_delete"},
	{"POST", "queues/{qname}/retry_tasks/{task_id}:run"},
	{"POST", "queues/{qname}/retry_tasks:run_all"},
	{"POST", "queues/{qname}/retry_tasks:batch_run"},
	{"POST", "queues/{qname}/retry_tasks/{task_id}:archive"},
	{"POST", "queues/{qname}/retry_tasks:archive_all"},
	{"POST", "queues/{qname}/retry_tasks:batch_archive"},
	{"GET", "queues/{qname}/archived_tasks"},
	{"DELETE", "queues/{qname}/archived_tasks/{task_id}"},
	{"DELETE", "queues/{qname}/archived_tasks:delete_all"},
	{"POST", "queues/{qname}/archived_tasks:batch_delete"},
	{"POST", "queues/{qname}/archived_tasks/{task_id}:run"},
	{"POST", "queues/{qname}/archived_tasks:run_all"},
	{"POST", "queues/{qname}/archived_tasks:batch_run"},
	{"GET", "queues/{qname}/completed_tasks"},
	{"DELETE", "queues/{qname}/completed_tasks/{task_id}"},
	{"DELETE", "queues/{qname}/completed_tasks:delete_all"},
	{"POST", "queues/{qname}/completed_tasks:batch_delete"},
	{"GET", "queues/{qname}/groups/{gname}/aggregating_tasks"},
	{"DELETE", "queues/{qname}/groups/{gname}/aggregating_tasks/{task_id}"},
	{"DELETE", "queues/{qname}/groups/{gname}/aggregating_tasks:delete_all"},
	{"POST", "queues/{qname}/groups/{gname}/aggregating_tasks:batch_delete"},
	{"POST", "queues/{qname}/groups/{gname}/aggregating_tasks/{task_id}:run"},
	{"POST", "queues/{qname}/groups/{gname}/aggregating_tasks:run_all"},
	{"POST", "queues/{qname}/groups/{gname}/aggregating_tasks:batch_run"},
	{"POST", "queues/{qname}/groups/{gname}/aggregating_tasks/{task_id}:archive"},
	{"POST", "queues/{qname}/groups/{gname}/aggregating_tasks:archive_all"},
	{"POST", "queues/{qname}/groups/{gname}/aggregating_tasks:batch_archive"},
	{"GET", "queues/{qname}/tasks/{task_id}"},
	{"GET", "queues/{qname}/groups"},
	{"GET", "servers"},
	{"GET", "scheduler_entries"},
	{"GET", "scheduler_entries/{entry_id}/enqueue_events"},
	{"GET", "redis_info"},
	{"GET", "metrics"},
}

// dashboardRouter is a gorilla/mux router of dashboardRoutes that only
// matches: its handlers never run. It matches a request's path as
// asynqmon's router does (decoded, each {variable} one or more characters
// but /), and the methods it knows are those of dashboardRoutes.
type dashboardRouter struct {
	router  *mux.Router
	methods []string
}

func newDashboardRouter() *dashboardRouter {
	d := &dashboardRouter{router: mux.NewRouter()}
	never := http.NotFoundHandler()
	for _, rt := range dashboardRoutes {
		d.router.Handle(dashboardAPIPrefix+rt.path, never).Methods(rt.method)
		if !slices.Contains(d.methods, rt.method) {
			d.methods = append(d.methods, rt.method)
		}
	}
	slices.Sort(d.methods)
	return d
}

// allowed returns the methods that some route of r's path takes, sorted,
// and whether any route has that path at all. Only GET when readOnly:
// asynqmon's read-only mode answers any other method 405.
func (d *dashboardRouter) allowed(r *http.Request, readOnly bool) (methods []string, known bool) {
	methods = []string{}
	for _, m := range d.methods {
		probe := *r
		probe.Method = m
		if !d.router.Match(&probe, &mux.RouteMatch{}) {
			continue
		}
		known = true
		if !readOnly || m == http.MethodGet {
			methods = append(methods, m)
		}
	}
	return methods, known
}

// detailMethodNotAllowed answers a method that no route of a path under
// dashboardAPIPrefix takes, as the API's router answers one of its own.
const detailMethodNotAllowed = "this route does not take that method; see the Allow header"

// dashboardMethodNotAllowed answers for asynqmon, which answered 405 with
// text, the first bytes of total: a problem, with Allow listing the methods
// the path takes on this dashboard (empty when it takes none of them here,
// as RFC 9110 has it for a resource disabled by configuration: an action
// of a read-only dashboard). Allow is left out should no route of
// dashboardRoutes have the path, which only a change of asynqmon's routes
// could bring. asynqmon's router says nothing; its read-only mode says why
// ("API Server is running in read-only mode: POST request is not
// allowed"), which is kept as the detail, clipped.
func (s *Server) dashboardMethodNotAllowed(w http.ResponseWriter, r *http.Request, readOnly bool, text []byte, total int) {
	if methods, known := s.dashboardRoutes.allowed(r, readOnly); known {
		w.Header()["Allow"] = []string{strings.Join(methods, ", ")}
	}
	detail := clippedText(text, total)
	if detail == "" {
		detail = detailMethodNotAllowed
	}
	s.writeProblem(w, r, Problem{Status: http.StatusMethodNotAllowed, Detail: detail}, nil)
}
