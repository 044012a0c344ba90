package tasks

// Certificate collect formats accepted in SendCert.CertificateCollectFormat.
const (
	// CollectAttachment attaches the certificate to the email.
	CollectAttachment = "attachment"
	// CollectPlaintext puts the certificate in the email body.
	CollectPlaintext = "plaintext"
	// CollectDownloadLink sends a link to download the certificate.
	CollectDownloadLink = "downloadlink"
)

// SendCert is the payload of a send-cert task: email a copy of an issued
// certificate to Emails.
type SendCert struct {
	// CertificateID is the DigiCert certificate id, not the order id
	// (required, > 0).
	CertificateID int64 `json:"certificate_id"`
	// Emails are the recipients: at least one, at most MaxEntries after
	// duplicates are removed.
	Emails []string `json:"emails"`
	// CertificateCollectFormat is CollectAttachment, CollectPlaintext or
	// CollectDownloadLink (required).
	CertificateCollectFormat string `json:"certificate_collect_format"`
	// CustomMessage is optional text added to the email: at most
	// MaxCustomMessage characters, no control characters but newline and tab.
	CustomMessage string `json:"custom_message,omitempty"`
	// Account names the configured DigiCert account; empty means DefaultAccount.
	Account string `json:"account,omitempty"`
}

// TaskType returns TypeSendCert.
func (p SendCert) TaskType() string { return TypeSendCert }

// AccountName returns Account, or DefaultAccount when it is empty.
func (p SendCert) AccountName() string { return accountName(p.Account) }

// Validate returns nil or a *ValidationError listing every problem.
func (p SendCert) Validate() error {
	_, ps := p.check()
	return result(TypeSendCert, ps)
}

// Normalized returns a copy with trimmed addresses, lower-case domains and
// duplicates removed.
func (p SendCert) Normalized() Payload {
	n, _ := p.check()
	return n
}

// DigiCertBody returns the body of PUT /certificate/{certificate_id}/sendemail:
// {"emails":[...],"certificate_collect_format":"...","custom_message":"..."},
// custom_message only when set. An invalid payload gives a *ValidationError.
func (p SendCert) DigiCertBody() ([]byte, error) {
	n, ps := p.check()
	if err := result(TypeSendCert, ps); err != nil {
		return nil, err
	}
	return marshal(struct {
		Emails                   []string `json:"emails"`
		CertificateCollectFormat string   `json:"certificate_collect_format"`
		CustomMessage            string   `json:"custom_message,omitempty"`
	}{n.Emails, n.CertificateCollectFormat, n.CustomMessage})
}

func (p SendCert) check() (SendCert, []FieldError) {
	var ps problems
	n := p
	checkID(&ps, "certificate_id", p.CertificateID)
	switch {
	case p.Emails == nil:
		ps.add("emails", msgRequired)
	case len(p.Emails) == 0:
		ps.add("emails", msgNoEmails)
	default:
		n.Emails = checkEmails(&ps, "emails", p.Emails)
	}
	switch p.CertificateCollectFormat {
	case CollectAttachment, CollectPlaintext, CollectDownloadLink:
	case "":
		ps.add("certificate_collect_format", msgRequired)
	default:
		ps.add("certificate_collect_format", msgCollect)
	}
	checkCustomMessage(&ps, p.CustomMessage)
	checkAccount(&ps, p.Account)
	return n, ps
}
