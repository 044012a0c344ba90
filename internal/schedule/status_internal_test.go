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
		{"every, last tick long ago", "@every 30s", State{Since: at("01:00:00"), LastTick: at("01:00:30")}, "02:41:30"},
		{"cron, ticked", "*/5 * * * *", State{Since: at("02:00:00"), LastTick: at("02:40:00")}, "02:45:00"},
	} {
		s := st.status(compiled(tt.spec), tt.state)
		if s.NextRun == nil || !s.NextRun.Equal(at(tt.want)) {
			t.Errorf("%s: next run %v, want %s", tt.name, s.NextRun, tt.want)
		}
	}
}

// TestTickBaseKeepsADueTickDue: the tick an @every schedule is due for
// stays the next tick until it is the catch-up late, whatever its interval,
// and past that the next one on the schedule's own phase follows; a cron
// spec's next tick after a long gap is the first within the catch-up.
func TestTickBaseKeepsADueTickDue(t *testing.T) {
	t.Parallel()
	last := time.Date(2026, 5, 4, 2, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		spec  string
		after time.Duration // since the tick after last fell due
		want  time.Duration // the next tick, from last
	}{
		{"@every 2m", 10 * time.Millisecond, 2 * time.Minute},
		{"@every 2m", 59 * time.Second, 2 * time.Minute},
		{"@every 2m", 61 * time.Second, 4 * time.Minute},
		{"@every 90s", 30 * time.Second, 90 * time.Second},
		{"@every 1h", 2 * time.Second, time.Hour},
		{"@every 1h", 5*time.Hour + 30*time.Second, 6 * time.Hour},
		{"@every 1m", 0, time.Minute},
		{"@every 1m", 30 * time.Second, time.Minute},
		{"@every 1m", 61 * time.Second, 2 * time.Minute},
		{"@every 30s", 10 * time.Minute, 9*time.Minute + 30*time.Second}, // exactly the catch-up late: still fired
		{"*/5 * * * *", 10 * time.Second, 5 * time.Minute},
		{"*/5 * * * *", 3 * time.Hour, 3*time.Hour + 5*time.Minute},
	} {
		c, err := compile(Schedule{ID: "s", Cron: tt.spec, Type: "resend-dcv", Payload: json.RawMessage(`{"order_id": 1}`)}, SourceAPI, judge{})
		if err != nil {
			t.Fatal(err)
		}
		now := c.Next(last).Add(tt.after)
		if got := c.Next(c.TickBase(State{Since: last.Add(-time.Hour), LastTick: last}, now, DefaultCatchUp)); !got.Equal(last.Add(tt.want)) {
			t.Errorf("%s, %v after the tick fell due: next tick %v, want %v", tt.spec, tt.after, got, last.Add(tt.want))
		}
	}
}
