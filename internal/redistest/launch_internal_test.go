package redistest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A server that cannot bind its port because another test's server holds
// it is not taken for ready: Start would try another port, and the two
// tests do not share one server.
func TestTakenPortIsNotShared(t *testing.T) {
	t.Parallel()
	a := Start(t)
	b := &Server{tb: t, dir: t.TempDir(), port: a.Port()}
	if err := b.launch(); err == nil {
		b.Kill()
		t.Fatal("a second server was ready on a port the first one holds")
	}
	if err := a.Client().Ping(context.Background()).Err(); err != nil {
		t.Errorf("the first server: %v", err)
	}
}

// TestFreePortNotReturnedTwice: the kernel may offer a port again as soon
// as a killed server freed it; FreePort never returns it again within
// PortHold, so another test's server cannot answer on a killed one's port.
func TestFreePortNotReturnedTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d returned twice", port)
		}
		seen[port] = true
	}
}

// TestClaimPort: a claim of the last PortHold holds; an older one is taken
// over; a claim that cannot be written says why.
func TestClaimPort(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "6379")
	claim := func() bool {
		t.Helper()
		ok, err := claimPort(name)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !claim() {
		t.Fatal("a port never claimed: not claimed")
	}
	if claim() {
		t.Fatal("a port claimed a moment ago: claimed again")
	}
	old := time.Now().Add(-PortHold - time.Minute)
	if err := os.Chtimes(name, old, old); err != nil {
		t.Fatal(err)
	}
	if !claim() {
		t.Fatal("a claim older than PortHold: not taken over")
	}
	if claim() {
		t.Fatal("a claim just taken over: claimed again")
	}
	if ok, err := claimPort(filepath.Join(dir, "missing", "6380")); ok || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a claim in a directory that does not exist: %t, %v; want the error", ok, err)
	}
}
