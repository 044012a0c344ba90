// Package taskresult is the record a worker keeps with a completed task
// (asynq's task result): its type, the outcomes, and how it is encoded and
// read back. The worker writes it; the scheduler reads it to end a schedule
// whose order no longer needs reminders; the API, the CLI and the dashboard
// show it as it is.
package taskresult

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Outcomes of a completed task. They are a wire contract: producers and
// operators read them.
const (
	// Delivered: DigiCert answered 2xx.
	Delivered = "delivered"
	// Superseded: a newer set-emails of the same order was already applied,
	// or sent and its outcome not recorded yet.
	Superseded = "superseded"
	// Duplicate: this task's effect was already delivered.
	Duplicate = "duplicate"
	// NotPending: a resend-dcv with only_if_pending found the order no longer
	// pending, or none of its domains waiting for validation by email;
	// nothing was sent.
	NotPending = "not_pending"
)

// Ways a DCV resend goes to DigiCert, as Sent.Via names them.
const (
	ViaOrder  = "order"  // PUT /order/certificate/{order_id}/resend-emails
	ViaDomain = "domain" // PUT /domain/{domain_id}/dcv/emails
)

// MaxSent is how many entries Result.Sent lists at most; SentOmitted counts
// the others.
const MaxSent = 20

// MaxOrderStatus bounds Result.OrderStatus, in bytes.
const MaxOrderStatus = 64

// CleanOrderStatus returns an order status as a result keeps it: without
// control characters, valid UTF-8, cut to at most MaxOrderStatus bytes on a
// rune boundary. The worker cleans what DigiCert sent before writing it; the
// scheduler cleans what it reads back, whoever wrote it.
func CleanOrderStatus(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	for len(s) > MaxOrderStatus {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// Result is the JSON kept with a completed task.
type Result struct {
	Outcome    string `json:"outcome"`
	HTTPStatus int    `json:"http_status,omitempty"`
	Attempts   int    `json:"attempts"`
	DurationMS int64  `json:"duration_ms"`
	// OrderStatus is the order's status as DigiCert reported it to a
	// resend-dcv with only_if_pending ("pending", "issued", ...), any echo
	// of the API key replaced by the DigiCert client, cleaned by
	// CleanOrderStatus.
	OrderStatus string `json:"order_status,omitempty"`
	// Sent lists the resends of a resend-dcv with only_if_pending: through
	// the order, or one per domain, at most MaxSent of them.
	Sent []Sent `json:"sent,omitempty"`
	// SentOmitted counts the resends left out of Sent.
	SentOmitted int `json:"sent_omitted,omitempty"`
}

// Sent is one resend of a resend-dcv with only_if_pending.
type Sent struct {
	Via       string `json:"via"` // ViaOrder or ViaDomain
	OrderID   int64  `json:"order_id,omitempty"`
	DomainID  int64  `json:"domain_id,omitempty"`
	NameScope string `json:"name_scope,omitempty"`
	// Outcome is Delivered, or Duplicate when an earlier delivery of the
	// task had sent it.
	Outcome    string `json:"outcome"`
	HTTPStatus int    `json:"http_status,omitempty"`
}

// Add appends s to r.Sent, or counts it in r.SentOmitted once Sent holds
// MaxSent entries.
func (r *Result) Add(s Sent) {
	if len(r.Sent) < MaxSent {
		r.Sent = append(r.Sent, s)
		return
	}
	r.SentOmitted++
}

// Encode returns r as JSON.
func (r Result) Encode() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode task result: %w", err)
	}
	return b, nil
}

// Decode reads a task's result as Encode wrote it; unknown members are
// ignored, so that results written by newer workers still read.
func Decode(b []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return Result{}, fmt.Errorf("decode task result: %w", err)
	}
	return r, nil
}
