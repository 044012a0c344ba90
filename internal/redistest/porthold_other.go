//go:build !linux

package redistest

// portHold holds nothing outside Linux, whose rules for binding next to a
// socket that does not listen porthold_linux.go relies on: a stopped
// server's port stays free for anyone meanwhile, and Relaunch fails if
// another listener took it.
type portHold struct{}

func holdPortSocket(int) (*portHold, error) { return nil, nil }

func (h *portHold) release() {}
