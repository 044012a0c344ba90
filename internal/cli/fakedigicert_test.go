package cli

import "testing"

// The standalone fake runs for days in the compose sandbox: it must keep a
// bounded number of requests (the effect logs and bodies are bounded by the
// fake itself).
func TestFakeDigicertRecordLimit(t *testing.T) {
	t.Parallel()
	cfg := (&FakeDigicertCmd{AnyID: true}).config(fakeKeys{full: []string{"demo-key"}}, nil)
	if cfg.RecordLimit <= 0 {
		t.Errorf("RecordLimit %d: every request is kept for the life of the process", cfg.RecordLimit)
	}
}
