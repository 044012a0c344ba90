package scheduler

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmail/certmail/internal/schedule"
)

// metrics are the scheduler's Prometheus metrics.
type metrics struct {
	leader    prometheus.Gauge
	ticks     *prometheus.CounterVec
	failed    *prometheus.CounterVec
	skipped   *prometheus.CounterVec
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
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_scheduler_ticks_skipped_total",
			Help: "Ticks never enqueued because they were older than the catch-up window when a leader could fire them, by schedule.",
		}, []string{"schedule"}),
		schedules: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certmail_schedules",
			Help: "Valid schedules known to this scheduler, by source (file, api); api only while it leads.",
		}, []string{"source"}),
	}
	for _, c := range []prometheus.Collector{m.leader, m.ticks, m.failed, m.skipped, m.schedules} {
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

// forgetLeading drops what only a leader keeps up to date once this
// scheduler no longer leads: the per-schedule series (a follower does not
// read the API's schedules, so it would keep those of schedules deleted
// meanwhile, one more label value for each, until it led again), the count
// of API schedules, and the notes of fire.go. The file's count stays: every
// replica reads the file.
func (s *Scheduler) forgetLeading() {
	for id := range s.series {
		s.dropSeries(id)
	}
	s.metrics.schedules.DeleteLabelValues(schedule.SourceAPI)
	s.notes = tickNotes{inspector: s.notes.inspector}
}
