package schedule_test

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/asynqsched"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/lease"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/tasks"
)

// testRules are the rules of the tests: accounts default and eu, the
// default queues, and schedules may fire every second.
var testRules = schedule.Rules{Enqueue: enqueue.Rules{Accounts: []string{"default", "eu"}}, MinInterval: time.Second}

// Redis keys the tests look at behind the Store's back.
const (
	apiSchedulesKey  = "certmail:schedules"
	fileSchedulesKey = "certmail:schedules:file"
	leaderKey        = "certmail:scheduler:leader"
)

func stateKey(id string) string { return "certmail:schedule:" + id }

// env is one Redis server.
type env struct {
	t     *testing.T
	redis *redistest.Server
}

func setup(t *testing.T) *env {
	t.Helper()
	return &env{t: t, redis: redistest.Start(t)}
}

// store returns a Store judging by testRules, on a client closed at the
// test's end.
func (e *env) store() *schedule.Store {
	e.t.Helper()
	st, err := schedule.NewStore(schedule.Config{Redis: e.redis.Client(), Rules: testRules})
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func TestValidate(t *testing.T) {
	t.Parallel()
	rules := testRules
	rules.MinInterval = 0 // the default, one minute
	good := schedule.Schedule{ID: "dcv-order-1002", Cron: "0 9 * * *", Timezone: "Europe/Berlin", Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 1002, "locale": "en"}`)}
	if err := schedule.Validate(good, rules, time.Now()); err != nil {
		t.Fatalf("valid schedule: %v", err)
	}
	tests := []struct {
		name   string
		change func(*schedule.Schedule)
		fields []string
	}{
		{"bad id", func(s *schedule.Schedule) { s.ID = "Has Spaces" }, []string{"id"}},
		{"no cron", func(s *schedule.Schedule) { s.Cron = "" }, []string{"cron"}},
		{"bad cron", func(s *schedule.Schedule) { s.Cron = "61 * * * *" }, []string{"cron"}},
		{"six fields", func(s *schedule.Schedule) { s.Cron = "0 0 9 * * *" }, []string{"cron"}},
		{"zone in cron", func(s *schedule.Schedule) { s.Cron = "CRON_TZ=UTC 0 9 * * *" }, []string{"cron"}},
		{"bad zone", func(s *schedule.Schedule) { s.Timezone = "Mars/Olympus" }, []string{"timezone"}},
		{"unknown type", func(s *schedule.Schedule) { s.Type = "send-fax" }, []string{"type"}},
		{"no payload", func(s *schedule.Schedule) { s.Payload = nil }, []string{"payload"}},
		{"payload rules", func(s *schedule.Schedule) { s.Payload = json.RawMessage(`{"order_id": 0, "locale": "english"}`) },
			[]string{"payload.order_id", "payload.locale"}},
		{"unknown account", func(s *schedule.Schedule) { s.Payload = json.RawMessage(`{"order_id": 1, "account": "us"}`) },
			[]string{"payload.account"}},
		{"bad queue", func(s *schedule.Schedule) { s.Queue = "Bulk!" }, []string{"queue"}},
		{"negative max_runs", func(s *schedule.Schedule) { s.MaxRuns = -1 }, []string{"max_runs"}},
		{"never fires", func(s *schedule.Schedule) { s.Cron = "0 0 30 2 *" }, []string{"cron"}},
		{"below the floor", func(s *schedule.Schedule) { s.Cron = "@every 30s" }, []string{"cron"}},
		{"once a century", func(s *schedule.Schedule) { s.Cron = "@every 1000000h" }, []string{"cron"}},
		{"until in the past", func(s *schedule.Schedule) { past := time.Now().Add(-time.Minute); s.Until = &past }, []string{"until"}},
		{"queue no worker serves", func(s *schedule.Schedule) { s.Queue = "nobody" }, []string{"queue"}},
		{"set-emails with a sequence", func(s *schedule.Schedule) {
			s.Type, s.Payload = "set-emails", json.RawMessage(`{"order_id": 1, "additional_emails": [], "sequence": 1}`)
		}, []string{"payload.sequence"}},
		{"set-emails with a bad sequence", func(s *schedule.Schedule) {
			s.Type, s.Payload = "set-emails", json.RawMessage(`{"order_id": 1, "additional_emails": [], "sequence": -1}`)
		}, []string{"payload.sequence"}},
		{"only_if_pending false, until_validated by default", func(s *schedule.Schedule) {
			s.Payload = json.RawMessage(`{"order_id": 1, "only_if_pending": false}`)
		}, []string{"payload.only_if_pending"}},
		{"only_if_pending false, until_validated true", func(s *schedule.Schedule) {
			yes := true
			s.Payload, s.UntilValidated = json.RawMessage(`{"order_id": 1, "only_if_pending": false}`), &yes
		}, []string{"payload.only_if_pending"}},
		{"everything at once", func(s *schedule.Schedule) { s.ID, s.Cron, s.Timezone = "", "soon", "nowhere" },
			[]string{"id", "timezone", "cron"}},
		// Judged as given: spaces the parser would trim count.
		{"cron over its bound", func(s *schedule.Schedule) { s.Cron = "@every 1h" + strings.Repeat(" ", schedule.MaxCronBytes) },
			[]string{"cron"}},
		{"timezone over its bound", func(s *schedule.Schedule) { s.Timezone = "UTC" + strings.Repeat(" ", schedule.MaxTimezoneBytes) },
			[]string{"timezone"}},
		{"a long list of minutes", func(s *schedule.Schedule) { s.Cron = "0 * * * 1" + strings.Repeat(",1", 200) }, []string{"cron"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := good
			tt.change(&s)
			err := schedule.Validate(s, rules, time.Now())
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *tasks.ValidationError", err)
			}
			var fields []string
			for _, fe := range ve.Errors {
				fields = append(fields, fe.Field)
			}
			if strings.Join(fields, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("fields %v, want %v (%v)", fields, tt.fields, err)
			}
			// The text names the schedule's fields, not a payload's problem.
			if !strings.HasPrefix(err.Error(), tt.fields[0]+": ") {
				t.Errorf("Validate = %q, want it to start with %q", err, tt.fields[0]+": ")
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	data := `schedules:
  - id: good
    cron: "@every 1s"
    type: resend-dcv
    payload: {order_id: 1002, locale: en}
    until: 2030-12-31T00:00:00Z
    max_runs: 30
  - id: bad-payload
    cron: "@daily"
    type: set-emails
    payload: {order_id: 7, additional_emails: ["not an email"]}
  - id: good
    cron: "@hourly"
    type: resend-dcv
    payload: {order_id: 1}
  - cron: "@hourly"
    type: resend-dcv
    payload: {order_id: 1}
  - id: typo
    crom: "@hourly"
    type: resend-dcv
    payload: {order_id: 1}
  - id: stamped
    cron: "@hourly"
    type: set-emails
    payload: {order_id: 1, additional_emails: [], sequence: 1}
  - id: everything
    cron: whenever
    timezone: Local
    type: resend-dcv
    payload: {order_id: 0}
    max_runs: many
    until_validated: maybe
    crom: "@daily"
`
	good, bad, err := schedule.ParseFile([]byte(data), testRules)
	if err != nil {
		t.Fatal(err)
	}
	if len(good) != 1 || good[0].ID != "good" || good[0].Queue != schedule.DefaultQueue || good[0].MaxRuns != 30 ||
		good[0].Until == nil || string(good[0].Payload) != `{"locale":"en","order_id":1002}` {
		t.Fatalf("good = %+v", good)
	}
	want := []string{
		"schedules[1] (bad-payload): payload.additional_emails[0]: ",
		"schedules[2] (good): id already used by schedules[0]",
		"schedules[3]: id: ",
		"schedules[4] (typo): crom: unknown field; cron: required",
		"schedules[5] (stamped): payload.sequence: a schedule must leave it out",
		"schedules[6] (everything): max_runs: must be an integer; until_validated: must be true or false; " +
			"crom: unknown field; timezone: ",
	}
	if len(bad) != len(want) {
		t.Fatalf("bad = %v, want %d entries", bad, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(bad[i].Error(), w) {
			t.Errorf("bad[%d] = %q, want it to start with %q", i, bad[i].Error(), w)
		}
	}
	if msg := bad[5].Error(); !strings.Contains(msg, "; cron: ") || !strings.Contains(msg, "; payload.order_id: ") {
		t.Errorf("bad[5] = %q, want the other problems with the members of the wrong type", msg)
	}
	if !strings.Contains(bad[0].Error(), "payload.additional_emails[0]") || !strings.Contains(bad[3].Error(), "crom") {
		t.Errorf("errors lack the field paths: %v", bad)
	}
	if _, _, err := schedule.ParseFile([]byte("schedules: [\n"), schedule.Rules{}); err == nil {
		t.Error("broken YAML parsed")
	}
	for _, none := range []string{"# none yet\nschedules: []\n", "schedules:\n# - id: later\n"} {
		if good, bad, err := schedule.ParseFile([]byte(none), schedule.Rules{}); err != nil || len(good)+len(bad) != 0 {
			t.Errorf("%q = %v %v %v, want no schedules and no error", none, good, bad, err)
		}
	}
}

// TestBoundsOfCronAndTimezone: a cron spec over MaxCronBytes or a time
// zone over MaxTimezoneBytes, as given, is refused with a short problem
// that names the bound and not the value, and is not parsed; at the bound
// it is judged as usual.
func TestBoundsOfCronAndTimezone(t *testing.T) {
	t.Parallel()
	at := func(n int, s string) string { return s + strings.Repeat(" ", n-len(s)) }
	good := schedule.Schedule{ID: "long", Cron: at(schedule.MaxCronBytes, "@every 1h"), Timezone: at(schedule.MaxTimezoneBytes, "Europe/Berlin"),
		Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}
	if err := schedule.Validate(good, testRules, time.Now()); err != nil {
		t.Fatalf("cron and timezone at their bounds: %v", err)
	}
	long := good
	long.Cron, long.Timezone = strings.Repeat("@every 1h ", 100_000), strings.Repeat("Mars/Olympus", 100_000)
	err := schedule.Validate(long, testRules, time.Now())
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate = %v, want a *tasks.ValidationError", err)
	}
	want := []tasks.FieldError{
		{Field: "timezone", Message: fmt.Sprintf("must be at most %d bytes", schedule.MaxTimezoneBytes)},
		{Field: "cron", Message: fmt.Sprintf("must be at most %d bytes", schedule.MaxCronBytes)},
	}
	if fmt.Sprint(ve.Errors) != fmt.Sprint(want) {
		t.Errorf("problems %v, want %v", ve.Errors, want)
	}
	if len(err.Error()) > 200 {
		t.Errorf("error of %d bytes", len(err.Error()))
	}
}

// TestBoundOfOneFieldLeavesTheOtherJudged: a cron spec or a time zone over
// its bound is refused with the bound alone, not parsed for a second
// problem as well, while the other field, within its bound, is judged as
// usual.
func TestBoundOfOneFieldLeavesTheOtherJudged(t *testing.T) {
	t.Parallel()
	cronBound := fmt.Sprintf("must be at most %d bytes", schedule.MaxCronBytes)
	zoneBound := fmt.Sprintf("must be at most %d bytes", schedule.MaxTimezoneBytes)
	const notAZone = "not a time zone name such as Europe/Berlin"
	const notACron = "not a 5-field cron spec"
	overlong := func(s string, limit int) string { return s + strings.Repeat(" ", limit) } // over the bound only as given
	for _, tt := range []struct {
		name, cron, timezone string
		want                 [][2]string // field and the start of its message
	}{
		{"cron over, timezone invalid", overlong("@every 1h", schedule.MaxCronBytes), "Mars/Olympus",
			[][2]string{{"cron", cronBound}, {"timezone", notAZone}}},
		{"timezone over, cron invalid", "61 * * * *", overlong("Mars/Olympus", schedule.MaxTimezoneBytes),
			[][2]string{{"timezone", zoneBound}, {"cron", notACron}}},
		{"timezone over, invalid trimmed too", "@every 1h", overlong("Mars/Olympus", schedule.MaxTimezoneBytes),
			[][2]string{{"timezone", zoneBound}}},
		{"cron over, invalid trimmed too", overlong("61 * * * *", schedule.MaxCronBytes), "Europe/Berlin",
			[][2]string{{"cron", cronBound}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := schedule.Schedule{ID: "bounds", Cron: tt.cron, Timezone: tt.timezone, Type: "resend-dcv",
				Payload: json.RawMessage(`{"order_id": 1}`)}
			err := schedule.Validate(s, testRules, time.Now())
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *tasks.ValidationError", err)
			}
			ok := len(ve.Errors) == len(tt.want)
			for i := 0; ok && i < len(tt.want); i++ {
				ok = ve.Errors[i].Field == tt.want[i][0] && strings.HasPrefix(ve.Errors[i].Message, tt.want[i][1])
			}
			if !ok {
				t.Errorf("problems %v, want %q", ve.Errors, tt.want)
			}
		})
	}
}

// TestParseFileRefusesOverlongCronAndTimezone: an entry of the schedules
// file whose cron or timezone is over its bound makes the file one that
// cannot be parsed (one short line naming the entry, the field and the
// bound), so that at start the scheduler exits and on a reload it keeps
// the file's last good version.
func TestParseFileRefusesOverlongCronAndTimezone(t *testing.T) {
	t.Parallel()
	const goodEntry = "  - {id: good, cron: \"@daily\", type: resend-dcv, payload: {order_id: 1}}\n"
	for _, tt := range []struct{ name, entry, want string }{
		{"cron", "  - {id: wide, cron: \"@every 1h" + strings.Repeat(" ", 900_000) + "\", type: resend-dcv, payload: {order_id: 2}}\n",
			fmt.Sprintf("schedules[1] (wide): cron: must be at most %d bytes", schedule.MaxCronBytes)},
		{"timezone", "  - {id: wide, cron: \"@daily\", timezone: \"UTC" + strings.Repeat(" ", 900_000) + "\", type: resend-dcv, payload: {order_id: 2}}\n",
			fmt.Sprintf("schedules[1] (wide): timezone: must be at most %d bytes", schedule.MaxTimezoneBytes)},
		{"both, and an id that is not one", "  - {id: \"" + strings.Repeat("W", 5000) + "\", cron: \"" + strings.Repeat("1,", 500) + "1 * * * *\", " +
			"timezone: \"" + strings.Repeat("Z", 65) + "\", type: resend-dcv, payload: {order_id: 2}}\n",
			fmt.Sprintf("schedules[1]: timezone: must be at most %d bytes; cron: must be at most %d bytes", schedule.MaxTimezoneBytes, schedule.MaxCronBytes)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			good, bad, err := schedule.ParseFile([]byte("schedules:\n"+goodEntry+tt.entry), testRules)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("ParseFile = %d good, %v, %v; want the error %q", len(good), bad, err, tt.want)
			}
		})
	}
}

// TestParseFileNeverEchoesAnInvalidID: an entry skipped as invalid is
// named by its position, and by its id only when that is a valid one: a
// 5000-byte id would otherwise fill the reload's ERROR line.
func TestParseFileNeverEchoesAnInvalidID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("W", 5000)
	_, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: "`+long+`", cron: "@daily", type: resend-dcv, payload: {order_id: 1}}
  - {id: twice, cron: "@daily", type: resend-dcv, payload: {order_id: 2}}
  - {id: twice, cron: "@daily", type: resend-dcv, payload: {order_id: 3}}
  - {id: fine, cron: "@daily", type: no-such-type, payload: {order_id: 4}}
`), testRules)
	if err != nil || len(bad) != 3 {
		t.Fatalf("ParseFile: %v, %v; want three entries skipped", bad, err)
	}
	for i, want := range []string{"", "twice", "fine"} {
		if e := bad[i]; e.ID != want || strings.Contains(e.Error(), "WWW") || len(e.Error()) > 300 {
			t.Errorf("entry %d: id %.40q, error %.300q; want the id %q and no echo", e.Index, e.ID, e.Error(), want)
		}
	}
}

// TestParseFileRefusesAFileWithoutItsList: a file whose schedules list is
// missing (a mistyped key, an empty or truncated file) or that has another
// top-level key cannot be parsed, with one short line naming the problem:
// taking it as "no schedules" would stop every file schedule.
func TestParseFileRefusesAFileWithoutItsList(t *testing.T) {
	t.Parallel()
	entry := "  - {id: a, cron: \"@daily\", type: resend-dcv, payload: {order_id: 1}}\n"
	for _, tt := range []struct{ name, data, want string }{
		{"mistyped key", "schedule:\n" + entry, `line 1: unknown top-level key schedule (the file holds one key, schedules)`},
		{"another key too", "schedules:\n" + entry + "extra: 1\n", `line 3: unknown top-level key extra`},
		{"long key", strings.Repeat("k", 500) + ": 1\n", `unknown top-level key "kkkk`},
		{"empty", "", "no schedules key (write schedules: [] for none)"},
		{"only a comment", "# schedules: []\n", "no schedules key (write schedules: [] for none)"},
		{"a mapping", "schedules: {id: a}\n", "line 1: schedules must be a list (write schedules: [] for none)"},
		{"a string", "schedules: none\n", "line 1: schedules must be a list"},
		{"twice", "schedules: []\nschedules: []\n", "line 2: schedules given twice"},
		{"a list at the top", entry, "the file must be a mapping with a schedules list"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			good, bad, err := schedule.ParseFile([]byte(tt.data), testRules)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseFile = %v, %v, %v; want an error with %q", good, bad, err, tt.want)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || len(msg) > 200 {
				t.Errorf("error %q: want one short line", msg)
			}
		})
	}
}

// TestParseFileRefusesTooManyEntries: a file listing more than
// MaxFileEntries entries cannot be parsed (each would be judged, tracked by
// the leader and a label value); MaxFileEntries are read.
func TestParseFileRefusesTooManyEntries(t *testing.T) {
	t.Parallel()
	list := func(n int) []byte {
		return []byte("schedules:\n" + strings.Repeat("  - {}\n", n))
	}
	_, bad, err := schedule.ParseFile(list(schedule.MaxFileEntries), testRules)
	if err != nil || len(bad) != schedule.MaxFileEntries {
		t.Errorf("ParseFile of %d entries = %d invalid, %v; want each judged", schedule.MaxFileEntries, len(bad), err)
	}
	_, _, err = schedule.ParseFile(list(schedule.MaxFileEntries+1), testRules)
	if want := "schedules lists 10001 entries: at most 10000 are allowed"; err == nil || err.Error() != want {
		t.Errorf("ParseFile of %d entries = %v, want %q", schedule.MaxFileEntries+1, err, want)
	}
}

// TestNeverFiresBeforeUntil: a schedule whose first tick comes after its
// until would be accepted as active and end with no run: it is refused on
// until, wherever it is added (Validate and Store.Add judge it from now,
// a file entry from the time it is read). A file entry whose until has
// passed has ended, and is not refused.
func TestNeverFiresBeforeUntil(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	until := now.Add(24 * time.Hour)
	s := schedule.Schedule{ID: "yearly", Cron: "0 9 1 6 *", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 77}`), Until: &until}
	err := schedule.Validate(s, testRules, now)
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "until" ||
		ve.Errors[0].Message != "never fires before until (first tick 2026-06-01T09:00:00Z)" {
		t.Fatalf("Validate = %v, want one problem on until naming the first tick", err)
	}
	later := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC) // the first tick may be until itself
	s.Until = &later
	if err := schedule.Validate(s, testRules, now); err != nil {
		t.Errorf("Validate with until at the first tick = %v, want nil", err)
	}
	berlin := time.Date(2026, 6, 1, 8, 30, 0, 0, time.UTC) // 10:30 in Berlin, after 09:00 there
	s.Until, s.Timezone = &berlin, "Europe/Berlin"
	if err := schedule.Validate(s, testRules, now); err != nil {
		t.Errorf("Validate in Berlin = %v, want nil: the first tick is 07:00 UTC", err)
	}

	// The store refuses it as Validate does.
	st := setup(t).store()
	far := time.Now().AddDate(0, 6, 0) // a date half a year on: its first tick is past an until of tomorrow
	tomorrow := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	spec := fmt.Sprintf("0 9 %d %d *", far.Day(), far.Month())
	_, err = st.Add(context.Background(), schedule.Schedule{ID: "yearly", Cron: spec, Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id": 77}`), Until: &tomorrow})
	if !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "until" || !strings.HasPrefix(ve.Errors[0].Message, "never fires before until") {
		t.Errorf("Add = %v, want refused on until", err)
	}

	// A file entry is not judged from the time the file is read: an entry
	// read again after its last tick, its until still ahead, has simply
	// run its course (the scheduler ends it); one whose until has passed
	// has ended.
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: done, cron: "`+spec+`", type: resend-dcv, payload: {order_id: 1}, until: `+tomorrow.Format(time.RFC3339)+`}
  - {id: over, cron: "`+spec+`", type: resend-dcv, payload: {order_id: 2}, until: 2020-01-01T00:00:00Z}
`), testRules)
	if err != nil || len(good) != 2 || len(bad) != 0 {
		t.Errorf("ParseFile = %v, %v, %v; want both entries kept", good, bad, err)
	}
}

// TestEditedEndedFileScheduleStartsAnew: a file schedule that ended stays
// ended while its entry is unchanged; once its entry is edited (a higher
// max_runs, a later until, another payload) the next mirror clears its
// state and history, so that it starts anew, runs from 0. A schedule that
// ended under a version that did not record its definition takes the
// entry it has now as that definition.
func TestEditedEndedFileScheduleStartsAnew(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	st := e.store()
	ctx := context.Background()
	file := func(entry string) []*schedule.Compiled {
		c, bad, err := schedule.ParseFile([]byte("schedules: ["+entry+"]"), testRules)
		if err != nil || len(bad) != 0 || len(c) != 1 {
			t.Fatal(c, bad, err)
		}
		return c
	}
	mirror := func(c []*schedule.Compiled) schedule.State {
		t.Helper()
		if err := st.MirrorFile(ctx, e.leading("mine"), c); err != nil {
			t.Fatal(err)
		}
		s, err := st.State(ctx, "f")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	v1 := file(`{id: f, cron: "@daily", type: resend-dcv, payload: {order_id: 1}, max_runs: 1}`)
	mirror(v1)
	fence := holdLeader(t, rdb)
	if _, ended, err := st.RecordTick(ctx, fence, "f", time.Unix(100, 0), time.Unix(100, 0), "sched:f:100", 1); err != nil || !ended {
		t.Fatalf("RecordTick = %v, %v; want the schedule ended at max_runs", ended, err)
	}
	// The same entry, written again (another comment, another order of its
	// fields): it stays ended.
	if s := mirror(file(`{max_runs: 1, id: f, type: resend-dcv, payload: {order_id: 1}, cron: "@daily"}`)); !s.Ended || s.Runs != 1 {
		t.Fatalf("state after an unchanged mirror %+v, want still ended after 1 run", s)
	}
	// A higher max_runs: it starts anew.
	v2 := file(`{id: f, cron: "@daily", type: resend-dcv, payload: {order_id: 1}, max_runs: 3}`)
	if s := mirror(v2); s.Ended || s.Runs != 0 || !s.Since.IsZero() || !s.LastTick.IsZero() || s.LastTaskID != "" {
		t.Errorf("state after max_runs was raised %+v, want a fresh one", s)
	}
	if n, err := rdb.Exists(ctx, asynqsched.HistoryKey("f")).Result(); err != nil || n != 0 {
		t.Errorf("history kept (%d, %v), want it cleared with the state", n, err)
	}
	// Ended as validated, then the id given to another order: it starts
	// anew too.
	if _, err := st.End(ctx, fence, "f", schedule.EndedValidated, time.Unix(200, 0), "issued"); err != nil {
		t.Fatal(err)
	}
	if s := mirror(v2); !s.Ended {
		t.Fatalf("state %+v, want ended", s)
	}
	if s := mirror(file(`{id: f, cron: "@daily", type: resend-dcv, payload: {order_id: 2}, max_runs: 3}`)); s.Ended || s.OrderStatus != "" {
		t.Errorf("state after the payload changed %+v, want a fresh one", s)
	}
	// Ended under an earlier version (no definition recorded): the entry as
	// it is now is taken as the one it ended under.
	if err := rdb.HSet(ctx, stateKey("f"), "ended", "1", "ended_reason", "max_runs", "runs", 3).Err(); err != nil {
		t.Fatal(err)
	}
	if s := mirror(v2); !s.Ended || s.Runs != 3 {
		t.Errorf("state of one ended by an earlier version %+v, want still ended", s)
	}
	if s := mirror(v1); s.Ended || s.Runs != 0 {
		t.Errorf("state after its entry was edited %+v, want a fresh one", s)
	}
}

// leading makes replica the scheduler's leader, as a change of leader
// does, and returns its lease.
func (e *env) leading(replica string) *lease.Lease {
	e.t.Helper()
	return holdLeaderAs(e.t, e.redis.Client(), replica)
}

// holdLeader makes the test the scheduler's leader: the lease it returns
// holds the leader key.
func holdLeader(t *testing.T, rdb *redis.Client) *lease.Lease {
	t.Helper()
	return holdLeaderAs(t, rdb, "mine")
}

// holdLeaderAs makes token the holder of the scheduler's leader lease.
func holdLeaderAs(t *testing.T, rdb *redis.Client, token string) *lease.Lease {
	t.Helper()
	if err := rdb.Set(context.Background(), leaderKey, token, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	return lease.WithToken(rdb, leaderKey, token, time.Minute)
}

// TestRecordFenced: a scheduler whose lease another holds cannot record.
func TestRecordFenced(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	st := e.store()
	ctx := context.Background()
	if err := rdb.Set(ctx, leaderKey, "other", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	// x is a file schedule, as the leader mirrors it: its state may be written.
	c, bad, err := schedule.ParseFile([]byte("schedules: [{id: x, cron: \"@daily\", type: resend-dcv, payload: {order_id: 1}}]"), testRules)
	if err != nil || len(c) != 1 || len(bad) != 0 {
		t.Fatal(c, bad, err)
	}
	if err := st.MirrorFile(ctx, lease.WithToken(rdb, leaderKey, "other", time.Minute), c); err != nil { // by the leader
		t.Fatal(err)
	}
	mine := lease.WithToken(rdb, leaderKey, "mine", time.Minute)
	if err := st.Begin(ctx, mine, "x", time.Unix(100, 0)); !errors.Is(err, schedule.ErrNotLeader) {
		t.Errorf("begin without the lease = %v; want ErrNotLeader", err)
	}
	if recorded, _, err := st.RecordTick(ctx, mine, "x", time.Unix(100, 0), time.Unix(100, 0), "sched:x:100", 0); !errors.Is(err, schedule.ErrNotLeader) || recorded {
		t.Fatalf("record without the lease = %v, %v; want ErrNotLeader", recorded, err)
	}
	if err := st.NoteTask(ctx, mine, "x", "sched:x:100"); !errors.Is(err, schedule.ErrNotLeader) {
		t.Errorf("note without the lease = %v; want ErrNotLeader", err)
	}
	if _, err := st.End(ctx, mine, "x", schedule.EndedUntil, time.Unix(100, 0), ""); !errors.Is(err, schedule.ErrNotLeader) {
		t.Errorf("end without the lease = %v; want ErrNotLeader", err)
	}
	other := lease.WithToken(rdb, leaderKey, "other", time.Minute)
	for i, want := range [][2]bool{{true, false}, {false, false}, {true, true}} { // forward, repeat, forward and end at max_runs
		tick := time.Unix([]int64{100, 100, 101}[i], 0)
		recorded, ended, err := st.RecordTick(ctx, other, "x", tick, tick, "t", 2)
		if err != nil || recorded != want[0] || ended != want[1] {
			t.Errorf("record tick %d = %v, %v, %v; want recorded %v, ended %v", tick.Unix(), recorded, ended, err, want[0], want[1])
		}
	}
	state, err := rdb.HGetAll(ctx, stateKey("x")).Result()
	if err != nil || state["runs"] != "2" || state["last_tick"] != "101" || state["ended"] != "1" || state["ended_reason"] != "max_runs" {
		t.Errorf("state %v, %v; want 2 runs, last tick 101, ended at max_runs 2", state, err)
	}
	if s, err := st.State(ctx, "x"); err != nil || s.Runs != 2 || s.LastTick.Unix() != 101 || !s.Ended || s.EndedReason != schedule.EndedMaxRuns {
		t.Errorf("State = %+v, %v", s, err)
	}
	// Each recorded tick is in the history, once.
	if h, err := rdb.ZRange(ctx, asynqsched.HistoryKey("x"), 0, -1).Result(); err != nil || len(h) != 2 {
		t.Errorf("history %q, %v; want the 2 recorded ticks", h, err)
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	s := schedule.Schedule{ID: "api-1", Cron: "0 9 * * 1", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}
	got, err := st.Add(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != schedule.SourceAPI || got.Queue != schedule.DefaultQueue || got.NextRun == nil || got.NextRun.Weekday() != time.Monday || got.NextRun.Hour() != 9 {
		t.Errorf("Add = %+v", got)
	}
	if _, err := st.Add(ctx, s); !errors.Is(err, schedule.ErrExists) {
		t.Errorf("second Add = %v, want ErrExists", err)
	}
	// A file schedule (as mirrored by the leader) cannot be added or deleted.
	c, bad, err := schedule.ParseFile([]byte("schedules: [{id: file-1, cron: \"@daily\", type: resend-dcv, payload: {order_id: 2}}]"), testRules)
	if err != nil || len(c) != 1 || len(bad) != 0 {
		t.Fatal(c, bad, err)
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), c); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Add(ctx, schedule.Schedule{ID: "file-1", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 2}`)}); !errors.Is(err, schedule.ErrExists) {
		t.Errorf("Add over a file schedule = %v, want ErrExists", err)
	}
	if err := st.Delete(ctx, "file-1"); !errors.Is(err, schedule.ErrFileSchedule) {
		t.Errorf("Delete of a file schedule = %v", err)
	}
	if err := st.Delete(ctx, "nope"); !errors.Is(err, schedule.ErrNotFound) {
		t.Errorf("Delete of an unknown id = %v", err)
	}
	if err := st.Delete(ctx, "api-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "api-1"); !errors.Is(err, schedule.ErrNotFound) {
		t.Errorf("Get after Delete = %v", err)
	}
	if n, err := e.redis.Client().Exists(ctx, stateKey("api-1")).Result(); err != nil || n != 0 {
		t.Errorf("Delete left the schedule's state (%v)", err)
	}
}

// The API's and the CLI's schedules are bounded by Rules.MaxSchedules: at
// the bound, the one that ended first makes room, and with none ended Add
// is ErrTooMany. The file's are not counted, and a taken id is still
// ErrExists at the bound.
func TestStoreBounded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rules := testRules
	rules.MaxSchedules = 3
	st, err := schedule.NewStore(schedule.Config{Redis: e.redis.Client(), Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, bad, err := schedule.ParseFile([]byte("schedules: [{id: file-1, cron: \"@daily\", type: resend-dcv, payload: {order_id: 2}}]"), testRules)
	if err != nil || len(c) != 1 || len(bad) != 0 {
		t.Fatal(c, bad, err)
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), c); err != nil {
		t.Fatal(err)
	}
	add := func(id string) error {
		_, err := st.Add(ctx, schedule.Schedule{ID: id, Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)})
		return err
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := add(id); err != nil {
			t.Fatalf("Add %s: %v", id, err)
		}
	}
	if err := add("d"); !errors.Is(err, schedule.ErrTooMany) || !strings.Contains(err.Error(), "3") {
		t.Errorf("fourth Add = %v, want ErrTooMany naming 3", err)
	}
	for _, id := range []string{"a", "file-1"} {
		if err := add(id); !errors.Is(err, schedule.ErrExists) {
			t.Errorf("Add of the taken id %s at the bound = %v, want ErrExists", id, err)
		}
	}
	// At the bound, the schedule that ended first makes room; one that has
	// not ended never does.
	rdb := e.redis.Client()
	for id, endedAt := range map[string]int64{"b": 200, "c": 100} {
		if err := rdb.HSet(ctx, stateKey(id), "ended", "1", "ended_at", endedAt).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ add, dropped string }{{"d", "c"}, {"e", "b"}} {
		if err := add(tt.add); err != nil {
			t.Fatalf("Add %s with an ended schedule to drop: %v", tt.add, err)
		}
		if _, err := st.Get(ctx, tt.dropped); !errors.Is(err, schedule.ErrNotFound) {
			t.Errorf("after Add %s, Get %s = %v, want it dropped", tt.add, tt.dropped, err)
		}
		if n, err := rdb.Exists(ctx, stateKey(tt.dropped)).Result(); err != nil || n != 0 {
			t.Errorf("the state of %s is left (%v)", tt.dropped, err)
		}
	}
	if err := add("f"); !errors.Is(err, schedule.ErrTooMany) {
		t.Errorf("Add with none ended = %v, want ErrTooMany", err)
	}
	if n, err := rdb.HLen(ctx, apiSchedulesKey).Result(); err != nil || n != 3 {
		t.Errorf("%d API schedules stored (%v), want 3", n, err)
	}
	if err := st.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := add("f"); err != nil {
		t.Errorf("Add after a Delete: %v", err)
	}
	// A bound lowered below what is stored: the ended ones go together, and
	// while an active one is over the bound, nothing is added.
	rules.MaxSchedules = 1
	lower, err := schedule.NewStore(schedule.Config{Redis: rdb, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	addLower := func(id string) error {
		_, err := lower.Add(ctx, schedule.Schedule{ID: id, Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)})
		return err
	}
	for id, endedAt := range map[string]int64{"d": 300, "e": 400} {
		if err := rdb.HSet(ctx, stateKey(id), "ended", "1", "ended_at", endedAt).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := addLower("g"); !errors.Is(err, schedule.ErrTooMany) {
		t.Errorf("Add under a lowered bound with f active = %v, want ErrTooMany", err)
	}
	if ids, err := rdb.HKeys(ctx, apiSchedulesKey).Result(); err != nil || len(ids) != 1 || ids[0] != "f" {
		t.Errorf("API schedules %q (%v), want the ended d and e gone, f kept", ids, err)
	}
	if err := rdb.HSet(ctx, stateKey("f"), "ended", "1", "ended_at", 500).Err(); err != nil {
		t.Fatal(err)
	}
	if err := addLower("g"); err != nil {
		t.Errorf("Add under a lowered bound once f ended: %v", err)
	}
}

// A cron spec is judged by its shortest interval, whatever its form.
func TestMinInterval(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cron, timezone string
		floor          time.Duration
		ok             bool
	}{
		{"@every 1m", "", time.Minute, true},
		{"@every 59s", "", time.Minute, false},
		{"* * * * *", "", time.Minute, true},
		{"* * * * *", "", 5 * time.Minute, false},
		{"*/5 * * * *", "", 5 * time.Minute, true},
		{"0,1 9 * * *", "", 5 * time.Minute, false}, // one minute apart once a day
		{"@hourly", "", time.Hour, true},
		{"0 0 29 2 *", "", time.Hour, true},    // leap days only, but it fires
		{"@every 43800h", "", time.Hour, true}, // 43800h (1825 days): the longest
		{"@every 43801h", "", time.Hour, false},
		// Once a week, as it fires across daylight saving changes: the EU's
		// autumn change falls on a Sunday, whose 02:30 comes twice and
		// fires once.
		{"30 2 * * 0", "Europe/Berlin", 2 * time.Hour, true},
		{"30 * * * 0", "Europe/Berlin", 2 * time.Hour, false}, // hourly on Sundays
	} {
		s := schedule.Schedule{ID: "s", Cron: tt.cron, Timezone: tt.timezone, Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}
		err := schedule.Validate(s, schedule.Rules{MinInterval: tt.floor}, time.Now())
		if (err == nil) != tt.ok {
			t.Errorf("%q with a floor of %v: %v, want ok %v", tt.cron, tt.floor, err, tt.ok)
		}
	}
}

// An @every that robfig/cron would fire every second (zero, below zero,
// below a second) or round down to whole seconds is refused for what it
// is, whatever the shortest interval allowed, in the file as through the
// API; a whole number of seconds is taken.
func TestEveryNeedsAPositiveWholeNumberOfSeconds(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tt := range []struct {
		spec string
		ok   bool
	}{
		{"@every -5m", false},
		{"@every 0s", false},
		{"@every 1ms", false},
		{"@every 1m500ms", false},
		{"@every 1.5s", false},
		{"@every 1s", true},
		{"@every 1m30s", true},
		{"@every 1.5m", true}, // 90s
	} {
		s := schedule.Schedule{ID: "e", Cron: tt.spec, Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}
		for _, floor := range []time.Duration{time.Second, 0} { // 0: the default, a minute
			err := schedule.Validate(s, schedule.Rules{MinInterval: floor}, now)
			if tt.ok && floor == time.Second && err != nil {
				t.Errorf("%q with a floor of 1s: %v, want it taken", tt.spec, err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "positive whole number of seconds")) {
				t.Errorf("%q with a floor of %v: %v, want it refused as not a positive whole number of seconds", tt.spec, floor, err)
			}
		}
		file := "schedules:\n  - {id: e, cron: '" + tt.spec + "', type: resend-dcv, payload: {order_id: 1}}\n"
		good, bad, err := schedule.ParseFile([]byte(file), schedule.Rules{MinInterval: time.Second})
		if err != nil || len(good)+len(bad) != 1 || (len(good) == 1) != tt.ok {
			t.Errorf("%q in the file: %d taken, %v refused, %v; want taken %v", tt.spec, len(good), bad, err, tt.ok)
		}
	}
}

// A schedule posted as JSON is read strictly: a member given twice is a
// problem named after it, as are unknown members and wrong types.
func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, body string
		fields     []string
	}{
		{"good", `{"id":"a","cron":"@daily","type":"resend-dcv","payload":{"order_id":1},"until":"2030-01-01T00:00:00Z","max_runs":3,"until_validated":false}`, nil},
		{"duplicate id", `{"id":"a","cron":"@daily","id":"b","type":"resend-dcv","payload":{"order_id":1}}`, []string{"id"}},
		{"duplicate payload", `{"id":"a","cron":"@daily","type":"resend-dcv","payload":{"order_id":1},"payload":{"order_id":2}}`, []string{"payload"}},
		{"unknown member", `{"id":"a","crom":"@daily"}`, []string{"crom"}},
		{"unknown member with an odd name", `{"id":"a","a b\n":1}`, []string{`"a b\n"`}},
		{"wrong types", `{"id":1,"cron":"@daily","until":"tomorrow","max_runs":"3","until_validated":"yes"}`, []string{"id", "until", "max_runs", "until_validated"}},
		{"not an object", `[1]`, []string{""}},
		{"trailing data", `{"id":"a"} {}`, []string{""}},
		{"byte order mark", "\ufeff{\"id\":\"a\"}", []string{""}},
	} {
		s, problems, err := schedule.DecodeJSON([]byte(tt.body))
		var ve *tasks.ValidationError
		if errors.As(err, &ve) {
			problems = ve.Errors
		} else if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var fields []string
		for _, fe := range problems {
			fields = append(fields, fe.Field)
		}
		if strings.Join(fields, ",") != strings.Join(tt.fields, ",") {
			t.Errorf("%s: fields %q, want %q (%v)", tt.name, fields, tt.fields, problems)
		}
		if tt.fields == nil && err != nil {
			t.Errorf("%s: %v, want no error", tt.name, err)
		}
		if tt.name == "byte order mark" && (len(problems) != 1 || !strings.Contains(problems[0].Message, "byte order mark")) {
			t.Errorf("%s: %v, want the mark named", tt.name, problems)
		}
		if tt.name == "wrong types" && (s.Until != nil || s.ID != "" || s.Cron != "@daily") {
			t.Errorf("%s: decoded %+v, want the members of the wrong type left out and the others read", tt.name, s)
		}
		if tt.fields == nil && (s.ID != "a" || s.MaxRuns != 3 || s.Until == nil || string(s.Payload) != `{"order_id":1}` ||
			s.UntilValidated == nil || *s.UntilValidated) {
			t.Errorf("%s: decoded %+v", tt.name, s)
		}
	}
}

// A malformed schedule in Redis is skipped and named; the rest is listed.
func TestListingSkipsUnreadableEntries(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	if _, err := st.Add(ctx, schedule.Schedule{ID: "fine", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client()
	for _, kv := range [][3]string{
		{apiSchedulesKey, "garbage", "not JSON"},
		{apiSchedulesKey, "bad-cron", `{"id":"bad-cron","cron":"whenever","type":"resend-dcv","payload":{"order_id":1}}`},
		{fileSchedulesKey, "elsewhere", `{"id":"other","cron":"@daily","type":"resend-dcv","payload":{"order_id":1}}`},
	} {
		if err := rdb.HSet(ctx, kv[0], kv[1], kv[2]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := st.Listing(ctx)
	if err != nil {
		t.Fatalf("Listing: %v", err)
	}
	if len(l.Schedules) != 1 || l.Schedules[0].ID != "fine" {
		t.Errorf("schedules %+v, want only fine", l.Schedules)
	}
	if l.SkippedCount != 3 || len(l.Skipped) != 3 || l.Skipped[0].ID != "bad-cron" || l.Skipped[1].ID != "elsewhere" ||
		l.Skipped[2].ID != "garbage" || l.Skipped[2].Problem != "not a schedule as JSON" {
		t.Errorf("skipped %d: %+v", l.SkippedCount, l.Skipped)
	}
	if got, err := st.Get(ctx, "fine"); err != nil || got.ID != "fine" {
		t.Errorf("Get = %+v, %v", got, err)
	}
}

// TestListingSkipsWhatTheSchedulerSkips: an API schedule stored before the
// rules in force refused it (an earlier version's @every 3s, an account
// removed since) is not listed as due: the listing judges it as the
// scheduler does (APISchedules) and names it under Skipped with its
// problem, and Get gives that problem. A file schedule is listed as the
// leader published it.
func TestListingSkipsWhatTheSchedulerSkips(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rules := testRules
	rules.MinInterval = time.Minute
	st, err := schedule.NewStore(schedule.Config{Redis: e.redis.Client(), Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Add(ctx, schedule.Schedule{ID: "fine", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client()
	for _, kv := range [][3]string{
		{apiSchedulesKey, "old-resend", `{"id":"old-resend","cron":"@every 3s","type":"resend-dcv","payload":{"order_id":2001}}`},
		{apiSchedulesKey, "gone-account", `{"id":"gone-account","cron":"@daily","type":"resend-dcv","payload":{"order_id":1,"account":"us"}}`},
		{fileSchedulesKey, "file-fast", `{"id":"file-fast","cron":"@every 3s","type":"resend-dcv","payload":{"order_id":3}}`},
	} {
		if err := rdb.HSet(ctx, kv[0], kv[1], kv[2]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := st.Listing(ctx)
	if err != nil {
		t.Fatalf("Listing: %v", err)
	}
	var listed []string
	for _, s := range l.Schedules {
		listed = append(listed, s.ID)
	}
	if strings.Join(listed, ",") != "file-fast,fine" {
		t.Errorf("listed %v, want file-fast (as the leader published it) and fine", listed)
	}
	const tooOften = "cron: fires every 3s at times; the shortest interval allowed is 1m0s (CERTMAIL_SCHEDULE_MIN_INTERVAL)"
	want := []schedule.Skipped{
		{ID: "gone-account", Source: schedule.SourceAPI, Problem: "payload.account: "},
		{ID: "old-resend", Source: schedule.SourceAPI, Problem: tooOften},
	}
	if l.SkippedCount != len(want) || len(l.Skipped) != len(want) {
		t.Fatalf("skipped %d: %+v, want %+v", l.SkippedCount, l.Skipped, want)
	}
	for i, w := range want {
		if got := l.Skipped[i]; got.ID != w.ID || got.Source != w.Source || !strings.HasPrefix(got.Problem, w.Problem) {
			t.Errorf("skipped[%d] = %+v, want %+v", i, got, w)
		}
	}
	_, bad, err := st.APISchedules(ctx)
	if err != nil || len(bad) != 2 || bad["old-resend"] == nil || bad["gone-account"] == nil {
		t.Errorf("APISchedules bad = %v, %v; want the two the listing skips", bad, err)
	}
	_, err = st.Get(ctx, "old-resend")
	var skipped *schedule.SkippedError
	if !errors.Is(err, schedule.ErrNotFound) || !errors.As(err, &skipped) || skipped.Problem != tooOften {
		t.Errorf("Get(old-resend) = %v, want a SkippedError with %q", err, tooOften)
	}
	if got, err := st.Get(ctx, "file-fast"); err != nil || got.NextRun == nil {
		t.Errorf("Get(file-fast) = %+v, %v; want it with its next run", got, err)
	}
}

// TestStoredScheduleOverTheBoundsIsSkipped: a schedule an older version
// stored with a cron spec over MaxCronBytes is not compiled again: the
// listing names it as skipped with the bound, and the scheduler gets it
// among the schedules that may not fire.
func TestStoredScheduleOverTheBoundsIsSkipped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	wide, err := json.Marshal(schedule.Schedule{ID: "wide", Cron: "@every 1h" + strings.Repeat(" ", 900_000), Type: "resend-dcv",
		Payload: json.RawMessage(`{"order_id":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.redis.Client().HSet(ctx, apiSchedulesKey, "wide", wide).Err(); err != nil {
		t.Fatal(err)
	}
	l, err := st.Listing(ctx)
	if err != nil {
		t.Fatalf("Listing: %v", err)
	}
	want := fmt.Sprintf("cron: must be at most %d bytes", schedule.MaxCronBytes)
	if len(l.Schedules) != 0 || len(l.Skipped) != 1 || l.Skipped[0].ID != "wide" || !strings.HasSuffix(l.Skipped[0].Problem, want) {
		t.Errorf("listing %+v, want wide skipped with %q", l, want)
	}
	good, bad, err := st.APISchedules(ctx)
	if err != nil || len(good) != 0 || bad["wide"] == nil || !strings.HasSuffix(bad["wide"].Error(), want) {
		t.Errorf("APISchedules = %v, %v, %v; want wide bad with %q", good, bad, err, want)
	}
}

func TestValidateUntilValidated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	no, yes := false, true
	resend := schedule.Schedule{ID: "r", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}
	got, err := st.Add(context.Background(), resend)
	if err != nil || got.UntilValidated == nil || !*got.UntilValidated || got.State != schedule.StateActive {
		t.Fatalf("resend-dcv without until_validated: %+v, %v; want it true", got, err)
	}
	resend.ID, resend.UntilValidated = "r2", &no
	if got, err := st.Add(context.Background(), resend); err != nil || got.UntilValidated == nil || *got.UntilValidated {
		t.Errorf("until_validated false: %+v, %v", got, err)
	}
	for _, v := range []*bool{&yes, &no} {
		s := schedule.Schedule{ID: "c", Cron: "@daily", Type: "send-cert", UntilValidated: v,
			Payload: json.RawMessage(`{"certificate_id": 5, "emails": ["ops@example.com"], "certificate_collect_format": "attachment"}`)}
		var ve *tasks.ValidationError
		if err := schedule.Validate(s, testRules, time.Now()); !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "until_validated" {
			t.Errorf("send-cert with until_validated %t: %v, want the field refused", *v, err)
		}
	}
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - id: a
    cron: "@daily"
    type: resend-dcv
    payload: {order_id: 1}
  - id: b
    cron: "@daily"
    type: set-emails
    payload: {order_id: 1, additional_emails: []}
    until_validated: false
`), schedule.Rules{})
	if err != nil || len(good) != 1 || !*good[0].UntilValidated || len(bad) != 1 || !strings.Contains(bad[0].Error(), "until_validated") {
		t.Errorf("file: good %+v, bad %v, %v", good, bad, err)
	}
}

// TestRules: a minimum interval of 0 takes the default, a negative one is
// refused; a Store needs Redis; queues.Reserved is no served queue.
func TestRules(t *testing.T) {
	t.Parallel()
	if err := (schedule.Rules{}).Validate(); err != nil {
		t.Errorf("zero rules: %v, want accepted (the defaults)", err)
	}
	if got := (schedule.Rules{}).WithDefaults().MinInterval; got != schedule.DefaultMinInterval {
		t.Errorf("default minimum interval %v, want %v", got, schedule.DefaultMinInterval)
	}
	if err := (schedule.Rules{MinInterval: -time.Second}).Validate(); err == nil || !strings.Contains(err.Error(), "minimum interval") {
		t.Errorf("negative minimum interval: %v, want refused", err)
	}
	if got := (schedule.Rules{}).WithDefaults().MaxSchedules; got != schedule.DefaultMaxSchedules {
		t.Errorf("default most schedules %d, want %d", got, schedule.DefaultMaxSchedules)
	}
	if err := (schedule.Rules{MaxSchedules: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "most schedules") {
		t.Errorf("negative most schedules: %v, want refused", err)
	}
	if _, err := schedule.NewStore(schedule.Config{}); err == nil || !strings.Contains(err.Error(), "Redis") {
		t.Errorf("a Store without Redis: %v, want refused", err)
	}
	// The queues of the rules are served ones (enqueue.Rules.Validate).
	reserved := schedule.Rules{Enqueue: enqueue.Rules{Queues: []string{"default", queues.Reserved}}}
	if err := reserved.Validate(); err == nil || err.Error() != queues.CheckServed(queues.Reserved).Error() {
		t.Errorf("%q among the queues: %v, want refused as a served queue", queues.Reserved, err)
	}
}

// TestTickPayload: an until_validated resend-dcv schedule's ticks carry
// only_if_pending, and one whose payload says only_if_pending false is
// refused, saying what to change, rather than have its false dropped; the
// others carry their payload as written, only_if_pending false included.
func TestTickPayload(t *testing.T) {
	t.Parallel()
	good, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: validated, cron: "@daily", type: resend-dcv, payload: {order_id: 1}}
  - {id: every-day, cron: "@daily", type: resend-dcv, payload: {order_id: 2}, until_validated: false}
  - {id: cert, cron: "@daily", type: send-cert, payload: {certificate_id: 5, emails: [ops@example.com], certificate_collect_format: attachment}}
  - {id: said-false, cron: "@daily", type: resend-dcv, payload: {order_id: 4, only_if_pending: false}, until_validated: false}
  - {id: contradicts, cron: "@daily", type: resend-dcv, payload: {order_id: 5, only_if_pending: false}}
`), testRules)
	if err != nil || len(good) != 4 || len(bad) != 1 {
		t.Fatalf("%d good, refused %v, %v; want 4 good and contradicts refused", len(good), bad, err)
	}
	if msg := bad[0].Error(); !strings.HasPrefix(msg, "schedules[4] (contradicts): ") ||
		!strings.Contains(msg, "payload.only_if_pending: false contradicts until_validated") ||
		!strings.Contains(msg, "give until_validated: false") {
		t.Errorf("contradicts: %q, want payload.only_if_pending refused, saying to give until_validated: false", msg)
	}
	for i, want := range []bool{true, false, false, false} {
		c := good[i]
		if c.EndsWhenValidated() != want {
			t.Errorf("%s: EndsWhenValidated %v, want %v", c.ID, !want, want)
		}
		p, err := c.TickPayload()
		if err != nil {
			t.Fatalf("%s: TickPayload: %v", c.ID, err)
		}
		rd, isResend := p.(tasks.ResendDCV)
		switch {
		case c.Type == tasks.TypeResendDCV && (!isResend || rd.OnlyIfPending != want || rd.OrderID != int64(i+1)):
			t.Errorf("%s: tick payload %+v, want order %d with only_if_pending %v", c.ID, p, i+1, want)
		case c.Type == tasks.TypeSendCert:
			if sc, ok := p.(tasks.SendCert); !ok || sc.CertificateID != 5 {
				t.Errorf("%s: tick payload %+v", c.ID, p)
			}
		}
	}
}

// TestStateWrites: Begin keeps the earliest start, End ends once with its
// reason, time and order status, only for the lease holder, and States
// reads several states at once, a hand-damaged field as its zero value.
func TestStateWrites(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	st := e.store()
	ctx := context.Background()
	mine := holdLeader(t, rdb)
	// a is a file schedule the leader sees for the first time: no state yet.
	c, bad, err := schedule.ParseFile([]byte("schedules: [{id: a, cron: \"@daily\", type: resend-dcv, payload: {order_id: 1}}]"), testRules)
	if err != nil || len(c) != 1 || len(bad) != 0 {
		t.Fatal(c, bad, err)
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), c); err != nil {
		t.Fatal(err)
	}
	if err := st.Begin(ctx, mine, "a", time.Unix(100, 0)); err != nil {
		t.Fatal(err)
	}
	if err := st.Begin(ctx, mine, "a", time.Unix(200, 0)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		ended, err := st.End(ctx, mine, "a", schedule.EndedValidated, time.Unix(int64(300+i), 0), []string{"issued", "canceled"}[i])
		if err != nil || ended != want {
			t.Errorf("End #%d = %v, %v; want ended %v", i+1, ended, err, want)
		}
	}
	if err := st.NoteTask(ctx, mine, "a", "sched:a:300"); err != nil {
		t.Fatal(err)
	}
	// b's state was damaged by hand: a zero and a negative time, runs not a number.
	if err := rdb.HSet(ctx, stateKey("b"), "since", "0", "last_tick", "-5", "last_run_at", "soon", "runs", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := st.States(ctx, nil); err != nil || got != nil {
		t.Errorf("States of none = %v, %v", got, err)
	}
	got, err := st.States(ctx, []string{"a", "b", "none"})
	if err != nil || len(got) != 3 {
		t.Fatalf("States = %+v, %v", got, err)
	}
	a := got[0]
	if a.Since.Unix() != 100 || !a.Ended || a.EndedReason != schedule.EndedValidated || a.EndedAt.Unix() != 300 ||
		a.OrderStatus != "issued" || a.LastTaskID != "sched:a:300" {
		t.Errorf("a's state %+v: want since 100 (the first Begin), ended at 300 validated with the order issued, its last task", a)
	}
	if one, err := st.State(ctx, "a"); err != nil || one != a {
		t.Errorf("State(a) = %+v, %v; want what States read, %+v", one, err, a)
	}
	for i, s := range got[1:] {
		if s != (schedule.State{}) {
			t.Errorf("state %d = %+v, want the zero State", i+1, s)
		}
	}
}

// TestAPISchedules: the scheduler gets the API's schedules judged again by
// the Store's rules; a schedule that no longer passes them, or does not
// decode, is named with its problem.
func TestAPISchedules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	if _, err := st.Add(ctx, schedule.Schedule{ID: "fine", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client()
	for id, js := range map[string]string{
		"gone-account": `{"id":"gone-account","cron":"@daily","type":"resend-dcv","payload":{"order_id":1,"account":"us"}}`,
		"garbage":      "not JSON",
		// stored before schedules were refused a sequence: every tick would repeat it
		"stamped": `{"id":"stamped","cron":"@daily","type":"set-emails","payload":{"order_id":1,"additional_emails":[],"sequence":1}}`,
		// kept under an id its JSON does not name: the listing skips it, so must the scheduler
		"moved": `{"id":"elsewhere","cron":"@daily","type":"resend-dcv","payload":{"order_id":1}}`,
	} {
		if err := rdb.HSet(ctx, apiSchedulesKey, id, js).Err(); err != nil {
			t.Fatal(err)
		}
	}
	good, bad, err := st.APISchedules(ctx)
	if err != nil || len(good) != 1 || good[0].ID != "fine" || good[0].Source != schedule.SourceAPI || len(bad) != 4 {
		t.Fatalf("APISchedules = %+v, %v, %v", good, bad, err)
	}
	if err := bad["gone-account"]; err == nil || !strings.Contains(err.Error(), "payload.account") {
		t.Errorf("gone-account: %v, want its account refused", err)
	}
	if err := bad["stamped"]; err == nil || !strings.Contains(err.Error(), "payload.sequence") {
		t.Errorf("stamped: %v, want its sequence refused", err)
	}
	if bad["garbage"] == nil {
		t.Error("garbage not named")
	}
	if err := bad["moved"]; err == nil || !strings.Contains(err.Error(), "another id") {
		t.Errorf("moved: %v, want it refused for its id", err)
	}
	l, err := st.Listing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := []string{}
	for _, sk := range l.Skipped {
		listed = append(listed, sk.ID)
	}
	if slices.Sort(listed); !slices.Equal(listed, []string{"garbage", "gone-account", "moved", "stamped"}) {
		t.Errorf("listing skips %v, want what APISchedules refuses", listed)
	}
}

// TestStatusOfASchedule: the listing, sorted by id, shows the next run
// until until passes, the last run, and an ended schedule's reason, time
// and order status instead of a next run.
func TestStatusOfASchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	soon := time.Now().Add(90 * time.Minute).Truncate(time.Second).UTC()
	later := soon.Add(2 * time.Hour)
	for _, s := range []schedule.Schedule{
		{ID: "c-over", Cron: "0 * * * *", Until: &soon, Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)},
		{ID: "a-hourly", Cron: "0 * * * *", Until: &later, Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 2}`)},
		{ID: "b-ended", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 3}`)},
	} {
		if _, err := st.Add(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	rdb := e.redis.Client()
	// c-over's last tick is its last one before until; b-ended has ended.
	lastTick := soon.Truncate(time.Hour)
	if err := rdb.HSet(ctx, stateKey("c-over"), "last_tick", lastTick.Unix(), "last_run_at", lastTick.Unix()+1, "runs", 2).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, stateKey("b-ended"), "ended", "1", "ended_reason", "validated", "ended_at", 1000, "order_status", "issued").Err(); err != nil {
		t.Fatal(err)
	}
	all, err := st.List(ctx)
	if err != nil || len(all) != 3 || all[0].ID != "a-hourly" || all[1].ID != "b-ended" || all[2].ID != "c-over" {
		t.Fatalf("List = %+v, %v; want a-hourly, b-ended, c-over", all, err)
	}
	a, b, c := all[0], all[1], all[2]
	if a.State != schedule.StateActive || a.NextRun == nil || a.NextRun.Minute() != 0 || !a.NextRun.After(time.Now()) || a.LastRun != nil {
		t.Errorf("a-hourly %+v: want active, next run at the next full hour, never run", a)
	}
	if b.State != schedule.StateEnded || !b.Ended || b.EndedReason != schedule.EndedValidated || b.EndedAt == nil ||
		b.EndedAt.Unix() != 1000 || b.OrderStatus != "issued" || b.NextRun != nil {
		t.Errorf("b-ended %+v: want ended validated at 1000, order issued, no next run", b)
	}
	if c.NextRun != nil || c.Runs != 2 || c.LastRun == nil || c.LastRun.Unix() != lastTick.Unix()+1 || c.EndedAt != nil {
		t.Errorf("c-over %+v: want no next run (the next tick is after until), 2 runs, the last run", c)
	}
}

// TestSkippedIDsAreBounded: a skipped entry's id is named as it is up to
// 128 bytes, and shortened and quoted beyond.
func TestSkippedIDsAreBounded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	longest, tooLong := strings.Repeat("a", 128), strings.Repeat("b", 129)
	for _, id := range []string{longest, tooLong} {
		if err := e.redis.Client().HSet(ctx, apiSchedulesKey, id, "not JSON").Err(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := st.Listing(ctx)
	if err != nil || len(l.Skipped) != 2 {
		t.Fatalf("Listing = %+v, %v", l, err)
	}
	if l.Skipped[1].ID != longest {
		t.Errorf("a 128-byte id named %q, want it whole", l.Skipped[1].ID)
	}
	if want := `"` + strings.Repeat("b", 64) + `"…`; l.Skipped[0].ID != want {
		t.Errorf("a 129-byte id named %q, want %q", l.Skipped[0].ID, want)
	}
}

// TestStateWritesNeedTheSchedule: once a schedule is deleted, a write of its
// state still under way (a leader that read the schedules before the delete
// begins, fires, notes or ends it) writes nothing and says so, so the
// schedule's state and history do not come back; added again, the same id
// starts afresh and runs max_runs times.
func TestStateWritesNeedTheSchedule(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	st := e.store()
	ctx := context.Background()
	mine := holdLeader(t, rdb)
	s := schedule.Schedule{ID: "again", Cron: "@every 1s", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`), MaxRuns: 2}
	if _, err := st.Add(ctx, s); err != nil {
		t.Fatal(err)
	}
	tick := time.Now().Truncate(time.Second)
	if recorded, _, err := st.RecordTick(ctx, mine, "again", tick, tick, "sched:again:1", 2); err != nil || !recorded {
		t.Fatalf("record while the schedule exists = %v, %v", recorded, err)
	}
	if err := st.Delete(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	keys := []string{stateKey("again"), asynqsched.HistoryKey("again")}
	later := tick.Add(time.Second)
	for _, w := range []struct {
		name  string
		write func() error
	}{
		{"Begin", func() error { return st.Begin(ctx, mine, "again", later) }},
		{"RecordTick", func() error {
			_, _, err := st.RecordTick(ctx, mine, "again", later, later, "sched:again:2", 2)
			return err
		}},
		{"NoteTask", func() error { return st.NoteTask(ctx, mine, "again", "sched:again:2") }},
		{"End", func() error {
			_, err := st.End(ctx, mine, "again", schedule.EndedValidated, later, "issued")
			return err
		}},
	} {
		if err := w.write(); !errors.Is(err, schedule.ErrNotFound) {
			t.Errorf("%s after the delete = %v, want ErrNotFound", w.name, err)
		}
		if n, err := rdb.Exists(ctx, keys...).Result(); err != nil || n != 0 {
			t.Errorf("%s after the delete brought back %d of the schedule's keys (%v)", w.name, n, err)
			if err := rdb.Del(ctx, keys...).Err(); err != nil { // judge the next write alone
				t.Fatal(err)
			}
		}
	}

	if _, err := st.Add(ctx, s); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{false, true} { // ended by the second run, not the first
		tick := later.Add(time.Duration(i+1) * time.Second)
		recorded, ended, err := st.RecordTick(ctx, mine, "again", tick, tick, "sched:again:x", 2)
		if err != nil || !recorded || ended != want {
			t.Errorf("run %d of the schedule added again = %v, %v, %v; want recorded, ended %v", i+1, recorded, ended, err, want)
		}
	}
	if got, err := st.Get(ctx, "again"); err != nil || got.Runs != 2 || got.EndedReason != schedule.EndedMaxRuns {
		t.Errorf("the schedule added again: %+v, %v; want 2 runs, ended at max_runs", got, err)
	}
}

// TestFileLeftovers: a schedule that leaves the file keeps its state and
// history for LeftoverTTL (kept again if it comes back), and `schedule rm`
// deletes them at once; nothing else is found.
func TestFileLeftovers(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	st := e.store()
	ctx := context.Background()
	file := func(ids ...string) []*schedule.Compiled {
		var y strings.Builder
		y.WriteString("schedules:\n")
		for i, id := range ids {
			fmt.Fprintf(&y, "  - {id: %s, cron: \"@daily\", type: resend-dcv, payload: {order_id: %d}}\n", id, i+1)
		}
		c, bad, err := schedule.ParseFile([]byte(y.String()), testRules)
		if err != nil || len(bad) != 0 {
			t.Fatal(bad, err)
		}
		return c
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), file("a", "b")); err != nil {
		t.Fatal(err)
	}
	fence := holdLeader(t, rdb)
	for _, id := range []string{"a", "b"} {
		if _, _, err := st.RecordTick(ctx, fence, id, time.Unix(100, 0), time.Unix(100, 0), "sched:"+id+":100", 0); err != nil {
			t.Fatal(err)
		}
	}
	ttl := func(key string) time.Duration {
		d, err := rdb.TTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	keys := func(id string) []string { return []string{"certmail:schedule:" + id, "asynq:scheduler_history:" + id} }
	if err := st.MirrorFile(ctx, e.leading("mine"), file("a")); err != nil { // b leaves the file
		t.Fatal(err)
	}
	for _, k := range keys("b") {
		if d := ttl(k); d <= schedule.LeftoverTTL-time.Minute || d > schedule.LeftoverTTL {
			t.Errorf("%s expires in %v after its schedule left the file, want %v", k, d, schedule.LeftoverTTL)
		}
	}
	for _, k := range keys("a") {
		if d := ttl(k); d != -1 {
			t.Errorf("%s of a schedule in the file expires in %v, want never", k, d)
		}
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), file("a", "b")); err != nil { // b is back
		t.Fatal(err)
	}
	for _, k := range keys("b") {
		if d := ttl(k); d != -1 {
			t.Errorf("%s of a schedule back in the file expires in %v, want never", k, d)
		}
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), file("a")); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "b"); err != nil {
		t.Errorf("delete of a schedule's leftovers: %v", err)
	}
	if n, err := rdb.Exists(ctx, keys("b")...).Result(); err != nil || n != 0 {
		t.Errorf("leftover keys after delete: %d, %v", n, err)
	}
	if err := st.Delete(ctx, "b"); !errors.Is(err, schedule.ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if err := st.Delete(ctx, "a"); !errors.Is(err, schedule.ErrFileSchedule) {
		t.Errorf("delete of a file schedule: %v, want ErrFileSchedule", err)
	}
	// a leaves the file, ended, and is added through the API under its id:
	// it starts anew, with no runs, no end and no expiry.
	if _, err := st.End(ctx, fence, "a", schedule.EndedUntil, time.Unix(200, 0), ""); err != nil {
		t.Fatal(err)
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), file()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Add(ctx, schedule.Schedule{ID: "a", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Get(ctx, "a"); err != nil || got.State != schedule.StateActive || got.Runs != 0 || got.Ended {
		t.Errorf("a added through the API after it left the file: %+v, %v; want active with no runs", got, err)
	}
	for _, k := range keys("a") {
		if d := ttl(k); d >= 0 {
			t.Errorf("%s of the added schedule expires in %v, want never", k, d)
		}
	}
}

// A file schedule whose id an API schedule has (added before the file's
// entry: a schedule moved from the API to the file) used to take that
// schedule's state: ended, it never fired; active, it went on from its runs
// and last tick. It now starts with a state of its own, which removing the
// API schedule leaves alone; an earlier version's state is told apart by
// ended_def.
func TestFileScheduleTakingAnAPIScheduleID(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	st := e.store()
	ctx := context.Background()
	fence := holdLeader(t, rdb)
	file := func(ids ...string) []*schedule.Compiled {
		var y strings.Builder
		y.WriteString("schedules:\n")
		for _, id := range ids {
			fmt.Fprintf(&y, "  - {id: %s, cron: \"@daily\", type: resend-dcv, payload: {order_id: 2222}}\n", id)
		}
		c, bad, err := schedule.ParseFile([]byte(y.String()), testRules)
		if err != nil || len(bad) != 0 {
			t.Fatal(bad, err)
		}
		return c
	}
	addAPI := func(id string) {
		t.Helper()
		if _, err := st.Add(ctx, schedule.Schedule{ID: id, Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1111}`)}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.RecordTick(ctx, fence, id, time.Unix(100, 0), time.Unix(100, 0), "sched:"+id+":100", 0); err != nil {
			t.Fatal(err)
		}
	}
	get := func(id string) schedule.Status {
		t.Helper()
		s, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	history := func(id string) int64 {
		t.Helper()
		n, err := rdb.ZCard(ctx, asynqsched.HistoryKey(id)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// ended: the API copy ended as validated; active: it ran once.
	addAPI("ended")
	if _, err := st.End(ctx, fence, "ended", schedule.EndedValidated, time.Unix(150, 0), "issued"); err != nil {
		t.Fatal(err)
	}
	addAPI("active")
	if err := st.MirrorFile(ctx, e.leading("mine"), file("ended", "active")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ended", "active"} {
		if s := get(id); s.Source != schedule.SourceFile || s.State != schedule.StateActive || s.Runs != 0 || s.LastRun != nil ||
			s.LastTaskID != "" || s.NextRun == nil {
			t.Errorf("%s after the file took the id: %+v; want the file's, active, with no runs", id, s)
		}
		if n := history(id); n != 0 {
			t.Errorf("%s: %d events of the API schedule in the file schedule's history", id, n)
		}
	}
	// The file schedule runs; publishing the file again keeps its state.
	if _, _, err := st.RecordTick(ctx, fence, "active", time.Unix(200, 0), time.Unix(200, 0), "sched:active:200", 0); err != nil {
		t.Fatal(err)
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), file("ended", "active")); err != nil {
		t.Fatal(err)
	}
	if s := get("active"); s.Runs != 1 || s.LastTaskID != "sched:active:200" {
		t.Errorf("file schedule after the file was published again: %+v; want its own run kept", s)
	}

	// Removing the API copy removes its entry alone.
	if err := st.Delete(ctx, "active"); err != nil {
		t.Fatal(err)
	}
	if ok, err := rdb.HExists(ctx, apiSchedulesKey, "active").Result(); err != nil || ok {
		t.Errorf("API entry after Delete: %v, %v; want gone", ok, err)
	}
	if s := get("active"); s.Source != schedule.SourceFile || s.Runs != 1 || s.LastTaskID != "sched:active:200" {
		t.Errorf("file schedule after the API copy was removed: %+v; want its state kept", s)
	}
	if n := history("active"); n != 1 {
		t.Errorf("file schedule's history after the API copy was removed: %d events, want 1", n)
	}
	if err := st.Delete(ctx, "active"); !errors.Is(err, schedule.ErrFileSchedule) {
		t.Errorf("second Delete = %v; want ErrFileSchedule", err)
	}

	// No API schedule may take a file schedule's id.
	_, err := st.Add(ctx, schedule.Schedule{ID: "active", Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)})
	if !errors.Is(err, schedule.ErrInFile) || !errors.Is(err, schedule.ErrExists) {
		t.Errorf("Add of a file schedule's id = %v; want ErrExists and ErrInFile", err)
	}
	if s := get("active"); s.Runs != 1 {
		t.Errorf("file schedule after a refused Add: %+v; want its state kept", s)
	}

	// The id leaves the file: the API copy fires again, with a state of
	// its own, which does not expire.
	if err := st.MirrorFile(ctx, e.leading("mine"), file("active")); err != nil {
		t.Fatal(err)
	}
	if s := get("ended"); s.Source != schedule.SourceAPI || s.Runs != 0 || s.Ended {
		t.Errorf("API schedule after the file gave its id up: %+v; want it active with a fresh state", s)
	}
	if d, err := rdb.TTL(ctx, stateKey("ended")).Result(); err != nil || d != -1 {
		t.Errorf("API schedule's state expires in %v (%v); want never", d, err)
	}
}

// A schedule whose id both sources held before this version shares one
// state, which names no source. It is the file schedule's when it ended
// under a file entry (ended_def): an ended file schedule must not fire
// again at the upgrade. Otherwise it is the API schedule's, and the file
// schedule starts anew; with no API schedule of its id it is the file's.
func TestStateOfAnEarlierVersion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rdb := e.redis.Client()
	st := e.store()
	ctx := context.Background()
	c, bad, err := schedule.ParseFile([]byte(`schedules:
  - {id: both-ended, cron: "@daily", type: resend-dcv, payload: {order_id: 1}}
  - {id: both-active, cron: "@daily", type: resend-dcv, payload: {order_id: 2}}
  - {id: file-active, cron: "@daily", type: resend-dcv, payload: {order_id: 3}}
`), testRules)
	if err != nil || len(bad) != 0 {
		t.Fatal(bad, err)
	}
	def, err := json.Marshal(c[0].Schedule) // both-ended's entry, as the leader publishes it
	if err != nil {
		t.Fatal(err)
	}
	api := `{"id":"%s","cron":"@daily","type":"resend-dcv","payload":{"order_id":9}}`
	for _, id := range []string{"both-ended", "both-active"} {
		if err := rdb.HSet(ctx, apiSchedulesKey, id, fmt.Sprintf(api, id)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for id, h := range map[string][]any{
		"both-ended":  {"since", 50, "runs", 3, "ended", "1", "ended_reason", "max_runs", "ended_def", fmt.Sprintf("%x", sha1.Sum(def))},
		"both-active": {"since", 50, "runs", 3, "last_tick", 90},
		"file-active": {"since", 50, "runs", 3, "last_tick", 90},
	} {
		if err := rdb.HSet(ctx, stateKey(id), h...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.MirrorFile(ctx, e.leading("mine"), c); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]struct {
		runs  int
		ended bool
	}{"both-ended": {3, true}, "both-active": {0, false}, "file-active": {3, false}} {
		s, err := st.State(ctx, id)
		if err != nil || s.Runs != want.runs || s.Ended != want.ended {
			t.Errorf("%s after the upgrade: %+v, %v; want %d runs, ended %v", id, s, err, want.runs, want.ended)
		}
	}
}

// TestStoredSchedulesJudgedAgainOnlyWhenChanged: the Store judges an API
// schedule again only when its JSON changed (the leader reads them every
// second): an unchanged one comes back as the same *Compiled; one changed
// to what the rules refuse is refused at the next read, by APISchedules
// and the listing alike, and one changed back is taken again; a deleted
// one is forgotten. Every Add and Delete moves Changes.
func TestStoredSchedulesJudgedAgainOnlyWhenChanged(t *testing.T) {
	t.Parallel()
	e := setup(t)
	st := e.store()
	ctx := context.Background()
	rdb := e.redis.Client()
	changes := func() int64 {
		t.Helper()
		n, err := st.Changes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := changes()
	for _, id := range []string{"kept", "edited"} {
		if _, err := st.Add(ctx, schedule.Schedule{ID: id, Cron: "0 9 * * 1-5", Timezone: "Europe/Berlin", Type: "resend-dcv",
			Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := changes(); got != before+2 {
		t.Errorf("Changes %d after 2 adds, want %d", got, before+2)
	}
	byID := func() (map[string]*schedule.Compiled, map[string]error) {
		t.Helper()
		good, bad, err := st.APISchedules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*schedule.Compiled{}
		for _, c := range good {
			out[c.ID] = c
		}
		return out, bad
	}
	first, _ := byID()
	again, _ := byID()
	if len(first) != 2 || again["kept"] != first["kept"] || again["edited"] != first["edited"] {
		t.Fatalf("read again: %v then %v; want the same two schedules, not judged again", first, again)
	}
	fast := `{"id":"edited","cron":"@every 1s","type":"resend-dcv","payload":{"order_id":1}}`
	rules := testRules
	rules.MinInterval = time.Minute
	strict, err := schedule.NewStore(schedule.Config{Redis: rdb, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	st = strict
	first, _ = byID() // the strict Store's own first read
	if err := rdb.HSet(ctx, apiSchedulesKey, "edited", fast).Err(); err != nil {
		t.Fatal(err)
	}
	got, bad := byID()
	if got["kept"] != first["kept"] || got["edited"] != nil || bad["edited"] == nil ||
		!strings.Contains(bad["edited"].Error(), "CERTMAIL_SCHEDULE_MIN_INTERVAL") {
		t.Errorf("after the edit: good %v, bad %v; want kept as it was and edited refused for its interval", got, bad)
	}
	l, err := st.Listing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Schedules) != 1 || l.Schedules[0].ID != "kept" || len(l.Skipped) != 1 || l.Skipped[0].ID != "edited" {
		t.Errorf("listing %+v, want kept listed and edited skipped, as APISchedules", l)
	}
	hourly := `{"id":"edited","cron":"@hourly","type":"resend-dcv","payload":{"order_id":1}}`
	if err := rdb.HSet(ctx, apiSchedulesKey, "edited", hourly).Err(); err != nil {
		t.Fatal(err)
	}
	if got, bad := byID(); got["edited"] == nil || got["edited"].Cron != "@hourly" || len(bad) != 0 {
		t.Errorf("after a second edit: good %v, bad %v; want edited taken as @hourly", got, bad)
	}
	before = changes()
	if err := st.Delete(ctx, "edited"); err != nil {
		t.Fatal(err)
	}
	if got := changes(); got != before+1 {
		t.Errorf("Changes %d after a delete, want %d", got, before+1)
	}
	if got, _ := byID(); len(got) != 1 || got["kept"] != first["kept"] {
		t.Errorf("after the delete: %v, want kept alone, as it was", got)
	}
}

// roundTrips is a go-redis hook that counts round trips: one per command,
// one per pipeline.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestListingReadsStatesInOneRoundTrip: a listing (GET /v1/schedules,
// certmail schedule list) costs the same round trips for 2 schedules as
// for 50, each shown with its own state, and no HGETALL per schedule.
func TestListingReadsStatesInOneRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	trips := map[int]int64{}
	for _, n := range []int{2, 50} {
		e := setup(t)
		rdb := e.redis.Client()
		counter := &roundTrips{}
		rdb.AddHook(counter)
		st, err := schedule.NewStore(schedule.Config{Redis: rdb, Rules: testRules})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			id := fmt.Sprintf("s%03d", i)
			if _, err := st.Add(ctx, schedule.Schedule{ID: id, Cron: "@hourly", Type: "resend-dcv",
				Payload: json.RawMessage(`{"order_id": 1}`)}); err != nil {
				t.Fatal(err)
			}
			if err := rdb.HSet(ctx, stateKey(id), "runs", i, "last_task_id", "task-"+id).Err(); err != nil {
				t.Fatal(err)
			}
		}
		e.redis.ResetStats()
		counter.n.Store(0)
		l, err := st.Listing(ctx)
		if err != nil {
			t.Fatal(err)
		}
		trips[n] = counter.n.Load()
		if cmds := e.redis.Commands(); cmds["hgetall"] != 2 {
			t.Errorf("n=%d: %d HGETALL in a listing, want 2 (the two schedules hashes, none per schedule)", n, cmds["hgetall"])
		}
		if len(l.Schedules) != n {
			t.Fatalf("n=%d: %d schedules listed", n, len(l.Schedules))
		}
		for i, s := range l.Schedules {
			if id := fmt.Sprintf("s%03d", i); s.ID != id || s.Runs != i || s.LastTaskID != "task-"+id {
				t.Errorf("n=%d: listed %s with runs %d, last task %q; want %s with runs %d, last task task-%s", n, s.ID, s.Runs, s.LastTaskID, id, i, id)
			}
		}
	}
	if trips[2] != trips[50] {
		t.Errorf("a listing took %d round trips for 2 schedules, %d for 50; want the same", trips[2], trips[50])
	}
}

// TestTimezoneIsAnIANAName: a time zone is an IANA zone name. Files of the
// zoneinfo database that time.LoadLocation opens but that are no zone a
// user means (posixrules, localtime, the posix/ and right/ trees, Factory,
// whose abbreviation is "-00"), Local (the process's zone), and names with
// an empty, "." or ".." component are refused as an unknown zone is; the
// names users mean, old links and Etc's offsets included, are accepted.
func TestTimezoneIsAnIANAName(t *testing.T) {
	t.Parallel()
	const notAZone = "not a time zone name such as Europe/Berlin"
	judge := func(tz string) error {
		return schedule.Validate(schedule.Schedule{ID: "tz", Cron: "@daily", Timezone: tz, Type: "resend-dcv",
			Payload: json.RawMessage(`{"order_id": 1}`)}, testRules, time.Now())
	}
	for _, tz := range []string{"posixrules", "Factory", "localtime", "Local", "Europe/", "../etc", "Europe/../UTC",
		"/etc/localtime", "posix/Europe/Berlin", "right/Europe/Berlin", "Europe//Berlin", "./UTC", "Europe/./Berlin",
		"Europe", "zone.tab", "Mars/Olympus", "europe/berlin"} {
		var ve *tasks.ValidationError
		if err := judge(tz); !errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "timezone" || ve.Errors[0].Message != notAZone {
			t.Errorf("timezone %q: %v, want one problem: timezone: %s", tz, err, notAZone)
		}
	}
	for _, tz := range []string{"Europe/Berlin", "UTC", "Etc/UTC", "Etc/GMT+5", "Etc/GMT-14", "US/Eastern", "EST5EDT",
		"GMT0", "America/Argentina/Buenos_Aires", "America/Port-au-Prince", " Asia/Tokyo "} {
		if err := judge(tz); err != nil {
			t.Errorf("timezone %q: %v, want accepted", tz, err)
		}
	}
}

// TestParseFileNamesYAMLProblems: an entry whose payload the YAML decoder
// refuses (an alias bomb) is reported with the decoder's reason, not as a
// payload that is no mapping; an entry with a merge key is reported as
// such, without follow-on problems of the fields it merged.
func TestParseFileNamesYAMLProblems(t *testing.T) {
	t.Parallel()
	bomb := "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" +
		"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
	var indented strings.Builder
	for line := range strings.Lines(bomb) {
		indented.WriteString("        " + line)
	}
	for _, tt := range []struct{ name, data, want string }{
		{"alias bomb", "schedules:\n  - id: bomb\n    cron: \"@daily\"\n    type: resend-dcv\n    payload:\n      order_id: 1\n      x:\n" +
			indented.String(), "payload: document contains excessive aliasing"},
		{"merge key", "schedules:\n  - &base {id: base, cron: \"@daily\", type: resend-dcv, payload: {order_id: 1}}\n  - <<: *base\n    id: merged\n",
			"schedules[1]: YAML merge keys (<<) are not supported: write each field of the entry"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, bad, err := schedule.ParseFile([]byte(tt.data), testRules)
			if err != nil || len(bad) != 1 || bad[0].Error() != tt.want && !strings.HasSuffix(bad[0].Error(), tt.want) {
				t.Fatalf("ParseFile = %v, %v; want one invalid entry: %q", bad, err, tt.want)
			}
		})
	}
}

// TestSundayAsSeven: a 7 in the day-of-week field (Sunday, to Vixie cron)
// is refused saying to write 0, wherever a schedule is judged; a step of 7
// is no day.
func TestSundayAsSeven(t *testing.T) {
	t.Parallel()
	const want = "cron: day of week 7: write 0 for Sunday (days of the week are 0-6, or SUN-SAT)"
	for _, spec := range []string{"0 9 * * 7", "0 9 * * 5-7", "0 9 * * 1,7"} {
		s := schedule.Schedule{ID: "sun", Cron: spec, Type: "resend-dcv", Payload: []byte(`{"order_id":1}`)}
		if err := schedule.Validate(s, testRules, time.Now()); err == nil || err.Error() != want {
			t.Errorf("Validate(%q) = %v, want %q", spec, err, want)
		}
		_, bad, err := schedule.ParseFile([]byte("schedules:\n  - {id: sun, cron: \""+spec+"\", type: resend-dcv, payload: {order_id: 1}}\n"), testRules)
		if err != nil || len(bad) != 1 || bad[0].Err.Error() != want {
			t.Errorf("ParseFile(%q) = %v, %v; want %q", spec, bad, err, want)
		}
	}
	s := schedule.Schedule{ID: "step", Cron: "0 9 * * */7", Type: "resend-dcv", Payload: []byte(`{"order_id":1}`)}
	if err := schedule.Validate(s, testRules, time.Now()); err != nil && strings.Contains(err.Error(), "write 0") {
		t.Errorf("Validate(*/7) = %v", err)
	}
}
