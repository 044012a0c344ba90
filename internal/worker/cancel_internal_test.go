package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"
)

// The error handler tells asynq's cancel (the context's own error,
// context.Canceled) from the other ends of a delivery asynq reports: its
// deadline and the end of its lease keep their codes.
func TestErrorHandlerCodesOfContextEnds(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1}) // nothing listens: the dead letter's write fails at once
	defer rdb.Close()
	for _, tt := range []struct {
		err  error
		want string
	}{
		{context.Canceled, codeCanceled},
		{fmt.Errorf("wrapped: %w", context.Canceled), codeCanceled},
		{context.DeadlineExceeded, "timeout"},
		{asynq.ErrLeaseExpired, codeLeaseExpired},
	} {
		core, logs := zapobserver.New(zap.InfoLevel)
		h := &errorHandler{rdb: rdb, log: zap.New(core), metrics: newMetrics(prometheus.NewRegistry(), rdb, []string{"default"}),
			isFailure: IsFailure, parked: make(chan struct{}, 1)}
		h.HandleError(context.Background(), asynq.NewTask("send-cert", []byte(`{"certificate_id": 1}`)), tt.err)
		lines := logs.FilterMessage("task dead-lettered").All()
		if len(lines) != 1 {
			t.Fatalf("%v: %d 'task dead-lettered' lines, want 1", tt.err, len(lines))
		}
		f := lines[0].ContextMap()
		if f["error_code"] != tt.want {
			t.Errorf("%v: error_code %v, want %s", tt.err, f["error_code"], tt.want)
		}
		if tt.want == codeCanceled && f["error"] != codeCanceled+": "+errCanceled.Error() {
			t.Errorf("%v: error %q, want the cancel's reason", tt.err, f["error"])
		}
	}
}

// deliveries names what runs and waits for it to end, up to a deadline.
func TestDeliveriesWait(t *testing.T) {
	t.Parallel()
	var r deliveries
	if !r.wait(time.Now()) || len(r.running()) != 0 {
		t.Fatal("an empty registry is not idle")
	}
	endA, endB := r.begin("b"), r.begin("a")
	if got := fmt.Sprint(r.running()); got != "[a b]" {
		t.Errorf("running %s, want [a b]", got)
	}
	if r.wait(time.Now().Add(50 * time.Millisecond)) {
		t.Error("wait reported idle while two run")
	}
	endA()
	time.AfterFunc(50*time.Millisecond, endB)
	if !r.wait(time.Now().Add(5 * time.Second)) {
		t.Error("wait did not see the last delivery end")
	}
	end := r.begin("c") // busy again after idle
	if r.wait(time.Now()) {
		t.Error("wait reported idle while one runs")
	}
	end()
	if !r.wait(time.Now()) {
		t.Error("not idle after the end")
	}
}
