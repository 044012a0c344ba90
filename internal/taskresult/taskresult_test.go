package taskresult_test

import (
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/taskresult"
)

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    taskresult.Result
		want string
	}{
		{"delivered", taskresult.Result{Outcome: taskresult.Delivered, HTTPStatus: 204, Attempts: 1, DurationMS: 12},
			`{"outcome":"delivered","http_status":204,"attempts":1,"duration_ms":12}`},
		{"not pending", taskresult.Result{Outcome: taskresult.NotPending, HTTPStatus: 200, Attempts: 2, DurationMS: 3, OrderStatus: "issued"},
			`{"outcome":"not_pending","http_status":200,"attempts":2,"duration_ms":3,"order_status":"issued"}`},
		{"sent per domain", taskresult.Result{Outcome: taskresult.Delivered, HTTPStatus: 204, Attempts: 1, OrderStatus: "pending",
			Sent: []taskresult.Sent{{Via: taskresult.ViaDomain, DomainID: 41, NameScope: "example.com", Outcome: taskresult.Delivered, HTTPStatus: 204},
				{Via: taskresult.ViaDomain, DomainID: 42, Outcome: taskresult.Duplicate}}},
			`{"outcome":"delivered","http_status":204,"attempts":1,"duration_ms":0,"order_status":"pending","sent":[` +
				`{"via":"domain","domain_id":41,"name_scope":"example.com","outcome":"delivered","http_status":204},` +
				`{"via":"domain","domain_id":42,"outcome":"duplicate"}]}`},
	}
	for _, tt := range tests {
		b, err := tt.r.Encode()
		if err != nil || string(b) != tt.want {
			t.Errorf("%s: Encode = %s, %v; want %s", tt.name, b, err, tt.want)
		}
		back, err := taskresult.Decode(b)
		if err != nil || back.Outcome != tt.r.Outcome || back.OrderStatus != tt.r.OrderStatus || len(back.Sent) != len(tt.r.Sent) {
			t.Errorf("%s: Decode = %+v, %v", tt.name, back, err)
		}
	}
	if r, err := taskresult.Decode([]byte(`{"outcome":"delivered","attempts":1,"from_the_future":true}`)); err != nil || r.Outcome != "delivered" {
		t.Errorf("unknown member: %+v, %v", r, err)
	}
	if _, err := taskresult.Decode([]byte(`not json`)); err == nil {
		t.Error("Decode accepted text that is not JSON")
	}
}

func TestAddIsBounded(t *testing.T) {
	t.Parallel()
	var r taskresult.Result
	for i := range taskresult.MaxSent + 7 {
		r.Add(taskresult.Sent{Via: taskresult.ViaDomain, DomainID: int64(i + 1), Outcome: taskresult.Delivered})
	}
	if len(r.Sent) != taskresult.MaxSent || r.SentOmitted != 7 || r.Sent[taskresult.MaxSent-1].DomainID != taskresult.MaxSent {
		t.Errorf("%d listed, %d omitted; want %d and 7, the first ones listed", len(r.Sent), r.SentOmitted, taskresult.MaxSent)
	}
	b, _ := r.Encode()
	if !strings.Contains(string(b), `"sent_omitted":7`) {
		t.Errorf("encoded %s does not say how many it left out", b)
	}
}

func TestCleanOrderStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"issued", "issued"},
		{"pen\nding\x00", "pending"},
		{"a\xffb", "a\uFFFDb"},
		{strings.Repeat("é", 40), strings.Repeat("é", 32)}, // 64 bytes, cut on a rune boundary
		{strings.Repeat("x", 63) + "é", strings.Repeat("x", 63)},
	} {
		if got := taskresult.CleanOrderStatus(tt.in); got != tt.want || len(got) > taskresult.MaxOrderStatus {
			t.Errorf("CleanOrderStatus(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
