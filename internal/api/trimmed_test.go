package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/api"
)

// TestTrimmedFromTheArchiveAnswers: a task asynq trimmed from the archive
// is 404 to GET /v1/tasks/{id} and to its requeue (saying so), not 500;
// DELETE of its dead letter deletes what is left of it (204), after which
// it is not found anywhere.
func TestTrimmedFromTheArchiveAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var ref api.TaskRef
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/resend-dcv", `{"order_id":3}`, nil), http.StatusAccepted, &ref)
	if err := b.inspector.ArchiveTask("default", ref.ID); err != nil {
		t.Fatal(err)
	}
	b.redis.TrimArchive(t, "default")
	hash := "asynq:{default}:t:" + ref.ID
	if n, err := b.conn.Client.Exists(ctx, hash).Result(); err != nil || n != 1 {
		t.Fatalf("the trimmed task's hash: %d (%v), want it left as asynq leaves it", n, err)
	}
	mustProblem(t, b.get(t, "/v1/tasks/"+ref.ID), http.StatusNotFound)
	mustProblem(t, b.get(t, "/v1/tasks/"+ref.ID+"?queue=default"), http.StatusNotFound)
	p := mustProblem(t, b.do(t, http.MethodPost, "/v1/dead-letters/"+ref.ID+"/requeue", "", nil), http.StatusNotFound)
	if !strings.Contains(p.Detail, "trimmed it from the archive") || strings.Contains(p.Detail, "internal") {
		t.Errorf("requeue detail %q, want it to say asynq trimmed the task from the archive", p.Detail)
	}
	if res := b.do(t, http.MethodDelete, "/v1/dead-letters/"+ref.ID, "", nil); res.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s, want 204", res.status, res.body)
	}
	if n, err := b.conn.Client.Exists(ctx, hash).Result(); err != nil || n != 0 {
		t.Errorf("the trimmed task's hash after DELETE: %d (%v), want it deleted", n, err)
	}
	mustProblem(t, b.do(t, http.MethodDelete, "/v1/dead-letters/"+ref.ID, "", nil), http.StatusNotFound)
	if lines := b.logs.Lines("error", ""); len(lines) > 0 {
		t.Errorf("ERROR lines: %v", lines)
	}
}

// TestDashboardArchiveAllOverTheCap: the dashboard's "Archive all" is
// refused 409, saying why and what to do, when its tasks and the queue's
// archive would reach asynq's cap (which would trim the archive and leave
// the trimmed tasks' hashes behind); nothing moves. Just under the cap it
// runs, and asynq trims nothing.
func TestDashboardArchiveAllOverTheCap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	rdb := b.conn.Client
	key := "asynq:{default}:archived"
	c := asynq.NewClient(b.redis.ConnOpt())
	defer c.Close()
	for range 3 {
		if _, err := c.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":5}`))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Enqueue(asynq.NewTask("resend-dcv", []byte(`{"order_id":6}`)), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	fill := make([]redis.Z, 9997)
	for i := range fill { // archived a minute ago, oldest first
		fill[i] = redis.Z{Score: float64(time.Now().Add(-time.Minute).Unix() + int64(i/5000)), Member: fmt.Sprintf("placeholder-%04d", i)}
	}
	if err := rdb.ZAdd(ctx, key, fill...).Err(); err != nil {
		t.Fatal(err)
	}
	p := mustProblem(t, b.do(t, http.MethodPost, "/monitoring/api/queues/default/pending_tasks:archive_all", "", basicAuth(testToken)),
		http.StatusConflict)
	if !strings.Contains(p.Detail, "move 3 tasks into this queue's archive, which holds 9997") || !strings.Contains(p.Detail, "at most 9999") ||
		!strings.Contains(p.Detail, "Delete these tasks") {
		t.Errorf("detail %q, want the counts, the cap and what to do", p.Detail)
	}
	if n, err := rdb.LLen(ctx, "asynq:{default}:pending").Result(); err != nil || n != 3 {
		t.Errorf("pending after the refusal: %d (%v), want 3", n, err)
	}
	// A group's aggregating tasks are counted too.
	if err := rdb.ZAdd(ctx, "asynq:{default}:g:g1", redis.Z{Score: 1, Member: "a"}, redis.Z{Score: 1, Member: "b"}, redis.Z{Score: 1, Member: "c"}).Err(); err != nil {
		t.Fatal(err)
	}
	mustProblem(t, b.do(t, http.MethodPost, "/monitoring/api/queues/default/groups/g1/aggregating_tasks:archive_all", "", basicAuth(testToken)),
		http.StatusConflict)
	if err := rdb.Del(ctx, "asynq:{default}:g:g1").Err(); err != nil {
		t.Fatal(err)
	}

	// One archived task fewer: 3 + 9996 = 9999, which asynq keeps whole.
	if err := rdb.ZRem(ctx, key, "placeholder-0000").Err(); err != nil {
		t.Fatal(err)
	}
	if res := b.do(t, http.MethodPost, "/monitoring/api/queues/default/pending_tasks:archive_all", "", basicAuth(testToken)); res.status != http.StatusNoContent && res.status != http.StatusOK {
		t.Fatalf("Archive all under the cap: %d %s", res.status, res.body)
	}
	if n, err := rdb.ZCard(ctx, key).Result(); err != nil || n != 9999 {
		t.Errorf("archive after Archive all under the cap: %d (%v), want 9999, nothing trimmed", n, err)
	}
	if err := rdb.ZScore(ctx, key, "placeholder-0001").Err(); err != nil {
		t.Errorf("the oldest archived: %v, want it kept", err)
	}
	// Now full: the scheduled task's Archive all is refused too.
	mustProblem(t, b.do(t, http.MethodPost, "/monitoring/api/queues/default/scheduled_tasks:archive_all", "", basicAuth(testToken)), http.StatusConflict)
}
