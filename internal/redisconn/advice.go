package redisconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Advice is what the failure line of a command adds to err, an error of a
// command on c: where certmail looked and what to check, after "; ". It
// names setting, the way the user gave REDIS_URL (the variable or a flag),
// as the thing to check. It is "" when err is none of these:
//
//   - the sentinels, all of them, did not give the master's address: none
//     knows the master's name (?master=), or they refused their password
//     (sentinel_password), or none answered;
//   - a TLS connection failed (rediss://): the server's certificate is not
//     trusted, or the server refused the client (it asks for a client
//     certificate, which certmail does not send), or it does not speak TLS;
//   - Redis could not be reached or did not answer (Unreachable).
//
// An answer of Redis's (a refused password, a missing database, a full
// memory) says what is wrong itself.
func (c *Conn) Advice(err error, setting string) string {
	if err == nil {
		return ""
	}
	if a := c.sentinelAdvice(err, setting); a != "" {
		return a
	}
	if TLSFailure(err) {
		return fmt.Sprintf("; the TLS connection to Redis at %s failed: certmail trusts the system's certificate "+
			"authorities (a private one is added with SSL_CERT_FILE or SSL_CERT_DIR) and sends no client certificate "+
			"(the server needs tls-auth-clients no or optional)", c.Target)
	}
	if Unreachable(err) {
		return fmt.Sprintf("; Redis at %s did not answer: check that it is running and that %s names it", c.Target, setting)
	}
	return ""
}

// sentinelsUnreachable starts go-redis's error when no sentinel gave the
// master's address; the sentinels' errors follow it, joined.
const sentinelsUnreachable = "redis: all sentinels specified in configuration are unreachable"

// sentinelAdvice is Advice for an error of Sentinel discovery: the
// sentinels' errors say whether they answered. "" for any other error, and
// for sentinels none of which answered (Unreachable's advice then fits).
func (c *Conn) sentinelAdvice(err error, setting string) string {
	o, ok := baseOpt(c.Opt).(asynq.RedisFailoverClientOpt)
	if !ok || !strings.Contains(err.Error(), sentinelsUnreachable) {
		return ""
	}
	var refused, unknown bool
	for _, e := range sentinelErrors(err) {
		switch {
		case redis.HasErrorPrefix(e, "WRONGPASS") || redis.HasErrorPrefix(e, "NOAUTH") || redis.HasErrorPrefix(e, "NOPERM"):
			refused = true
		case errors.Is(e, redis.Nil):
			unknown = true
		}
	}
	addrs := strings.Join(o.SentinelAddrs, ",")
	switch {
	case refused:
		return fmt.Sprintf("; the sentinels at %s refused the password certmail gave them: check %s "+
			"(and %s for an ACL user) in %s", addrs, paramSentinelPassword, paramSentinelUsername, setting)
	case unknown:
		return fmt.Sprintf("; the sentinels at %s that answered do not know master %q: check ?%s= in %s, the name they monitor",
			addrs, o.MasterName, paramMaster, setting)
	}
	return ""
}

// sentinelErrors are the errors go-redis joined in err, the sentinels'
// (errors.Join's), or err alone.
func sentinelErrors(err error) []error {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		return joined.Unwrap()
	}
	return []error{err}
}

// TLSFailure reports whether err says that a TLS connection failed: the
// server's certificate was not trusted (an unknown authority, another
// name), the server sent an alert (it asked for a client certificate, as
// Redis does by default with tls-auth-clients yes, or refused the
// handshake), or it does not speak TLS.
func TLSFailure(err error) bool {
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var op *net.OpError
	return errors.As(err, &verify) || errors.As(err, &record) ||
		(errors.As(err, &op) && op.Op == "remote error") // crypto/tls's way to report the peer's alert
}
