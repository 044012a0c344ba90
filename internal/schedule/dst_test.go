package schedule_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones of the tests, on a machine without a zoneinfo database too

	"github.com/certmail/certmail/internal/schedule"
)

// TestNextAcrossDSTChanges: a cron spec with a fixed hour fires once per
// local wall-clock time, as Vixie cron does. When the clocks go back it
// fires in the first pass of the repeated hour only (a daily 02:30 in
// Berlin fired at 02:30 CEST and again at 02:30 CET); when they go forward
// a tick whose time is skipped fires once, right after the jump (the
// daily 02:30 had no tick that day). A spec whose hour is "*" follows
// elapsed time, and fires in both passes. The dates are Europe/Berlin's
// changes of 2026 (29 March, 25 October) and New York's of 1 November.
func TestNextAcrossDSTChanges(t *testing.T) {
	t.Parallel()
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tt := range []struct {
		name, cron, zone, from string
		want                   []string // the ticks that follow from, in UTC
	}{
		{"daily, autumn: once, in the first pass", "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z",
			[]string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		{"daily, spring: right after the jump", "30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"daily, from inside the second pass", "*/10 2 * * *", "Europe/Berlin", "2026-10-25T01:05:00Z",
			[]string{"2026-10-26T01:00:00Z", "2026-10-26T01:10:00Z"}},
		{"twice in the skipped hour: one tick", "0,30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z", "2026-03-30T00:30:00Z"}},
		{"from the jump itself", "0,30 2 * * *", "Europe/Berlin", "2026-03-29T01:00:00Z",
			[]string{"2026-03-30T00:00:00Z"}},
		{"just before a skipped tick", "30 2 * * 0", "Europe/Berlin", "2026-03-29T00:59:59Z",
			[]string{"2026-03-29T01:00:00Z", "2026-04-05T00:30:00Z"}},
		{"hourly: both passes", "30 * * * *", "Europe/Berlin", "2026-10-25T00:00:00Z",
			[]string{"2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"}},
		{"hourly: across the jump", "30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z",
			[]string{"2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"}},
		{"New York, autumn", "30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
			[]string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"Lord Howe's half hour: no day left out", "0 0 * * *", "Australia/Lord_Howe", "2026-04-04T13:00:00Z",
			[]string{"2026-04-05T13:30:00Z", "2026-04-06T13:30:00Z"}},
		{"an ordinary day", "0 9 * * *", "Europe/Berlin", "2026-05-04T12:00:00Z",
			[]string{"2026-05-05T07:00:00Z", "2026-05-06T07:00:00Z"}},
		{"@every follows elapsed time", "@every 1h", "Europe/Berlin", "2026-10-25T00:30:00Z",
			[]string{"2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			good, bad, err := schedule.ParseFile(fmt.Appendf(nil, "schedules: [{id: s, cron: %q, timezone: %s, type: resend-dcv, payload: {order_id: 1}}]",
				tt.cron, tt.zone), testRules)
			if err != nil || len(bad) != 0 || len(good) != 1 {
				t.Fatal(good, bad, err)
			}
			var got []string
			for tick := utc(tt.from); len(got) < len(tt.want); {
				tick = good[0].Next(tick)
				got = append(got, tick.UTC().Format(time.RFC3339))
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("ticks %v, want %v", got, tt.want)
			}
		})
	}
}
