package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// MaxHosts bounds Config.Hosts (CERTMAIL_API_HOSTS): a deployment has a
// few names, a service's and an ingress's; a list far longer is a mistake.
const MaxHosts = 100

// maxHostLen is the longest DNS name, in bytes.
const maxHostLen = 253

// maxLabelLen is the longest label of a DNS name, in bytes.
const maxLabelLen = 63

// ParseHosts reads CERTMAIL_API_HOSTS: host names separated by commas, each
// a name (api.example.com) or a wildcard (*.example.com: any name under
// example.com, not example.com itself); white space around an entry and
// empty entries are ignored, case and a trailing dot too. It returns the
// entries checked and normalized (lower case, no trailing dot). An error
// names the entry by position and, when it is not too long to be a host
// name, by itself.
func ParseHosts(list string) ([]string, error) {
	var hosts []string
	n := 0
	for _, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		n++
		if n > MaxHosts {
			return nil, fmt.Errorf("more than %d entries", MaxHosts)
		}
		h, err := checkHost(entry)
		if err != nil {
			return nil, hostError("entry", n, entry, err)
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return nil, errors.New("no host name, only commas and spaces: give host names, or unset it to answer any")
	}
	return hosts, nil
}

// checkHosts reports the first host of Config.Hosts that cannot be one,
// or a list over MaxHosts.
func checkHosts(hosts []string) error {
	if len(hosts) > MaxHosts {
		return fmt.Errorf("%d API hosts, more than %d", len(hosts), MaxHosts)
	}
	for i, h := range hosts {
		if _, err := checkHost(h); err != nil {
			return hostError("API host", i+1, h, err)
		}
	}
	return nil
}

// hostError is err about the host entry at position n, named by what and n
// and, when short enough to be a host name, quoted (escaped, so that it
// stays on one line).
func hostError(what string, n int, entry string, err error) error {
	if len(entry) > maxHostLen {
		return fmt.Errorf("%s %d: %w", what, n, err)
	}
	return fmt.Errorf("%s %d %q: %w", what, n, entry, err)
}

// checkHost returns entry, a host name or *.name, in lower case without a
// trailing dot, or why it cannot be one. An IP address is accepted, and is
// useless: the API answers every IP address anyway (rebindSafeHost).
func checkHost(entry string) (string, error) {
	if len(entry) > maxHostLen {
		return "", fmt.Errorf("%d bytes, more than %d (the longest host name)", len(entry), maxHostLen)
	}
	if strings.Contains(entry, "://") {
		return "", errors.New("a host name, not a URL: drop the scheme")
	}
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(entry, "["), "]")); err == nil {
		return entry, nil
	}
	if strings.Contains(entry, ":") {
		return "", errors.New("a host name without a port: the API answers it whatever the port")
	}
	if strings.Contains(entry, "/") {
		return "", errors.New("a host name, without a path")
	}
	name := strings.ToLower(strings.TrimSuffix(entry, "."))
	if name == "*" || name == "*." || name == "" {
		return "", errors.New("a bare * would answer every host name: unset the setting to answer any")
	}
	base, wild := strings.CutPrefix(name, "*.")
	if wild && !strings.Contains(base, ".") {
		return "", errors.New("a wildcard must have at least two labels after *. (*.example.com): one would answer a whole top-level domain")
	}
	for _, label := range strings.Split(base, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	return name, nil
}

// checkLabel reports why label cannot be part of a host name: 1 to 63
// letters, digits, hyphens or underscores (an internationalized name is
// given in its xn-- form, as browsers send it).
func checkLabel(label string) error {
	switch {
	case label == "":
		return errors.New("an empty label (two dots in a row, or a leading dot)")
	case label == "*":
		return errors.New("* may only be the first label, followed by a dot (*.example.com)")
	case len(label) > maxLabelLen:
		return fmt.Errorf("a label of %d bytes, more than %d", len(label), maxLabelLen)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !isAlnum(c) && c != '-' && c != '_' {
			return errors.New("a host name has only letters, digits, hyphens, underscores and dots (an internationalized name in its xn-- form)")
		}
	}
	return nil
}

// hostList holds the names of Config.Hosts: exact names, and the bases of
// the wildcards (example.com for *.example.com).
type hostList struct {
	names map[string]bool
	under map[string]bool
}

// newHostList returns the list of hosts (checked), or nil when there is
// none: the API then answers any Host (see Server.answersHost).
func newHostList(hosts []string) *hostList {
	if len(hosts) == 0 {
		return nil
	}
	l := &hostList{names: map[string]bool{}, under: map[string]bool{}}
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if base, ok := strings.CutPrefix(h, "*."); ok {
			l.under[base] = true
		} else {
			l.names[h] = true
		}
	}
	return l
}

// has reports whether name (lower case, no port, no trailing dot) is one of
// the list or under one of its wildcards. It looks each parent name up,
// so the time taken grows with the name's labels, not with the list.
func (l *hostList) has(name string) bool {
	if l.names[name] {
		return true
	}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return false
		}
		rest = rest[i+1:]
		if l.under[rest] {
			return true
		}
	}
}

// answersHost reports whether the API answers r, for a route that asks a,
// given the host r is addressed to. With Config.Hosts it answers, on every
// route, the hosts rebindSafeHost accepts and those of the list; without,
// any host, but without authentication only those rebindSafeHost accepts
// on the routes that need a token. A page rebound to the API's address
// sends its own host name (DNS rebinding), so what this refuses it cannot
// reach: no route, and no failed authentication counted.
func (s *Server) answersHost(r *http.Request, a access) bool {
	switch {
	case s.hosts != nil:
		return rebindSafeHost(r.Host) || s.hosts.has(hostName(r.Host))
	case s.cfg.InsecureNoAuth && a != accessOpen:
		return rebindSafeHost(r.Host)
	}
	return true
}

// refuseHost answers 403 to a request addressed to a host the API does not
// answer (answersHost), and counts it as reason host.
func (s *Server) refuseHost(w http.ResponseWriter, r *http.Request) {
	s.metrics.authFailures.WithLabelValues(authHost).Inc()
	detail := "the API answers only requests addressed to an IP address, localhost, *.localhost, a host name without dots " +
		"or one of CERTMAIL_API_HOSTS"
	if s.hosts == nil {
		detail = "without authentication (--insecure-no-auth) the API " +
			"answers only requests addressed to an IP address, localhost, *.localhost or a host name without dots"
	}
	s.writeProblem(w, r, Problem{Status: http.StatusForbidden, Detail: detail}, nil)
}

// hostOf is the host of a Host header: without its port, and an IPv6
// address without its brackets.
func hostOf(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

// hostName is the name a Host header names, as names are compared: its host
// (hostOf) in lower case without a trailing dot.
func hostName(hostport string) string {
	return strings.ToLower(strings.TrimSuffix(hostOf(hostport), "."))
}

// rebindSafeHost reports whether a request's Host is one a web page of
// another site cannot get a browser to send by DNS rebinding (its own name
// resolved to this server's address, which makes the page same-origin with
// the API): an IP address, localhost or *.localhost, a name without dots
// (a container's or a host's on the local network), or none. Without
// authentication that is what keeps a page the operator visits from using
// the API and the dashboard. With tokens a rebound page has no valid one to
// send, but the wrong ones it can send count against the operator's address
// (see failureKey), and it can read the open routes: Config.Hosts makes the
// API refuse it on every route, whatever the authentication.
func rebindSafeHost(hostport string) bool {
	if _, err := netip.ParseAddr(hostOf(hostport)); err == nil {
		return true
	}
	host := hostName(hostport)
	return !strings.Contains(host, ".") || strings.HasSuffix(host, ".localhost")
}
