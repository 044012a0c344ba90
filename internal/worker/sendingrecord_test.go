package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

// lostAnswers is a transport that sends each set-emails request to
// DigiCert, which applies it, and, while drop is above 0, throws the answer
// away: the worker sees no answer, or, when gateway is set, a gateway's
// error page of that status in its place. On the first answer it throws
// away it also runs onLost, if set.
type lostAnswers struct {
	drop    atomic.Int64
	gateway int
	once    sync.Once
	onLost  func()
}

func (l *lostAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/additional-emails") && l.drop.Add(-1) >= 0 {
		resp.Body.Close()
		if l.onLost != nil {
			l.once.Do(l.onLost)
		}
		if l.gateway != 0 {
			return &http.Response{StatusCode: l.gateway, Status: http.StatusText(l.gateway), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{"Content-Type": {"text/html"}}, Body: io.NopCloser(strings.NewReader("<html>bad gateway</html>")),
				Request: r}, nil
		}
		return nil, errors.New("connection reset after the request was sent")
	}
	return resp, err
}

// A newer list A reaches DigiCert, which applies it, and certmail sees no
// answer: the order's sending record holds A's sequence, and may stand for
// a list DigiCert holds. A refusal that comes after (a permanent 4xx, to
// one attempt) must not take that knowledge away: an older list B that
// comes next is superseded, and DigiCert keeps A. In each case the refusal
// is of a call that has nothing to do with A's outcome:
//   - a newer list C refused: C's round trip had overwritten A's sequence
//     in the record, and the release puts A's back;
//   - A's own retry refused: the record held A's sequence before that
//     delivery, for its first delivery's send;
//   - A's in-call retry refused, after its first attempt was applied with
//     the answer lost: two attempts, one of which may have been applied.
func TestOlderSetEmailsAfterAnUnknownSendThenARefusal(t *testing.T) {
	t.Parallel()
	refusal := `{"errors":[{"code":"invalid_value:additional_emails","message":"bad"}]}`
	for _, c := range []string{"a newer list refused", "its retry refused", "its in-call retry refused"} {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			const order = 51
			path := fmt.Sprintf("/services/v2/order/certificate/%d/additional-emails", order)
			lost := &lostAnswers{}
			var b *bundle
			switch c {
			case "its in-call retry refused":
				lost.drop.Store(1)
				lost.onLost = func() { b.fake.FailPath(path, 1, 400, refusal, "application/json") }
			default:
				lost.drop.Store(4) // every in-call attempt of A's first delivery
			}
			b = setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, configure: func(c *worker.Config) {
				c.Client.HTTPClient = &http.Client{Transport: lost}
			}})
			seq := time.Now().UnixNano()
			maxRetry := 0
			if c == "its retry refused" {
				maxRetry = 1
			}
			a, err := b.client.Enqueue(setEmailsAt(t, order, "a-newer@example.com", seq+1), asynq.MaxRetry(maxRetry))
			if err != nil {
				t.Fatal(err)
			}
			switch c {
			case "a newer list refused":
				b.waitState(t, a.ID, asynq.TaskStateArchived, 20*time.Second)
				b.fake.FailPath(path, 1, 400, refusal, "application/json")
				newest, err := b.client.Enqueue(setEmailsAt(t, order, "c-newest@example.com", seq+2), asynq.MaxRetry(0))
				if err != nil {
					t.Fatal(err)
				}
				b.waitState(t, newest.ID, asynq.TaskStateArchived, 20*time.Second)
			case "its retry refused":
				b.waitState(t, a.ID, asynq.TaskStateRetry, 20*time.Second)
				b.fake.FailPath(path, 1, 400, refusal, "application/json")
				if err := b.inspector.RunTask("default", a.ID); err != nil {
					t.Fatal(err)
				}
				b.waitState(t, a.ID, asynq.TaskStateArchived, 20*time.Second)
			default:
				b.waitState(t, a.ID, asynq.TaskStateArchived, 20*time.Second)
			}
			if n := b.fake.StatusCount(400); n != 1 {
				t.Fatalf("DigiCert refused %d requests, want 1", n)
			}
			if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "a-newer@example.com" {
				t.Fatalf("DigiCert holds %v before the older list, want A's", got)
			}
			olderListSuperseded(t, b, order, seq)
		})
	}
}

// A newer list A reaches DigiCert, which applies it, and a gateway in
// between answers its only attempt with a 5xx (DIGICERT_MAX_ATTEMPTS=1, or
// no headroom left for another): an HTTP error that is not DigiCert's
// refusal says nothing of whether the list was applied. The sending record
// stays: an older list B that comes next is superseded, and DigiCert keeps
// A.
func TestOlderSetEmailsAfterAOneAttemptGatewayError(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusBadGateway, http.StatusGatewayTimeout} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			lost := &lostAnswers{gateway: status}
			lost.drop.Store(1)
			b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, configure: func(c *worker.Config) {
				c.Client.HTTPClient = &http.Client{Transport: lost}
				c.Client.MaxAttempts = 1
			}})
			const order = 53
			seq := time.Now().UnixNano()
			a, err := b.client.Enqueue(setEmailsAt(t, order, "a-newer@example.com", seq+1), asynq.MaxRetry(0))
			if err != nil {
				t.Fatal(err)
			}
			if info := b.waitState(t, a.ID, asynq.TaskStateArchived, 20*time.Second); !strings.Contains(info.LastErr, strconv.Itoa(status)) {
				t.Fatalf("A failed with %q, want its %d", info.LastErr, status)
			}
			if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "a-newer@example.com" {
				t.Fatalf("DigiCert holds %v before the older list, want A's", got)
			}
			olderListSuperseded(t, b, order, seq)
		})
	}
}

// A newer list A reaches DigiCert and certmail sees no answer; A's retry is
// then held back by certmail's own rate limiter (nothing sent). The record
// still stands for A's first send: an older list B is superseded at once
// (without waiting for a slot), and DigiCert keeps A.
func TestOlderSetEmailsAfterAnUnknownSendThenALimiterWait(t *testing.T) {
	t.Parallel()
	lost := &lostAnswers{}
	lost.drop.Store(1)
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, configure: func(c *worker.Config) {
		c.Client.HTTPClient = &http.Client{Transport: lost}
		c.Client.MaxAttempts = 1
		a := c.Accounts["default"]
		a.RateLimits = []ratelimit.Window{{Limit: 1, Period: time.Hour}}
		c.Accounts["default"] = a
	}})
	const order = 52
	ctx := context.Background()
	rdb := b.redis.Client()
	sendingKey := "certmail:order:default:52:sending"
	seq := time.Now().UnixNano()
	a, err := b.client.Enqueue(setEmailsAt(t, order, "a-newer@example.com", seq+1))
	if err != nil {
		t.Fatal(err)
	}
	b.waitState(t, a.ID, asynq.TaskStateRetry, 20*time.Second)
	if err := b.inspector.RunTask("default", a.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool {
		info, err := b.inspector.GetTaskInfo("default", a.ID)
		return err == nil && info.State == asynq.TaskStateRetry && strings.HasPrefix(info.LastErr, "rate_limit_wait")
	}, func() string { return "A's retry was not held back by the limiter" })
	if got := rdb.Get(ctx, sendingKey).Val(); got != fmt.Sprint(seq+1) {
		t.Errorf("sending record %q after A's retry was held back, want A's sequence %d", got, seq+1)
	}
	older, err := b.client.Enqueue(setEmailsAt(t, order, "b-oldest@example.com", seq))
	if err != nil {
		t.Fatal(err)
	}
	var info *asynq.TaskInfo
	waitFor(t, 20*time.Second, func() bool {
		info, err = b.inspector.GetTaskInfo("default", older.ID)
		return err == nil && (info.State == asynq.TaskStateCompleted || info.LastErr != "")
	}, func() string { return "the older list was neither completed nor handed back" })
	if info.State != asynq.TaskStateCompleted {
		t.Fatalf("the older list was handed back (%s), want superseded", info.LastErr)
	}
	if r := result(t, info); r.Outcome != taskresult.Superseded {
		t.Errorf("the older list's outcome = %q, want superseded", r.Outcome)
	}
	if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "a-newer@example.com" {
		t.Errorf("DigiCert holds %v, want A's list, the newer", got)
	}
}

// olderListSuperseded enqueues an older list B (sequence seq) for order,
// after a newer list A ("a-newer@example.com") may have been applied: B
// must be superseded, and DigiCert keep A.
func olderListSuperseded(t *testing.T, b *bundle, order int64, seq int64) {
	t.Helper()
	older, err := b.client.Enqueue(setEmailsAt(t, order, "b-oldest@example.com", seq))
	if err != nil {
		t.Fatal(err)
	}
	if r := result(t, b.waitState(t, older.ID, asynq.TaskStateCompleted, 20*time.Second)); r.Outcome != taskresult.Superseded {
		t.Errorf("the older list's outcome = %q, want superseded: A, newer, may have been applied", r.Outcome)
	}
	if got, _ := b.fake.AdditionalEmails(order); strings.Join(got, ",") != "a-newer@example.com" {
		t.Errorf("DigiCert holds %v, want A's list, the newer", got)
	}
}
