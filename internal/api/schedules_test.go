package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/schedule"
)

func TestSchedules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const body = `{"id": "dcv-1002", "cron": "0 9 * * *", "timezone": "Europe/Berlin", "type": "resend-dcv",
		"payload": {"order_id": 1002, "locale": "en"}, "max_runs": 30}`

	res := b.do(t, http.MethodPost, "/v1/schedules", body, nil)
	var created schedule.Status
	mustJSON(t, res, http.StatusCreated, &created)
	if created.ID != "dcv-1002" || created.Source != "api" || created.Queue != "bulk" || created.NextRun == nil ||
		res.header.Get("Location") != "/v1/schedules/dcv-1002" {
		t.Errorf("created %+v, Location %q", created, res.header.Get("Location"))
	}
	if next := created.NextRun.In(mustZone(t, "Europe/Berlin")); next.Hour() != 9 || next.Minute() != 0 {
		t.Errorf("next run %v is not 09:00 in Berlin", next)
	}
	mustProblem(t, b.do(t, http.MethodPost, "/v1/schedules", body, nil), http.StatusConflict)

	var list scheduleList
	mustJSON(t, b.get(t, "/v1/schedules"), http.StatusOK, &list)
	if len(list.Schedules) != 1 || list.Schedules[0].ID != "dcv-1002" {
		t.Errorf("list %+v", list)
	}
	var one schedule.Status
	mustJSON(t, b.get(t, "/v1/schedules/dcv-1002"), http.StatusOK, &one)
	if one.MaxRuns != 30 || one.Runs != 0 || one.Ended || one.State != "active" || one.UntilValidated == nil || !*one.UntilValidated {
		t.Errorf("get %+v, want active and until_validated by default", one)
	}
	if res := b.do(t, http.MethodDelete, "/v1/schedules/dcv-1002", "", nil); res.status != http.StatusNoContent {
		t.Errorf("delete: %d %s", res.status, res.body)
	}
	mustProblem(t, b.get(t, "/v1/schedules/dcv-1002"), http.StatusNotFound)
	mustProblem(t, b.do(t, http.MethodDelete, "/v1/schedules/dcv-1002", "", nil), http.StatusNotFound)
	// The one key a deleted schedule leaves: the count of adds and deletes
	// the scheduler's leader watches (schedule.Store.Changes): an add and
	// the deletes here.
	if n, err := b.redis.Client().GetDel(context.Background(), "certmail:schedules:changes").Int(); err != nil || n < 2 {
		t.Errorf("certmail:schedules:changes = %d, %v; want at least 2", n, err)
	}
	b.assertUntouched(t)
}

// TestSchedulesBounded checks that the API refuses a schedule beyond
// CERTMAIL_SCHEDULE_MAX, none of them ended, with a 409 that says so.
func TestSchedulesBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fields := make([]any, 0, 2*schedule.DefaultMaxSchedules)
	for i := range schedule.DefaultMaxSchedules {
		fields = append(fields, fmt.Sprintf("filler-%d", i), "{}")
	}
	if err := b.conn.Client.HSet(context.Background(), "certmail:schedules", fields...).Err(); err != nil {
		t.Fatal(err)
	}
	p := mustProblem(t, b.do(t, http.MethodPost, "/v1/schedules",
		`{"id": "one-more", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}}`, nil), http.StatusConflict)
	if !strings.Contains(p.Detail, "CERTMAIL_SCHEDULE_MAX") {
		t.Errorf("detail %q does not name CERTMAIL_SCHEDULE_MAX", p.Detail)
	}
	if stored, err := b.conn.Client.HExists(context.Background(), "certmail:schedules", "one-more").Result(); err != nil || stored {
		t.Errorf("the refused schedule is stored: %t, %v", stored, err)
	}
}

// An API schedule cannot take the id of a schedule of the schedules file
// (as the scheduler's leader publishes them): the 409 says so, instead of
// asking to delete a schedule the API cannot delete. An API schedule that
// had the id before the file took it is deleted alone: the file's keeps its
// state.
func TestScheduleWithAFileScheduleID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const body = `{"id": "in-file", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}}`
	mustJSON(t, b.do(t, http.MethodPost, "/v1/schedules", body, nil), http.StatusCreated, &schedule.Status{})
	file := `{"id":"in-file","cron":"@daily","type":"resend-dcv","payload":{"order_id":2}}`
	if err := b.conn.Client.HSet(ctx, "certmail:schedules:file", "in-file", file, "only-file", file).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.conn.Client.HSet(ctx, "certmail:schedule:in-file", "source", "file", "runs", 3).Err(); err != nil {
		t.Fatal(err)
	}
	p := mustProblem(t, b.do(t, http.MethodPost, "/v1/schedules", strings.ReplaceAll(body, "in-file", "only-file"), nil), http.StatusConflict)
	if !strings.Contains(p.Detail, "schedules file has this id") || strings.Contains(p.Detail, "delete") {
		t.Errorf("detail %q, want it to say that the schedules file has the id", p.Detail)
	}
	if res := b.do(t, http.MethodDelete, "/v1/schedules/in-file", "", nil); res.status != http.StatusNoContent {
		t.Errorf("delete of the API copy: %d %s", res.status, res.body)
	}
	var one schedule.Status
	mustJSON(t, b.get(t, "/v1/schedules/in-file"), http.StatusOK, &one)
	if one.Source != schedule.SourceFile || one.Runs != 3 {
		t.Errorf("after the API copy was deleted: %+v; want the file's with its 3 runs", one)
	}
	mustProblem(t, b.do(t, http.MethodDelete, "/v1/schedules/in-file", "", nil), http.StatusConflict)
}

// scheduleList decodes api.ScheduleList.
type scheduleList struct {
	Schedules    []schedule.Status  `json:"schedules"`
	Skipped      []schedule.Skipped `json:"skipped"`
	SkippedCount int                `json:"skipped_count"`
}

// TestScheduleTheSchedulerSkipsIsNotListedAsDue: a schedule stored as an
// earlier version took it, with ticks closer than
// CERTMAIL_SCHEDULE_MIN_INTERVAL, is one the scheduler skips: the list
// names it under skipped with why, without a next run, GET of its id says
// why in a 404, and it can be deleted.
func TestScheduleTheSchedulerSkipsIsNotListedAsDue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.conn.Client.HSet(context.Background(), "certmail:schedules", "old-resend",
		`{"id":"old-resend","cron":"@every 3s","type":"resend-dcv","payload":{"order_id":2001}}`).Err(); err != nil {
		t.Fatal(err)
	}
	const why = "cron: fires every 3s at times; the shortest interval allowed is 1m0s (CERTMAIL_SCHEDULE_MIN_INTERVAL)"
	var list scheduleList
	mustJSON(t, b.get(t, "/v1/schedules"), http.StatusOK, &list)
	if len(list.Schedules) != 0 || list.SkippedCount != 1 || len(list.Skipped) != 1 ||
		list.Skipped[0] != (schedule.Skipped{ID: "old-resend", Source: "api", Problem: why}) {
		t.Errorf("list %+v, want old-resend skipped with %q", list, why)
	}
	p := mustProblem(t, b.get(t, "/v1/schedules/old-resend"), http.StatusNotFound)
	if !strings.Contains(p.Detail, why) {
		t.Errorf("GET detail %q, want it to say %q", p.Detail, why)
	}
	if res := b.do(t, http.MethodDelete, "/v1/schedules/old-resend", "", nil); res.status != http.StatusNoContent {
		t.Errorf("delete: %d %s", res.status, res.body)
	}
}

func TestSchedulesReject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	far := time.Now().AddDate(0, 6, 0) // half a year on: the first tick of its date is past an until of tomorrow
	tomorrow := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name   string
		body   string
		header http.Header
		status int
		fields []string
	}{
		{"never fires before until", fmt.Sprintf(`{"id": "a", "cron": "0 9 %d %d *", "type": "resend-dcv", "payload": {"order_id": 1}, "until": %q}`,
			far.Day(), far.Month(), tomorrow), nil, 400, []string{"until"}},
		{"not JSON", `{`, nil, 400, []string{""}},
		{"unknown field", `{"id": "a", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}, "every": "day"}`, nil, 400, []string{"every"}},
		{"duplicate field", `{"id": "a", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}, "cron": "@every 1s"}`, nil, 400, []string{"cron"}},
		{"duplicate field in the payload", `{"id": "a", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1, "order_id": 2}}`, nil, 400, []string{"payload.order_id"}},
		{"never fires", `{"id": "a", "cron": "0 0 30 2 *", "type": "resend-dcv", "payload": {"order_id": 1}}`, nil, 400, []string{"cron"}},
		{"below the floor", `{"id": "a", "cron": "@every 10s", "type": "resend-dcv", "payload": {"order_id": 1}}`, nil, 400, []string{"cron"}},
		{"until in the past", `{"id": "a", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}, "until": "2020-01-01T00:00:00Z"}`, nil, 400, []string{"until"}},
		{"queue no worker serves", `{"id": "a", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}, "queue": "nobody"}`, nil, 400, []string{"queue"}},
		{"trailing data", `{"id": "a", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}} {}`, nil, 400, []string{""}},
		{"every problem at once", `{"id": "A B", "cron": "whenever", "timezone": "Nowhere/City", "type": "resend-dcv", "payload": {"order_id": 0}, "queue": "Bulk"}`,
			nil, 400, []string{"id", "timezone", "cron", "payload.order_id", "queue"}},
		{"members of the wrong type with the other problems", `{"id": "a9", "cron": "@every 1h", "type": "resend-dcv", "payload": {"order_id": 1},
			"max_runs": 1e400, "until": "2020-01-01T00:00:00Z", "timezone": "Local"}`, nil, 400, []string{"max_runs", "timezone", "until"}},
		{"every kind of problem at once", `{"id": 7, "cron": "whenever", "type": "resend-dcv", "payload": {"order_id": 0}, "until": "soon", "crom": 1}`,
			nil, 400, []string{"id", "until", "crom", "cron", "payload.order_id"}},
		{"a mistyped type leaves the type's checks out", `{"id": "a", "cron": "@daily", "type": 1, "payload": {"order_id": 0}, "until_validated": true}`,
			nil, 400, []string{"type"}},
		{"unknown type", `{"id": "a", "cron": "@daily", "type": "send-fax", "payload": {}}`, nil, 400, []string{"type"}},
		{"until_validated for another type", `{"id": "a", "cron": "@daily", "type": "resend-domain-dcv", "payload": {"domain_id": 1}, "until_validated": true}`,
			nil, 400, []string{"until_validated"}},
		{"set-emails with a sequence", `{"id": "a", "cron": "@daily", "type": "set-emails", "payload": {"order_id": 1, "additional_emails": [], "sequence": 1}}`,
			nil, 400, []string{"payload.sequence"}},
		{"until_validated not a boolean", `{"id": "a", "cron": "@daily", "type": "resend-dcv", "payload": {"order_id": 1}, "until_validated": "yes"}`,
			nil, 400, []string{"until_validated"}},
		{"wrong content type", `{}`, http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {"text/plain"}}, 415, nil},
		{"no token", `{}`, http.Header{"Content-Type": {"application/json"}}, 401, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := mustProblem(t, b.do(t, http.MethodPost, "/v1/schedules", tt.body, tt.header), tt.status)
			var fields []string
			for _, fe := range p.Errors {
				fields = append(fields, fe.Field)
			}
			if strings.Join(fields, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("fields %q, want %q (%v)", fields, tt.fields, p.Errors)
			}
		})
	}
	var list scheduleList
	mustJSON(t, b.get(t, "/v1/schedules"), http.StatusOK, &list)
	if len(list.Schedules) != 0 {
		t.Errorf("rejected schedules were stored: %+v", list.Schedules)
	}
}

// TestScheduleOverTheBoundsIsRefused: a cron spec or a time zone over its
// bound, spaces the parser would trim included, is 400 with a short problem
// on the field that names the bound, and nothing is stored.
func TestScheduleOverTheBoundsIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pad := strings.Repeat(" ", 900_000)
	for _, tt := range []struct{ name, body, field, msg string }{
		{"cron", `{"id": "wide", "cron": "@every 1h` + pad + `", "type": "resend-dcv", "payload": {"order_id": 1}}`,
			"cron", fmt.Sprintf("must be at most %d bytes", schedule.MaxCronBytes)},
		{"cron of many minutes", `{"id": "wide", "cron": "0 * * * 1` + strings.Repeat(",1", 400_000) + `", "type": "resend-dcv", "payload": {"order_id": 1}}`,
			"cron", fmt.Sprintf("must be at most %d bytes", schedule.MaxCronBytes)},
		{"timezone", `{"id": "wide", "cron": "@daily", "timezone": "UTC` + pad + `", "type": "resend-dcv", "payload": {"order_id": 1}}`,
			"timezone", fmt.Sprintf("must be at most %d bytes", schedule.MaxTimezoneBytes)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := b.do(t, http.MethodPost, "/v1/schedules", tt.body, nil)
			p := mustProblem(t, res, http.StatusBadRequest)
			if len(p.Errors) != 1 || p.Errors[0].Field != tt.field || p.Errors[0].Message != tt.msg {
				t.Errorf("problems %v, want %s: %s", p.Errors, tt.field, tt.msg)
			}
			if len(res.body) > 2048 {
				t.Errorf("answer of %d bytes", len(res.body))
			}
		})
	}
	if n, err := b.conn.Client.HLen(context.Background(), "certmail:schedules").Result(); err != nil || n != 0 {
		t.Errorf("%d schedules stored (%v), want none", n, err)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// A schedule's payload is stored as sent: one that is not valid UTF-8 is
// refused, so that GET /v1/schedules always answers valid UTF-8.
func TestSchedulePayloadMustBeUTF8(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := "{\"id\": \"u\", \"cron\": \"@daily\", \"type\": \"send-cert\", \"payload\": {\"certificate_id\": 1, \"emails\": [\"a@example.com\"], " +
		"\"certificate_collect_format\": \"attachment\", \"custom_message\": \"hi \xff\"}}"
	p := mustProblem(t, b.do(t, http.MethodPost, "/v1/schedules", body, nil), http.StatusBadRequest)
	if len(p.Errors) != 1 || p.Errors[0].Field != "payload" || p.Errors[0].Message != "must be valid UTF-8" {
		t.Errorf("errors = %+v", p.Errors)
	}
}

// A body that starts with a byte order mark is refused in words that name
// it, on both routes that take JSON, rather than as encoding/json's
// "invalid character 'ï'" (the mark's first byte read as a rune).
func TestByteOrderMarkNamed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for path, body := range map[string]string{
		"/v1/tasks/set-emails": "\ufeff" + `{"order_id":1,"additional_emails":["a@example.com"]}`,
		"/v1/schedules":        "\ufeff" + `{"id":"bom","cron":"@daily","type":"resend-dcv","payload":{"order_id":1}}`,
	} {
		p := mustProblem(t, b.do(t, http.MethodPost, path, body, nil), http.StatusBadRequest)
		want := "starts with a byte order mark (U+FEFF): JSON must be sent without one"
		if len(p.Errors) != 1 || p.Errors[0].Field != "" || p.Errors[0].Message != want {
			t.Errorf("%s: errors %+v, want one for the body: %q", path, p.Errors, want)
		}
	}
	b.assertUntouched(t)
}
