package worker

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the worker's Prometheus series (see README "Metrics").
type metrics struct {
	tasks         *prometheus.CounterVec   // certmail_tasks_total{type,outcome}
	inFlight      *prometheus.GaugeVec     // certmail_tasks_in_flight{type}
	taskDuration  *prometheus.HistogramVec // certmail_task_duration_seconds{type}
	requests      *prometheus.CounterVec   // certmail_digicert_requests_total{account,endpoint,status}
	latency       *prometheus.HistogramVec // certmail_digicert_request_duration_seconds{account,endpoint}
	deadLetters   *prometheus.CounterVec   // certmail_dead_letters_total{type,error_code}
	accountPaused *prometheus.GaugeVec     // certmail_account_paused{account}
	limiterWaits  *prometheus.HistogramVec // certmail_ratelimit_wait_seconds{account}
	coolDowns     *prometheus.CounterVec   // certmail_ratelimit_cooldowns_total{account}
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_tasks_total",
			Help: "Deliveries by task type and outcome (delivered, superseded, duplicate, retry, wait, dead_lettered).",
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
		accountPaused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certmail_account_paused",
			Help: "1 while this worker saw DigiCert reject the account's API key and processing is paused.",
		}, []string{"account"}),
		limiterWaits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "certmail_ratelimit_wait_seconds",
			Help:    "Time deliveries waited for a slot of the shared DigiCert rate limiter (only waits are observed).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10),
		}, []string{"account"}),
		coolDowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certmail_ratelimit_cooldowns_total",
			Help: "Shared cool-downs started because DigiCert answered 429.",
		}, []string{"account"}),
	}
	reg.MustRegister(m.tasks, m.inFlight, m.taskDuration, m.requests, m.latency, m.deadLetters, m.accountPaused,
		m.limiterWaits, m.coolDowns)
	return m
}

// observer feeds one account's DigiCert requests into the metrics
// (digicert.Observer).
type observer struct {
	m       *metrics
	account string
}

func (o observer) ObserveRequest(endpoint string, status int, d time.Duration) {
	o.m.requests.WithLabelValues(o.account, endpoint, strconv.Itoa(status)).Inc()
	o.m.latency.WithLabelValues(o.account, endpoint).Observe(d.Seconds())
}
