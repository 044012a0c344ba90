package digicert

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode"
)

// Order and domain validation states CertCentral reports.
const (
	// StatusPending is the order_status of an order waiting for validation,
	// and the status of a domain not validated yet.
	StatusPending = "pending"
	// MethodEmail is the method of a domain validated by email.
	MethodEmail = "email"
)

// MaxOrderNames is the most names (common name and SANs) a CertCentral
// order holds, and so the most domains of one order that can wait for
// validation. An answer listing more is not a real order's.
const MaxOrderNames = 250

// OrderValidation is what certmail reads of
// GET /order/certificate/{order_id}/validation. Unknown fields are ignored;
// ids may come as JSON strings or numbers. order_status is required (a
// string), and dns_name_validations when the order is pending.
type OrderValidation struct {
	OrderID     int64
	OrderStatus string // "pending" while waiting for validation; "issued", "rejected", "canceled", ...
	DCVMethod   string // order_dcv_method
	// OrganizationValidations counts the entries of organization_validations,
	// which CertCentral sends for OV and EV orders only.
	OrganizationValidations int
	DNSNameValidations      []DNSNameValidation
}

// DV reports whether the order is a DV order, whose DCV emails are resent
// through the order (PUT /order/certificate/{id}/resend-emails):
// organization_validations absent, null or empty [assumption: an empty list
// is read as a DV order's].
func (v OrderValidation) DV() bool { return v.OrganizationValidations == 0 }

// Pending reports whether the order still waits for validation.
func (v OrderValidation) Pending() bool { return strings.EqualFold(v.OrderStatus, StatusPending) }

// PendingEmailDomains returns the domains that wait for validation by email,
// in the answer's order, each domain id once.
func (v OrderValidation) PendingEmailDomains() []DNSNameValidation {
	var out []DNSNameValidation
	seen := map[int64]bool{}
	for _, d := range v.DNSNameValidations {
		if !d.PendingEmail() || seen[d.DomainID] {
			continue
		}
		seen[d.DomainID] = true
		out = append(out, d)
	}
	return out
}

// DNSNameValidation is one entry of dns_name_validations: a domain of the
// order and how far its validation is.
type DNSNameValidation struct {
	DomainID      int64 // 0 when the answer gave none that reads as a positive integer
	NameScope     string
	ApprovalScope string
	Status        string // "approved" or "pending"
	Method        string // "email", "dns-txt-token", "http-token", ...
	DNSNames      []string
}

// PendingEmail reports whether the domain waits for validation by email.
func (d DNSNameValidation) PendingEmail() bool {
	return strings.EqualFold(d.Status, StatusPending) && strings.EqualFold(d.Method, MethodEmail)
}

// flexID is an id CertCentral sends as a JSON string ("1234") or number
// (1234); anything else reads as 0, left for the caller to judge.
type flexID int64

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (f *flexID) UnmarshalJSON(b []byte) error {
	*f = 0
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if json.Unmarshal(b, &s) != nil {
			return nil
		}
		b = []byte(strings.TrimSpace(s))
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil && n > 0 {
		*f = flexID(n)
	}
	return nil
}

// flexText is a string field that tolerates a number or null in its place.
type flexText string

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (f *flexText) UnmarshalJSON(b []byte) error {
	*f = ""
	var s string
	if json.Unmarshal(b, &s) == nil {
		*f = flexText(s)
		return nil
	}
	if b = bytes.TrimSpace(b); len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9') {
		*f = flexText(b)
	}
	return nil
}

// decodeOrderValidation reads the answer's body. It fails when the body is
// not a JSON object, when order_status is not a non-empty string, when a
// pending order's dns_name_validations is not a list, and when a known
// member has a shape that cannot be read (dns_name_validations a list of
// something else than objects, say). An answer without the order's status,
// such as {} or DigiCert's errors sent with 200, says nothing about the
// order: read as "not pending", it would stop the reminders of an order
// that still waits. Every other member is read leniently.
//
// Every text kept goes through r, as error bodies do: the order status goes
// to results, log lines and a schedule's state, the name scopes to results,
// and none of them may carry the key.
func decodeOrderValidation(body []byte, r redactor) (OrderValidation, error) {
	var doc struct {
		OrderID                 flexID          `json:"order_id"`
		OrderStatus             json.RawMessage `json:"order_status"`
		OrderDCVMethod          flexText        `json:"order_dcv_method"`
		OrganizationValidations json.RawMessage `json:"organization_validations"`
		DNSNameValidations      json.RawMessage `json:"dns_name_validations"`
	}
	if len(bytes.TrimSpace(body)) == 0 || bytes.TrimSpace(body)[0] != '{' {
		return OrderValidation{}, errors.New("not a JSON object")
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return OrderValidation{}, err
	}
	var status string
	if raw := bytes.TrimSpace(doc.OrderStatus); len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &status) != nil || strings.TrimSpace(status) == "" {
		return OrderValidation{}, errors.New("order_status is missing or not a non-empty string")
	}
	v := OrderValidation{
		OrderID:                 int64(doc.OrderID),
		OrderStatus:             redactStatus(status, r),
		DCVMethod:               r.apply(string(doc.OrderDCVMethod)),
		OrganizationValidations: countEntries(doc.OrganizationValidations),
	}
	raw := bytes.TrimSpace(doc.DNSNameValidations)
	if len(raw) == 0 || string(raw) == "null" {
		if v.Pending() {
			return OrderValidation{}, errors.New("dns_name_validations of a pending order is missing or null")
		}
		return v, nil
	}
	var validations []struct {
		DomainID      flexID     `json:"domain_id"`
		NameScope     flexText   `json:"name_scope"`
		ApprovalScope flexText   `json:"approval_scope"`
		Status        flexText   `json:"status"`
		Method        flexText   `json:"method"`
		DNSNames      []flexText `json:"dns_names"`
	}
	if raw[0] != '[' || json.Unmarshal(raw, &validations) != nil {
		return OrderValidation{}, errors.New("dns_name_validations is not a list of objects")
	}
	for _, d := range validations {
		names := make([]string, len(d.DNSNames))
		for i, n := range d.DNSNames {
			names[i] = r.apply(string(n))
		}
		v.DNSNameValidations = append(v.DNSNameValidations, DNSNameValidation{
			DomainID:      int64(d.DomainID),
			NameScope:     r.apply(string(d.NameScope)),
			ApprovalScope: r.apply(string(d.ApprovalScope)),
			Status:        r.apply(string(d.Status)),
			Method:        r.apply(string(d.Method)),
			DNSNames:      names,
		})
	}
	return v, nil
}

// redactStatus returns an order status without the key: s as it is when
// neither s nor s without its control characters holds the key, else the
// latter redacted (a result keeps the status without control characters,
// which would join a key they split; see taskresult.CleanOrderStatus).
func redactStatus(s string, r redactor) string {
	visible := strings.Map(func(c rune) rune {
		if unicode.IsControl(c) {
			return -1
		}
		return c
	}, s)
	if clean := r.apply(visible); clean != visible {
		return clean
	}
	return s
}

// countEntries counts the elements of a JSON array; null or nothing is 0,
// any other value 1 (present, in a shape not documented).
func countEntries(raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return 0
	case raw[0] == '[':
		var elems []json.RawMessage
		if json.Unmarshal(raw, &elems) == nil {
			return len(elems)
		}
	}
	return 1
}
