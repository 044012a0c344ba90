package schedule_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/schedule"
)

// A schedule key that another application took (WRONGTYPE), or that the
// ACL user may not use (NOPERM), makes the Store's errors say which keys
// the command used and what to do, once however deep the error; what the
// callers match (Redis's reply) still matches.
func TestStoreErrorsNameTheKeysRedisRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	admin := e.redis.Client()
	rules := testRules
	rules.MaxSchedules = 1
	st, err := schedule.NewStore(schedule.Config{Redis: admin, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	add := func(id string) error {
		_, err := st.Add(ctx, schedule.Schedule{ID: id, Cron: "@daily", Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)})
		return err
	}
	if err := add("first"); err != nil {
		t.Fatal(err)
	}
	// The state of the one schedule is another application's string: Add
	// reads it to make room (the store is full), and says so once.
	if err := admin.Set(ctx, stateKey("first"), "theirs", 0).Err(); err != nil {
		t.Fatal(err)
	}
	check(t, "Add making room", add("second"), "WRONGTYPE", "store schedule: read schedule states: WRONGTYPE",
		"; the key certmail:schedule:<id> holds a value of another type", "another application")
	if err := admin.Set(ctx, apiSchedulesKey, "theirs", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = st.List(ctx)
	check(t, "List", err, "WRONGTYPE", "read schedules: WRONGTYPE", "the key certmail:schedules holds", "database of its own")
	check(t, "Delete", st.Delete(ctx, "first"), "WRONGTYPE",
		"one of the keys certmail:schedules, certmail:schedules:file, certmail:schedule:<id>, asynq:scheduler_history:<id>, certmail:schedules:changes")

	if err := admin.Do(ctx, "ACL", "SETUSER", "other", "on", ">pw", "~asynq:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	other := redis.NewClient(&redis.Options{Addr: e.redis.Addr(), Username: "other", Password: "pw"})
	t.Cleanup(func() { _ = other.Close() })
	refused, err := schedule.NewStore(schedule.Config{Redis: other, Rules: testRules})
	if err != nil {
		t.Fatal(err)
	}
	_, err = refused.Changes(ctx)
	check(t, "Changes under an ACL without certmail:*", err, "NOPERM", "read schedule changes: NOPERM",
		"; Redis's ACL does not allow the user certmail connects as (REDIS_URL) the key certmail:schedules:changes", "~certmail:*")
}

// check fails t unless err is Redis's reply prefix (redis.HasErrorPrefix
// finds it through the wrapping) and its text says each of want, with the
// advice once.
func check(t *testing.T, what string, err error, prefix string, want ...string) {
	t.Helper()
	if err == nil || !redis.HasErrorPrefix(err, prefix) {
		t.Fatalf("%s: error %v, want Redis's %s", what, err, prefix)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not say %q", what, err, w)
		}
	}
	if n := strings.Count(err.Error(), "README"); n != 1 {
		t.Errorf("%s: error %q gives its advice %d times, want once", what, err, n)
	}
}
