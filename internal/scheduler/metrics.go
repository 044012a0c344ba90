package scheduler

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the scheduler's Prometheus metrics.
type metrics struct {
	leader    prometheus.Gauge
	ticks     *prometheus.CounterVec
	failed    *prometheus.CounterVec
	schedules *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certmail_scheduler_is_leader",
			Help: "1 while this scheduler holds the leader lease and fires schedules.",
		}),
		ticks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_scheduler_ticks_total",
			Help: "Ticks fired: tasks enqueued by this scheduler, by schedule.",
		}, []string{"schedule"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_scheduler_enqueue_errors_total",
			Help: "Ticks that could not be enqueued at the first try, each counted once however often it is tried again, by schedule.",
		}, []string{"schedule"}),
		schedules: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certmail_schedules",
			Help: "Valid schedules known to this scheduler, by source (file, api).",
		}, []string{"source"}),
	}
	for _, c := range []prometheus.Collector{m.leader, m.ticks, m.failed, m.schedules} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register scheduler metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) setLeader(leader bool) {
	if leader {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}
