package worker

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/tasks"
)

// Bounds of label values, so that what producers and DigiCert send cannot
// create series without limit.
const (
	// otherLabel stands for every value beyond the bounds.
	otherLabel = "other"
	// maxErrorCodes is how many distinct error codes get a series of their
	// own; later ones are counted under otherLabel.
	maxErrorCodes = 50
	// maxLabelLength is the longest error code or task type kept as a label
	// value or log field, in bytes.
	maxLabelLength = 64
)

// metrics are the worker's Prometheus series (see README "Metrics").
type metrics struct {
	// knownTypes are the task types with series of their own; any other
	// (a raw producer's misspelt type) is counted under otherLabel.
	knownTypes map[string]bool

	codesMu sync.Mutex
	codes   map[string]bool // error codes with series of their own (at most maxErrorCodes)

	tasks        *prometheus.CounterVec   // certmail_tasks_total{type,outcome}
	inFlight     *prometheus.GaugeVec     // certmail_tasks_in_flight{type}
	taskDuration *prometheus.HistogramVec // certmail_task_duration_seconds{type}
	requests     *prometheus.CounterVec   // certmail_digicert_requests_total{account,endpoint,status}
	latency      *prometheus.HistogramVec // certmail_digicert_request_duration_seconds{account,endpoint}
	deadLetters  *prometheus.CounterVec   // certmail_dead_letters_total{type,error_code}
	limiterWaits *prometheus.HistogramVec // certmail_ratelimit_wait_seconds{account}
	coolDowns    *prometheus.CounterVec   // certmail_ratelimit_cooldowns_total{account}
	// replicasShort is certmail_guard_replicas_short: 1 while the worker is
	// short of replicas (replicaGuard).
	replicasShort prometheus.Gauge
}

// newMetrics registers the worker's series; accounts are the configured
// account names, whose pause is read from rdb at each scrape and whose 429
// and cool-down series are created at 0.
func newMetrics(reg prometheus.Registerer, rdb redis.UniversalClient, accounts []string) *metrics {
	m := &metrics{
		knownTypes: map[string]bool{},
		codes:      map[string]bool{},
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_tasks_total",
			Help: "Deliveries by task type and outcome (delivered, superseded, duplicate, not_pending, retry, wait, dead_lettered).",
		}, []string{"type", "outcome"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certmail_tasks_in_flight",
			Help: "Deliveries being processed now.",
		}, []string{"type"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certmail_task_duration_seconds",
			Help:    "Time from the start of a delivery to its end, waits included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}, []string{"type"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_digicert_requests_total",
			Help: "HTTP requests sent to DigiCert by account, endpoint and status (0 = no answer).",
		}, []string{"account", "endpoint", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certmail_digicert_request_duration_seconds",
			Help:    "DigiCert request latency.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}, []string{"account", "endpoint"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_dead_letters_total",
			Help: "Tasks dead-lettered, by type and error code.",
		}, []string{"type", "error_code"}),
		limiterWaits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certmail_ratelimit_wait_seconds",
			Help:    "Time deliveries waited for a slot of the shared DigiCert rate limiter (only waits are observed).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10),
		}, []string{"account"}),
		coolDowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_ratelimit_cooldowns_total",
			Help: "Shared cool-downs started because DigiCert answered 429.",
		}, []string{"account"}),
		replicasShort: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certmail_guard_replicas_short",
			Help: "1 while deliveries call DigiCert and end without waiting for replicas to acknowledge their dequeues and duplicate guards: a wait for them timed out, Redis refuses WAIT, or the master had too few at start, and no WAIT acknowledged enough since.",
		}),
	}
	for _, t := range tasks.Types() {
		m.knownTypes[t] = true
	}
	// The series of a first 429 exist at 0 from the start: a counter series
	// created by its first event, at 1, has no increase, and the 429 alert
	// would miss the one 429 that the shared cool-down usually leaves. Only
	// the 429s, whose label values are all known here: the other statuses
	// appear with their first answer.
	for _, a := range accounts {
		for _, e := range digicert.Endpoints() {
			m.requests.WithLabelValues(a, e, strconv.Itoa(http.StatusTooManyRequests))
		}
		m.coolDowns.WithLabelValues(a)
	}
	reg.MustRegister(m.tasks, m.inFlight, m.taskDuration, m.requests, m.latency, m.deadLetters,
		m.limiterWaits, m.coolDowns, m.replicasShort, &pausedCollector{rdb: rdb, accounts: accounts, desc: prometheus.NewDesc(
			"certmail_account_paused",
			"1 while the account is paused because DigiCert rejected its API key (read from Redis: the same on every worker).",
			[]string{"account"}, nil)})
	return m
}

// taskType is the label value of a task type: the type itself when certmail
// knows it, otherLabel otherwise.
func (m *metrics) taskType(t string) string {
	if m.knownTypes[t] {
		return t
	}
	return otherLabel
}

// errorCode is the label value of an error code: the code itself for the
// first maxErrorCodes distinct well-formed codes seen, otherLabel for any
// other (the full code is in the log line and the dead-letter entry).
func (m *metrics) errorCode(code string) string {
	if code == "" || len(code) > maxLabelLength || !labelSafe(code) {
		return otherLabel
	}
	m.codesMu.Lock()
	defer m.codesMu.Unlock()
	if !m.codes[code] {
		if len(m.codes) >= maxErrorCodes {
			return otherLabel
		}
		m.codes[code] = true
	}
	return code
}

// labelSafe reports whether s is made of the characters of DigiCert's and
// certmail's codes: a-z, A-Z, 0-9 and _ | : . -
func labelSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if !codeByte(s[i]) {
			return false
		}
	}
	return true
}

// codeByte reports whether c may appear in an error code label.
func codeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_|:.-", c) >= 0
}

// pausedCollector reports certmail_account_paused from the shared pause in
// Redis at each scrape, so that a worker that saw the pause begin does not
// keep reporting it after another worker's probe ended it.
type pausedCollector struct {
	rdb      redis.UniversalClient
	accounts []string
	desc     *prometheus.Desc
}

func (c *pausedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect leaves the series out while Redis does not answer, rather than
// failing the whole scrape: within a second, a stalled Redis too (the
// client honours the deadline).
func (c *pausedCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, a := range c.accounts {
		n, err := c.rdb.Exists(ctx, brokenKey(a)).Result()
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), a)
	}
}

// observer feeds one account's DigiCert requests into the metrics
// (digicert.Observer).
type observer struct {
	m       *metrics
	account string
}

func (o observer) ObserveRequest(endpoint string, status int, d time.Duration) {
	o.m.requests.WithLabelValues(o.account, endpoint, statusLabel(status)).Inc()
	o.m.latency.WithLabelValues(o.account, endpoint).Observe(d.Seconds())
}

// labelledStatuses are the HTTP statuses certmail_digicert_requests_total
// names one by one: those DigiCert documents and those certmail handles
// apart. Any other answer counts by its class ("2xx" to "5xx", "other"
// beyond), so that whatever DigiCert or a proxy on the way sends, the label
// keeps a fixed set of values.
var labelledStatuses = map[int]string{}

func init() {
	for _, s := range []int{0, 200, 201, 202, 204, 400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 429,
		500, 502, 503, 504} {
		labelledStatuses[s] = strconv.Itoa(s)
	}
}

// statusLabel is status as the label of certmail_digicert_requests_total:
// itself when labelledStatuses has it ("0": no answer), else its class.
func statusLabel(status int) string {
	if l, ok := labelledStatuses[status]; ok {
		return l
	}
	if status >= 200 && status <= 599 {
		return strconv.Itoa(status/100) + "xx"
	}
	return "other"
}
