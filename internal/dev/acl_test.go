package dev_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/cli"
	"github.com/certmail/certmail/internal/dev"
	"github.com/certmail/certmail/internal/redistest"
)

// aclRule is what the README's "An ACL user for certmail" gives the user
// after `ACL SETUSER certmail reset on >password`: certmail's two key
// prefixes, asynq's cancel channel alone, every command but the dangerous
// ones, and INFO (the eviction check, the dashboard's Redis tab).
const aclRule = "~certmail:* ~asynq:* resetchannels &asynq:cancel +@all -@dangerous +info"

// otherKeys are another service's keys, written before certmail runs.
var otherKeys = map[string]func(context.Context, *redis.Client, string) error{
	"other:string": func(ctx context.Context, c *redis.Client, k string) error { return c.Set(ctx, k, "v", 0).Err() },
	"other:hash":   func(ctx context.Context, c *redis.Client, k string) error { return c.HSet(ctx, k, "f", "v").Err() },
	"other:list":   func(ctx context.Context, c *redis.Client, k string) error { return c.RPush(ctx, k, "a", "b").Err() },
	"other:zset": func(ctx context.Context, c *redis.Client, k string) error {
		return c.ZAdd(ctx, k, redis.Z{Score: 1, Member: "m"}).Err()
	},
	"other:stream": func(ctx context.Context, c *redis.Client, k string) error {
		return c.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []string{"f", "v"}}).Err()
	},
	"other:expiring": func(ctx context.Context, c *redis.Client, k string) error { return c.Set(ctx, k, "v", time.Hour).Err() },
}

// TestRestrictedACLUser runs the worker, the scheduler, the API and its
// dashboard, and the CLI as a Redis ACL user limited to aclRule, on a Redis
// that holds another service's keys, and has them do everything that
// touches Redis: every task type delivered, a set-emails superseded by its
// sequence, an idempotent enqueue, a scheduled task, a dead letter
// requeued and deleted, a schedule that runs, the dashboard's read routes,
// the worker's queue metrics, the worker asking a replica to acknowledge
// its guards (WAIT). Redis then logs no ACL refusal at all, and
// the other service's keys are as they were: certmail keeps to its keys,
// its channel and its commands, as the README promises.
func TestRestrictedACLUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	admin := srv.Client() // the default user, unrestricted
	checkREADMERule(t)
	setUser := append([]any{"ACL", "SETUSER", "certmail", "reset", "on", ">acl-test-password"}, fieldsAny(aclRule)...)
	if err := admin.Do(ctx, setUser...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	before := writeOtherKeys(t, admin)
	if err := admin.Do(ctx, "ACL", "LOG", "RESET").Err(); err != nil {
		t.Fatal(err)
	}
	redisURL := "redis://certmail:acl-test-password@" + srv.Addr() + "/0"
	// Registered before the stack, so it runs once the stack has stopped,
	// after a failure that ended the test too.
	t.Cleanup(func() { checkUntouched(t, admin, before) })

	// A replica asked for, though the Redis has none: the worker sends WAIT
	// at start and after each DigiCert 2xx, which the rule must allow.
	st, _, stop := stack(t, dev.Config{RedisURL: redisURL, ScheduleMinInterval: time.Second, TaskCheckInterval: 20 * time.Millisecond,
		GuardReplicas: 1})
	a := aclAPI{t: t, st: st}
	a.deliverEveryType()
	a.deadLetterRequeueDelete()
	a.scheduleRuns()
	a.dashboardReads()
	if status, body := call(t, "GET", st.AdminURL+"/metrics", "", "", ""); status != http.StatusOK ||
		!strings.Contains(string(body), "certmail_queue_stats_up 1") {
		t.Errorf("worker /metrics: %d, certmail_queue_stats_up 1 missing:\n%.2000s", status, body)
	}
	runCLI(t, redisURL, a.delivered)
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}

}

// checkUntouched fails when ACL LOG, read as the default user, holds any
// entry (it prints them), when a key of before changed, or when a key
// outside certmail's prefixes appeared.
func checkUntouched(t *testing.T, admin *redis.Client, before map[string]string) {
	t.Helper()
	ctx := context.Background()
	if entries, err := admin.Do(ctx, "ACL", "LOG").Slice(); err != nil || len(entries) != 0 {
		t.Errorf("ACL LOG holds %d entries (%v), want none: certmail used a key, channel or command outside %q:\n%s",
			len(entries), err, aclRule, aclLog(entries))
	}
	for k, dump := range before {
		if got := dumpKey(t, admin, k); got != dump {
			t.Errorf("%s changed: %q, was %q", k, got, dump)
		}
	}
	keys, err := admin.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, known := before[k]; !known && !strings.HasPrefix(k, "certmail:") && !strings.HasPrefix(k, "asynq:") {
			t.Errorf("key %q written outside certmail's prefixes", k)
		}
	}
}

// checkREADMERule fails unless the README gives aclRule in its ACL SETUSER
// line, so that the rule it documents is the one tested.
func checkREADMERule(t *testing.T) {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := "ACL SETUSER certmail reset on >PASSWORD " + aclRule; !strings.Contains(string(readme), want) {
		t.Errorf("README lacks the line %q", want)
	}
}

func fieldsAny(s string) []any {
	var out []any
	for _, f := range strings.Fields(s) {
		out = append(out, f)
	}
	return out
}

// writeOtherKeys writes otherKeys and returns each one's DUMP and TTL.
func writeOtherKeys(t *testing.T, c *redis.Client) map[string]string {
	t.Helper()
	dumps := map[string]string{}
	for k, write := range otherKeys {
		if err := write(context.Background(), c, k); err != nil {
			t.Fatalf("write %s: %v", k, err)
		}
		dumps[k] = dumpKey(t, c, k)
	}
	return dumps
}

// dumpKey is k's serialized value and whether it expires.
func dumpKey(t *testing.T, c *redis.Client, k string) string {
	t.Helper()
	ctx := context.Background()
	dump, err := c.Dump(ctx, k).Result()
	if err != nil {
		return "error: " + err.Error()
	}
	ttl, err := c.TTL(ctx, k).Result()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%q expires %t", dump, ttl > 0)
}

// aclLog prints ACL LOG's entries, one a line.
func aclLog(entries []any) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "  %v\n", e)
	}
	return b.String()
}

// aclAPI drives the stack through its API.
type aclAPI struct {
	t         *testing.T
	st        *dev.Stack
	delivered string // a delivered task's id, for the CLI
}

// enqueue posts a task and returns its id (202, or 200 for an
// Idempotency-Key replayed).
func (a aclAPI) enqueue(path, body string, header ...string) string {
	a.t.Helper()
	req, err := http.NewRequest("POST", a.st.APIURL+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.st.Token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := testClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	var ref struct{ ID string }
	if err == nil {
		err = json.Unmarshal(answer, &ref)
	}
	if (resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK) || err != nil || ref.ID == "" {
		a.t.Fatalf("POST %s %s: %d %s (%v)", path, body, resp.StatusCode, answer, err)
	}
	return ref.ID
}

// waitOutcome waits until task id completed, and checks its outcome.
func (a aclAPI) waitOutcome(id, outcome string) {
	a.t.Helper()
	var state, got string
	certmailtest.WaitFor(a.t, 15*time.Second, func() bool {
		state, got = taskState(a.t, a.st, id)
		return state == "completed"
	}, func() string { return fmt.Sprintf("task %s: %s, want completed", id, state) })
	if got != outcome {
		a.t.Errorf("task %s: outcome %q, want %q", id, got, outcome)
	}
}

// deliverEveryType enqueues each task type, an only_if_pending resend, a
// set-emails superseded by its sequence, an idempotent enqueue sent twice
// and a task delayed a second, and waits for each outcome.
func (a *aclAPI) deliverEveryType() {
	seq := time.Now().UnixNano()
	newer := a.enqueue("/v1/tasks/set-emails", fmt.Sprintf(`{"order_id": 501, "additional_emails": ["new@example.com"], "sequence": %d}`, seq))
	a.waitOutcome(newer, "delivered")
	older := a.enqueue("/v1/tasks/set-emails", fmt.Sprintf(`{"order_id": 501, "additional_emails": ["old@example.com"], "sequence": %d}`, seq-1))
	ids := map[string]string{
		a.enqueue("/v1/tasks/resend-dcv", `{"order_id": 502, "locale": "en"}`):                                                               "delivered",
		a.enqueue("/v1/tasks/resend-dcv", `{"order_id": 503, "only_if_pending": true}`):                                                      "delivered",
		a.enqueue("/v1/tasks/send-cert", `{"certificate_id": 504, "emails": ["o@example.com"], "certificate_collect_format": "attachment"}`): "delivered",
		a.enqueue("/v1/tasks/resend-domain-dcv", `{"domain_id": 505, "name_scope": "example.com", "email_array": ["h@example.com"]}`):        "delivered",
		a.enqueue("/v1/tasks/resend-dcv?queue=critical&process_in=1s", `{"order_id": 506}`):                                                  "delivered",
		older: "superseded",
	}
	key := a.enqueue("/v1/tasks/resend-dcv", `{"order_id": 507}`, "Idempotency-Key", "acl-key-1")
	if again := a.enqueue("/v1/tasks/resend-dcv", `{"order_id": 507}`, "Idempotency-Key", "acl-key-1"); again != key {
		a.t.Errorf("the same Idempotency-Key: task %s, then %s", key, again)
	}
	ids[key] = "delivered"
	for id, outcome := range ids {
		a.waitOutcome(id, outcome)
	}
	if got, ok := a.st.Fake().AdditionalEmails(501); !ok || len(got) != 1 || got[0] != "new@example.com" {
		a.t.Errorf("order 501's list: %v (%t), want the newer one", got, ok)
	}
	a.delivered = newer
}

// deadLetterRequeueDelete has DigiCert refuse a task, requeues its dead
// letter, which fails again, and deletes it.
func (a aclAPI) deadLetterRequeueDelete() {
	id := a.enqueue("/v1/tasks/resend-dcv", fmt.Sprintf(`{"order_id": %d}`, dev.MissingID))
	letters := func() int {
		status, body := call(a.t, "GET", a.st.APIURL+"/v1/dead-letters", a.st.Token, "", "")
		if status != http.StatusOK {
			a.t.Fatalf("GET /v1/dead-letters: %d %s", status, body)
		}
		return strings.Count(string(body), `"`+id+`"`)
	}
	archived := func() bool { state, _ := taskState(a.t, a.st, id); return state == "archived" }
	waitUntil(a.t, 15*time.Second, "the refused task is dead-lettered", func() bool { return archived() && letters() == 1 })
	if status, body := call(a.t, "POST", a.st.APIURL+"/v1/dead-letters/"+id+"/requeue", a.st.Token, "", ""); status != http.StatusOK &&
		status != http.StatusAccepted && status != http.StatusNoContent {
		a.t.Fatalf("requeue: %d %s", status, body)
	}
	waitUntil(a.t, 15*time.Second, "the requeued task is dead-lettered again", func() bool { return archived() && letters() >= 1 })
	if status, body := call(a.t, "DELETE", a.st.APIURL+"/v1/dead-letters/"+id, a.st.Token, "", ""); status != http.StatusNoContent &&
		status != http.StatusOK {
		a.t.Fatalf("delete: %d %s", status, body)
	}
	if n := letters(); n != 0 {
		a.t.Errorf("dead letters of %s after the delete: %d", id, n)
	}
}

// scheduleRuns adds a schedule through the API, waits for a tick to be
// delivered, and deletes it.
func (a aclAPI) scheduleRuns() {
	status, body := call(a.t, "POST", a.st.APIURL+"/v1/schedules", a.st.Token, "",
		`{"id": "acl-1", "cron": "@every 1s", "type": "send-cert", "payload": {"certificate_id": 508, "emails": ["s@example.com"], "certificate_collect_format": "attachment"}}`)
	if status != http.StatusCreated {
		a.t.Fatalf("POST /v1/schedules: %d %s", status, body)
	}
	var sched struct {
		Runs       int    `json:"runs"`
		LastTaskID string `json:"last_task_id"`
	}
	waitUntil(a.t, 15*time.Second, "the schedule's tick is delivered", func() bool {
		status, body := call(a.t, "GET", a.st.APIURL+"/v1/schedules/acl-1", a.st.Token, "", "")
		if err := json.Unmarshal(body, &sched); status != http.StatusOK || err != nil {
			a.t.Fatalf("GET /v1/schedules/acl-1: %d %s (%v)", status, body, err)
		}
		if sched.LastTaskID == "" {
			return false
		}
		state, _ := taskState(a.t, a.st, sched.LastTaskID)
		return state == "completed"
	})
	if status, body := call(a.t, "DELETE", a.st.APIURL+"/v1/schedules/acl-1", a.st.Token, "", ""); status != http.StatusNoContent {
		a.t.Errorf("DELETE /v1/schedules/acl-1: %d %s", status, body)
	}
}

// dashboardReads reads every page of the dashboard that reads Redis.
func (a aclAPI) dashboardReads() {
	api := a.st.APIURL + "/monitoring/api"
	paths := []string{"/queues", "/queue_stats", "/servers", "/scheduler_entries", "/redis_info",
		"/queues/default/tasks/" + url.PathEscape(a.delivered)}
	for _, q := range []string{"critical", "default", "bulk"} {
		paths = append(paths, "/queues/"+q, "/queues/"+q+"/groups")
		for _, state := range []string{"active", "pending", "scheduled", "retry", "archived", "completed"} {
			paths = append(paths, "/queues/"+q+"/"+state+"_tasks")
		}
	}
	for _, p := range paths {
		if status, body := call(a.t, "GET", api+p, a.st.Token, "operator", ""); status != http.StatusOK {
			a.t.Errorf("dashboard GET %s: %d %.300s", p, status, body)
		}
	}
}

// runCLI runs the operator commands that read and write Redis as the
// restricted user.
func runCLI(t *testing.T, redisURL, delivered string) {
	t.Helper()
	for _, args := range [][]string{
		{"enqueue", "resend-dcv", "--order-id", "509"},
		{"task", delivered},
		{"dlq", "list"},
		{"schedule", "list"},
		{"dlq", "purge", "--yes"},
	} {
		var out, errOut strings.Builder
		if code := cli.Main(context.Background(), append(args, "--redis-url", redisURL), strings.NewReader(""), &out, &errOut); code != 0 {
			t.Errorf("certmail %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
	}
}
