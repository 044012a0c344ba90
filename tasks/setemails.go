package tasks

import "time"

// SetEmails is the payload of a set-emails task: replace the additional
// notification emails of a DigiCert order with AdditionalEmails. An empty
// list clears them.
type SetEmails struct {
	// OrderID is the DigiCert order id (required, > 0).
	OrderID int64 `json:"order_id"`
	// AdditionalEmails replaces the order's list. Never omitted on the wire:
	// nil and empty both encode as [].
	AdditionalEmails []string `json:"additional_emails"`
	// Account names the configured DigiCert account; empty means DefaultAccount.
	Account string `json:"account,omitempty"`
	// Sequence orders the set-emails requests of one order: DigiCert keeps
	// whatever was written last, so the worker skips a request older than one
	// already applied or sent. Of two requests with the same sequence, both
	// are sent and the one delivered later wins; only a redelivery of the
	// task applied is skipped (duplicate). Give each update a sequence of its
	// own to have them applied in the order they were made. Zero means
	// "stamp it": NewSetEmailsTask and NewTask set it to the current time in
	// Unix nanoseconds, strictly increasing within the process. A producer
	// that sets it gives Unix nanoseconds too, at most MaxSequenceAhead ahead
	// of the clock of whoever validates it (the worker too), so that no
	// request can stay newer than every later one.
	Sequence int64 `json:"sequence,omitempty"`
}

// TaskType returns TypeSetEmails.
func (p SetEmails) TaskType() string { return TypeSetEmails }

// AccountName returns Account, or DefaultAccount when it is empty.
func (p SetEmails) AccountName() string { return accountName(p.Account) }

// Validate returns nil or a *ValidationError listing every problem.
func (p SetEmails) Validate() error {
	_, ps := p.check()
	return result(TypeSetEmails, ps)
}

// Normalized returns a copy with trimmed addresses, lower-case domains,
// duplicates removed and a non-nil AdditionalEmails.
func (p SetEmails) Normalized() Payload {
	n, _ := p.check()
	return n
}

// MarshalJSON encodes p, writing a nil AdditionalEmails as [] so that a
// set-emails payload always says what the list becomes.
func (p SetEmails) MarshalJSON() ([]byte, error) {
	type wire SetEmails // the same fields without this method
	w := wire(p)
	if w.AdditionalEmails == nil {
		w.AdditionalEmails = []string{}
	}
	return marshal(w)
}

// DigiCertBody returns the body of PUT /order/certificate/{order_id}/additional-emails:
// {"additional_emails":[...]}, [] when the list is empty. An invalid payload
// gives a *ValidationError.
func (p SetEmails) DigiCertBody() ([]byte, error) {
	n, ps := p.check()
	if err := result(TypeSetEmails, ps); err != nil {
		return nil, err
	}
	return marshal(struct {
		AdditionalEmails []string `json:"additional_emails"`
	}{n.AdditionalEmails})
}

func (p SetEmails) check() (SetEmails, []FieldError) {
	var ps problems
	n := p
	checkID(&ps, "order_id", p.OrderID)
	n.AdditionalEmails = checkEmails(&ps, "additional_emails", p.AdditionalEmails)
	checkAccount(&ps, p.Account)
	switch {
	case p.Sequence < 0:
		ps.add("sequence", msgNotNegative)
	case p.Sequence > 0 && p.Sequence > time.Now().Add(MaxSequenceAhead).UnixNano(): // no clock read for an unstamped payload
		ps.add("sequence", msgSequenceAhead)
	}
	return n, ps
}

func accountName(a string) string {
	if a == "" {
		return DefaultAccount
	}
	return a
}
