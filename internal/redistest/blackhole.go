package redistest

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Blackhole returns the loopback address of a listener that never accepts
// a connection and whose listen queue is full: the kernel drops the SYN of
// every further connection, so a dial to it neither succeeds nor is
// refused and ends only at the dialer's timeout, as a dial to a host behind
// a firewall that drops packets does. Closed when the test ends.
func Blackhole(tb testing.TB) string {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "blackhole")
	tb.Cleanup(func() { _ = f.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // net.Listen would take the system's backlog
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the listen queue: connections complete until it is full (one or
	// two, with a backlog of 0), then a dial times out.
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = c.Close() })
	}
	tb.Fatalf("blackhole %s: the listen queue took 16 connections and is not full", addr)
	return ""
}
