package redistest

import (
	"context"
	"testing"
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
