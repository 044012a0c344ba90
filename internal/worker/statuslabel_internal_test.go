package worker

import "testing"

// Whatever status DigiCert or a proxy on the way answers, the status label
// of certmail_digicert_requests_total takes one of a fixed set of values:
// the statuses DigiCert documents and certmail handles apart by number
// (429 among them, which the alert reads), the rest by class.
func TestStatusLabelBounded(t *testing.T) {
	for status, want := range map[int]string{0: "0", 204: "204", 400: "400", 401: "401", 403: "403", 404: "404",
		429: "429", 503: "503", 207: "2xx", 302: "3xx", 418: "4xx", 499: "4xx", 599: "5xx", 100: "other", 600: "other",
		999: "other", -1: "other"} {
		if got := statusLabel(status); got != want {
			t.Errorf("statusLabel(%d) = %q, want %q", status, got, want)
		}
	}
	values := map[string]bool{}
	for status := -10; status < 1100; status++ {
		values[statusLabel(status)] = true
	}
	if most := len(labelledStatuses) + 5; len(values) > most {
		t.Errorf("%d label values for the statuses -10 to 1099, want at most %d", len(values), most)
	}
}
