package tasks

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Messages naming the rules; a message never repeats the value it judges.
const (
	msgRequired      = "required"
	msgPositive      = "must be greater than 0"
	msgNotNegative   = "must not be negative"
	msgDNSName       = "not a valid DNS name"
	msgAccount       = "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
	msgLocale        = "must look like ll or ll_CC (e.g. en, en_US)"
	msgNoEmails      = "must list at least one address"
	msgCollect       = "must be one of " + CollectAttachment + ", " + CollectPlaintext + ", " + CollectDownloadLink
	msgMessageUTF8   = "must be valid UTF-8"
	msgMessageCtrl   = "must not contain control characters other than newline and tab"
	msgEmailDomain   = "domain must equal it or be a subdomain of it"
	msgSequenceAhead = "must not be more than 1m ahead of the current time in Unix nanoseconds"
)

// Limits of the parts of names and addresses.
const (
	maxLocalPartLen = 64
	maxDNSNameLen   = 253
	maxLabelLen     = 63
	maxNameLen      = 63 // of an account or a queue
)

// Errors returned by ValidateEmail; their text is what FieldError.Message says.
var (
	errEmailEmpty  = errors.New("must not be empty")
	errEmailLong   = errors.New("longer than " + strconv.Itoa(MaxEmailLength) + " characters")
	errEmailASCII  = errors.New("must contain only ASCII characters")
	errEmailBare   = errors.New("not a bare email address")
	errLocalLong   = errors.New("local part longer than " + strconv.Itoa(maxLocalPartLen) + " characters")
	errLocalAtom   = errors.New("local part is not a valid dot-atom")
	errEmailDomain = errors.New("domain is not a valid DNS name")
)

// ValidateEmail returns nil when s is a bare address as certmail accepts it:
// local@domain with no display name, angle brackets, quotes, comments or
// spaces; the local part a dot-atom of at most 64 characters; the domain a
// name ValidDNSName accepts; at most MaxEmailLength characters in all. It
// checks s as given: payloads are trimmed before they are checked, s is not.
// The error text names the broken rule and never contains s.
func ValidateEmail(s string) error {
	switch {
	case s == "":
		return errEmailEmpty
	case len(s) > MaxEmailLength:
		return errEmailLong
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return errEmailASCII
		}
		if c <= ' ' || c == 0x7f || strings.IndexByte(`"(),:;<>[\]`, c) >= 0 {
			return errEmailBare
		}
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || strings.IndexByte(domain, '@') >= 0 {
		return errEmailBare
	}
	switch {
	case len(local) > maxLocalPartLen:
		return errLocalLong
	case !dotAtom(local):
		return errLocalAtom
	case !ValidDNSName(domain):
		return errEmailDomain
	}
	return nil
}

// ValidDNSName reports whether s is an ASCII DNS name of at least two labels,
// each 1 to 63 letters, digits or hyphens and neither starting nor ending with
// a hyphen, at most 253 characters in all, without a trailing dot, and whose
// last label (the top-level domain) is not all digits: no top-level domain
// is, and it keeps IPv4 addresses such as 192.0.2.1 out. Letters may be of
// either case. Internationalised names must be given in their xn-- (punycode)
// form.
func ValidDNSName(s string) bool {
	if len(s) > maxDNSNameLen {
		return false
	}
	labels, last := 0, ""
	for label := range strings.SplitSeq(s, ".") {
		if !dnsLabel(label) {
			return false
		}
		labels, last = labels+1, label
	}
	return labels >= 2 && !allDigits(last)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func dnsLabel(l string) bool {
	if l == "" || len(l) > maxLabelLen || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !isAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// dotAtom reports whether s is an RFC 5322 dot-atom: runs of atext separated
// by single dots, none at either end.
func dotAtom(s string) bool {
	if s == "" {
		return false
	}
	for atom := range strings.SplitSeq(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if c := atom[i]; !isAlnum(c) && strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) < 0 {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// asciiLower lower-cases ASCII letters only, so that no other character can
// turn into an ASCII one (as the Kelvin sign would with strings.ToLower).
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// normalizeEmail trims surrounding spaces and lower-cases the part after the
// last '@', keeping the local part's case.
func normalizeEmail(s string) string {
	s = strings.TrimSpace(s)
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	domain := s[at+1:]
	if lower := asciiLower(domain); lower != domain {
		return s[:at+1] + lower
	}
	return s // already lower-case: no new string
}

// normalizeDomain trims surrounding spaces, lower-cases and strips one
// trailing dot.
func normalizeDomain(s string) string {
	return strings.TrimSuffix(asciiLower(strings.TrimSpace(s)), ".")
}

// checkEmails normalises list, reports each bad element as field[i] and a
// list longer than MaxEntries (after de-duplication) as field, and returns
// the normalised list without case-insensitive duplicates, never nil.
func checkEmails(ps *problems, field string, list []string) []string {
	list = checkLength(ps, field, list)
	out := make([]string, 0, min(len(list), MaxEntries+1))
	seen := make(map[string]struct{}, len(out))
	for i, raw := range list {
		e := normalizeEmail(raw)
		if err := ValidateEmail(e); err != nil {
			if ps.full() {
				ps.skip() // do not build the path of a problem that is only counted
			} else {
				ps.add(index(field, i), err.Error())
			}
		}
		k := asciiLower(e)
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, e)
	}
	if len(out) > MaxEntries {
		ps.add(field, msgTooMany())
	}
	return out
}

// checkLength reports a list longer than MaxListLength and returns the part
// of it that is checked further.
func checkLength[E any](ps *problems, field string, list []E) []E {
	if len(list) > MaxListLength {
		ps.add(field, msgTooLong)
		return list[:MaxListLength]
	}
	return list
}

// msgTooLong is the message for a list longer than MaxListLength.
var msgTooLong = "at most " + strconv.Itoa(MaxListLength) + " elements as sent, duplicates included"

// msgTooMany is the message for a list longer than MaxEntries.
func msgTooMany() string {
	return "at most " + strconv.Itoa(MaxEntries) + " entries"
}

// checkID reports an id that is zero (unset) or negative.
func checkID(ps *problems, field string, id int64) {
	switch {
	case id == 0:
		ps.add(field, msgRequired)
	case id < 0:
		ps.add(field, msgPositive)
	}
}

// checkAccount reports an account name that is set and malformed.
func checkAccount(ps *problems, account string) {
	if account != "" && !validName(account) {
		ps.add("account", msgAccount)
	}
}

// ValidQueueName reports whether name is a queue name certmail accepts: 1 to
// 63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit
// (^[a-z0-9][a-z0-9_-]{0,62}$). It is the one rule of every entry point:
// CERTMAIL_QUEUES, the queue of an API request, a CLI command or a schedule,
// and NewTask's asynq.Queue. A valid name may still be one the workers do
// not serve; only a process that reads CERTMAIL_QUEUES can tell.
func ValidQueueName(name string) bool { return validName(name) }

// validName reports whether s matches ^[a-z0-9][a-z0-9_-]{0,62}$, the rule
// of account and queue names.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		lowerOrDigit := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !lowerOrDigit && (i == 0 || c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// validLocale reports whether s matches ^[a-z]{2}(_[A-Z]{2})?$.
func validLocale(s string) bool {
	lower := func(c byte) bool { return 'a' <= c && c <= 'z' }
	upper := func(c byte) bool { return 'A' <= c && c <= 'Z' }
	switch len(s) {
	case 2:
		return lower(s[0]) && lower(s[1])
	case 5:
		return lower(s[0]) && lower(s[1]) && s[2] == '_' && upper(s[3]) && upper(s[4])
	}
	return false
}

// checkCustomMessage reports every rule a custom message breaks.
func checkCustomMessage(ps *problems, m string) {
	const field = "custom_message"
	if !utf8.ValidString(m) {
		ps.add(field, msgMessageUTF8)
	}
	if utf8.RuneCountInString(m) > MaxCustomMessage {
		ps.add(field, "at most "+strconv.Itoa(MaxCustomMessage)+" characters")
	}
	for _, r := range m {
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			ps.add(field, msgMessageCtrl)
			break
		}
	}
}

// index returns the path of element i of the array at path.
func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
