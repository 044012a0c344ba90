package api

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// firstBodyBuffer is the capacity a body is first read into (when it may be
// that large): what a request that sends nothing holds.
const firstBodyBuffer = 32 << 10

// bodyBudget bounds the request bodies held at once: MaxBodiesInFlight in
// all, and MaxBodiesPerToken for the requests of each token. A body is
// counted as it arrives, at the capacity of the buffer it is read into.
type bodyBudget struct {
	all      *semaphore.Weighted
	perToken []*semaphore.Weighted // by the token's position in Config.Tokens
	held     atomic.Int64          // bytes taken from all
	waiting  atomic.Int64          // requests waiting for room
}

// newBodyBudget returns the budget of a server with that many tokens: the
// set is fixed, so is the number of semaphores.
func newBodyBudget(tokens int) *bodyBudget {
	b := &bodyBudget{all: semaphore.NewWeighted(MaxBodiesInFlight), perToken: make([]*semaphore.Weighted, tokens)}
	for i := range b.perToken {
		b.perToken[i] = semaphore.NewWeighted(MaxBodiesPerToken)
	}
	return b
}

// room returns an empty room for a body of the request whose token is
// token (1 + its position in Config.Tokens; 0 without a token, when only
// MaxBodiesInFlight applies).
func (b *bodyBudget) room(token int) *bodyRoom {
	rm := &bodyRoom{budget: b}
	if token > 0 && token <= len(b.perToken) {
		rm.token = b.perToken[token-1]
	}
	return rm
}

// Why a body found no room within BodyWait.
var (
	errNoRoom      = errors.New("no room for the body under MaxBodiesInFlight")
	errNoTokenRoom = errors.New("no room for the body under MaxBodiesPerToken")
)

// bodyRoom is the room one request's body holds. It is used by the
// request's goroutine only.
type bodyRoom struct {
	budget   *bodyBudget
	token    *semaphore.Weighted // nil: only MaxBodiesInFlight applies
	n        int64               // bytes taken, from token and from all
	deadline time.Time           // BodyWait after the first wait; zero before
}

// grow takes n more bytes, from the token's share then from the whole
// budget, waiting for them until BodyWait after the room's first wait. It
// takes nothing when it fails.
func (rm *bodyRoom) grow(ctx context.Context, n int64) error {
	if rm.token != nil && !rm.take(ctx, rm.token, n) {
		return errNoTokenRoom
	}
	if !rm.take(ctx, rm.budget.all, n) {
		if rm.token != nil {
			rm.token.Release(n)
		}
		return errNoRoom
	}
	rm.n += n
	rm.budget.held.Add(n)
	return nil
}

// take acquires n bytes of sem, waiting at most until the room's deadline.
func (rm *bodyRoom) take(ctx context.Context, sem *semaphore.Weighted, n int64) bool {
	if sem.TryAcquire(n) {
		return true
	}
	if rm.deadline.IsZero() {
		rm.deadline = time.Now().Add(BodyWait)
	}
	ctx, cancel := context.WithDeadline(ctx, rm.deadline)
	defer cancel()
	rm.budget.waiting.Add(1)
	defer rm.budget.waiting.Add(-1)
	return sem.Acquire(ctx, n) == nil
}

// release gives back everything the room took; it may be called again.
func (rm *bodyRoom) release() {
	if rm.n == 0 {
		return
	}
	if rm.token != nil {
		rm.token.Release(rm.n)
	}
	rm.budget.all.Release(rm.n)
	rm.budget.held.Add(-rm.n)
	rm.n = 0
}

// errBodyOverLimit is a body longer than its reader said it could be.
var errBodyOverLimit = errors.New("the body is longer than declared")

// readAll reads rd to its end into a buffer that starts at
// min(most, firstBodyBuffer) bytes and doubles up to most, the longest body
// rd can give, taking room for each growth before it is made: what is held
// grows with what arrives.
func readAll(ctx context.Context, rd io.Reader, room *bodyRoom, most int64) ([]byte, error) {
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= most {
				if err := readEnd(rd); err != nil {
					return nil, err
				}
				return buf, nil
			}
			size := min(max(2*int64(cap(buf)), firstBodyBuffer), most)
			if err := room.grow(ctx, size-int64(cap(buf))); err != nil {
				return nil, err
			}
			grown := make([]byte, len(buf), size)
			copy(grown, buf)
			buf = grown
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// readEnd reads what follows the longest body rd can give: its end (nil),
// or an error (an *http.MaxBytesError from http.MaxBytesReader when there is
// more).
func readEnd(rd io.Reader) error {
	var one [1]byte
	for {
		n, err := rd.Read(one[:])
		switch {
		case n > 0:
			return errBodyOverLimit
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
	}
}
