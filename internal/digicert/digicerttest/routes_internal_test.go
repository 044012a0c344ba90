package digicerttest

import (
	"bytes"
	"testing"
)

// TestEveryRouteIsApplied: apply has a case for every route, so that a
// route added to parseRoute is not read as another route's body; a route
// without one answers 500 fake_unhandled_route.
func TestEveryRouteIsApplied(t *testing.T) {
	t.Parallel()
	s := New(Config{AnyIDExists: true})
	unhandled := func(a answer) bool { return bytes.Contains(a.body, []byte(codeUnhandledRoute)) }
	for rt := route(1); rt < routeEnd; rt++ {
		if a := s.apply(rt, 1, []byte(`{}`)); unhandled(a) {
			t.Errorf("route %d: %d %s", rt, a.status, a.body)
		}
	}
	if a := s.apply(routeEnd, 1, []byte(`{}`)); a.status != 500 || !unhandled(a) {
		t.Errorf("a route apply does not know: %d %s, want 500 %s", a.status, a.body, codeUnhandledRoute)
	}
}
