package digicerttest

import (
	"slices"
	"time"
)

// ApprovalEmail is one entry of a resend-emails request: validate Domain
// through Email, whose domain scope is EmailDomain when set.
type ApprovalEmail struct {
	Domain      string
	Email       string
	EmailDomain string
}

// DCVSend is one accepted resend-emails request.
type DCVSend struct {
	OrderID              int64
	DomainApprovalEmails []ApprovalEmail
	Locale               string
	At                   time.Time
}

// DomainDCVSend is one accepted PUT /domain/{domain_id}/dcv/emails request.
type DomainDCVSend struct {
	DomainID   int64
	NameScope  string
	Locale     string
	EmailArray []string
	At         time.Time
}

// CertSend is one accepted sendemail request.
type CertSend struct {
	CertificateID int64
	Emails        []string
	Format        string // certificate_collect_format
	CustomMessage string
	At            time.Time
}

// Requests returns a copy of the requests received, in order of arrival
// (the last Config.RecordLimit of them when that is set).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.requests
	if s.recordLimit > 0 && len(kept) > s.recordLimit {
		kept = kept[len(kept)-s.recordLimit:]
	}
	out := make([]Request, len(kept))
	for i, rec := range kept {
		out[i] = rec.clone()
	}
	return out
}

// RequestCount returns how many requests were received.
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// StatusCount returns how many requests were answered status (0: not
// answered, e.g. reset or hanging).
func (s *Server) StatusCount(status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statuses[status]
}

// InFlight returns how many requests the server is handling now: received
// and neither answered nor given up (by the client, Close or a fault).
// Unlike StatusCount(0), it falls back once a request the client abandoned
// has been left.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// AdditionalEmails returns the additional emails an order holds now, and
// false when they were never set (or were set before the last MaxIDs other
// orders').
func (s *Server) AdditionalEmails(orderID int64) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	emails, ok := s.additional.get(orderID)
	if !ok {
		return nil, false
	}
	return slices.Clone(emails), true
}

// DCVSends returns the accepted resend-emails requests of an order, oldest
// first: the last MaxSendsPerID, none once MaxIDs other orders were sent
// to since.
func (s *Server) DCVSends(orderID int64) []DCVSend {
	s.mu.Lock()
	defer s.mu.Unlock()
	log, _ := s.dcvSends.get(orderID)
	out := make([]DCVSend, len(log))
	for i, send := range log {
		send.DomainApprovalEmails = slices.Clone(send.DomainApprovalEmails)
		out[i] = send
	}
	return out
}

// CertSends returns the accepted sendemail requests of a certificate,
// oldest first, bounded as DCVSends.
func (s *Server) CertSends(certificateID int64) []CertSend {
	s.mu.Lock()
	defer s.mu.Unlock()
	log, _ := s.certSends.get(certificateID)
	out := make([]CertSend, len(log))
	for i, send := range log {
		send.Emails = slices.Clone(send.Emails)
		out[i] = send
	}
	return out
}

// DomainDCVSends returns the accepted DCV resends of a domain through its own
// endpoint, oldest first, bounded as DCVSends.
func (s *Server) DomainDCVSends(domainID int64) []DomainDCVSend {
	s.mu.Lock()
	defer s.mu.Unlock()
	log, _ := s.domainSends.get(domainID)
	out := make([]DomainDCVSend, len(log))
	for i, send := range log {
		send.EmailArray = slices.Clone(send.EmailArray)
		out[i] = send
	}
	return out
}
