package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Ticket is the admission of one request taken by a caller's own script,
// which runs Lua's admit on the keys and arguments the ticket appends to
// its command (AppendKeys, AppendArgs), rather than by Acquire: a worker
// folds admission into the round trip it makes anyway before a DigiCert
// call, and the restamp into the one after it.
//
// The caller runs its script, calls Admitted if admit returned 0, and makes
// its call with Context: the first Acquire of the ticket's limiter on that
// context takes the admission without asking Redis, and its release leaves
// the restamp to the caller, who gets the member to restamp from Due (for
// its next script) or calls Settle.
type Ticket struct {
	l      *Limiter
	member string
	boxed  any // member, boxed once for AppendArgs

	mu       sync.Mutex
	admitted bool // the caller's script admitted the member
	taken    bool // an Acquire used the admission
	released bool // that request ended; its restamp is due
	settled  bool // the restamp (or the giving back) is done or handed over
}

// NewTicket returns a ticket for one request of l, not yet admitted.
func (l *Limiter) NewTicket() *Ticket {
	m := token()
	return &Ticket{l: l, member: m, boxed: m}
}

// AppendKeys appends the keys Lua's admit and restamp read, the cool-down
// and one per window, to cmd: a script's command as go-redis's Do sends it
// ("evalsha", the hash, the number of keys, the keys, the arguments),
// which the caller builds in one slice, after its script's own keys. They
// are boxed once, when the limiter is made.
func (t *Ticket) AppendKeys(cmd []any) []any { return append(cmd, t.l.boxedKeys...) }

// AppendArgs appends the arguments Lua's admit and restamp read to cmd,
// after the script's own: the member, then the limit and period (ms) of
// each window, then the in-flight bound (ms).
func (t *Ticket) AppendArgs(cmd []any) []any {
	n := len(cmd)
	cmd = append(cmd, t.l.scriptArgs...)
	cmd[n] = t.boxed
	return cmd
}

// Admitted records that the caller's script admitted the ticket's member.
func (t *Ticket) Admitted() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.admitted = true
}

type ticketKey struct{}

// Context returns ctx carrying t for Acquire.
func (t *Ticket) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, ticketKey{}, t)
}

// Ready reports whether the next Acquire of the ticket's limiter on a
// context carrying t takes its admission at once, without waiting.
func (t *Ticket) Ready() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.admitted && !t.taken && !t.settled
}

// take hands the admission to an Acquire of limiter l, once.
func (t *Ticket) take(l *Limiter) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.l != l || !t.admitted || t.taken || t.settled {
		return false
	}
	t.taken = true
	return true
}

func (t *Ticket) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.released = true
}

// Due returns the member whose restamp the caller's next script must do
// (Lua's restamp), handing that duty to it, or "" when none is due: no
// request was sent under the ticket, or it was already settled.
func (t *Ticket) Due() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.released || t.settled {
		return ""
	}
	t.settled = true
	return t.member
}

// Settle ends the ticket when no script of the caller will: the request
// sent under it is restamped (as Acquire's release does); an admission no
// request used is given back. It is a no-op once settled, or for a ticket
// never admitted.
func (t *Ticket) Settle(ctx context.Context) error {
	t.mu.Lock()
	restamp, giveBack := t.released && !t.settled, t.admitted && !t.taken && !t.settled
	t.settled = t.settled || restamp || giveBack
	t.mu.Unlock()
	switch {
	case restamp:
		t.l.restamp(t.member)
	case giveBack && len(t.l.windows) > 0:
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		keys, _ := t.l.keys()
		pipe := t.l.rdb.Pipeline()
		for _, k := range keys[1:] {
			pipe.ZRem(ctx, k, t.member)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("rate limit: give back a slot: %w", err)
		}
	}
	return nil
}
