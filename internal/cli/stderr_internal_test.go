package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// overlapWriter records whether two writes were ever in progress at once.
type overlapWriter struct {
	inFlight, overlaps atomic.Int32
	mu                 sync.Mutex
	text               strings.Builder
}

func (w *overlapWriter) Write(p []byte) (int, error) {
	if w.inFlight.Add(1) > 1 {
		w.overlaps.Add(1)
	}
	defer w.inFlight.Add(-1)
	time.Sleep(time.Millisecond) // a slow terminal or pipe: room for another write to overlap
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.text.Write(p)
}

// TestStderrSharedWithGoRedis: go-redis logs from goroutines of its own (a
// dial that fails in the background) while the command writes its own
// lines to the same stderr, a bytes.Buffer in tests: the writes must come
// one at a time, whole.
func TestStderrSharedWithGoRedis(t *testing.T) {
	w := &overlapWriter{}
	env := newEnv(context.Background(), strings.NewReader(""), io.Discard, w)
	if _, err := (LogFlags{LogLevel: "warn", LogFormat: "json"}).logger(env); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(2)
		go func() { // as go-redis's dialer does, through redis.SetLogger
			defer wg.Done()
			env.redisLog.Printf(context.Background(), "redis: dial failed on %c", 'a'+i)
		}()
		go func() {
			defer wg.Done()
			fmt.Fprintf(env.Stderr, "command line %c\n", 'a'+i)
		}()
	}
	wg.Wait()
	env.done()
	if n := w.overlaps.Load(); n > 0 {
		t.Errorf("%d writes to stderr overlapped", n)
	}
	if got := strings.Count(w.text.String(), "dial failed on"); got != 20 {
		t.Errorf("%d of go-redis's 20 lines written, want 20:\n%s", got, w.text.String())
	}
}

// go-redis's logger is process-wide, and several commands may run in one
// process (tests run many at once): a line that comes with a command's
// context goes to that command's stderr, whichever attached last; one that
// comes with no command's context goes to the last, and none goes to a
// command that has returned.
func TestRedisLinesFollowTheCommandsContext(t *testing.T) {
	var first, second strings.Builder
	envs := []*Env{
		newEnv(context.Background(), strings.NewReader(""), io.Discard, &first),
		newEnv(context.Background(), strings.NewReader(""), io.Discard, &second),
	}
	for _, env := range envs {
		if _, err := (LogFlags{LogLevel: "warn", LogFormat: "json"}).logger(env); err != nil {
			t.Fatal(err)
		}
	}
	redisLogRoutes.Printf(envs[0].Ctx, "dial of the first command failed")
	redisLogRoutes.Printf(envs[1].Ctx, "dial of the second command failed")
	redisLogRoutes.Printf(context.Background(), "a background dial failed")
	envs[1].done()
	redisLogRoutes.Printf(envs[1].Ctx, "a late line of the second command")
	redisLogRoutes.Printf(context.Background(), "a late background line")
	envs[0].done()
	if got := first.String(); !strings.Contains(got, "dial of the first command failed") || strings.Count(got, "\n") != 1 {
		t.Errorf("the first command's stderr:\n%s", got)
	}
	if got := second.String(); !strings.Contains(got, "dial of the second command failed") ||
		!strings.Contains(got, "a background dial failed") || strings.Count(got, "\n") != 2 {
		t.Errorf("the second command's stderr:\n%s", got)
	}
}
