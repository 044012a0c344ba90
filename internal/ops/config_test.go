package ops_test

import (
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redisconn"
)

// A Config whose served queues (Rules.Queues) hold queues.Reserved is
// refused as the worker's is, by New too, before it opens anything: the
// Service would enqueue into a queue whose figures the metrics add to the
// unserved queues'. The queues whose dead letters go (PurgeQueues, for dlq
// purge) may hold it: a raw producer's queue of that name has dead
// letters too.
func TestConfigRefusesReservedQueue(t *testing.T) {
	t.Parallel()
	want := queues.CheckServed(queues.Reserved).Error()
	served := ops.Config{Redis: &redisconn.Conn{}, Rules: enqueue.Rules{Queues: []string{"default", queues.Reserved}}}
	if err := served.WithDefaults().Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate with %q served: %v, want %q", queues.Reserved, err, want)
	}
	if _, err := ops.New(served); err == nil || err.Error() != want {
		t.Errorf("New with %q served: %v, want %q", queues.Reserved, err, want)
	}
	purged := ops.Config{Redis: &redisconn.Conn{}, PurgeQueues: []string{"default", queues.Reserved}}
	if err := purged.WithDefaults().Validate(); err != nil {
		t.Errorf("Validate with %q to purge: %v, want accepted", queues.Reserved, err)
	}
	purged.PurgeQueues = []string{"Bad Name"}
	if err := purged.WithDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "Bad Name") {
		t.Errorf("Validate with a queue name none may have to purge: %v, want refused", err)
	}
}
