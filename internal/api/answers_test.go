package api_test

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/certmail/certmail/internal/api"
)

// TestOpenAPIAnswersValidate validates real answers of the server against
// the schemas the document gives for them (JSON Schema 2020-12, as OpenAPI
// 3.1 uses): a task, its status (of an id in two queues too) and dead
// letter, a schedule as added, read and listed, a requeued task of a type
// certmail does not know, and problems, the dashboard's among them.
func TestOpenAPIAnswersValidate(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{worker: true})
	doc := openAPIMap(t)
	c := jsonschema.NewCompiler()
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(api.OpenAPI()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("openapi.json", raw); err != nil {
		t.Fatal(err)
	}
	// answerSchema compiles the schema the document gives for the answer of
	// the operation method path with status and content type ct.
	answerSchema := func(method, path string, status int, ct string) *jsonschema.Schema {
		t.Helper()
		escape := strings.NewReplacer("~", "~0", "/", "~1")
		loc := "/paths/" + escape.Replace(path) + "/" + method + "/responses/" + strconv.Itoa(status)
		paths, _ := doc["paths"].(map[string]any)
		item, _ := paths[path].(map[string]any)
		op, _ := item[method].(map[string]any)
		responses, _ := op["responses"].(map[string]any)
		resp, ok := responses[strconv.Itoa(status)].(map[string]any)
		if !ok {
			t.Fatalf("%s %s documents no %d", method, path, status)
		}
		if ref, ok := resp["$ref"].(string); ok {
			loc = strings.TrimPrefix(ref, "#")
		}
		sch, err := c.Compile("openapi.json#" + loc + "/content/" + escape.Replace(ct) + "/schema")
		if err != nil {
			t.Fatalf("%s %s %d: %v", method, path, status, err)
		}
		return sch
	}
	check := func(method, path string, res response, status int) {
		t.Helper()
		if res.status != status {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, res.status, status, res.body)
		}
		ct, _, _ := strings.Cut(res.header.Get("Content-Type"), ";")
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(res.body))
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if err := answerSchema(method, path, status, ct).Validate(v); err != nil {
			t.Errorf("%s %s %d does not validate against the document: %v\n%s", method, path, status, err, res.body)
		}
	}

	dead := b.deadLetter(t, 7)
	check("get", "/v1/tasks/{id}", b.get(t, "/v1/tasks/"+dead.ID), http.StatusOK)
	check("get", "/v1/dead-letters", b.get(t, "/v1/dead-letters"), http.StatusOK)
	check("post", "/v1/tasks/resend-dcv", b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id": 8, "only_if_pending": true}`, nil), http.StatusAccepted)
	check("post", "/v1/tasks/resend-dcv", b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id": 0}`, nil), http.StatusBadRequest)
	check("get", "/v1/tasks/{id}", b.get(t, "/v1/tasks/no-such-task"), http.StatusNotFound)

	// An idempotent replay, of a task that waits and of one deleted since.
	withKey := authJSON()
	withKey.Set("Idempotency-Key", "answers-replay")
	const later = "/v1/tasks/resend-dcv?process_in=1h"
	var waiting api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, later, `{"order_id": 10}`, withKey), http.StatusAccepted, &waiting)
	check("post", "/v1/tasks/resend-dcv", b.do(t, http.MethodPost, later, `{"order_id": 10}`, withKey), http.StatusOK)
	if err := b.inspector.DeleteTask(waiting.Queue, waiting.ID); err != nil {
		t.Fatal(err)
	}
	check("post", "/v1/tasks/resend-dcv", b.do(t, http.MethodPost, later, `{"order_id": 10}`, withKey), http.StatusOK)

	const schedule = `{"id": "dcv-9", "cron": "0 9 * * *", "type": "resend-dcv", "payload": {"order_id": 9}, "max_runs": 3}`
	check("post", "/v1/schedules", b.do(t, http.MethodPost, "/v1/schedules", schedule, nil), http.StatusCreated)
	check("post", "/v1/schedules", b.do(t, http.MethodPost, "/v1/schedules", schedule, nil), http.StatusConflict)
	check("get", "/v1/schedules/{id}", b.get(t, "/v1/schedules/dcv-9"), http.StatusOK)
	// One the scheduler skips: an earlier version stored it, firing too often.
	if err := b.conn.Client.HSet(context.Background(), "certmail:schedules", "old-resend",
		`{"id":"old-resend","cron":"@every 3s","type":"resend-dcv","payload":{"order_id":2001}}`).Err(); err != nil {
		t.Fatal(err)
	}
	check("get", "/v1/schedules", b.get(t, "/v1/schedules"), http.StatusOK)
	check("get", "/v1/schedules/{id}", b.get(t, "/v1/schedules/old-resend"), http.StatusNotFound)
	check("post", "/v1/dead-letters/{id}/requeue", b.do(t, http.MethodPost, "/v1/dead-letters/"+dead.ID+"/requeue", "", nil), http.StatusOK)

	// A task of a type certmail does not know, from a raw asynq producer:
	// dead-lettered at once, and requeued as it is.
	client := asynq.NewClient(b.redis.ConnOpt())
	defer client.Close()
	info, err := client.Enqueue(asynq.NewTask("set-emails-v2", []byte(`{"order_id":1}`)), asynq.MaxRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	b.waitState(t, info.ID, "archived")
	check("get", "/v1/tasks/{id}", b.get(t, "/v1/tasks/"+info.ID), http.StatusOK)
	check("post", "/v1/dead-letters/{id}/requeue", b.do(t, http.MethodPost, "/v1/dead-letters/"+info.ID+"/requeue", "", nil), http.StatusOK)
	check("get", "/monitoring/", b.do(t, http.MethodGet, "/monitoring/api/queues/nope", "", basicAuth(testToken)), http.StatusNotFound)

	// One id in two queues: the task of one, the other named, or the task
	// of the queue asked for.
	for _, q := range []string{"default", "critical"} {
		if _, err := client.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":11}`)), asynq.TaskID("answers-dup"),
			asynq.Queue(q), asynq.ProcessIn(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	check("get", "/v1/tasks/{id}", b.get(t, "/v1/tasks/answers-dup"), http.StatusOK)
	check("get", "/v1/tasks/{id}", b.get(t, "/v1/tasks/answers-dup?queue=critical"), http.StatusOK)
	check("get", "/v1/tasks/{id}", b.get(t, "/v1/tasks/answers-dup?queue=Critical"), http.StatusBadRequest)
	check("get", "/v1/tasks/{id}", b.get(t, "/v1/tasks/answers-dup?queue=bulk"), http.StatusNotFound)
}
