package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/tasks"
)

// TestBridgeEnqueuesWithTheConstructorsDefaults: the baseline bridge gives
// its tasks the options certmail's constructors give (queue, retries,
// timeout, retention), whatever the tasks package's defaults are, so that
// it is measured against the API on equal terms.
func TestBridgeEnqueuesWithTheConstructorsDefaults(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := asynq.NewClient(srv.ConnOpt())
	t.Cleanup(func() { _ = client.Close() })
	rec := httptest.NewRecorder()
	bridgeHandler(client).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/tasks/"+tasks.TypeSendCert, strings.NewReader(`{"order_id":1}`)))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST answered %d %s", rec.Code, rec.Body)
	}
	inspector := asynq.NewInspector(srv.ConnOpt())
	t.Cleanup(func() { _ = inspector.Close() })
	pending, err := inspector.ListPendingTasks(tasks.DefaultQueue)
	if err != nil || len(pending) != 1 {
		t.Fatalf("queue %s holds %d pending tasks (%v), want the one enqueued", tasks.DefaultQueue, len(pending), err)
	}
	got := pending[0]
	if got.MaxRetry != tasks.DefaultMaxRetry || got.Timeout != tasks.DefaultTimeout || got.Retention != tasks.DefaultRetention {
		t.Errorf("the bridge's task has max retry %d, timeout %v, retention %v; the constructors give %d, %v, %v",
			got.MaxRetry, got.Timeout, got.Retention, tasks.DefaultMaxRetry, tasks.DefaultTimeout, tasks.DefaultRetention)
	}
}
