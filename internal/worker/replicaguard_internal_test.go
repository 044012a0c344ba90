package worker

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// A shortage that starts and one that ends at the same moment leave the
// gauge agreeing with the flag. The gauge here runs, inside the first
// Set(1) (the shortage starting), the end of the shortage, and gives it a
// moment to finish: when the flag and the gauge change in separate steps,
// the end's Set(0) comes before the start's Set(1), and the gauge stays at
// 1 for a worker no longer short.
func TestReplicaGuardGaugeAgreesWithFlag(t *testing.T) {
	t.Parallel()
	g := &replicaGuard{}
	gauge := &interleavingGauge{Gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	ended := make(chan struct{})
	gauge.during = func() {
		go func() {
			defer close(ended)
			g.acknowledged(zap.NewNop(), 1)
		}()
		select {
		case <-ended:
		case <-time.After(200 * time.Millisecond): // held back until the start is done
		}
	}
	g.gauge = gauge
	g.fallShort(zap.NewNop(), &notReplicatedError{asked: 1}, 0)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the end of the shortage did not return")
	}
	if v := testutil.ToFloat64(gauge.Gauge); v != gaugeValue(g.isShort()) {
		t.Errorf("gauge %v, short %v: want them to agree", v, g.isShort())
	}
}

// interleavingGauge runs during once, inside its first Set(1).
type interleavingGauge struct {
	prometheus.Gauge
	during func()
	once   sync.Once
}

func (g *interleavingGauge) Set(v float64) {
	if v == 1 {
		g.once.Do(g.during)
	}
	g.Gauge.Set(v)
}
