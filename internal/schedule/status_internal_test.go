package schedule

import (
	"encoding/json"
	"testing"
	"time"
)

// TestNextRunFollowsTheLastTick: next_run is the tick the scheduler fires
// next, counted from the last tick (or from when the schedule began), not
// an interval from the moment one asks: for an @every schedule the two
// differ. A tick missed longer ago than the catch-up is not shown; one
// never begun counts from now. Read at a fixed clock.
func TestNextRunFollowsTheLastTick(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 4, 2, 42, 14, 0, time.UTC)
	st := &Store{now: func() time.Time { return now }}
	compiled := func(spec string) *Compiled {
		c, err := compile(Schedule{ID: "s", Cron: spec, Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}, SourceAPI, judge{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.TimeOnly, s)
		if err != nil {
			t.Fatal(err)
		}
		return time.Date(2026, 5, 4, tm.Hour(), tm.Minute(), tm.Second(), 0, time.UTC)
	}
	for _, tt := range []struct {
		name, spec string
		state      State
		want       string
	}{
		{"every, ticked", "@every 30s", State{Since: at("02:41:31"), LastTick: at("02:42:01")}, "02:42:31"},
		{"every, not yet ticked", "@every 30s", State{Since: at("02:42:04")}, "02:42:34"},
		{"every, not begun", "@every 30s", State{}, "02:42:44"},
		{"every, last tick long ago", "@every 30s", State{Since: at("01:00:00"), LastTick: at("01:00:30")}, "02:41:44"},
		{"cron, ticked", "*/5 * * * *", State{Since: at("02:00:00"), LastTick: at("02:40:00")}, "02:45:00"},
	} {
		s := st.status(compiled(tt.spec), tt.state)
		if s.NextRun == nil || !s.NextRun.Equal(at(tt.want)) {
			t.Errorf("%s: next run %v, want %s", tt.name, s.NextRun, tt.want)
		}
	}
}
