package api

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"unsafe"

	"github.com/gorilla/mux"
)

// Patterns returns every pattern the server registered, for the test that
// holds the routes and the OpenAPI document together.
func (s *Server) Patterns() []string { return slices.Clone(s.patterns) }

// Accesses returns what each registered pattern asks of a request: "open",
// "enqueue", "task", "read", "manage" or "dashboard".
func (s *Server) Accesses() map[string]string {
	names := map[access]string{accessOpen: "open", accessEnqueue: "enqueue", accessTask: "task",
		accessRead: "read", accessManage: "manage", accessDashboard: "dashboard"}
	out := map[string]string{}
	for p, a := range s.access {
		out[p] = names[a]
	}
	return out
}

// Route returns the pattern the server's mux picks for r, "" when none.
func (s *Server) Route(r *http.Request) string {
	_, pattern := s.mux.Handler(r)
	return pattern
}

// FormatPayload is the dashboard's payload and result formatter.
var FormatPayload = formatPayload

const ExactNote = exactNote

// RedisUnavailable is how the server decides between 503 and 500.
func (s *Server) RedisUnavailable(err error) bool { return s.redisUnavailable(err) }

// DashboardCause is the error logged for a failure asynqmon reported with
// text, of which it kept the first bytes of total.
var DashboardCause = dashboardCause

// MaxDashboardErrorText is how much of a failure's text the dashboard keeps.
const MaxDashboardErrorText = maxDashboardErrorText

// BodyBytesHeld is the room the request bodies being read or answered hold
// under MaxBodiesInFlight.
func (s *Server) BodyBytesHeld() int64 { return s.bodies.held.Load() }

// BodyWaiters is the number of requests waiting for room for their body.
func (s *Server) BodyWaiters() int64 { return s.bodies.waiting.Load() }

// DashboardRoutes are the routes certmail knows asynqmon's JSON API by
// (dashboardRoutes), each as "METHOD path template", sorted.
func DashboardRoutes() []string {
	var out []string
	for _, rt := range dashboardRoutes {
		out = append(out, rt.method+" "+dashboardAPIPrefix+rt.path)
	}
	slices.Sort(out)
	return out
}

// AsynqmonRoutes are the routes of the operators' dashboard's own router,
// each as "METHOD path template", sorted. asynqmon keeps its router in an
// unexported field, read here through reflection: a test that breaks when
// asynqmon changes its layout is where that belongs, not the server.
func (s *Server) AsynqmonRoutes() ([]string, error) {
	f := reflect.ValueOf(s.dashboard).Elem().FieldByName("router")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*mux.Router]() {
		return nil, fmt.Errorf("asynqmon.HTTPHandler has no router field of type *mux.Router")
	}
	router := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(*mux.Router)
	var out []string
	err := router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		methods, err := route.GetMethods()
		if err != nil { // a subrouter's prefix: no methods of its own
			return nil
		}
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		for _, m := range methods {
			out = append(out, m+" "+tpl)
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}
