package dev_test

import (
	"context"
	"testing"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/dev"
	"github.com/certmail/certmail/internal/queues"
)

// dev.Config refuses queues.Reserved among its queues as the worker's
// configuration does, in Validate and so in Run before it starts
// anything: the worker would only refuse it once the embedded Redis and
// the fake were up.
func TestConfigRefusesReservedQueue(t *testing.T) {
	t.Parallel()
	want := queues.CheckServed(queues.Reserved).Error()
	cfg := dev.Config{Logger: zap.NewNop(), Queues: map[string]int{"default": 1, queues.Reserved: 1}}
	if err := cfg.WithDefaults().Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate with %q among the queues: %v, want %q", queues.Reserved, err, want)
	}
	if err := dev.Run(context.Background(), cfg, nil); err == nil || err.Error() != want {
		t.Errorf("Run with %q among the queues: %v, want %q", queues.Reserved, err, want)
	}
}
