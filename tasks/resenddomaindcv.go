package tasks

// ResendDomainDCV is the payload of a resend-domain-dcv task: resend the
// domain-control-validation emails of one DigiCert domain, the way the
// domains of OV and EV orders and domains submitted for pre-validation are
// validated. Every field but DomainID is optional.
type ResendDomainDCV struct {
	// DomainID is the DigiCert domain id (required, > 0), not an order id.
	DomainID int64 `json:"domain_id"`
	// NameScope optionally names the FQDN tied to the domain id whose
	// validation the emails are for (a DNS name).
	NameScope string `json:"name_scope,omitempty"`
	// Locale is the language of the emails, "ll" or "ll_CC"; empty leaves the
	// choice to DigiCert.
	Locale string `json:"locale,omitempty"`
	// EmailArray optionally limits the recipients to these addresses (DigiCert
	// ignores those that are not valid DCV addresses of the domain); at most
	// MaxEntries after duplicates are removed.
	EmailArray []string `json:"email_array,omitempty"`
	// Account names the configured DigiCert account; empty means DefaultAccount.
	Account string `json:"account,omitempty"`
}

// TaskType returns TypeResendDomainDCV.
func (p ResendDomainDCV) TaskType() string { return TypeResendDomainDCV }

// AccountName returns Account, or DefaultAccount when it is empty.
func (p ResendDomainDCV) AccountName() string { return accountName(p.Account) }

// Validate returns nil or a *ValidationError listing every problem.
func (p ResendDomainDCV) Validate() error {
	_, ps := p.check()
	return result(TypeResendDomainDCV, ps)
}

// Normalized returns a copy with a trimmed, lower-case NameScope (one
// trailing dot stripped), trimmed addresses with lower-case domains and
// duplicates removed; an empty EmailArray becomes nil.
func (p ResendDomainDCV) Normalized() Payload {
	n, _ := p.check()
	return n
}

// DigiCertBody returns the body of PUT /domain/{domain_id}/dcv/emails:
// {} when nothing optional is set, otherwise
// {"name_scope":"...","locale":"en","email_array":[...]} with each field
// present only when set. An invalid payload gives a *ValidationError.
func (p ResendDomainDCV) DigiCertBody() ([]byte, error) {
	n, ps := p.check()
	if err := result(TypeResendDomainDCV, ps); err != nil {
		return nil, err
	}
	return marshal(struct {
		NameScope  string   `json:"name_scope,omitempty"`
		Locale     string   `json:"locale,omitempty"`
		EmailArray []string `json:"email_array,omitempty"`
	}{n.NameScope, n.Locale, n.EmailArray})
}

func (p ResendDomainDCV) check() (ResendDomainDCV, []FieldError) {
	var ps problems
	n := p
	checkID(&ps, "domain_id", p.DomainID)
	n.NameScope = normalizeDomain(p.NameScope)
	if (n.NameScope != "" || p.NameScope != "") && !ValidDNSName(n.NameScope) { // "." and " " name nothing
		ps.add("name_scope", msgDNSName)
	}
	if p.Locale != "" && !validLocale(p.Locale) {
		ps.add("locale", msgLocale)
	}
	n.EmailArray = checkEmails(&ps, "email_array", p.EmailArray)
	if len(n.EmailArray) == 0 {
		n.EmailArray = nil
	}
	checkAccount(&ps, p.Account)
	return n, ps
}
