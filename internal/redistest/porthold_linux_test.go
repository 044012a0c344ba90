package redistest

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
)

// A killed server's port has an owner until Relaunch (a bind without
// SO_REUSEADDR, as the kernel checks a port it would give a listener on
// port 0, finds it taken), yet refuses connections as a port nobody
// listens on does; Relaunch gets it back.
func TestKilledServersPortIsHeldUntilRelaunch(t *testing.T) {
	t.Parallel()
	srv := Start(t)
	srv.Kill()
	if err := bindExclusive(srv.Port()); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind to the killed server's port: %v, want EADDRINUSE", err)
	}
	if c, err := net.Dial("tcp", srv.Addr()); err == nil {
		c.Close()
		t.Fatal("a connection to the killed server's port was taken")
	}
	srv.Relaunch()
	if err := srv.Client().Ping(context.Background()).Err(); err != nil {
		t.Fatalf("after Relaunch: %v", err)
	}
}

// bindExclusive binds, then closes, a socket on 127.0.0.1:port without
// SO_REUSEADDR.
func bindExclusive(port int) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
}
