package digicerttest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

func validationURL(base string, id any) string {
	return fmt.Sprintf("%s/order/certificate/%v/validation", base, id)
}

func domainURL(base string, id any) string {
	return fmt.Sprintf("%s/domain/%v/dcv/emails", base, id)
}

// validationDoc is the validation answer as a test reads it: ids stay raw
// so that their JSON type can be checked.
type validationDoc struct {
	OrderID         json.RawMessage   `json:"order_id"`
	OrderStatus     string            `json:"order_status"`
	OrderDCVMethod  string            `json:"order_dcv_method"`
	OrgValidations  []json.RawMessage `json:"organization_validations"`
	NameValidations []struct {
		DomainID  json.RawMessage `json:"domain_id"`
		NameScope string          `json:"name_scope"`
		Status    string          `json:"status"`
		Method    string          `json:"method"`
		DNSNames  []string        `json:"dns_names"`
	} `json:"dns_name_validations"`
}

func readValidation(t *testing.T, base string, id any) validationDoc {
	t.Helper()
	return readValidationWith(t, base, id, testKey)
}

// readValidationWith is readValidation with another key.
func readValidationWith(t *testing.T, base string, id any, key string) validationDoc {
	t.Helper()
	resp := send(t, http.MethodGet, validationURL(base, id), key, "")
	if resp.status != http.StatusOK || resp.contentType != "application/json" {
		t.Fatalf("GET validation: %d %s %s", resp.status, resp.contentType, resp.body)
	}
	var doc validationDoc
	if err := json.Unmarshal(resp.body, &doc); err != nil {
		t.Fatalf("validation %s: %v", resp.body, err)
	}
	return doc
}

// ovOrder is an OV order with two domains: one waiting for email, one for a
// DNS token.
var ovOrder = digicerttest.Order{ID: 3001, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{
	{ID: 41, NameScope: "example.com", DNSNames: []string{"example.com", "www.example.com"}},
	{ID: 42, NameScope: "example.org", Method: "dns-txt-token"},
}}

func TestServer_Validation(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{Missing: []int64{missingID}})
	b.fake.SetOrder(ovOrder)
	b.fake.SetOrder(digicerttest.Order{ID: 3002, Type: digicerttest.OrderEV, Status: "canceled",
		Domains: []digicerttest.Domain{{ID: 51, NameScope: "example.net", Status: digicerttest.StatusApproved}}})

	ov := readValidation(t, b.base, 3001)
	if string(ov.OrderID) != `"3001"` || ov.OrderStatus != "pending" || ov.OrderDCVMethod != "email" || len(ov.OrgValidations) != 1 {
		t.Errorf("OV order: %+v", ov)
	}
	if len(ov.NameValidations) != 2 {
		t.Fatalf("OV order domains: %+v", ov.NameValidations)
	}
	d := ov.NameValidations[0]
	if string(d.DomainID) != `"41"` || d.NameScope != "example.com" || d.Status != "pending" || d.Method != "email" ||
		!slices.Equal(d.DNSNames, []string{"example.com", "www.example.com"}) {
		t.Errorf("first domain %+v", d)
	}
	if d := ov.NameValidations[1]; string(d.DomainID) != `"42"` || d.Method != "dns-txt-token" || !slices.Equal(d.DNSNames, []string{"example.org"}) {
		t.Errorf("second domain %+v", d)
	}
	ev := readValidation(t, b.base, 3002)
	if ev.OrderStatus != "canceled" || len(ev.OrgValidations) != 1 || ev.NameValidations[0].Status != "approved" {
		t.Errorf("EV order: %+v", ev)
	}
	// The organization's validation is pending until the order is issued.
	b.fake.SetOrder(digicerttest.Order{ID: 3007, Type: digicerttest.OrderOV, Status: digicerttest.StatusIssued,
		Domains: []digicerttest.Domain{{ID: 52, NameScope: "example.biz", Status: digicerttest.StatusApproved}}})
	for id, want := range map[int64]string{3001: `{"type":"ov","status":"pending"}`, 3007: `{"type":"ov","status":"completed"}`} {
		if doc := readValidation(t, b.base, id); len(doc.OrgValidations) != 1 || string(doc.OrgValidations[0]) != want {
			t.Errorf("order %d: organization_validations %s, want [%s]", id, doc.OrgValidations, want)
		}
	}
	// An order known without a model is a pending DV order with one domain.
	dv := readValidation(t, b.base, orderID)
	if dv.OrderStatus != "pending" || dv.OrgValidations != nil || len(dv.NameValidations) != 1 ||
		string(dv.NameValidations[0].DomainID) != `"1001"` || dv.NameValidations[0].Method != "email" {
		t.Errorf("plain order: %+v", dv)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(send(t, http.MethodGet, validationURL(b.base, orderID), testKey, "").body, &raw); err != nil {
		t.Fatal(err)
	}
	if _, present := raw["organization_validations"]; present {
		t.Error("a DV order's answer has organization_validations")
	}

	for _, tt := range []struct {
		name, method, url string
		status            int
		codes             []string
		allow             string
	}{
		{"unknown order", http.MethodGet, validationURL(b.base, 42), 404, []string{"not_found|order"}, ""},
		{"certificate id", http.MethodGet, validationURL(b.base, certID), 404, []string{"not_found|order"}, ""},
		{"PUT", http.MethodPut, validationURL(b.base, orderID), 405, []string{"method_not_allowed"}, "GET"},
		{"GET on a PUT route", http.MethodGet, domainURL(b.base, 41), 405, []string{"method_not_allowed"}, "PUT"},
	} {
		resp := send(t, tt.method, tt.url, testKey, "")
		if resp.status != tt.status || !slices.Equal(resp.codes(t), tt.codes) || resp.allow != tt.allow {
			t.Errorf("%s: %d %s (Allow %q), want %d %v", tt.name, resp.status, resp.body, resp.allow, tt.status, tt.codes)
		}
	}
	if resp := send(t, http.MethodGet, validationURL(b.base, 1), otherKey, ""); resp.status != 403 {
		t.Errorf("wrong key: %d", resp.status)
	}
}

func TestServer_ValidationInDemoMode(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{AnyIDExists: true, Missing: []int64{missingID}})
	if doc := readValidation(t, b.base, 777); doc.OrderStatus != "pending" || len(doc.NameValidations) != 1 {
		t.Errorf("any order: %+v", doc)
	}
	if resp := send(t, http.MethodGet, validationURL(b.base, missingID), testKey, ""); resp.status != 404 {
		t.Errorf("missing order: %d", resp.status)
	}
	if resp := send(t, http.MethodPut, domainURL(b.base, 555), testKey, `{}`); resp.status != 204 {
		t.Errorf("any domain: %d %s", resp.status, resp.body)
	}
	if resp := send(t, http.MethodPut, domainURL(b.base, missingID), testKey, `{}`); resp.status != 404 || !slices.Equal(resp.codes(t), []string{"not_found|domain"}) {
		t.Errorf("missing domain: %d %s", resp.status, resp.body)
	}
}

func TestServer_DomainEmails(t *testing.T) {
	t.Parallel()
	at := newFakeClock()
	b := setup(t, digicerttest.Config{Clock: at.Now})
	b.fake.SetOrder(ovOrder)
	b.fake.AddDomain(77)

	body := `{"name_scope":"www.example.com","locale":"de_DE","email_array":["admin@example.com","hostmaster@example.com"]}`
	if resp := send(t, http.MethodPut, domainURL(b.base, 41), testKey, body); resp.status != 204 || len(resp.body) != 0 {
		t.Fatalf("resend: %d %s", resp.status, resp.body)
	}
	want := digicerttest.DomainDCVSend{DomainID: 41, NameScope: "www.example.com", Locale: "de_DE",
		EmailArray: []string{"admin@example.com", "hostmaster@example.com"}, At: at.Now()}
	got := b.fake.DomainDCVSends(41)
	if len(got) != 1 || got[0].DomainID != want.DomainID || got[0].NameScope != want.NameScope || got[0].Locale != want.Locale ||
		!slices.Equal(got[0].EmailArray, want.EmailArray) || !got[0].At.Equal(want.At) {
		t.Errorf("DomainDCVSends = %+v, want [%+v]", got, want)
	}
	got[0].EmailArray[0] = "changed"
	if b.fake.DomainDCVSends(41)[0].EmailArray[0] != "admin@example.com" {
		t.Error("DomainDCVSends returned the fake's own slice")
	}
	for _, id := range []int64{42, 77, orderID} { // another domain, one on its own, a plain order's
		if resp := send(t, http.MethodPut, domainURL(b.base, id), testKey, `{}`); resp.status != 204 {
			t.Errorf("domain %d: %d %s", id, resp.status, resp.body)
		}
	}
	if len(b.fake.DomainDCVSends(77)) != 1 || len(b.fake.DCVSends(3001)) != 0 {
		t.Error("domain sends recorded in the wrong place")
	}

	for _, tt := range []struct {
		name string
		id   any
		body string
		code []string
		st   int
	}{
		{"unknown domain", 43, `{}`, []string{"not_found|domain"}, 404},
		{"not an id", "abc", `{}`, []string{"not_found|route"}, 404},
		{"not JSON", 41, `{`, []string{"bad_request_format"}, 400},
		{"name scope not a string", 41, `{"name_scope":5}`, []string{"invalid_value:name_scope"}, 400},
		{"bad locale", 41, `{"locale":"english"}`, []string{"invalid_value:locale"}, 400},
		{"bad address", 41, `{"email_array":["Jill <j@example.com>"]}`, []string{"invalid_value:email_array"}, 400},
		{"emails not a list", 41, `{"email_array":"admin@example.com"}`, []string{"invalid_value:email_array"}, 400},
	} {
		before := len(b.fake.DomainDCVSends(41))
		resp := send(t, http.MethodPut, domainURL(b.base, tt.id), testKey, tt.body)
		if resp.status != tt.st || !slices.Equal(resp.codes(t), tt.code) {
			t.Errorf("%s: %d %s, want %d %v", tt.name, resp.status, resp.body, tt.st, tt.code)
		}
		if len(b.fake.DomainDCVSends(41)) != before {
			t.Errorf("%s: a refused request had an effect", tt.name)
		}
	}
}

// A domain id is tied to the order set last that lists it: replacing
// another order that once listed it leaves it with its order, known to the
// domain endpoint, and approving it changes that order.
func TestServer_SetOrderKeepsAnotherOrdersDomain(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	shared := digicerttest.Domain{ID: 41, NameScope: "example.com"}
	b.fake.SetOrder(digicerttest.Order{ID: 1, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{shared}})
	b.fake.SetOrder(digicerttest.Order{ID: 2, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{shared}})
	b.fake.SetOrder(digicerttest.Order{ID: 1, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{{ID: 99, NameScope: "example.net"}}})

	if doc := readValidation(t, b.base, 2); len(doc.NameValidations) != 1 || doc.NameValidations[0].Status != "pending" {
		t.Fatalf("order 2: %+v", doc)
	}
	for _, id := range []int64{41, 99} {
		if resp := send(t, http.MethodPut, domainURL(b.base, id), testKey, `{}`); resp.status != 204 {
			t.Errorf("domain %d: %d %s", id, resp.status, resp.body)
		}
	}
	if !b.fake.ApproveDomain(41) {
		t.Fatal("ApproveDomain(41) = false")
	}
	if o, _ := b.fake.Order(2); o.Status != digicerttest.StatusIssued {
		t.Errorf("order 2 after approving its only domain: %+v, want issued", o)
	}
	if o, _ := b.fake.Order(1); o.Status != digicerttest.StatusPending || o.Domains[0].Status != digicerttest.StatusPending {
		t.Errorf("order 1 changed by another order's domain: %+v", o)
	}
}

// The order's resend endpoint is for DV orders: an OV or EV order gets the
// fake's stand-in error [assumption], and nothing is sent.
func TestServer_OrderResendIsForDVOrdersOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	b.fake.SetOrder(ovOrder)
	b.fake.SetOrder(digicerttest.Order{ID: 3002, Type: digicerttest.OrderEV, Domains: []digicerttest.Domain{{ID: 51, NameScope: "example.net"}}})
	b.fake.SetOrder(digicerttest.Order{ID: 3003, Domains: []digicerttest.Domain{{ID: 61, NameScope: "example.info"}}})
	for _, id := range []int64{3001, 3002} {
		resp := send(t, http.MethodPut, resendURL(b.base, id), testKey, `{}`)
		if resp.status != 400 || !slices.Equal(resp.codes(t), []string{"invalid_order_type|dv_only"}) {
			t.Errorf("order %d: %d %s", id, resp.status, resp.body)
		}
		if len(b.fake.DCVSends(id)) != 0 {
			t.Errorf("order %d: a refused resend was recorded", id)
		}
	}
	if resp := send(t, http.MethodPut, resendURL(b.base, 3003), testKey, `{}`); resp.status != 204 || len(b.fake.DCVSends(3003)) != 1 {
		t.Errorf("DV order: %d %s", resp.status, resp.body)
	}
}

func TestServer_ApproveAndIssue(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	two := digicerttest.Order{ID: 3004, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{
		{ID: 71, NameScope: "a.example.com"}, {ID: 72, NameScope: "b.example.com"}}}
	b.fake.SetOrder(two)
	two.Domains[0].NameScope = "changed.example.com"
	if o, _ := b.fake.Order(3004); o.Domains[0].NameScope != "a.example.com" {
		t.Error("SetOrder kept the caller's slice")
	}
	if !b.fake.ApproveDomain(71) {
		t.Fatal("ApproveDomain(71) = false")
	}
	doc := readValidation(t, b.base, 3004)
	if doc.OrderStatus != "pending" || doc.NameValidations[0].Status != "approved" || doc.NameValidations[1].Status != "pending" {
		t.Errorf("partly approved: %+v", doc)
	}
	b.fake.ApproveDomain(72)
	if o, ok := b.fake.Order(3004); !ok || o.Status != "issued" {
		t.Errorf("all approved: %+v %t, want issued", o, ok)
	}
	if b.fake.ApproveDomain(999) || b.fake.SetOrderStatus(999, "issued") {
		t.Error("approving an unknown domain or issuing an unknown order succeeded")
	}
	// A plain order: its synthetic domain shares its id.
	if !b.fake.ApproveDomain(orderID) || readValidation(t, b.base, orderID).OrderStatus != "issued" {
		t.Error("the plain order's domain approval did not issue it")
	}
	if !b.fake.SetOrderStatus(3004, "canceled") || readValidation(t, b.base, 3004).OrderStatus != "canceled" {
		t.Error("SetOrderStatus did not show")
	}
}

// The validation answer always has the shape certmail requires: the order's
// status as a non-empty string, and dns_name_validations as a list, even for
// an order without domains or one whose status was set to "".
func TestServer_ValidationShape(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	b.fake.SetOrder(digicerttest.Order{ID: 3010, Type: digicerttest.OrderOV})
	b.fake.SetOrder(digicerttest.Order{ID: 3011, Domains: []digicerttest.Domain{{ID: 91, NameScope: "example.com"}}})
	b.fake.SetOrderStatus(3011, "")
	for _, id := range []int64{orderID, 3010, 3011} {
		resp := send(t, http.MethodGet, validationURL(b.base, id), testKey, "")
		var doc map[string]any
		if err := json.Unmarshal(resp.body, &doc); err != nil {
			t.Fatalf("order %d: %v", id, err)
		}
		status, _ := doc["order_status"].(string)
		if _, list := doc["dns_name_validations"].([]any); status == "" || !list {
			t.Errorf("order %d: %s, want order_status a non-empty string and dns_name_validations a list", id, resp.body)
		}
	}
}

// ApproveAfter approves a domain once that many resends reached it, through
// the order or its own endpoint; the order is issued when all are approved.
func TestServer_ApproveAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{ApproveAfter: 2})
	b.fake.SetOrder(digicerttest.Order{ID: 3005, Type: digicerttest.OrderEV, Domains: []digicerttest.Domain{
		{ID: 81, NameScope: "a.example.com"}, {ID: 82, NameScope: "b.example.com"}}})
	status := func(id int64) (string, []string) {
		doc := readValidation(t, b.base, id)
		var ds []string
		for _, d := range doc.NameValidations {
			ds = append(ds, d.Status)
		}
		return doc.OrderStatus, ds
	}
	send(t, http.MethodPut, domainURL(b.base, 81), testKey, `{}`)
	if o, ds := status(3005); o != "pending" || !slices.Equal(ds, []string{"pending", "pending"}) {
		t.Errorf("after one resend: %s %v", o, ds)
	}
	send(t, http.MethodPut, domainURL(b.base, 81), testKey, `{}`)
	if o, ds := status(3005); o != "pending" || !slices.Equal(ds, []string{"approved", "pending"}) {
		t.Errorf("after two resends of one domain: %s %v", o, ds)
	}
	send(t, http.MethodPut, domainURL(b.base, 82), testKey, `{}`)
	send(t, http.MethodPut, domainURL(b.base, 82), testKey, `{}`)
	if o, _ := status(3005); o != "issued" {
		t.Errorf("after both domains: %s, want issued", o)
	}
	// A plain DV order, resent through the order.
	for range 2 {
		if o, _ := status(orderID); o != "pending" {
			t.Fatalf("plain order issued too early: %s", o)
		}
		send(t, http.MethodPut, resendURL(b.base, orderID), testKey, `{}`)
	}
	if o, _ := status(orderID); o != "issued" {
		t.Errorf("plain order after two resends: %s, want issued", o)
	}
	// Reset forgets the counts, not the state.
	b.fake.Reset()
	if o, _ := status(3005); o != "issued" {
		t.Errorf("after Reset: %s", o)
	}
}

// Without ApproveAfter, resends approve nothing, however many; with it, a
// plain order's domain is approved through its own endpoint too.
func TestServer_ApproveAfterZeroNeverApproves(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	b.fake.SetOrder(digicerttest.Order{ID: 3006, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{{ID: 91, NameScope: "example.com"}}})
	for range 3 {
		send(t, http.MethodPut, domainURL(b.base, 91), testKey, `{}`)
		send(t, http.MethodPut, resendURL(b.base, orderID), testKey, `{}`)
	}
	if doc := readValidation(t, b.base, 3006); doc.OrderStatus != "pending" || doc.NameValidations[0].Status != "pending" {
		t.Errorf("OV order after three domain resends: %+v", doc)
	}
	if doc := readValidation(t, b.base, orderID); doc.OrderStatus != "pending" {
		t.Errorf("plain order after three resends: %+v", doc)
	}

	b = setup(t, digicerttest.Config{ApproveAfter: 1})
	if resp := send(t, http.MethodPut, domainURL(b.base, orderID), testKey, `{}`); resp.status != http.StatusNoContent {
		t.Fatalf("the plain order's domain: %d %s", resp.status, resp.body)
	}
	if doc := readValidation(t, b.base, orderID); doc.OrderStatus != "issued" {
		t.Errorf("plain order after its domain's resend: %s, want issued", doc.OrderStatus)
	}
}

// ApproveAfter counts only resends that reach a domain validated by email: a
// domain waiting for a DNS or HTTP token gets no email to answer, whether
// the resend goes through its order or its own endpoint (answered 204 all
// the same), so it stays pending and so does its order.
func TestServer_ApproveAfterCountsEmailDomainsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{ApproveAfter: 1})
	b.fake.SetOrder(digicerttest.Order{ID: 4001, Domains: []digicerttest.Domain{
		{ID: 51, NameScope: "a.example.com"},
		{ID: 52, NameScope: "b.example.com", Method: "dns-txt-token"}}})
	b.fake.SetOrder(digicerttest.Order{ID: 4002, Type: digicerttest.OrderOV, Domains: []digicerttest.Domain{
		{ID: 61, NameScope: "c.example.com", Method: "dns-txt-token"},
		{ID: 62, NameScope: "d.example.com", Method: "http-token"}}})
	state := func(id int64) string {
		doc := readValidation(t, b.base, id)
		s := doc.OrderStatus
		for _, d := range doc.NameValidations {
			s += " " + d.Method + "=" + d.Status
		}
		return s
	}

	for range 3 {
		if resp := send(t, http.MethodPut, resendURL(b.base, 4001), testKey, `{}`); resp.status != http.StatusNoContent {
			t.Fatalf("order resend: %d %s", resp.status, resp.body)
		}
	}
	if got, want := state(4001), "pending email=approved dns-txt-token=pending"; got != want {
		t.Errorf("DV order after three order resends: %s, want %s", got, want)
	}
	for _, id := range []int64{52, 61, 62} {
		for range 3 {
			if resp := send(t, http.MethodPut, domainURL(b.base, id), testKey, `{}`); resp.status != http.StatusNoContent {
				t.Fatalf("domain %d resend: %d %s", id, resp.status, resp.body)
			}
		}
	}
	if got, want := state(4001), "pending email=approved dns-txt-token=pending"; got != want {
		t.Errorf("DV order after its DNS domain's resends: %s, want %s", got, want)
	}
	if got, want := state(4002), "pending dns-txt-token=pending http-token=pending"; got != want {
		t.Errorf("OV order after its domains' resends: %s, want %s", got, want)
	}
	// By hand, as the token being found would, the domain is approved.
	b.fake.ApproveDomain(52)
	if got, want := state(4001), "issued email=approved dns-txt-token=approved"; got != want {
		t.Errorf("DV order after approving its DNS domain by hand: %s, want %s", got, want)
	}
}

// The validation answer has every member of CertCentral's documented
// example (digicert-api.md), with the example's values by default:
// order_name_scope, organization_id (OV and EV orders) and each domain's
// approval_scope too, or the values an Order sets; certmail's client reads
// what it reads of them.
func TestServer_ValidationDocumentedFields(t *testing.T) {
	t.Parallel()
	b := setup(t, digicerttest.Config{})
	b.fake.SetOrder(ovOrder)
	b.fake.SetOrder(digicerttest.Order{ID: 3020, Type: digicerttest.OrderEV, NameScope: "fqdn", OrganizationID: 777,
		Domains: []digicerttest.Domain{{ID: 61, NameScope: "example.com", ApprovalScope: "fqdn"}}})
	raw := func(id int64) (map[string]json.RawMessage, []map[string]json.RawMessage) {
		t.Helper()
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(send(t, http.MethodGet, validationURL(b.base, id), testKey, "").body, &doc); err != nil {
			t.Fatal(err)
		}
		var domains []map[string]json.RawMessage
		if err := json.Unmarshal(doc["dns_name_validations"], &domains); err != nil {
			t.Fatal(err)
		}
		return doc, domains
	}
	keys := func(m map[string]json.RawMessage) []string {
		out := slices.Collect(maps.Keys(m))
		slices.Sort(out)
		return out
	}
	ov, ovDomains := raw(3001)
	documented := []string{"dns_name_validations", "order_dcv_method", "order_id", "order_name_scope", "order_status",
		"organization_id", "organization_validations"}
	if got := keys(ov); !slices.Equal(got, documented) {
		t.Errorf("OV order's members %q, want the documented %q", got, documented)
	}
	documentedDomain := []string{"approval_scope", "dns_names", "domain_id", "method", "name_scope", "status"}
	for _, d := range ovDomains {
		if got := keys(d); !slices.Equal(got, documentedDomain) {
			t.Errorf("domain's members %q, want the documented %q", got, documentedDomain)
		}
	}
	want := map[string]string{"order_name_scope": `"base_domain"`, "organization_id": `"12345"`}
	for k, v := range want {
		if string(ov[k]) != v {
			t.Errorf("OV order's %s = %s, want %s", k, ov[k], v)
		}
	}
	if got := string(ovDomains[0]["approval_scope"]); got != `"subdomains"` {
		t.Errorf("approval_scope = %s, want \"subdomains\"", got)
	}
	dv, dvDomains := raw(orderID)
	if _, present := dv["organization_id"]; present || string(dv["order_name_scope"]) != `"base_domain"` ||
		string(dvDomains[0]["approval_scope"]) != `"subdomains"` {
		t.Errorf("DV order %s, domain %s: want order_name_scope and approval_scope, no organization_id", dv, dvDomains[0])
	}
	ev, evDomains := raw(3020)
	if string(ev["order_name_scope"]) != `"fqdn"` || string(ev["organization_id"]) != `"777"` ||
		string(evDomains[0]["approval_scope"]) != `"fqdn"` {
		t.Errorf("EV order set by hand %s, domain %s", ev, evDomains[0])
	}
	if o, _ := b.fake.Order(3001); o.NameScope != "base_domain" || o.OrganizationID != 12345 || o.Domains[0].ApprovalScope != "subdomains" {
		t.Errorf("Order(3001) = %+v, want the defaults filled in", o)
	}

	c, err := digicert.New(digicert.Config{BaseURL: b.base, APIKey: testKey, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := c.OrderValidation(context.Background(), 3001)
	if err != nil || len(v.DNSNameValidations) != 2 || v.DNSNameValidations[0].ApprovalScope != "subdomains" {
		t.Errorf("the client read %+v, %v; want approval_scope subdomains", v, err)
	}
}
