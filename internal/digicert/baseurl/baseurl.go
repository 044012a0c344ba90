// Package baseurl holds the one set of rules for a CertCentral base URL,
// which the worker's DigiCert client and every process that reads an
// account's settings (package account) apply alike. It imports nothing of
// certmail's, so that the producer side can check a base URL without
// building the DigiCert client.
package baseurl

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Check refuses a CertCentral base URL that the client cannot call
// as it is: one that is not an absolute http or https URL with a host;
// whose port, when it has one, is not a number from 1 to 65535 (a call
// would fail every time, and its tasks be retried for a day); that holds a
// user or password (the API key travels in its header alone); or that has
// a query or a fragment (each call adds its own path and query). Every
// process that reads a base URL checks it with this function, the worker
// through New and the others through package account, so that all refuse
// the same values. Its errors show the URL without its password, query
// and fragment, and the caller names the setting.
func Check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s is not an absolute http(s) URL: it does not parse", unparsed(raw))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%s is not an absolute http(s) URL", shownURL(u))
	case u.Host == "":
		return fmt.Errorf("%s is not an absolute http(s) URL: it has no host", shownURL(u))
	}
	if err := checkPort(u); err != nil {
		return err
	}
	switch {
	case u.User != nil:
		return errors.New("holds a user or password (credentials): want none, the API key is sent in a header of its own")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return errors.New("has a query or a fragment: want none, each call adds its own path and query")
	}
	return nil
}

// checkPort refuses a port of u that is not a number from 1 to 65535, an
// empty one ("host:") included.
func checkPort(u *url.URL) error {
	p := u.Port()
	if p == "" && !strings.HasSuffix(u.Host, ":") {
		return nil
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || p[0] == '+' {
		return fmt.Errorf("port %.16q of host %.128q: want a number from 1 to 65535", p, u.Host)
	}
	return nil
}

// shownURL is u quoted as an error shows it: without its password, query
// and fragment, which may hold a secret, and cut.
func shownURL(u *url.URL) string {
	v := *u
	v.RawQuery, v.ForceQuery, v.Fragment, v.RawFragment = "", false, "", ""
	return fmt.Sprintf("%.128q", v.Redacted())
}

// unparsed is raw, which does not parse, as an error shows it: "the value"
// when it may hold a password, a query or a fragment.
func unparsed(raw string) string {
	if strings.ContainsAny(raw, "@?#") {
		return "the value"
	}
	return fmt.Sprintf("%.128q", raw)
}
