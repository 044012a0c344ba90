package redistest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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
// as a killed server freed it; FreePort does not return it again within
// PortHold, so another test's server cannot answer on a killed one's port.
func TestFreePortNotReturnedTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 100 {
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

// TestClaimPort: a claim of the last PortHold holds and says since when;
// an older one is taken over; a claim that cannot be written says why.
func TestClaimPort(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "6379")
	claim := func() (bool, time.Time) {
		t.Helper()
		ok, since, err := claimPort(name)
		if err != nil {
			t.Fatal(err)
		}
		return ok, since
	}
	if ok, _ := claim(); !ok {
		t.Fatal("a port never claimed: not claimed")
	}
	if ok, since := claim(); ok || time.Since(since) > time.Minute {
		t.Fatalf("a port claimed a moment ago: claimed again (%t) or held since %v", ok, since)
	}
	old := time.Now().Add(-PortHold - time.Minute)
	if err := os.Chtimes(name, old, old); err != nil {
		t.Fatal(err)
	}
	if ok, _ := claim(); !ok {
		t.Fatal("a claim older than PortHold: not taken over")
	}
	if ok, _ := claim(); ok {
		t.Fatal("a claim just taken over: claimed again")
	}
	if ok, _, err := claimPort(filepath.Join(dir, "missing", "6380")); ok || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a claim in a directory that does not exist: %t, %v; want the error", ok, err)
	}
}

// TestHeldFromTheFreeing: a server's port is held from the moment the
// server exits, however long it ran, so a test that killed it late in a
// long test still finds nothing there.
func TestHeldFromTheFreeing(t *testing.T) {
	s := Start(t)
	dir, err := claimDir()
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, strconv.Itoa(s.Port()))
	long := time.Now().Add(-PortHold - time.Minute)
	if err := os.Chtimes(name, long, long); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if ok, _, err := claimPort(name); ok || err != nil {
		t.Fatalf("the port of a server killed a moment ago: claimed (%t, %v)", ok, err)
	}
}

// TestEveryPortOfferedHeld: when every port the kernel offers is held, as
// with many test runs at once on one machine, FreePort takes the one held
// the longest, and holds it from now, rather than fail.
func TestEveryPortOfferedHeld(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for port, age := range map[int]time.Duration{40001: time.Minute, 40003: 3 * time.Minute, 40005: 2 * time.Minute} {
		name := filepath.Join(dir, strconv.Itoa(port))
		if err := os.WriteFile(name, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(name, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	offers := 0
	port, err := freePort(dir, func() (int, error) {
		offers++
		return 40001 + 2*(offers%3), nil
	})
	if err != nil || port != 40003 {
		t.Fatalf("every offered port held: %d, %v; want 40003, held the longest", port, err)
	}
	if ok, since, err := claimPort(filepath.Join(dir, "40003")); ok || err != nil || time.Since(since) > time.Minute {
		t.Errorf("the port taken: claimed again (%t, %v) or held since %v; want held from now", ok, err, since)
	}
}
