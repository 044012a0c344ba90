package certmailtest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/deadletter"
)

// AppendDeadLetters appends n dead-letter entries of tasks prefix-0 …
// prefix-(n-1), as the worker does, eight appends at a time, with the
// stream capped at maxLen.
func AppendDeadLetters(tb testing.TB, rdb redis.UniversalClient, prefix string, n int, maxLen int64) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				e := deadletter.Entry{TaskID: fmt.Sprint(prefix, "-", i), Type: "set-emails", Queue: "default",
					Payload: []byte(`{"order_id":1,"emails":["a@example.com"]}`), ErrorCode: "not_found|order", FailedAt: time.Now()}
				if _, err := deadletter.Append(context.Background(), rdb, e, maxLen); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}
