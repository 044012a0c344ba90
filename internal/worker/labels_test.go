package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certmail/certmail/internal/admin"
	"github.com/certmail/certmail/internal/worker"
)

// What producers and DigiCert send must not create label values without
// limit: unknown task types count as "other", and so do error codes beyond
// the first 50; an HTTP status DigiCert does not document counts by its
// class.
func TestMetricLabelsAreBounded(t *testing.T) {
	t.Parallel()
	var reg *prometheus.Registry
	b := setup(t, setupOpts{configure: func(c *worker.Config) {
		c.Registry = admin.NewRegistry()
		reg = c.Registry
		c.Concurrency = 8
	}})
	b.fake.AddOrder(1)
	var ids []string
	for i := range 80 {
		ids = append(ids, b.enqueue(t, fmt.Sprintf("set-emails-v%d", i), `{"order_id": 1}`))
	}
	for i := range 80 {
		// Scripted on the order's own path, so each answer meets its own task.
		b.fake.FailPath(fmt.Sprintf("/services/v2/order/certificate/%d/resend-emails", 1000+i), 1, 400,
			fmt.Sprintf(`{"errors":[{"code":"made_up_code_%d","message":"no"}]}`, i), "application/json")
		ids = append(ids, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, 1000+i)))
	}
	for i, status := range []int{418, 451, 499} { // statuses DigiCert does not document, each its own series if taken as they are
		b.fake.FailPath(fmt.Sprintf("/services/v2/order/certificate/%d/resend-emails", 2000+i), 1, status,
			`{"errors":[{"code":"odd","message":"no"}]}`, "application/json")
		ids = append(ids, b.enqueue(t, "resend-dcv", fmt.Sprintf(`{"order_id": %d}`, 2000+i)))
	}
	for _, id := range ids {
		b.waitState(t, id, asynq.TaskStateArchived, 20*time.Second)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	values := map[string]map[string]bool{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			series[f.GetName()]++
			for _, l := range m.GetLabel() {
				k := f.GetName() + "{" + l.GetName() + "}"
				if values[k] == nil {
					values[k] = map[string]bool{}
				}
				values[k][l.GetValue()] = true
			}
		}
	}
	if n := series["certmail_dead_letters_total"]; n > 51+1 {
		t.Errorf("certmail_dead_letters_total has %d series for 80 unknown types and 80 DigiCert codes, want at most 52", n)
	}
	for k, vs := range values {
		if strings.HasSuffix(k, "{type}") {
			for v := range vs {
				if strings.HasPrefix(v, "set-emails-v") {
					t.Errorf("%s has the unknown type %q as a value", k, v)
				}
			}
		}
	}
	if !values["certmail_dead_letters_total{error_code}"]["other"] || !values["certmail_dead_letters_total{type}"]["other"] {
		t.Errorf("no \"other\" series: %v", values["certmail_dead_letters_total{error_code}"])
	}
	statuses := values["certmail_digicert_requests_total{status}"]
	if !statuses["4xx"] || statuses["418"] || statuses["451"] || statuses["499"] {
		t.Errorf("DigiCert's undocumented 418, 451 and 499 are not counted as 4xx: %v", statuses)
	}
	t.Logf("series: dead letters %d, tasks %d", series["certmail_dead_letters_total"], series["certmail_tasks_total"])
}
