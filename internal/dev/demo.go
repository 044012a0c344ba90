package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/schedule"
)

// demoBatch is the size of the demo's bulk batch: large enough that the
// shared rate limiter (100 requests per 5 s) spreads it over several seconds,
// so pending and active tasks can be seen on the dashboard.
const demoBatch = 250

// retriedID is the order whose first delivery meets DigiCert 503s.
const retriedID = 1004

// ovOrderID is the demo's OV order, resent per domain while it is pending.
const ovOrderID = 1005

// DefaultDemoEvery is how often the demo schedule fires unless
// Config.DemoEvery says otherwise.
const DefaultDemoEvery = 20 * time.Second

// DemoApproveAfter is the fewest DCV resends the dev fake lets reach a
// domain before it approves it (and issues the order once all its domains
// are); with a short Config.DemoEvery it waits for as many as take about a
// minute (demoApprovals), so that the demo schedule always runs a while.
const DemoApproveAfter = 3

// DemoSchedule is the periodic resend the demo adds (Config.DemoEvery
// changes its interval): order 1002 is a pending DV order, reminded until
// the fake approves it; the tick after that ends the schedule, about a
// minute and a half after the start by default.
var DemoSchedule = schedule.Schedule{ID: "demo-dcv-order-1002", Cron: "@every " + DefaultDemoEvery.String(), Type: "resend-dcv",
	Payload: []byte(`{"order_id": 1002, "locale": "en"}`)}

// demoSchedule is DemoSchedule firing every every.
func demoSchedule(every time.Duration) schedule.Schedule {
	demo := DemoSchedule
	demo.Cron = "@every " + every.String()
	return demo
}

// demoOVOrder is the OV order the demo resends per domain.
var demoOVOrder = digicerttest.Order{ID: ovOrderID, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{
	{ID: 2101, NameScope: "example.com", DNSNames: []string{"example.com", "www.example.com"}},
	{ID: 2102, NameScope: "shop.example.org"},
	{ID: 2103, NameScope: "example.net", Status: digicerttest.StatusApproved},
}}

// demoTask is one task of the demo.
type demoTask struct {
	why string
	req enqueue.Request
}

func demoTasks() []demoTask {
	return []demoTask{
		{"set-emails", enqueue.Request{Type: "set-emails",
			Payload: []byte(`{"order_id": 1001, "additional_emails": ["security@example.com", "pki@example.com"]}`)}},
		{"set-emails clearing the list", enqueue.Request{Type: "set-emails",
			Payload: []byte(`{"order_id": 1002, "additional_emails": []}`)}},
		{"resend-dcv", enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id": 1001, "domain_approval_emails": ` +
			`[{"domain": "www.example.com", "email": "admin@example.com", "email_domain": "example.com"}], "locale": "en"}`)}},
		{"resend-dcv without options", enqueue.Request{Type: "resend-dcv", Payload: []byte(`{"order_id": 1003}`)}},
		{"send-cert", enqueue.Request{Type: "send-cert", Payload: []byte(`{"certificate_id": 2001, ` +
			`"emails": ["ops@example.com"], "certificate_collect_format": "attachment", "custom_message": "Renewed."}`)}},
		{"send-cert in an hour (scheduled)", enqueue.Request{Type: "send-cert", ProcessIn: time.Hour,
			Payload: []byte(`{"certificate_id": 2002, "emails": ["ops@example.com"], "certificate_collect_format": "downloadlink"}`)}},
		{"resend-dcv of an order DigiCert does not know (dead-lettered)", enqueue.Request{Type: "resend-dcv",
			Payload: []byte(fmt.Sprintf(`{"order_id": %d}`, MissingID))}},
		{"resend-dcv of an OV order while it is pending: one resend per domain waiting for email", enqueue.Request{Type: "resend-dcv",
			Payload: []byte(fmt.Sprintf(`{"order_id": %d, "locale": "en", "only_if_pending": true, `+
				`"domain_approval_emails": [{"domain": "www.example.com", "email": "admin@example.com", "email_domain": "example.com"}]}`, ovOrderID))}},
		{"resend-domain-dcv", enqueue.Request{Type: "resend-domain-dcv",
			Payload: []byte(`{"domain_id": 2201, "name_scope": "portal.example.com", "locale": "en", "email_array": ["hostmaster@example.com"]}`)}},
	}
}

// enqueueDemo enqueues the demo tasks, then one that meets DigiCert errors
// (it waits in the retry state about 30 s, then is delivered), then a bulk
// batch paced by the rate limiter.
func enqueueDemo(ctx context.Context, svc *ops.Service, schedules *schedule.Store, demo schedule.Schedule, approveAfter int,
	fake *digicerttest.Server, log *zap.Logger) error {
	fake.SetOrder(demoOVOrder)
	_, err := schedules.Add(ctx, demo)
	switch {
	case errors.Is(err, schedule.ErrExists): // a Redis given by REDIS_URL keeps it from an earlier run
	case err != nil:
		return fmt.Errorf("demo schedule: %w", err)
	default:
		log.Info("demo schedule added: it ends itself once the fake approves the order", zap.String("schedule", demo.ID),
			zap.String("cron", demo.Cron), zap.Int("approve_after", approveAfter))
	}
	for _, d := range demoTasks() {
		ref, _, err := svc.Enqueue(ctx, d.req)
		if err != nil {
			return fmt.Errorf("demo task %s: %w", d.why, err)
		}
		log.Info("demo task enqueued", zap.String("task_id", ref.ID), zap.String("what", d.why))
	}
	// Four failures use up the client's in-call attempts of one delivery.
	// They answer only this order's path, so no other request (the demo's,
	// or one a newcomer sends at once) can take them.
	fake.FailPath(fmt.Sprintf("/services/v2/order/certificate/%d/resend-emails", retriedID), 4, 503,
		"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html")
	ref, _, err := svc.Enqueue(ctx, enqueue.Request{Type: "resend-dcv", Payload: []byte(fmt.Sprintf(`{"order_id": %d, "locale": "de"}`, retriedID))})
	if err != nil {
		return fmt.Errorf("demo task that is retried: %w", err)
	}
	log.Info("demo task enqueued", zap.String("task_id", ref.ID), zap.String("what", "resend-dcv meeting DigiCert 503s (retried)"))

	for i := range demoBatch {
		req := enqueue.Request{Type: "resend-dcv", Queue: "bulk", Payload: []byte(fmt.Sprintf(`{"order_id": %d}`, 5000+i))}
		if _, _, err := svc.Enqueue(ctx, req); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("demo batch: %w", err)
		}
	}
	log.Info("demo batch enqueued", zap.Int("tasks", demoBatch), zap.String("queue", "bulk"))
	return nil
}

// demoApprovals is how many reminders the dev fake lets reach a domain
// before it approves it, for a demo schedule firing every every: as many as
// take about a minute, DemoApproveAfter at least.
func demoApprovals(every time.Duration) int {
	return max(DemoApproveAfter, int(time.Minute/every))
}

// CurlEnqueue is the banner's example request.
func curlEnqueue(st *Stack) string {
	return fmt.Sprintf(`curl -sS -X POST %s/v1/tasks/set-emails \
    -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"order_id": 1234, "additional_emails": ["you@example.com"]}'`, st.APIURL, st.Token)
}

// metricsURLs are the banner's metrics URLs: the worker's, unless it serves
// none (Config.NoAdmin), and the API's.
func metricsURLs(st *Stack) string {
	if st.AdminURL == "" {
		return st.APIURL + "/metrics (API; the worker serves none: its admin address is empty)"
	}
	return st.AdminURL + "/metrics (worker), " + st.APIURL + "/metrics (API)"
}

// printBanner prints where everything is; demo is nil when no demo runs,
// and then the banner announces none. On an external Redis it says whether
// the demo lands there, and what that means.
func printBanner(w io.Writer, st *Stack, demo *schedule.Schedule, approveAfter int) {
	redis := st.RedisURL + " (embedded, in memory: everything is lost on exit)"
	if !st.Embedded {
		redis = redisconn.Target(st.RedisURL) + " (EXTERNAL, from --redis-url: its queued tasks are processed here against the fake DigiCert)"
	}
	lines := []string{
		"",
		"certmail dev: a local demo, NOT for production. DigiCert is a fake (nothing is emailed).",
		"",
		"  dashboard  " + st.dashboard + "   (log in with any user name, the token as password)",
		"  API        " + st.APIURL + "/v1   (OpenAPI: " + st.APIURL + "/v1/openapi.json)",
		"  token      " + st.Token,
		"  metrics    " + metricsURLs(st),
		"  redis      " + redis,
		"",
		"Enqueue a task:",
		"  " + curlEnqueue(st),
		"Then read its state (use the id from the answer):",
		fmt.Sprintf("  curl -sS -H 'Authorization: Bearer %s' %s/v1/tasks/<id>", st.Token, st.APIURL),
		"",
	}
	switch {
	case demo == nil && !st.Embedded:
		lines = append(lines, "No demo: this Redis is not dev's own (--demo loads the demo tasks and schedule into it).")
	case demo != nil && !st.Embedded:
		lines = append(lines,
			"The demo goes into this EXTERNAL Redis (--demo): any other worker on it may take its tasks to its own DigiCert,",
			"and the demo schedule stays after exit until it is deleted (other schedulers skip its "+demo.Cron+
				" unless their CERTMAIL_SCHEDULE_MIN_INTERVAL allows it). Delete it while dev runs:",
			"  curl -sS -X DELETE -H 'Authorization: Bearer "+st.Token+"' "+st.APIURL+"/v1/schedules/"+demo.ID,
			"or after (dev's token and API end with it):",
			"  REDIS_URL='<the --redis-url>' certmail schedule rm "+demo.ID)
	}
	if demo != nil {
		lines = append(lines,
			"Demo tasks of every kind are being enqueued; one fails for good (see the dashboard's Archived tab).",
			fmt.Sprintf("A demo schedule (%s) reminds order 1002 of its DCV emails until the fake approves the order (after %d reminders);",
				demo.Cron, approveAfter),
			"the next tick finds it issued and ends the schedule. See the dashboard's Schedulers tab, or watch its state, ended_reason and order_status:",
			"  curl -sS -H 'Authorization: Bearer "+st.Token+"' "+st.APIURL+"/v1/schedules/"+demo.ID,
		)
	}
	lines = append(lines, "Stop with Ctrl-C.", "")
	_, _ = io.WriteString(w, strings.Join(lines, "\n")+"\n")
}
