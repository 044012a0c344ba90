package worker_test

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/taskresult"
)

// A producer that reuses a task id (asynq.TaskID) for a send-cert or
// resend-dcv within the guard's lifetime gets duplicate: nothing is sent
// again (README "Never twice").
func TestReusedTaskIDIsDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}})
	for _, tc := range []struct{ typ, payload string }{
		{"send-cert", `{"certificate_id": 8, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`},
		{"resend-dcv", `{"order_id": 8}`},
	} {
		var outcomes []string
		for range 2 {
			id := b.enqueue(t, tc.typ, tc.payload, asynq.TaskID("reused-"+tc.typ))
			outcomes = append(outcomes, result(t, b.waitState(t, id, asynq.TaskStateCompleted, 10*time.Second)).Outcome)
			if err := b.inspector.DeleteTask("default", id); err != nil {
				t.Fatal(err)
			}
		}
		if outcomes[0] != taskresult.Delivered || outcomes[1] != taskresult.Duplicate {
			t.Errorf("%s outcomes %v, want delivered then duplicate", tc.typ, outcomes)
		}
	}
	if n := len(b.fake.CertSends(8)); n != 1 {
		t.Errorf("certificate 8 emailed %d times, want once", n)
	}
	if n := len(b.fake.DCVSends(8)); n != 1 {
		t.Errorf("order 8's DCV emails sent %d times, want once", n)
	}
}
