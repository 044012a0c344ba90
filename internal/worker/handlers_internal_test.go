package worker

import (
	"maps"
	"slices"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// TestHandlersCoverTypes: the handler table, which the mux and the set of
// known types are built from, has an entry for exactly the task types.
func TestHandlersCoverTypes(t *testing.T) {
	t.Parallel()
	var p *processor // the table holds method values only: no processor needed
	got := slices.Sorted(maps.Keys(p.handlers()))
	want := slices.Sorted(slices.Values(tasks.Types()))
	if !slices.Equal(got, want) {
		t.Errorf("handlers for %q, task types %q", got, want)
	}
}
