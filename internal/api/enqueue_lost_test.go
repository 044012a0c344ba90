package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redistest"
)

// The answer of an enqueue that Redis ran is lost, and go-redis sends it
// again on a new connection: Redis answers that the task's id is taken. The
// task is in its queue, and the answer is 202 with it (it was 500).
func TestEnqueueLostAnswerIs202(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{proxied: true})
	b.proxy.WithholdOnce("evalsha")
	res := b.do(t, http.MethodPost, "/v1/tasks/send-cert",
		`{"certificate_id":33007,"emails":["a@example.com"],"certificate_collect_format":"attachment"}`, nil)
	var ref api.TaskRef
	mustJSON(t, res, http.StatusAccepted, &ref)
	if ref.Type != "send-cert" || ref.Queue != "default" || ref.State != "pending" || res.header.Get("Location") != "/v1/tasks/"+ref.ID {
		t.Errorf("answer %s, Location %q; want the pending send-cert task in default", res.body, res.header.Get("Location"))
	}
	info, err := b.inspector.GetTaskInfo("default", ref.ID)
	if err != nil || info.Type != "send-cert" {
		t.Fatalf("the task answered is not in its queue: %v", err)
	}
	if q, err := b.inspector.GetQueueInfo("default"); err != nil || q.Size != 1 {
		t.Errorf("queue default: %+v, %v; want the one task", q, err)
	}
}

// An enqueue that Redis does not answer at all is 503, and names the task
// it may have stored, so that the producer looks it up rather than enqueue
// it a second time; here Redis did store it.
func TestEnqueueUnansweredNamesTask(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{proxied: true})
	b.proxy.WithholdAfter("evalsha")
	res := b.do(t, http.MethodPost, "/v1/tasks/send-cert",
		`{"certificate_id":33007,"emails":["a@example.com"],"certificate_collect_format":"attachment"}`, nil)
	p := mustProblem(t, res, http.StatusServiceUnavailable)
	if p.TaskID == "" || res.header.Get("Retry-After") == "" {
		t.Fatalf("503 %s, Retry-After %q: want the task's id and Retry-After", res.body, res.header.Get("Retry-After"))
	}
	b.proxy.Resume()
	var st ops.TaskStatus
	mustJSON(t, b.get(t, "/v1/tasks/"+p.TaskID), http.StatusOK, &st)
	if st.ID != p.TaskID || st.State != "pending" {
		t.Errorf("GET /v1/tasks/%s: %+v, want the pending task", p.TaskID, st)
	}
}

// An enqueue that certainly stored nothing (Redis down before the task was
// sent, a wrong password) is 503 without task_id, and its detail does not
// say that the task may have been stored: there is nothing to look up.
func TestEnqueueRefusedOutrightNamesNoTask(t *testing.T) {
	t.Parallel()
	wrongPassword := func(t *testing.T) setupOpts {
		return setupOpts{redis: redistest.Options{Password: "right-password"}, configure: func(cfg *api.Config) {
			conn := certmailtest.Conn(t, "redis://:wrong-password@"+strings.TrimPrefix(cfg.Redis.Target, "redis://"))
			svc, err := ops.New(ops.Config{Redis: conn})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			cfg.Redis, cfg.Ops = conn, svc
		}}
	}
	for _, tt := range []struct {
		name    string
		opts    func(*testing.T) setupOpts
		breakIt func(*bundle)
	}{
		{"Redis down", func(*testing.T) setupOpts { return setupOpts{} }, func(b *bundle) { b.redis.Kill() }},
		{"a wrong password", wrongPassword, func(*bundle) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.opts(t))
			tt.breakIt(b)
			res := b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil)
			p := mustProblem(t, res, http.StatusServiceUnavailable)
			if p.TaskID != "" || strings.Contains(p.Detail, "may have stored") {
				t.Errorf("503 %s; want no task_id and nothing said of a task that may be stored", res.body)
			}
		})
	}
}
