// Package redisconn turns REDIS_URL into the two handles certmail needs: an
// asynq connection option and a go-redis client for certmail's own keys,
// both on the same server (or Sentinel group) and database, waits for
// Redis to answer (refusing a database the server does not have), reports
// a Redis that may evict certmail's keys, logs an outage's first and
// last lines (WatchOutages), and says what to check when a command could
// not reach Redis, its sentinels or its TLS (Advice).
package redisconn

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultURL is REDIS_URL's default.
const DefaultURL = "redis://127.0.0.1:6379/0"

// Conn is one Redis target.
type Conn struct {
	Opt    asynq.RedisConnOpt    // for asynq's client, server, scheduler and inspector
	Client redis.UniversalClient // for certmail's keys; Close it when done
	Target string                // the URL as used, database included, without passwords: for logs
	// Embedded is set for an in-process Redis (certmail dev's miniredis),
	// which has no eviction policy to read: CheckEviction skips it.
	Embedded bool

	watchOnce sync.Once
	watch     *outageWatch // WatchOutages' hook, added once
}

// Open parses REDIS_URL, one of
//
//	redis://[user:password@]host:port[/db]
//	rediss://[user:password@]host:port[/db]   (TLS)
//	redis-sentinel://[user:password@]host:port[,host:port…][/db]?master=name[&sentinel_username=u][&sentinel_password=p]
//
// The user and password are those of the server that holds the data (under
// Sentinel, the master's, and a replica's once promoted); the sentinels' own,
// when they ask for one, are query parameters. The database is the path, 0
// when there is none. asynq's parser is not used: it drops the database and
// the master's password of a Sentinel URL, and the user of any URL. Anything
// else in the URL (another query parameter, a fragment, a second path
// segment), and a port outside 1 to 65535, is refused, naming it, never
// dropped. No error names a part of the user or password: a URL in which
// an @ follows the address (a password's unescaped /, ? or # ended the
// address early) is refused naming none of it, but for an @ in the value
// of a Sentinel URL's master, sentinel_username or sentinel_password that
// no address, database or query follows (atAfterAddress), and a path that
// is not a database number is not quoted. The go-redis client is built
// from the asynq option, so both reach the same server and database.
//
// The go-redis client honours the deadline of each call's context
// (go-redis's ContextTimeoutEnabled): a command whose answer does not come
// by then fails at the deadline, as it fails at the read timeout (5 s)
// without one. Without it go-redis ignores deadlines, and a Redis that
// takes commands in and never answers (a partition, a paused VM, a
// failover's dark old master) held every short deadline certmail sets
// (/readyz's 2 s, the metrics' budget, a lease's renewal) to the read
// timeout. A context only cancelled still ends waits for a connection,
// not a read. asynq's own clients, built from Opt, are unchanged.
func Open(rawURL string) (*Conn, error) {
	opt, target, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return open(opt, target, retries)
}

// OpenOneShot is Open for a command that runs once and exits (the
// operator commands): every go-redis client of the Conn, asynq's built
// from Opt included, dials a connection once for at most OneShotDialTimeout
// and tries a command at most twice, so that a Redis that does not take
// the connection (a full listen queue, a firewall that drops packets) fails
// a Redis command within OneShotCommandBound, rather than after go-redis's
// five dials of 5 s for each of its four tries (103 s). An answer is still
// waited for go-redis's read timeout (5 s) at most. The bound is per Redis
// command, not per certmail command: dlq purge or enqueue --file, which
// send many, can take as long as their work does.
func OpenOneShot(rawURL string) (*Conn, error) {
	opt, target, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return open(oneShotOpt{opt}, target, oneShot)
}

// open builds the Conn of opt, its go-redis client tried as tries says.
func open(opt asynq.RedisConnOpt, target string, tries int) (*Conn, error) {
	c, err := newClient(opt, tries)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL %s: %w", target, err)
	}
	return &Conn{Opt: opt, Client: c, Target: target}, nil
}

// The settings of a one-shot command's clients (OpenOneShot).
const (
	// OneShotDialTimeout is the longest a one-shot command waits for one
	// connection to Redis to open (TCP, then TLS for rediss://).
	OneShotDialTimeout = 2 * time.Second
	// oneShotMaxRetries is how many times a one-shot command's client
	// tries a failed Redis command again.
	oneShotMaxRetries = 1
	// readTimeout is go-redis's default read timeout, which certmail's
	// clients keep (asynq's options leave it unset);
	// TestReadTimeoutIsGoRedisDefault holds it to go-redis's.
	readTimeout = 5 * time.Second
	// OneShotCommandBound is the longest one Redis command of a one-shot
	// command takes to fail when Redis does not answer: each of its tries
	// dials for at most OneShotDialTimeout and reads for at most the read
	// timeout, and go-redis backs off at most 512 ms between two tries.
	OneShotCommandBound = (oneShotMaxRetries+1)*(OneShotDialTimeout+readTimeout) + oneShotMaxRetries*512*time.Millisecond
)

// oneShotOpt is the asynq option of a one-shot command's Conn: the
// clients asynq builds from it (its inspector, its client) take the
// one-shot settings too, which asynq's own options cannot express.
type oneShotOpt struct{ asynq.RedisConnOpt }

// MakeRedisClient implements asynq.RedisConnOpt.
func (o oneShotOpt) MakeRedisClient() any {
	c, err := newClient(o.RedisConnOpt, oneShot)
	if err != nil {
		return nil // asynq says the option is not supported
	}
	return c
}

// baseOpt is opt without the one-shot wrapper: the option REDIS_URL gave.
func baseOpt(opt asynq.RedisConnOpt) asynq.RedisConnOpt {
	if o, ok := opt.(oneShotOpt); ok {
		return o.RedisConnOpt
	}
	return opt
}

// How a client built by newClient meets a failure: retries, as go-redis
// does by default, for the clients the services use; once, for a look that
// must not outlast a Redis that is down (CheckDatabase); oneShot, for the
// clients of a one-shot command (OpenOneShot).
const (
	retries = iota
	once
	oneShot
)

// newClient is the go-redis client of opt, as opt.MakeRedisClient builds
// it, with deadlines honoured; with once, each command and each dial is
// tried once, on one connection; with oneShot, each dial once for at most
// OneShotDialTimeout, and each command at most twice.
func newClient(opt asynq.RedisConnOpt, tries int) (redis.UniversalClient, error) {
	maxRetries, dialerRetries, poolSize := 0, 0, 0 // go-redis's defaults
	var dialTimeout time.Duration                  // the option's
	switch tries {
	case once:
		maxRetries, dialerRetries, poolSize = -1, 1, 1
	case oneShot:
		maxRetries, dialerRetries, dialTimeout = oneShotMaxRetries, 1, OneShotDialTimeout
	}
	switch o := baseOpt(opt).(type) {
	case asynq.RedisClientOpt:
		return redis.NewClient(&redis.Options{
			Network: o.Network, Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB,
			DialTimeout: cmp.Or(dialTimeout, o.DialTimeout), ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: cmp.Or(poolSize, o.PoolSize), TLSConfig: o.TLSConfig,
			MaxRetries: maxRetries, DialerRetries: dialerRetries,
			ContextTimeoutEnabled: true,
		}), nil
	case asynq.RedisFailoverClientOpt:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: o.MasterName, SentinelAddrs: o.SentinelAddrs,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword,
			Username: o.Username, Password: o.Password, DB: o.DB,
			DialTimeout: cmp.Or(dialTimeout, o.DialTimeout), ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: cmp.Or(poolSize, o.PoolSize), TLSConfig: o.TLSConfig,
			MaxRetries: maxRetries, DialerRetries: dialerRetries,
			ContextTimeoutEnabled: true,
		}), nil
	}
	return nil, fmt.Errorf("unsupported connection type %T", opt)
}

// The query parameters of a redis-sentinel:// URL.
const (
	paramMaster           = "master"
	paramSentinelUsername = "sentinel_username"
	paramSentinelPassword = "sentinel_password"
)

// Target is the URL rawURL as Open uses it, database included, without
// passwords (those of a Sentinel URL's query too): what logs and banners
// show. An URL Open refuses gives "(invalid URL)".
func Target(rawURL string) string {
	_, target, err := parse(rawURL)
	if err != nil {
		return "(invalid URL)"
	}
	return target
}

// parse returns the option and the target to log: the scheme, the user, the
// addresses, the database used and the master's name; never a password.
func parse(rawURL string) (asynq.RedisConnOpt, string, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, "", err
	}
	db, err := parseDB(u.Path)
	if err != nil {
		return nil, "", err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, "", errors.New("REDIS_URL: the query is not valid") // it may hold a password
	}
	var user, password string
	if u.User != nil {
		user = u.User.Username()
		password, _ = u.User.Password()
	}
	target := url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/" + strconv.Itoa(db)}
	if user != "" {
		target.User = url.User(user)
	}
	secretInQuery := u.Scheme == "redis-sentinel" && q.Has(paramSentinelPassword)
	var opt asynq.RedisConnOpt
	if u.Scheme == "redis-sentinel" {
		var master string
		opt, master, err = sentinelOpt(u.Host, q, user, password, db)
		target.RawQuery = url.Values{paramMaster: {master}}.Encode()
	} else {
		opt, err = directOpt(u, user, password, db)
	}
	if err != nil {
		return nil, "", err
	}
	if err := noQueryLeft(q, u.Scheme, secretInQuery); err != nil {
		return nil, "", err
	}
	return opt, target.String(), nil
}

// parseURL parses rawURL and refuses what no scheme certmail reads takes:
// another scheme, an opaque URL, a fragment, no host.
func parseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil { // the URL may hold a password: do not echo it
		return nil, errors.New("REDIS_URL is not a URL (" + escapeHint + ")")
	}
	const schemes = "want redis://, rediss:// or redis-sentinel://"
	switch {
	case atAfterAddress(u):
		return nil, errors.New("REDIS_URL: an @ follows the address, so a user or password was cut short " +
			"and taken for the address, database or query (not repeated here: it may hold a password); " + escapeHint)
	case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "redis-sentinel":
		return nil, errors.New("REDIS_URL: " + schemes)
	case u.Opaque != "":
		return nil, errors.New("REDIS_URL: " + schemes + ", then the address")
	case u.Fragment != "":
		return nil, errors.New("REDIS_URL: a fragment (#…) is not supported; " + escapeHint)
	case u.Host == "":
		return nil, errors.New("REDIS_URL: no host")
	}
	return u, nil
}

// escapeHint says how a user or password writes the characters that
// would end it, or start an escape, in a URL.
const escapeHint = "a /, ?, #, @ or % in a user or password must be written %2F, %3F, %23, %40 or %25"

// atAfterAddress reports whether an @ follows u's address where a password
// cut short may have left it. A URL parser takes the address to end at the
// first /, ? or #, so a password holding one of them unescaped is cut
// there: its start becomes the address (or the user, when it is all digits
// or empty), and its end, up to the @ that closes it, the path, query or
// fragment. No part of such a URL may be named in an error. certmail reads
// no @ there otherwise: the path is a number, and redis:// and rediss://
// take no query. An @ in the value of master, sentinel_username or
// sentinel_password of a redis-sentinel:// URL is that value's (an ACL user
// such as ops@corp) when sentinelAtIsValues says so.
func atAfterAddress(u *url.URL) bool {
	switch {
	case strings.Contains(u.EscapedPath(), "@") || strings.Contains(u.EscapedFragment(), "@"):
		return true
	case !strings.Contains(u.RawQuery, "@"):
		return false
	case u.Scheme != "redis-sentinel":
		return true
	}
	return !sentinelAtIsValues(u)
}

// sentinelAtIsValues reports whether each @ in the query of the
// redis-sentinel:// URL u belongs to a value of master, sentinel_username or
// sentinel_password rather than to a password cut short. The address list
// must be a valid one (else checkAddr's error would name it, and it may be
// a password's start), and what follows each @ in its value must not be
// what follows a cut password's @: an address list, or a / or ? (a
// database, a query). A value that reads so is refused too (ops@corp:80);
// it writes its @ as %40. What remains, a password's start that reads as
// host:port and its end as such a value with no address after its @,
// names no server of its own: it cannot be told from a valid URL.
func sentinelAtIsValues(u *url.URL) bool {
	if !isAddrList(u.Host) {
		return false
	}
	for pair := range strings.SplitSeq(u.RawQuery, "&") {
		name, value, _ := strings.Cut(pair, "=")
		if !strings.Contains(pair, "@") {
			continue
		}
		if name != paramMaster && name != paramSentinelUsername && name != paramSentinelPassword {
			return false
		}
		for _, tail := range strings.Split(value, "@")[1:] {
			if strings.ContainsAny(tail, "/?") || isAddrList(tail) {
				return false
			}
		}
	}
	return true
}

// isAddrList reports whether s is host:port[,host:port…] as checkAddr takes it.
func isAddrList(s string) bool {
	for a := range strings.SplitSeq(s, ",") {
		if checkAddr(a) != nil {
			return false
		}
	}
	return true
}

// sentinelOpt is the option of a redis-sentinel:// URL whose host part is
// hosts; it takes its own parameters out of q and returns the master's name.
func sentinelOpt(hosts string, q url.Values, user, password string, db int) (asynq.RedisConnOpt, string, error) {
	master, err := take(q, paramMaster)
	if err != nil {
		return nil, "", err
	}
	if master == "" {
		return nil, "", errors.New("REDIS_URL: redis-sentinel:// needs ?master=<name>, the name the sentinels monitor")
	}
	sentinelUser, err := take(q, paramSentinelUsername)
	if err != nil {
		return nil, "", err
	}
	sentinelPassword, err := take(q, paramSentinelPassword)
	if err != nil {
		return nil, "", err
	}
	addrs := strings.Split(hosts, ",")
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return nil, "", err
		}
	}
	return asynq.RedisFailoverClientOpt{
		MasterName: master, SentinelAddrs: addrs,
		SentinelUsername: sentinelUser, SentinelPassword: sentinelPassword,
		Username: user, Password: password, DB: db,
	}, master, nil
}

// directOpt is the option of a redis:// or rediss:// URL.
func directOpt(u *url.URL, user, password string, db int) (asynq.RedisConnOpt, error) {
	if err := checkAddr(u.Host); err != nil {
		return nil, err
	}
	o := asynq.RedisClientOpt{Addr: u.Host, Username: user, Password: password, DB: db}
	if u.Scheme == "rediss" {
		o.TLSConfig = &tls.Config{ServerName: u.Hostname()}
	}
	return o, nil
}

// noQueryLeft refuses the query parameters the scheme's option did not take,
// naming one, sentinel_password first; none when the option took a
// password from the query (secret): an unescaped & in sentinel_password
// starts a parameter with the password's end.
func noQueryLeft(q url.Values, scheme string, secret bool) error {
	if len(q) == 0 {
		return nil
	}
	takes := "no query parameters"
	if scheme == "redis-sentinel" {
		takes = paramMaster + ", " + paramSentinelUsername + " and " + paramSentinelPassword
	}
	name := slices.Sorted(maps.Keys(q))[0]
	switch {
	case q.Has(paramSentinelPassword): // rather than a parameter that may be its end
		name = paramSentinelPassword
	case secret:
		return fmt.Errorf("REDIS_URL: a query parameter is not supported (%s:// takes %s); "+
			"not named here, as it may be the end of %s: write a & in it as %%26, a + as %%2B",
			scheme, takes, paramSentinelPassword)
	}
	return fmt.Errorf("REDIS_URL: query parameter %s is not supported (%s:// takes %s)", quote(name), scheme, takes)
}

// take removes the query parameter name from q and returns its value.
func take(q url.Values, name string) (string, error) {
	vs := q[name]
	delete(q, name)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", fmt.Errorf("REDIS_URL: query parameter %q more than once", name)
}

// parseDB reads the database number from the URL's path: "", "/" or "/N".
// A path that is not one is not quoted: a password holding an unescaped /
// leaves its end in the path (atAfterAddress refuses the forms known to
// do so; this is the second line of that defence).
func parseDB(path string) (int, error) {
	s := strings.TrimPrefix(path, "/")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || s[0] == '+' {
		return 0, errors.New("REDIS_URL: the path is not a database number: want / and a number from 0, as in /3 (" + escapeHint + ")")
	}
	return n, nil
}

// checkAddr refuses an address that cannot be dialled: it must be
// host:port, the port a number from 1 to 65535 (a dial to another port
// fails every time, so a process would wait for Redis for ever).
func checkAddr(a string) error {
	h, p, err := net.SplitHostPort(a)
	if err != nil || h == "" || p == "" {
		return fmt.Errorf("REDIS_URL: address %s: want host:port", quote(a))
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || p[0] == '+' {
		return fmt.Errorf("REDIS_URL: port %s of address %s: want a number from 1 to 65535", quote(p), quote(a))
	}
	return nil
}

// quote quotes a part of the URL for an error, cut to a bounded length.
func quote(s string) string {
	const most = 64
	if len(s) > most {
		return strconv.Quote(s[:most]) + "…"
	}
	return strconv.Quote(s)
}

// DatabaseError reports a REDIS_URL whose database the server does not
// have (one at or beyond its databases setting, 16 by default): Redis
// refuses the SELECT of every connection with "ERR DB index is out of
// range", however long one waits, so Wait and CheckDatabase return it
// rather than wait. Its text starts with REDIS_URL, the setting to change.
type DatabaseError struct {
	Target string // the URL as used, without passwords
	DB     int    // the database asked for
	Err    error  // Redis's answer
}

func (e *DatabaseError) Error() string {
	return fmt.Sprintf("REDIS_URL %s: Redis has no database %d (it answered %q); "+
		"give a database below its databases setting (16 unless its configuration says otherwise)", e.Target, e.DB, e.Err.Error())
}

func (e *DatabaseError) Unwrap() error { return e.Err }

// databaseError is err as a *DatabaseError when it is Redis refusing the
// database of c, else nil.
func (c *Conn) databaseError(err error) error {
	if !redis.HasErrorPrefix(err, "DB index is out of range") {
		return nil
	}
	db := 0
	switch o := baseOpt(c.Opt).(type) {
	case asynq.RedisClientOpt:
		db = o.DB
	case asynq.RedisFailoverClientOpt:
		db = o.DB
	}
	return &DatabaseError{Target: c.Target, DB: db, Err: err}
}

// CheckDatabase pings Redis once, for at most a second, on a connection of
// its own that is dialled once (a Redis that is down costs a refused
// dial, not go-redis's retries), and returns a *DatabaseError when Redis
// answers that it has no such database: a command can refuse that mistake
// at start rather than wait on it. Any other outcome, Redis down or slow
// included, returns nil: that is for Wait or the commands that follow to
// meet.
func (c *Conn) CheckDatabase(ctx context.Context) error {
	return c.databaseError(c.probe(ctx))
}

// CheckAccess is CheckDatabase for a command that stops at its first
// failure: it also returns Redis's refusal of REDIS_URL's user or
// password (AuthRefused), as it answered the ping, so that such a command
// can refuse the setting before it does anything. (A service waits on that
// refusal, logging it, as on a Redis that is down: Wait.)
func (c *Conn) CheckAccess(ctx context.Context) error {
	err := c.probe(ctx)
	if dbErr := c.databaseError(err); dbErr != nil {
		return dbErr
	}
	if AuthRefused(err) {
		return err
	}
	return nil
}

// probe pings Redis once, for at most a second, on a connection of its own
// that is dialled once, and returns the ping's error.
func (c *Conn) probe(ctx context.Context) error {
	probe, err := newClient(c.Opt, once)
	if err != nil {
		return nil // Open built c from the same options
	}
	defer probe.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return probe.Ping(ctx).Err()
}

// Wait pings Redis with exponential backoff (up to 30 s between tries) until
// it answers or ctx is done, logging each failed try with the target. A
// Redis that answers that it has no such database ends the wait with a
// *DatabaseError: no try would mend it.
func (c *Conn) Wait(ctx context.Context, log *zap.Logger) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0
	err := backoff.RetryNotify(func() error {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		err := c.Client.Ping(pctx).Err()
		if ctx.Err() != nil {
			return backoff.Permanent(ctx.Err())
		}
		if dbErr := c.databaseError(err); dbErr != nil {
			return backoff.Permanent(dbErr)
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		log.Warn("waiting for Redis", zap.String("redis", c.Target), zap.Error(err), zap.Duration("next_try_in", next))
	})
	var dbErr *DatabaseError
	if errors.As(err, &dbErr) {
		return dbErr
	}
	if err != nil {
		return fmt.Errorf("wait for Redis at %s: %w", c.Target, err)
	}
	return nil
}

// EvictionRisk says what a process loses when Redis evicts its keys, for
// CheckEviction's ERROR line.
type EvictionRisk string

// CheckEviction reads Redis's maxmemory_policy (INFO memory) once and logs
// one ERROR line when it is not noeviction, Redis's default. Every certmail
// key that holds a guarantee expires (duplicate guards, order locks and
// applied sequences, limiter windows, leases), and a volatile-* policy
// evicts exactly such keys first under memory pressure; an allkeys-* policy
// evicts asynq's tasks too. risk says what this process then gets wrong. A
// server that refuses INFO (an ACL, a renamed command) or does not say gets
// one WARN line instead: the policy is unknown, which is no reason to stop.
// Nothing stops the process either way.
func (c *Conn) CheckEviction(ctx context.Context, log *zap.Logger, risk EvictionRisk) {
	if c.Embedded {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	info, err := c.Client.Info(ctx, "memory").Result()
	policy, maxmemory := infoField(info, "maxmemory_policy"), infoField(info, "maxmemory")
	switch {
	case err != nil || policy == "":
		if err == nil {
			err = errors.New("INFO memory has no maxmemory_policy")
		}
		log.Warn("could not read Redis's maxmemory-policy; certmail needs noeviction, or Redis may evict the keys that keep its guarantees",
			zap.String("redis", c.Target), zap.Error(err))
	case policy != "noeviction":
		log.Error("Redis may evict certmail's keys: set maxmemory-policy noeviction (Redis's default); "+
			"volatile-* policies evict first the expiring keys that keep certmail's guarantees, allkeys-* policies tasks too",
			zap.String("redis", c.Target), zap.String("maxmemory_policy", clip(policy)),
			zap.String("maxmemory", clip(maxmemory)), zap.String("risk", string(risk)))
	default:
		log.Debug("Redis's maxmemory-policy is noeviction", zap.String("redis", c.Target))
	}
}

// infoField is the value of name in an INFO answer ("name:value" lines), or "".
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), name+":"); ok {
			return v
		}
	}
	return ""
}

// clip bounds a value read from the server for a log line.
func clip(s string) string {
	const most = 64
	if len(s) > most {
		return s[:most] + "…"
	}
	return s
}

// Unreachable reports whether err says that Redis could not be reached or
// did not answer in time: a dial refused or timed out, a name that does
// not resolve, a read or write that timed out or lost its connection. Not
// an answer of Redis's (a refused password, a missing database, a full
// memory): those say what is wrong themselves.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
