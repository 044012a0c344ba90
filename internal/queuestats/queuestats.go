// Package queuestats exports the state of certmail's queues to Prometheus:
// tasks per queue and state, the age of the oldest pending task, whether a
// queue is paused, and the length of the dead-letter stream. The figures are
// read from Redis (asynq's inspector) at each scrape, so every process that
// registers the collector reports the same values; alert on max() over them.
//
// The served queues are reported by name. Any other queue asynq knows (a
// producer can create one by enqueueing into it) is counted under the queue
// label "other", so that their number cannot grow the series without limit.
package queuestats

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// scrapeTimeout bounds the Redis reads of one scrape.
const scrapeTimeout = 5 * time.Second

// OtherQueues is the queue label of every queue that is not served.
const OtherQueues = "other"

// Collector is a prometheus.Collector over asynq's queues and a Redis stream.
type Collector struct {
	inspector *asynq.Inspector
	rdb       redis.UniversalClient
	stream    string
	served    map[string]bool

	size, latency, paused, streamLen, up *prometheus.Desc
}

// New returns a collector reading through rdb (which it does not close),
// reporting the queues served by name (every other one as OtherQueues) and
// the length of the stream deadLetterStream.
func New(rdb redis.UniversalClient, deadLetterStream string, served []string) *Collector {
	set := map[string]bool{}
	for _, q := range served {
		set[q] = true
	}
	return &Collector{
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		rdb:       rdb,
		stream:    deadLetterStream,
		served:    set,
		size: prometheus.NewDesc("certmail_queue_tasks",
			"Tasks in a queue by state (pending, active, scheduled, retry, archived, completed).",
			[]string{"queue", "state"}, nil),
		latency: prometheus.NewDesc("certmail_queue_latency_seconds",
			"Age of the oldest pending task of a queue (0 when none is pending).", []string{"queue"}, nil),
		paused: prometheus.NewDesc("certmail_queue_paused",
			"1 when the queue is paused (from the dashboard or the inspector).", []string{"queue"}, nil),
		streamLen: prometheus.NewDesc("certmail_deadletter_stream_length",
			"Entries in the dead-letter stream certmail:deadletter.", nil, nil),
		up: prometheus.NewDesc("certmail_queue_stats_up",
			"1 when the last scrape could read the queues from Redis.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.latency, c.paused, c.streamLen, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A Redis failure is reported as
// certmail_queue_stats_up 0 rather than failing the whole scrape, so that
// the process's other metrics stay visible while Redis is down.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	up := 1.0
	if err := c.collectQueues(ch); err != nil {
		up = 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if n, err := c.rdb.XLen(ctx, c.stream).Result(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.streamLen, prometheus.GaugeValue, float64(n))
	} else {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
}

// queueFigures are what is reported of one queue label.
type queueFigures struct {
	sizes   map[string]int
	latency time.Duration
	paused  bool
}

func (c *Collector) collectQueues(ch chan<- prometheus.Metric) error {
	queues, err := c.inspector.Queues()
	if err != nil {
		return err
	}
	var firstErr error
	byLabel := map[string]*queueFigures{}
	for _, q := range queues {
		info, err := c.inspector.GetQueueInfo(q)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		label := q
		if !c.served[q] {
			label = OtherQueues
		}
		f := byLabel[label]
		if f == nil {
			f = &queueFigures{sizes: map[string]int{}}
			byLabel[label] = f
		}
		for state, n := range map[string]int{
			"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed,
		} {
			f.sizes[state] += n
		}
		f.latency = max(f.latency, info.Latency)
		f.paused = f.paused || info.Paused
	}
	for label, f := range byLabel {
		for state, n := range f.sizes {
			ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n), label, state)
		}
		ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, f.latency.Seconds(), label)
		paused := 0.0
		if f.paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, label)
	}
	return firstErr
}
