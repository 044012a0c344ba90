package redisconn_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// Redis's refusals of a command for its keys, a key of another type
// (WRONGTYPE) or an ACL that does not allow it (NOPERM, or inside a
// script its own reply), get advice naming
// the keys and what to do, however wrapped; its other answers, and other
// errors, get none.
func TestKeyAdvice(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	admin := srv.Client()
	if err := admin.HSet(ctx, "certmail:test:taken", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "other", "on", ">pw", "~asynq:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	other := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "other", Password: "pw"})
	t.Cleanup(func() { _ = other.Close() })

	wrongType := admin.Get(ctx, "certmail:test:taken").Err()
	noPerm := other.Get(ctx, "certmail:test:taken").Err()
	otherReply := admin.Do(ctx, "NOSUCHCOMMAND").Err()
	// A script that runs a command the user may not: no NOPERM, but
	// "ACL failure in script" (7.2 on) or "The user executing the script
	// can't" (7.0).
	inScript := other.Eval(ctx, "return redis.call('GET', 'certmail:test:taken')", nil).Err()
	for _, tt := range []struct {
		name string
		err  error
		keys []string
		want []string // in the advice; none: no advice
	}{
		{"a key of another type", wrongType, []string{"certmail:test:taken"},
			[]string{"; the key certmail:test:taken holds a value of another type", "another application", "database of its own"}},
		{"wrapped, several keys", errors.Join(errors.New("read"), wrongType), []string{"certmail:a", "certmail:b"},
			[]string{"one of the keys certmail:a, certmail:b", "another application"}},
		{"an ACL refusal", noPerm, []string{"certmail:test:taken"},
			[]string{"; Redis's ACL does not allow", "the key certmail:test:taken", "~certmail:*", "An ACL user for certmail"}},
		{"an ACL refusal in a script", inScript, []string{"certmail:test:taken"},
			[]string{"; Redis's ACL does not allow", "the key certmail:test:taken", "An ACL user for certmail"}},
		{"another reply", otherReply, []string{"certmail:test:taken"}, nil},
		{"not Redis's", errors.New("WRONGTYPE but not from Redis"), []string{"certmail:test:taken"}, nil},
		{"no keys", wrongType, nil, nil},
		{"no error", nil, []string{"certmail:test:taken"}, nil},
	} {
		got := redisconn.KeyAdvice(tt.err, tt.keys...)
		if len(tt.want) == 0 && got != "" {
			t.Errorf("%s: KeyAdvice(%v) = %q, want none", tt.name, tt.err, got)
		}
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: KeyAdvice(%v) = %q, want it to say %q", tt.name, tt.err, got, w)
			}
		}
	}
}
