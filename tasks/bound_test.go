package tasks_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// TestUnknownMembersDoNotGrowMemory (not parallel: it reads the process's
// allocation total) holds Parse's record of the members it
// has met to its bound: a body of thousands of distinct unknown members
// costs each extra one its name and no more (no record of it), so a hostile
// body cannot make the check's memory grow with it beyond the body's own.
func TestUnknownMembersDoNotGrowMemory(t *testing.T) {
	body := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"order_id":1,"additional_emails":[]`)
		for i := range n {
			fmt.Fprintf(&b, `,"k%05d":1`, i)
		}
		b.WriteString("}")
		return []byte(b.String())
	}
	allocated := func(raw []byte) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, err := tasks.Parse(tasks.TypeSetEmails, raw); err == nil {
			t.Fatal("a body of unknown members was accepted")
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := body(2000), body(6000)
	perMember := float64(allocated(large)-allocated(small)) / 4000
	// A name of 6 bytes takes an 8-byte allocation (16 under -race); a record
	// of each name in a map took about 60 more.
	if perMember > 32 {
		t.Errorf("each extra unknown member allocates %.1f bytes, want at most 32 (its name)", perMember)
	}
	t.Logf("%.1f bytes per extra unknown member", perMember)
}
