package tasks

import "strings"

// DomainApprovalEmail picks the address a DCV email goes to for one domain.
type DomainApprovalEmail struct {
	// Domain is the domain being validated (required, a DNS name).
	Domain string `json:"domain"`
	// Email is the approval address (required, a bare address).
	Email string `json:"email"`
	// EmailDomain, when set, is the base domain the address belongs to;
	// Domain must equal it or be a subdomain of it.
	EmailDomain string `json:"email_domain,omitempty"`
}

// ResendDCV is the payload of a resend-dcv task: resend the
// domain-control-validation emails of a DigiCert order, optionally to chosen
// addresses and in a chosen language.
type ResendDCV struct {
	// OrderID is the DigiCert order id (required, > 0).
	OrderID int64 `json:"order_id"`
	// DomainApprovalEmails optionally picks the address per domain; at most
	// MaxEntries after duplicates (same domain and email) are removed.
	DomainApprovalEmails []DomainApprovalEmail `json:"domain_approval_emails,omitempty"`
	// Locale is the language of the emails, "ll" or "ll_CC"; empty leaves the
	// choice to DigiCert.
	Locale string `json:"locale,omitempty"`
	// OnlyIfPending makes the worker read the order's validation status
	// first (GET /order/certificate/{order_id}/validation): when the order
	// is no longer pending, or none of its domains awaits email validation,
	// nothing is sent and the task completes with the outcome not_pending;
	// an answer that does not say so is retried, never read as not pending.
	// Otherwise a DV order is resent through the order as without the field,
	// and an OV or EV order through PUT /domain/{domain_id}/dcv/emails for
	// each domain awaiting email validation. It is never sent to DigiCert;
	// false is the same as absent.
	OnlyIfPending bool `json:"only_if_pending,omitempty"`
	// Account names the configured DigiCert account; empty means DefaultAccount.
	Account string `json:"account,omitempty"`
}

// TaskType returns TypeResendDCV.
func (p ResendDCV) TaskType() string { return TypeResendDCV }

// AccountName returns Account, or DefaultAccount when it is empty.
func (p ResendDCV) AccountName() string { return accountName(p.Account) }

// Validate returns nil or a *ValidationError listing every problem.
func (p ResendDCV) Validate() error {
	_, ps := p.check()
	return result(TypeResendDCV, ps)
}

// Normalized returns a copy with trimmed, lower-case domains (one trailing
// dot stripped), trimmed addresses with lower-case domains, and duplicate
// entries removed; an empty DomainApprovalEmails becomes nil.
func (p ResendDCV) Normalized() Payload {
	n, _ := p.check()
	return n
}

// DigiCertBody returns the body of PUT /order/certificate/{order_id}/resend-emails:
// {} when neither entries nor locale are set, otherwise
// {"domain_approval_emails":[...],"locale":"en"} with each field present only
// when set (OnlyIfPending and Account are certmail's, never sent). An invalid
// payload gives a *ValidationError.
func (p ResendDCV) DigiCertBody() ([]byte, error) {
	n, ps := p.check()
	if err := result(TypeResendDCV, ps); err != nil {
		return nil, err
	}
	return marshal(struct {
		DomainApprovalEmails []DomainApprovalEmail `json:"domain_approval_emails,omitempty"`
		Locale               string                `json:"locale,omitempty"`
	}{n.DomainApprovalEmails, n.Locale})
}

func (p ResendDCV) check() (ResendDCV, []FieldError) {
	var ps problems
	n := p
	checkID(&ps, "order_id", p.OrderID)
	n.DomainApprovalEmails = nil
	seen := make(map[string]struct{})
	for i, e := range checkLength(&ps, "domain_approval_emails", p.DomainApprovalEmails) {
		path := index("domain_approval_emails", i)
		ne := checkApproval(&ps, path, e)
		k := ne.Domain + "\x00" + asciiLower(ne.Email)
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		n.DomainApprovalEmails = append(n.DomainApprovalEmails, ne)
	}
	if len(n.DomainApprovalEmails) > MaxEntries {
		ps.add("domain_approval_emails", msgTooMany())
	}
	if p.Locale != "" && !validLocale(p.Locale) {
		ps.add("locale", msgLocale)
	}
	checkAccount(&ps, p.Account)
	return n, ps
}

// checkApproval normalises one entry and reports its problems under path.
func checkApproval(ps *problems, path string, e DomainApprovalEmail) DomainApprovalEmail {
	n := DomainApprovalEmail{
		Domain:      normalizeDomain(e.Domain),
		Email:       normalizeEmail(e.Email),
		EmailDomain: normalizeDomain(e.EmailDomain),
	}
	domainOK := false
	switch {
	case n.Domain == "":
		ps.add(path+".domain", msgRequired)
	case !ValidDNSName(n.Domain):
		ps.add(path+".domain", msgDNSName)
	default:
		domainOK = true
	}
	if n.Email == "" {
		ps.add(path+".email", msgRequired)
	} else if err := ValidateEmail(n.Email); err != nil {
		ps.add(path+".email", err.Error())
	}
	switch {
	case e.EmailDomain == "": // absent: the domain itself
	case !ValidDNSName(n.EmailDomain): // "." and " " name nothing
		ps.add(path+".email_domain", msgDNSName)
	case domainOK && n.Domain != n.EmailDomain && !strings.HasSuffix(n.Domain, "."+n.EmailDomain):
		ps.add(path+".email_domain", msgEmailDomain)
	}
	return n
}
