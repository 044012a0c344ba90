package redisconn_test

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// A Redis that may evict certmail's keys (any maxmemory-policy other than
// noeviction) gets one ERROR line naming its policy and the risk; the
// default policy gets none; a server that refuses INFO gets one WARN line.
func TestCheckEviction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		args     []string
		noInfo   bool
		errors   int
		warnings int
	}{
		{name: "default"},
		{name: "noeviction", args: []string{"--maxmemory", "64mb", "--maxmemory-policy", "noeviction"}},
		{name: "volatile-lru", args: []string{"--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"}, errors: 1},
		{name: "allkeys-lru", args: []string{"--maxmemory-policy", "allkeys-lru"}, errors: 1},
		{name: "INFO refused", noInfo: true, warnings: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t, redistest.Options{Args: tc.args})
			ctx := context.Background()
			if tc.noInfo {
				if err := srv.Client().Do(ctx, "ACL", "SETUSER", "default", "-info").Err(); err != nil {
					t.Fatal(err)
				}
			}
			conn, err := redisconn.Open(srv.URL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Client.Close() })
			core, logs := observer.New(zap.DebugLevel)
			conn.CheckEviction(ctx, zap.New(core), "tasks emailed twice")
			errs := logs.FilterLevelExact(zap.ErrorLevel).All()
			if len(errs) != tc.errors {
				t.Fatalf("%d ERROR lines, want %d: %v", len(errs), tc.errors, errs)
			}
			for _, e := range errs {
				f := e.ContextMap()
				if f["maxmemory_policy"] != tc.name || f["risk"] != "tasks emailed twice" {
					t.Errorf("ERROR line's fields %v: want maxmemory_policy %s and the risk", f, tc.name)
				}
			}
			if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != tc.warnings {
				t.Errorf("%d WARN lines, want %d", n, tc.warnings)
			}
		})
	}
}
