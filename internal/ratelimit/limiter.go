package ratelimit

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter admits requests of one DigiCert account so that all processes
// sharing its Redis stay within every window together. Each window is a
// sliding log (a sorted set of request times) updated atomically by
// scripts timed by the Redis server's clock, so process clocks do not
// matter. A request enters the log when it is admitted, counted as if
// DigiCert saw it at any moment until its answer arrives, and is stamped
// again with the answer's time: DigiCert saw it somewhere in between, so
// however long the request took to leave or to be answered, it is counted
// for a whole window after DigiCert could have seen it. A limiter also
// holds the account's shared cool-down, started when DigiCert answers 429
// anyway, during which nobody is admitted.
type Limiter struct {
	rdb      redis.UniversalClient
	prefix   string
	windows  []Window
	margin   time.Duration
	maxWait  time.Duration
	inFlight time.Duration
	onWait   func(time.Duration)
	settings string // the windows as ParseWindows reads them (settings.go)
	// scriptKeys and scriptArgs, built once, are what keys returns copies of
	// and Ticket.AppendArgs appends; boxedKeys are scriptKeys as a command's
	// elements, which Ticket.AppendKeys appends.
	scriptKeys []string
	scriptArgs []any
	boxedKeys  []any
}

// Config configures a Limiter.
type Config struct {
	// Account names the limited account; its keys are certmail:ratelimit:{<account>}:* (one hash slot):
	// the cool-down and its streak, one sorted set per window named after it
	// (LIMIT/PERIOD), and the settings hash (see Announce).
	Account string
	// Windows are the limits; none means every request is admitted (cool-downs still apply).
	Windows []Window
	// Margin is added to every window's period, for the difference between
	// DigiCert's clock and Redis's; default 1% of the shortest period, at
	// most 100ms.
	Margin time.Duration
	// MaxWait bounds one Wait: a longer wait returns a *WaitError instead, so
	// that the caller can give the task back to the queue rather than hold a
	// worker slot. Default 30s.
	MaxWait time.Duration
	// OnWait, when set, is told of every wait (for metrics).
	OnWait func(time.Duration)
	// InFlight bounds how long a request can be in flight, from its
	// admission to its answer: until its release restamps it, an admitted
	// request counts in every window for at most this long (a caller that
	// dies meanwhile leaves its slot taken for InFlight and a window).
	// Default DefaultInFlight.
	InFlight time.Duration
}

// DefaultMaxWait is Config.MaxWait's default: the longest wait a delivery
// may spend for a slot before its task is handed back.
const DefaultMaxWait = 30 * time.Second

// DefaultInFlight is Config.InFlight's default, above the DigiCert client's
// default bound on one call (digicert.Config.MaxElapsed, 20s).
const DefaultInFlight = time.Minute

// WithDefaults returns c with zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	if c.Margin == 0 && len(c.Windows) > 0 {
		shortest := c.Windows[0].Period
		for _, w := range c.Windows {
			shortest = min(shortest, w.Period)
		}
		c.Margin = min(shortest/100, 100*time.Millisecond)
	}
	c.MaxWait = cmp.Or(c.MaxWait, DefaultMaxWait)
	c.InFlight = cmp.Or(c.InFlight, DefaultInFlight)
	return c
}

// Validate reports the first setting that cannot work: a window without a
// positive limit and period, a negative margin, wait or in-flight bound.
func (c Config) Validate() error {
	for _, w := range c.Windows {
		if w.Limit < 1 || w.Period <= 0 {
			return fmt.Errorf("rate limit %s: want a limit and a period above 0", w)
		}
	}
	if c.Margin < 0 || c.MaxWait < 0 || c.InFlight < 0 {
		return errors.New("rate limit margin, wait and in-flight bound must not be negative")
	}
	return nil
}

// NewLimiter returns a limiter on rdb configured by cfg (after WithDefaults;
// cfg is expected to pass Validate).
func NewLimiter(rdb redis.UniversalClient, cfg Config) *Limiter {
	cfg = cfg.WithDefaults()
	l := &Limiter{rdb: rdb, prefix: "certmail:ratelimit:{" + cfg.Account + "}:", windows: cfg.Windows,
		margin: cfg.Margin, maxWait: cfg.MaxWait, inFlight: cfg.InFlight, onWait: cfg.OnWait,
		settings: settingsString(cfg.Windows)}
	l.scriptKeys = make([]string, 1, 1+len(l.windows))
	l.scriptKeys[0] = l.prefix + "cooldown"
	l.scriptArgs = make([]any, 1, 2+2*len(l.windows))
	for _, w := range l.windows {
		l.scriptKeys = append(l.scriptKeys, l.prefix+strconv.Itoa(w.Limit)+"/"+w.Period.String())
		l.scriptArgs = append(l.scriptArgs, w.Limit, (w.Period + l.margin).Milliseconds())
	}
	l.scriptArgs = append(l.scriptArgs, l.inFlight.Milliseconds())
	for _, k := range l.scriptKeys {
		l.boxedKeys = append(l.boxedKeys, k)
	}
	return l
}

// WaitError says that admission is further away than the limiter's MaxWait.
type WaitError struct {
	Wait time.Duration
	// CoolDown is true when what holds the request back is the account's
	// cool-down, which DigiCert's 429 started (CoolDown), rather than the
	// limiter's windows.
	CoolDown bool
}

// RetryAfter is when to ask again.
func (e *WaitError) RetryAfter() time.Duration { return e.Wait }

func (e *WaitError) Error() string {
	if e.CoolDown {
		return fmt.Sprintf("rate limit: cool-down after DigiCert's 429, next DigiCert request in %v", e.Wait.Round(time.Millisecond))
	}
	return fmt.Sprintf("rate limit: next DigiCert request slot in %v", e.Wait.Round(time.Millisecond))
}

// Lua defines the limiter's two steps as Lua functions, for the limiter's
// own scripts and for a caller that folds them into a script of its own (see
// Ticket). In both, KEYS[c] is the account's cool-down and KEYS[c+1] to
// KEYS[#KEYS] its windows (the script's last keys, one sorted set each);
// ARGV[a] is the request's member, ARGV[a+1], ARGV[a+2] the limit and
// period (ms) of the first window, and so on, and the argument after the
// last window's the in-flight bound (ms). Time is the Redis server's.
//
//	admit(c, a)   0 when admitted, else the ms to wait. The member enters every
//	              window stamped at now plus the in-flight bound: until its
//	              request is answered, nobody knows when DigiCert sees it, so
//	              it counts as seen now, and no window drops it while it is
//	              in flight, however long that is (up to the bound)
//	restamp(c, a) stamps the member now, at its answer, in every window
//
// A window's key lives at least as long as its newest member counts (its
// period, plus the in-flight bound while one is in flight). When its
// expiry falls short of that, it is set to twice that, so that a busy
// window's expiry is moved about once per lifetime rather than with every
// request (a PEXPIRE per window saved in nearly every admission).
const Lua = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function admit(c, a)
  local now = now_ms()
  local cd = redis.call('PTTL', KEYS[c])
  if cd > 0 then return cd end
  local hold = tonumber(ARGV[a + 1 + 2 * (#KEYS - c)])
  local wait = 0
  for i = c + 1, #KEYS do
    local j = a + 1 + 2 * (i - c - 1)
    local limit, period = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period)
    if redis.call('ZCARD', KEYS[i]) >= limit then
      -- a member in flight (stamped ahead) frees a window after its answer at the soonest
      local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      local w = math.min(tonumber(oldest[2]), now) + period - now + 1
      if w > wait then wait = w end
    end
  end
  if wait > 0 then return wait end
  for i = c + 1, #KEYS do
    local keep = tonumber(ARGV[a + 2 + 2 * (i - c - 1)]) + hold
    redis.call('ZADD', KEYS[i], now + hold, ARGV[a])
    if redis.call('PTTL', KEYS[i]) < keep then redis.call('PEXPIRE', KEYS[i], 2 * keep) end
  end
  return 0
end
local function restamp(c, a)
  local now = now_ms()
  for i = c + 1, #KEYS do
    local period = tonumber(ARGV[a + 2 + 2 * (i - c - 1)])
    redis.call('ZADD', KEYS[i], now, ARGV[a])
    if redis.call('PTTL', KEYS[i]) < period then redis.call('PEXPIRE', KEYS[i], 2 * period) end
  end
  return 0
end
`

// admitScript admits ARGV[1] (Lua's admit with the cool-down at KEYS[1]):
// {0, 0} when admitted, else {ms to wait, 1 when the cool-down is what
// holds it back, else 0}.
var admitScript = redis.NewScript(Lua + `
local wait = admit(1, 1)
if wait > 0 and redis.call('PTTL', KEYS[1]) > 0 then return {wait, 1} end
return {wait, 0}
`)

// restampScript stamps ARGV[1] now in every window.
var restampScript = redis.NewScript(Lua + `return restamp(1, 1)`)

// keys returns the cool-down and window keys, and the arguments Lua's admit
// and restamp read after the member (args[0], left empty): each window's
// limit and period, then the in-flight bound. Both are the caller's to change.
func (l *Limiter) keys() ([]string, []any) {
	return slices.Clone(l.scriptKeys), slices.Clone(l.scriptArgs)
}

// reserve takes a slot for member now if every window has room, and
// otherwise says how long to wait before asking again, and whether the
// account's cool-down is what holds it back. The member counts as in
// flight (for up to hold) until it is restamped.
func (l *Limiter) reserve(ctx context.Context, member string, hold time.Duration) (wait time.Duration, coolDown bool, err error) {
	keys, args := l.keys()
	args[0], args[len(args)-1] = member, hold.Milliseconds()
	r, err := admitScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err == nil && len(r) != 2 {
		err = fmt.Errorf("%d values from the script, want 2", len(r))
	}
	if err != nil {
		return 0, false, fmt.Errorf("rate limit: %w", err)
	}
	return time.Duration(r[0]) * time.Millisecond, r[1] == 1, nil
}

// Acquire blocks until a request may be sent, ctx is done, or the wait
// would exceed MaxWait or ctx's deadline (*WaitError, which says how long,
// and whether the account's cool-down is what holds it back).
// Call release when the request has ended. It implements digicert.Limiter;
// it holds no Redis connection while it waits.
//
// A ctx that carries an admitted Ticket of l (Ticket.Context) is admitted at
// once, without Redis, the first time; the ticket's holder restamps.
func (l *Limiter) Acquire(ctx context.Context) (release func(), err error) {
	if t, ok := ctx.Value(ticketKey{}).(*Ticket); ok && t.take(l) {
		return t.release, nil
	}
	member := token()
	var waited time.Duration
	defer func() {
		if waited > 0 && l.onWait != nil {
			l.onWait(waited)
		}
	}()
	for {
		d, coolDown, err := l.reserve(ctx, member, l.inFlight)
		if err != nil {
			return nil, err
		}
		if d == 0 {
			return func() { l.restamp(member) }, nil
		}
		if waited+d > l.maxWait {
			return nil, &WaitError{Wait: d, CoolDown: coolDown}
		}
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(d).After(dl) {
			return nil, &WaitError{Wait: d, CoolDown: coolDown} // sleeping into the deadline would waste the caller's budget
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
			waited += d
		}
	}
}

// restamp counts member from now on, its answer. A failure leaves it
// counted as in flight, which errs on the side of holding its slot longer.
func (l *Limiter) restamp(member string) {
	if len(l.windows) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, args := l.keys()
	args[0] = member
	_ = restampScript.Run(ctx, l.rdb, keys, args...).Err()
}

// Reserve takes a slot now, without a release, if every window has room,
// and otherwise says how long to wait before asking again: a request sent
// and answered at once.
func (l *Limiter) Reserve(ctx context.Context) (time.Duration, error) {
	d, _, err := l.reserve(ctx, token(), 0)
	return d, err
}

// coolDownScript is called for a 429 (KEYS[1] the cool-down, KEYS[2] its
// streak). It starts a cool-down unless one is in force: ARGV[1] ms after a
// first 429, doubled for each cool-down of the streak, at most ARGV[2] ms.
// A 429 during a cool-down answers a request admitted before it began: it
// neither shortens nor lengthens it, nor counts in the streak, so that the
// requests in flight at once do not multiply the pause. Every 429 keeps the
// streak for 4 × ARGV[2] ms from then.
// Returns what is left of the cool-down in force, in ms, and 1 when this
// call started it, else 0.
var coolDownScript = redis.NewScript(`
local keep = tonumber(ARGV[2]) * 4
local left = redis.call('PTTL', KEYS[1])
if left > 0 then
  redis.call('PEXPIRE', KEYS[2], keep)
  return {left, 0}
end
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], keep)
local d = math.floor(math.min(tonumber(ARGV[1]) * 2 ^ (n - 1), tonumber(ARGV[2])))
redis.call('SET', KEYS[1], n, 'PX', d)
return {d, 1}
`)

// CoolDown is told of each 429 DigiCert answers. Unless a cool-down is in
// force, it starts one that pauses every process's requests of this
// account: for base after a first 429, doubling with each further cool-down
// of the streak (429s that keep coming within 4 × ceiling of the last) up
// to ceiling. A 429 during a cool-down changes nothing but the streak's
// expiry. CoolDown returns what is left of the cool-down in force, and
// whether this 429 started it.
func (l *Limiter) CoolDown(ctx context.Context, base, ceiling time.Duration) (left time.Duration, started bool, err error) {
	r, err := coolDownScript.Run(ctx, l.rdb, []string{l.prefix + "cooldown", l.prefix + "streak"},
		base.Milliseconds(), ceiling.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, false, fmt.Errorf("rate limit cool-down: %w", err)
	}
	if len(r) != 2 {
		return 0, false, fmt.Errorf("rate limit cool-down: %d values from the script, want 2", len(r))
	}
	return time.Duration(r[0]) * time.Millisecond, r[1] == 1, nil
}

func token() string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
