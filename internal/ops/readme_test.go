package ops_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/ops"
)

// TestReadmeStatesLookupBatch: where the README says how many queues a
// lookup by task id reads per Redis round trip (the API's task route and
// the promise table), it gives the constant's value, so that a changed
// batch fails here until the README follows.
func TestReadmeStatesLookupBatch(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	for _, want := range []string{
		fmt.Sprintf("every queue asynq knows is read, %d per Redis round trip", ops.LookupBatch),
		fmt.Sprintf("reading %d queues per Redis round trip", ops.LookupBatch),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the README does not say %q", want)
		}
	}
}
