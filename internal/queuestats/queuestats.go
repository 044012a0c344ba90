// Package queuestats exports the state of certmail's queues to Prometheus:
// tasks per queue and state, the age of the oldest pending task, whether a
// queue is paused, and the length of the dead-letter stream. The figures are
// read from Redis at each scrape, so every process that registers the
// collector reports the same values; alert on max() over them.
//
// The served queues are reported by name. Any other queue asynq knows (a
// producer can create one by enqueueing into it) is counted under the queue
// label "other" (OtherQueues, a name no served queue may have: New refuses
// it), so that their number cannot grow the series without limit;
// the figures of at most MaxOtherQueues of them are read per scrape, so
// that their number cannot grow the scrape's work either.
//
// A scrape waits for the figures for Config.Budget at most, whatever Redis
// does (a Redis that takes commands in and never answers included), and
// reports certmail_queue_stats_up 0 when they did not come, so that the
// process's other series are served within Prometheus's scrape timeout.
// The reads run in one goroutine of their own, one at a time: a scrape that
// finds them running waits for their figures rather than start more.
//
// The stream's length is read apart from the queues: when Redis refuses it
// (the key holds another type, on a Redis shared with other programs, or
// an ACL denies it), the stream's gauge alone is left out, with one WARN
// line until it can be read again, and the queues are reported as usual.
package queuestats

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/redisconn"
)

// DefaultBudget is how long a scrape waits for the figures: half of
// Prometheus's default scrape timeout (10 s), which the ServiceMonitor in
// deploy/monitoring sets.
const DefaultBudget = 5 * time.Second

// MaxOtherQueues is the most queues not served whose figures a scrape reads
// and sums under OtherQueues; certmail_queue_other_queues counts them all.
const MaxOtherQueues = 100

// OtherQueues is the queue label of every queue that is not served: the
// name queues.Reserved, which no served queue may have.
const OtherQueues = queues.Reserved

// Config is what a Collector reads.
type Config struct {
	// Redis is the client the figures are read through; the collector does
	// not close it. A client that honours deadlines (redisconn's) ends the
	// reads at the budget; another one ends them at its read timeout, and
	// the scrapes meanwhile still answer within the budget.
	Redis redis.UniversalClient
	// DeadLetterStream is the stream whose length is reported.
	DeadLetterStream string
	// Served are the queues reported by name; OtherQueues is not one.
	Served []string
	// Budget bounds the wait of one scrape for the figures, and the reads
	// themselves on a client that honours deadlines (DefaultBudget when 0).
	Budget time.Duration
	// Logger gets the WARN line of a stream whose length Redis refuses to
	// read (none when nil).
	Logger *zap.Logger
}

// Validate reports a served queue whose series would mix with those of the
// unserved queues: one named OtherQueues, or a name no worker takes.
func (c Config) Validate() error {
	for _, q := range c.Served {
		if err := queues.CheckServed(q); err != nil {
			return fmt.Errorf("queue stats: %w", err)
		}
	}
	return nil
}

// Collector is a prometheus.Collector over asynq's queues and a Redis stream.
type Collector struct {
	rdb    redis.UniversalClient
	stream string
	served []string // sorted
	budget time.Duration
	log    *zap.Logger

	// streamRefused is set while Redis refuses the stream's length, so
	// that its WARN line is written once, not at every scrape.
	streamRefused atomic.Bool

	size, latency, paused, streamLen, others, up *prometheus.Desc

	mu      sync.Mutex
	running *reading // the reads in progress, nil when none are
}

// reading is one run of the reads; metrics and err are set before done is
// closed.
type reading struct {
	done    chan struct{}
	metrics []prometheus.Metric
	err     error
}

// New returns a collector of cfg's queues and stream (after Validate).
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	served := slices.Clone(cfg.Served)
	slices.Sort(served)
	return &Collector{
		rdb:    cfg.Redis,
		stream: cfg.DeadLetterStream,
		served: slices.Compact(served),
		budget: cmp.Or(cfg.Budget, DefaultBudget),
		log:    cmp.Or(cfg.Logger, zap.NewNop()),
		size: prometheus.NewDesc("certmail_queue_tasks",
			"Tasks in a queue by state (pending, active, scheduled, retry, archived, completed).",
			[]string{"queue", "state"}, nil),
		latency: prometheus.NewDesc("certmail_queue_latency_seconds",
			"Age of the oldest pending task of a queue (0 when none is pending).", []string{"queue"}, nil),
		paused: prometheus.NewDesc("certmail_queue_paused",
			"1 when the queue is paused (from the dashboard or the inspector).", []string{"queue"}, nil),
		streamLen: prometheus.NewDesc("certmail_deadletter_stream_length",
			"Entries in the dead-letter stream certmail:deadletter.", nil, nil),
		others: prometheus.NewDesc("certmail_queue_other_queues",
			fmt.Sprintf("Queues asynq knows that the worker does not serve; the queue=\"other\" figures sum %d of them at most.", MaxOtherQueues),
			nil, nil),
		up: prometheus.NewDesc("certmail_queue_stats_up",
			"1 when the last scrape could read the queues from Redis within its budget.", nil, nil),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.latency, c.paused, c.streamLen, c.others, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It waits for the figures for the
// budget at most; when a read failed or they did not come in time, it
// reports certmail_queue_stats_up 0 and no queue figures, rather than fail
// or hold up the whole scrape, so that the process's other series stay
// visible while Redis is away or stalled.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	timer := time.NewTimer(c.budget)
	defer timer.Stop()
	r := c.reading()
	up := 0.0
	select {
	case <-r.done:
		if r.err == nil {
			up = 1
			for _, m := range r.metrics {
				ch <- m
			}
		}
	case <-timer.C:
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
}

// reading returns the reads in progress, starting them when none are.
func (c *Collector) reading() *reading {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running == nil {
		r := &reading{done: make(chan struct{})}
		c.running = r
		go c.run(r)
	}
	return c.running
}

// run reads the figures into r under the budget, then lets the next scrape
// start new reads.
func (c *Collector) run(r *reading) {
	ctx, cancel := context.WithTimeout(context.Background(), c.budget)
	defer cancel()
	r.metrics, r.err = c.read(ctx)
	c.mu.Lock()
	c.running = nil
	c.mu.Unlock()
	close(r.done)
}

// allQueuesKey is the set of the queues asynq knows; those of one queue
// are queues.AsynqKey's.
const allQueuesKey = queues.AsynqQueuesKey

// states are the task states reported, in the order statsScript reads them.
var states = [...]string{"pending", "active", "scheduled", "retry", "archived", "completed"}

// statsScript reads, for each queue, its tasks by state, whether it is
// paused and when its oldest pending task became pending: asynq's own
// figures (its currentStatsCmd), without the memory sampling and the
// per-queue round trips of its Inspector. One run reads every queue at
// once, so that a queue's figures are of one moment.
//
//	KEYS[7i+1..7i+7]  asynq:{q}:pending, :active, :scheduled, :retry, :archived, :completed, :paused
//	ARGV[i+1]         asynq:{q}:t: (a task's hash is ARGV[i+1] .. id)
//
// It returns, per queue, the six counts, 1 or 0 for the pause, and the
// oldest pending task's pending_since (Unix nanoseconds, as text), or 0.
var statsScript = redis.NewScript(`
local res = {}
for i = 0, #ARGV - 1 do
	local k = 7 * i
	local pending = redis.call("LLEN", KEYS[k + 1])
	table.insert(res, pending)
	table.insert(res, redis.call("LLEN", KEYS[k + 2]))
	for j = 3, 6 do
		table.insert(res, redis.call("ZCARD", KEYS[k + j]))
	end
	table.insert(res, redis.call("EXISTS", KEYS[k + 7]))
	local since = 0
	if pending > 0 then
		local id = redis.call("LINDEX", KEYS[k + 1], -1)
		since = redis.call("HGET", ARGV[i + 1] .. id, "pending_since") or 0
	end
	table.insert(res, since)
end
return res`)

// figuresPerQueue is how many values statsScript returns per queue.
const figuresPerQueue = 8

// read reads the figures in two round trips: which queues asynq knows (the
// served ones, and at most MaxOtherQueues others: one SSCAN page, sorted)
// with the stream's length, then the queues' figures.
func (c *Collector) read(ctx context.Context) ([]prometheus.Metric, error) {
	l, err := c.listQueues(ctx)
	if err != nil {
		return nil, err
	}
	metrics := []prometheus.Metric{
		prometheus.MustNewConstMetric(c.others, prometheus.GaugeValue, float64(l.known-int64(l.served))),
	}
	if c.streamRead(l.streamErr) {
		metrics = append(metrics, prometheus.MustNewConstMetric(c.streamLen, prometheus.GaugeValue, float64(l.streamLen)))
	}
	if len(l.names) == 0 {
		return metrics, nil
	}
	byLabel, labels, err := c.figures(ctx, l.names, l.served)
	if err != nil {
		return nil, err
	}
	for _, label := range labels {
		f := byLabel[label]
		for s, n := range f.sizes {
			metrics = append(metrics, prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n), label, states[s]))
		}
		paused := 0.0
		if f.paused {
			paused = 1
		}
		metrics = append(metrics,
			prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, max(f.latency, 0).Seconds(), label),
			prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, paused, label))
	}
	return metrics, nil
}

// queueList is what the first round trip reads.
type queueList struct {
	names  []string // the queues to read: the served ones asynq knows first, then at most MaxOtherQueues others
	served int      // how many of names are served
	known  int64    // how many queues asynq knows
	// streamLen is the stream's length, unless streamErr is Redis's
	// refusal to read it.
	streamLen int64
	streamErr error
}

// listQueues is the first round trip. Redis's error reply to the stream's
// length is its own (queueList.streamErr): it says nothing of the queues;
// any other error fails the read.
func (c *Collector) listQueues(ctx context.Context) (queueList, error) {
	pipe := c.rdb.Pipeline()
	card := pipe.SCard(ctx, allQueuesKey)
	member := make([]*redis.BoolCmd, len(c.served))
	for i, q := range c.served {
		member[i] = pipe.SIsMember(ctx, allQueuesKey, q)
	}
	page := pipe.SScan(ctx, allQueuesKey, 0, "", MaxOtherQueues)
	xlen := pipe.XLen(ctx, c.stream)
	_, _ = pipe.Exec(ctx) // each command's error is read below
	for _, cmd := range pipe.Cmds() {
		if err := cmd.Err(); err != nil && cmd != xlen {
			return queueList{}, err
		}
	}
	l := queueList{known: card.Val(), streamLen: xlen.Val(), streamErr: xlen.Err()}
	if l.streamErr != nil && !isErrorReply(l.streamErr) {
		return queueList{}, l.streamErr // Redis did not answer
	}
	for i, q := range c.served {
		if member[i].Val() {
			l.names = append(l.names, q)
		}
	}
	l.served = len(l.names)
	names, _ := page.Val()
	slices.Sort(names)
	for _, q := range slices.Compact(names) {
		if len(l.names)-l.served == MaxOtherQueues {
			break
		}
		if _, ok := slices.BinarySearch(c.served, q); !ok {
			l.names = append(l.names, q)
		}
	}
	return l, nil
}

// isErrorReply reports whether err is Redis's error reply to a command
// (WRONGTYPE, NOPERM, …), not a failure to reach Redis.
func isErrorReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}

// maxReplyShown bounds the text of a Redis error reply in a log line.
const maxReplyShown = 200

// streamRead reports whether the stream's length was read (err, Redis's
// refusal of it, is nil). The first refusal after a read is logged at
// WARN: the gauge is missing until the length is read again, while the
// queues' figures, certmail_queue_stats_up 1 and /readyz say all is well.
func (c *Collector) streamRead(err error) bool {
	if err == nil {
		c.streamRefused.Store(false)
		return true
	}
	if !c.streamRefused.Swap(true) {
		fields := []zap.Field{zap.String("key", deadletter.Clip(c.stream, maxReplyShown)),
			zap.String("error", deadletter.Clip(err.Error(), maxReplyShown))}
		if a := redisconn.RefusalAdvice(err, c.stream); a != "" {
			fields = append(fields, zap.String("advice", a))
		}
		c.log.Warn("Redis refuses the length of the dead-letter stream: certmail_deadletter_stream_length is left out "+
			"until it can be read, the queue figures are reported", fields...)
	}
	return false
}

// figures is the second round trip: each queue's figures (names), the
// unserved ones (from index served on) summed under OtherQueues; labels in order.
func (c *Collector) figures(ctx context.Context, names []string, served int) (map[string]*queueFigures, []string, error) {
	keys := make([]string, 0, 7*len(names))
	prefixes := make([]any, 0, len(names))
	for _, q := range names {
		for _, s := range states {
			keys = append(keys, queues.AsynqKey(q, s))
		}
		keys = append(keys, queues.AsynqKey(q, "paused"))
		prefixes = append(prefixes, queues.AsynqKey(q, "t:"))
	}
	vals, err := statsScript.Run(ctx, c.rdb, keys, prefixes...).Slice()
	if err != nil {
		return nil, nil, err
	}
	if len(vals) != figuresPerQueue*len(names) {
		return nil, nil, fmt.Errorf("queue stats: %d values for %d names", len(vals), len(names))
	}
	now := time.Now()
	byLabel := map[string]*queueFigures{}
	var labels []string
	for i, q := range names {
		label := q
		if i >= served {
			label = OtherQueues
		}
		f := byLabel[label]
		if f == nil {
			f = &queueFigures{}
			byLabel[label] = f
			labels = append(labels, label)
		}
		v := vals[figuresPerQueue*i:]
		for s := range len(states) {
			n, ok := v[s].(int64)
			if !ok {
				return nil, nil, errors.New("queue stats: a count is not an integer")
			}
			f.sizes[s] += n
		}
		f.paused = f.paused || v[6] == int64(1)
		if since := pendingSince(v[7]); !since.IsZero() {
			f.latency = max(f.latency, now.Sub(since))
		}
	}
	return byLabel, labels, nil
}

// queueFigures are what is reported of one queue label.
type queueFigures struct {
	sizes   [len(states)]int64
	latency time.Duration
	paused  bool
}

// pendingSince is the time in statsScript's last value per queue: Unix
// nanoseconds as text, or 0 (none pending, or a task without the field).
func pendingSince(v any) time.Time {
	s, ok := v.(string)
	if !ok {
		return time.Time{}
	}
	ns, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ns <= 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
