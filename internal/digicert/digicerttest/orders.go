package digicerttest

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
)

// Order types the fake models.
const (
	OrderDV = "dv" // domain validated: DCV emails are resent through the order
	OrderOV = "ov" // organization validated: DCV emails are resent per domain
	OrderEV = "ev" // extended validation: as OV
)

// Validation states, as CertCentral reports them.
const (
	StatusPending  = "pending"  // an order or a domain waiting for validation
	StatusApproved = "approved" // a validated domain
	StatusIssued   = "issued"   // an order whose certificate was issued
	MethodEmail    = "email"    // a domain validated by email
)

// Defaults of the validation answer's descriptive fields, the values of
// DigiCert's documented example. [assumption] The other values they take
// are not documented; certmail reads none of them to decide anything.
const (
	DefaultOrderNameScope = "base_domain" // order_name_scope
	DefaultApprovalScope  = "subdomains"  // a domain's approval_scope
	DefaultOrganizationID = 12345         // organization_id of an OV or EV order
)

// Domain is one domain of an order and the state of its validation.
type Domain struct {
	ID            int64
	NameScope     string   // the FQDN tied to the domain id
	ApprovalScope string   // approval_scope: DefaultApprovalScope when empty
	Method        string   // MethodEmail when empty; also "dns-txt-token", "http-token", ...
	Status        string   // StatusPending when empty, or StatusApproved
	DNSNames      []string // the order's names it covers; [NameScope] when empty
}

// Order is an order and the state of its validation.
type Order struct {
	ID      int64
	Type    string // OrderDV when empty, OrderOV or OrderEV
	Status  string // StatusPending when empty; StatusIssued, "rejected", "canceled", ...
	Domains []Domain
	// NameScope is order_name_scope: DefaultOrderNameScope when empty.
	NameScope string
	// OrganizationID is organization_id: DefaultOrganizationID for an OV or
	// EV order when 0. A DV order reports none unless it is set
	// [assumption: DigiCert's example is an OV order's, and a DV order
	// needs no organization].
	OrganizationID int64
}

// clone returns a deep copy of o.
func (o Order) clone() Order {
	o.Domains = slices.Clone(o.Domains)
	for i := range o.Domains {
		o.Domains[i].DNSNames = slices.Clone(o.Domains[i].DNSNames)
	}
	return o
}

// withDefaults fills in the documented defaults.
func (o Order) withDefaults() Order {
	if o.Type == "" {
		o.Type = OrderDV
	}
	if o.Status == "" {
		o.Status = StatusPending
	}
	o.NameScope = cmp.Or(o.NameScope, DefaultOrderNameScope)
	if o.OrganizationID == 0 && o.Type != OrderDV {
		o.OrganizationID = DefaultOrganizationID
	}
	for i := range o.Domains {
		d := &o.Domains[i]
		d.ApprovalScope = cmp.Or(d.ApprovalScope, DefaultApprovalScope)
		if d.Method == "" {
			d.Method = MethodEmail
		}
		if d.Status == "" {
			d.Status = StatusPending
		}
		if len(d.DNSNames) == 0 && d.NameScope != "" {
			d.DNSNames = []string{d.NameScope}
		}
	}
	return o
}

// SingleDomainOrder returns a pending order of type typ (OrderDV when
// empty) with one domain, whose id is the order's and whose name is
// order<id>.example.com, waiting for validation by email. Its DV form is
// what the fake reports for an order known without a model (AddOrder,
// AnyIDExists).
func SingleDomainOrder(id int64, typ string) Order {
	name := "order" + strconv.FormatInt(id, 10) + ".example.com"
	return Order{ID: id, Type: typ, Domains: []Domain{{ID: id, NameScope: name}}}
}

// syntheticOrder is the order the fake reports for an id known without a
// model: SingleDomainOrder's DV order, its defaults filled in.
func syntheticOrder(id int64) Order {
	return SingleDomainOrder(id, OrderDV).withDefaults()
}

// SetOrder adds or replaces an order with its validation state (the
// defaults of Order and Domain filled in). Its domains become known to
// PUT /domain/{domain_id}/dcv/emails. The fake ties a domain id to one
// order, the one set last that lists it (ApproveDomain changes that one);
// replacing an order lets go of the domains tied to it only.
func (s *Server) SetOrder(o Order) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setOrder(o.clone().withDefaults())
	s.learned.remove(o.ID) // set by hand: kept for good
}

// setOrder needs s.mu held.
func (s *Server) setOrder(o Order) {
	if old := s.models[o.ID]; old != nil {
		for _, d := range old.Domains {
			if s.domainOrder[d.ID] == o.ID { // not a domain another order took since
				delete(s.domainOrder, d.ID)
			}
		}
	}
	s.models[o.ID] = &o
	for _, d := range o.Domains {
		s.domainOrder[d.ID] = o.ID
	}
}

// AddDomain makes domains known that belong to no order (submitted for
// pre-validation).
func (s *Server) AddDomain(ids ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if _, ok := s.domainOrder[id]; !ok {
			s.domainOrder[id] = 0
		}
	}
}

// Order returns an order's validation state as GET .../validation reports
// it, and false for an order that does not exist.
func (s *Server) Order(id int64) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.orderExists(id) {
		return Order{}, false
	}
	return s.model(id).clone(), true
}

// model returns the order's model, the synthetic one for an order known
// without; it needs s.mu held and the order to exist.
func (s *Server) model(id int64) *Order {
	if m := s.models[id]; m != nil {
		return m
	}
	o := syntheticOrder(id)
	return &o
}

// materialize makes the synthetic model of an existing order a stored one,
// so that changes to it last, for good (a test changed it by hand); it needs
// s.mu held.
func (s *Server) materialize(id int64) *Order {
	m := s.learn(id)
	s.learned.remove(id)
	return m
}

// learn is materialize for a request (ApproveAfter counting resends): the
// models made this way are kept for the MaxIDs orders learned most
// recently, since a demo's every id would grow them without bound, and an
// order forgotten is synthetic again. It needs s.mu held.
func (s *Server) learn(id int64) *Order {
	if m := s.models[id]; m != nil {
		if _, ok := s.learned.get(id); ok {
			s.learned.put(id, struct{}{}) // the newest again
		}
		return m
	}
	s.setOrder(syntheticOrder(id))
	if forgot, ok := s.learned.put(id, struct{}{}); ok {
		s.forgetOrder(forgot)
	}
	return s.models[id]
}

// forgetOrder drops an order's model and its domains; it needs s.mu held.
func (s *Server) forgetOrder(id int64) {
	if m := s.models[id]; m != nil {
		for _, d := range m.Domains {
			if s.domainOrder[d.ID] == id {
				delete(s.domainOrder, d.ID)
			}
		}
		delete(s.models, id)
	}
}

// ApproveDomain approves a domain, as its owner answering a DCV email
// would; an order whose domains are then all approved is issued. It
// reports false for a domain of no known order.
func (s *Server) ApproveDomain(domainID int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	orderID, ok := s.domainOrder[domainID]
	switch {
	case ok && orderID == 0:
		return true // a domain on its own: nothing else to change
	case !ok && s.orderExists(domainID) && s.models[domainID] == nil:
		orderID = domainID // the synthetic order's domain
		s.materialize(orderID)
	case !ok:
		return false
	}
	s.learned.remove(orderID) // changed by hand: kept for good
	s.approve(s.models[orderID], domainID)
	return true
}

// SetOrderStatus sets an order's status (StatusIssued, "rejected",
// "canceled", or StatusPending again, as "" is); false for an unknown order.
func (s *Server) SetOrderStatus(orderID int64, status string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.orderExists(orderID) {
		return false
	}
	s.materialize(orderID).Status = cmp.Or(status, StatusPending) // CertCentral always names the status
	return true
}

// approve approves one domain of m and issues m once every domain is
// approved; it needs s.mu held.
func (s *Server) approve(m *Order, domainID int64) {
	all := true
	for i := range m.Domains {
		if m.Domains[i].ID == domainID {
			m.Domains[i].Status = StatusApproved
		}
		all = all && m.Domains[i].Status == StatusApproved
	}
	if all && m.Status == StatusPending {
		m.Status = StatusIssued
	}
}

// countOrderResend counts a resend through the order for each of its
// pending domains validated by email (ApproveAfter); it needs s.mu held.
func (s *Server) countOrderResend(orderID int64) {
	if s.approveAfter <= 0 {
		return
	}
	m := s.learn(orderID)
	for _, d := range slices.Clone(m.Domains) {
		if d.Status == StatusPending && d.Method == MethodEmail {
			s.countDomainResend(d.ID)
		}
	}
}

// countDomainResend counts one resend that reached a domain and approves it
// at ApproveAfter. A domain of an order validated otherwise than by email
// (a DNS or HTTP token) is not counted: it is sent no DCV email, so there is
// none for its owner to answer. It needs s.mu held.
func (s *Server) countDomainResend(domainID int64) {
	if s.approveAfter <= 0 {
		return
	}
	orderID := s.domainOrder[domainID]
	if orderID != 0 && !s.models[orderID].byEmail(domainID) {
		return
	}
	n, _ := s.resends.get(domainID)
	s.resends.put(domainID, n+1)
	if n+1 < s.approveAfter {
		return
	}
	if orderID != 0 {
		s.approve(s.models[orderID], domainID)
	}
}

// byEmail reports whether the order's domain is validated by email.
func (o *Order) byEmail(domainID int64) bool {
	for _, d := range o.Domains {
		if d.ID == domainID {
			return d.Method == MethodEmail
		}
	}
	return false
}

// domainExists needs s.mu held.
func (s *Server) domainExists(id int64) bool {
	if id <= 0 || s.missing[id] {
		return false
	}
	_, known := s.domainOrder[id]
	return known || s.anyID || s.orders[id] && s.models[id] == nil
}

// resendDomainEmails records a DCV resend of one domain.
func (s *Server) resendDomainEmails(send DomainDCVSend) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.domainExists(send.DomainID) {
		// [assumption] CertCentral's code for an unknown domain id is not
		// documented; not_found|domain follows not_found|order.
		return apiError(http.StatusNotFound, "not_found|domain", "Domain not found.")
	}
	if _, known := s.domainOrder[send.DomainID]; !known && s.approveAfter > 0 && s.orderExists(send.DomainID) {
		s.learn(send.DomainID) // the synthetic order's domain, so that its approval lasts
	}
	send.At = s.clock()
	appendLog(s.domainSends, send.DomainID, send)
	s.countDomainResend(send.DomainID)
	return answer{status: http.StatusNoContent}
}

// validationDNSName is one entry of the validation answer's
// dns_name_validations.
type validationDNSName struct {
	DomainID      string   `json:"domain_id"`
	NameScope     string   `json:"name_scope"`
	ApprovalScope string   `json:"approval_scope"`
	Status        string   `json:"status"`
	Method        string   `json:"method"`
	DNSNames      []string `json:"dns_names"`
}

// orgValidation is one entry of the validation answer's
// organization_validations.
type orgValidation struct {
	Type   string `json:"type"`
	Status string `json:"status"`
}

// validationDoc is the validation answer: every member of CertCentral's
// documented example, ids as strings as there.
type validationDoc struct {
	OrderID         string              `json:"order_id"`
	OrderStatus     string              `json:"order_status"`
	OrderNameScope  string              `json:"order_name_scope"`
	OrderDCVMethod  string              `json:"order_dcv_method"`
	OrganizationID  string              `json:"organization_id,omitempty"`
	OrgValidations  []orgValidation     `json:"organization_validations,omitempty"`
	NameValidations []validationDNSName `json:"dns_name_validations"`
}

// validation answers GET /order/certificate/{id}/validation.
func (s *Server) validation(orderID int64) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.orderExists(orderID) {
		return orderNotFound()
	}
	m := s.model(orderID)
	doc := validationDoc{OrderID: strconv.FormatInt(m.ID, 10), OrderStatus: m.Status, OrderNameScope: m.NameScope,
		OrderDCVMethod: MethodEmail, NameValidations: []validationDNSName{}}
	if m.OrganizationID != 0 {
		doc.OrganizationID = strconv.FormatInt(m.OrganizationID, 10)
	}
	if m.Type != OrderDV {
		status := StatusPending
		if m.Status == StatusIssued {
			status = "completed"
		}
		doc.OrgValidations = []orgValidation{{Type: m.Type, Status: status}}
	}
	for i, d := range m.Domains {
		if i == 0 {
			doc.OrderDCVMethod = d.Method
		}
		doc.NameValidations = append(doc.NameValidations, validationDNSName{DomainID: strconv.FormatInt(d.ID, 10),
			NameScope: d.NameScope, ApprovalScope: d.ApprovalScope, Status: d.Status, Method: d.Method,
			DNSNames: slices.Clone(d.DNSNames)})
	}
	body, err := json.Marshal(doc)
	if err != nil { // cannot happen for these types; answer something honest anyway
		return answer{status: http.StatusInternalServerError}
	}
	return answer{status: http.StatusOK, body: body, contentType: "application/json"}
}

// notDVOrder is the answer of the order's resend endpoint for an OV or EV
// order. [assumption] CertCentral documents that the endpoint is for DV
// orders only, but not the error another order gets: a 400 with this code
// stands in for it, and certmail treats it as permanent, as every 400.
func notDVOrder() answer {
	return apiError(http.StatusBadRequest, "invalid_order_type|dv_only",
		"DCV emails of an OV or EV order are resent per domain: PUT /domain/{domain_id}/dcv/emails.")
}
