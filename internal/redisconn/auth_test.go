package redisconn_test

import (
	"context"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// Redis refusing REDIS_URL's credentials (WRONGPASS for a wrong password
// or ACL user, NOAUTH for none where it asks for one) is named as such by
// Advice, with what to check and Redis's address without the URL's user or
// password; CheckAccess returns the refusal, for the one-shot commands,
// while CheckDatabase, for the services, which wait on it, does not; the
// right password passes both.
func TestAuthRefusalSaysWhatToCheck(t *testing.T) {
	t.Parallel()
	const password = "right-pw-41c9"
	srv := redistest.Start(t, redistest.Options{Password: password})
	if err := srv.Client().Do(context.Background(), "ACL", "SETUSER", "ops-user", "on", ">ops-pw-0b3e", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, userinfo, want string
	}{
		{"wrong password", ":wrong-pw-77d2@", "refused the user and password that --redis-url gives: check them"},
		{"wrong ACL user password", "ops-user:wrong-pw-77d2@", "refused the user and password that --redis-url gives: check them"},
		{"no password", "", "asks for a password, which --redis-url does not give: add it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := redisconn.OpenOneShot("redis://" + tc.userinfo + srv.Addr() + "/0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Client.Close() })
			ctx := context.Background()
			if err := c.CheckDatabase(ctx); err != nil {
				t.Errorf("CheckDatabase: %v, want nil (a service waits on a refused password)", err)
			}
			refused := c.CheckAccess(ctx)
			if !redisconn.AuthRefused(refused) {
				t.Fatalf("CheckAccess: %v, want Redis's refusal", refused)
			}
			// A command refused later (a password changed meanwhile) gets the same advice.
			for _, err := range []error{refused, c.Client.Ping(ctx).Err()} {
				advice := c.Advice(err, "--redis-url")
				if !strings.Contains(advice, "; Redis at redis://"+srv.Addr()+"/0 "+tc.want) {
					t.Errorf("advice for %v: %q, want %q", err, advice, tc.want)
				}
				for _, secret := range []string{"wrong-pw", "ops-user", password} {
					if strings.Contains(err.Error()+advice, secret) {
						t.Errorf("%q%s shows %q", err, advice, secret)
					}
				}
			}
		})
	}
	right, err := redisconn.OpenOneShot(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { right.Client.Close() })
	if err := right.CheckAccess(context.Background()); err != nil {
		t.Errorf("CheckAccess with the right password: %v", err)
	}
}
