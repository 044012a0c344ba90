package tasks_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// TestReadmeStatesDefaults: where the README gives the constructors'
// defaults (queue, retries, timeout, retention) it gives the constants'
// values, so that a changed default fails here until the README follows.
func TestReadmeStatesDefaults(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	minutes := strconv.FormatFloat(tasks.DefaultTimeout.Minutes(), 'f', -1, 64)
	hours := strconv.FormatFloat(tasks.DefaultRetention.Hours(), 'f', -1, 64)
	for _, want := range []string{
		fmt.Sprintf("the defaults (queue `%s`, %d retries, a %s-minute timeout per delivery, results kept %s h)",
			tasks.DefaultQueue, tasks.DefaultMaxRetry, minutes, hours),
		fmt.Sprintf("`tasks.DefaultRetention` (%s h)", hours),
		fmt.Sprintf("(the task's timeout, %s minutes by default,", minutes),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the README does not say %q", want)
		}
	}
}
