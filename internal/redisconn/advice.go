package redisconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
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
//   - Redis refused the user and password setting gives, or asked for a
//     password and setting gives none (AuthRefused);
//   - Redis could not be reached or did not answer (Unreachable).
//
// Another answer of Redis's (a missing database, a full memory) says what
// is wrong itself.
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
	if a := c.authAdvice(err, setting); a != "" {
		return a
	}
	if Unreachable(err) {
		return fmt.Sprintf("; Redis at %s did not answer: check that it is running and that %s names it", c.Target, setting)
	}
	return ""
}

// AuthRefused reports whether err is Redis refusing the credentials of
// REDIS_URL: a user or password it does not accept (WRONGPASS), or none
// where it asks for one (NOAUTH). Not the sentinels' refusal of theirs,
// which Advice names apart (sentinel_password).
func AuthRefused(err error) bool {
	return (redis.HasErrorPrefix(err, "WRONGPASS") || redis.HasErrorPrefix(err, "NOAUTH")) &&
		!strings.Contains(err.Error(), sentinelsUnreachable)
}

// authAdvice is Advice for Redis's refusal of the credentials setting
// gives (AuthRefused), "" for any other error. It names Redis by its
// address alone: neither the password nor the user of the URL.
func (c *Conn) authAdvice(err error, setting string) string {
	switch {
	case !AuthRefused(err):
		return ""
	case redis.HasErrorPrefix(err, "NOAUTH"):
		return fmt.Sprintf("; Redis at %s asks for a password, which %s does not give: add it "+
			"(redis://:PASSWORD@host:port/db, or USER:PASSWORD@ for an ACL user)", c.address(), setting)
	}
	return fmt.Sprintf("; Redis at %s refused the user and password that %s gives: check them "+
		"(a password's /, ?, #, @ and %% are written %%2F, %%3F, %%23, %%40 and %%25)", c.address(), setting)
}

// address is c.Target without its user: the scheme, the addresses, the
// database and the master's name.
func (c *Conn) address() string {
	u, err := url.Parse(c.Target)
	if err != nil {
		return "(the URL given)" // Open built Target as a URL
	}
	u.User = nil
	return u.String()
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

// KeyAdvice is what a line reporting err, an error of a command on keys,
// adds to it when Redis refused the command for the keys themselves
// (RefusalAdvice): where to look and what to do, after "; ". It is "" for
// any other error.
func KeyAdvice(err error, keys ...string) string {
	if a := RefusalAdvice(err, keys...); a != "" {
		return "; " + a
	}
	return ""
}

// RefusalAdvice is what to do about err, Redis's refusal of a command on
// keys for the keys themselves. Redis's answer names neither the key nor
// the application that made it, and both refusals last until someone acts,
// so the advice says which keys the command used:
//
//   - WRONGTYPE: one of them holds a value of another type than certmail
//     writes there, so another application uses that name;
//   - an ACL refusal (ACLRefused): the ACL user certmail connects as may
//     not use them, or the command (or one its script runs).
//
// keys are certmail's own names (a pattern such as certmail:schedule:<id>
// for a key of each id), never input. It is "" for any other error.
func RefusalAdvice(err error, keys ...string) string {
	if err == nil || len(keys) == 0 {
		return ""
	}
	named := "the key " + keys[0]
	if len(keys) > 1 {
		named = "one of the keys " + strings.Join(keys, ", ")
	}
	switch {
	case redis.HasErrorPrefix(err, "WRONGTYPE"):
		return named + " holds a value of another type than certmail writes there: another application uses " +
			"that name (redis-cli TYPE shows which key); give certmail a Redis database of its own " +
			"(README, \"A database of its own\") or move the other application's key"
	case ACLRefused(err):
		return "Redis's ACL does not allow the user certmail connects as (REDIS_URL) " + named +
			" or the command: its rule must allow ~certmail:*, ~asynq:* and the commands certmail sends " +
			"(README, \"An ACL user for certmail\")"
	}
	return ""
}

// ACLRefused reports whether err is Redis's ACL refusal of a command or of
// one a script runs: NOPERM, or, inside a script, "ERR ACL failure in
// script" (Redis 7.2 on) or "ERR The user executing the script can't"
// (Redis 7.0).
func ACLRefused(err error) bool {
	return redis.HasErrorPrefix(err, "NOPERM") || redis.HasErrorPrefix(err, "ACL failure in script") ||
		redis.HasErrorPrefix(err, "The user executing the script can't")
}
