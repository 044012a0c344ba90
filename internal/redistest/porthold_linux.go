package redistest

import (
	"fmt"
	"syscall"
)

// portHold keeps a stopped server's port out of the kernel's choice of a
// free port, for a listener on 127.0.0.1:0 or an outgoing connection of any
// test on the machine, until the server is launched again on it: a TCP
// socket bound to 127.0.0.1:port with SO_REUSEADDR and not listening. A
// connection to the port is still refused, and redis-server, which binds
// with SO_REUSEADDR too, takes the port while it is held (Linux lets a
// second SO_REUSEADDR socket bind next to one that does not listen, and
// gives such a port to no bind of port 0).
type portHold struct{ fd int }

// holdPortSocket binds the hold's socket; its descriptor is not passed on
// to the processes the test starts.
func holdPortSocket(port int) (*portHold, error) {
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("bind 127.0.0.1:%d: %w", port, err)
	}
	return &portHold{fd: fd}, nil
}

// release frees the port; releasing nil does nothing.
func (h *portHold) release() {
	if h != nil {
		_ = syscall.Close(h.fd)
	}
}
