package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/cli"
	"github.com/certmail/certmail/internal/redistest"
)

// A REDIS_URL naming a database the server does not have (here database 4
// of a server with 4) waited for ever: every process retried as if Redis
// were down. Every command that connects now refuses it at start, exit 2,
// in one line naming the setting as it was given, the URL and the database:
// dev's --redis-url too, which has no variable (REDIS_URL, which redisconn's
// errors name, is not read there). Not parallel: one case sets REDIS_URL.
func TestMissingDatabaseRefused(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Args: []string{"--databases", "4"}})
	url := strings.TrimSuffix(srv.URL(), "/0") + "/4"
	token := "--api-tokens=" + strings.Repeat("t", 20)
	for _, args := range [][]string{
		{"worker", "--digicert-api-key=k", "--admin-addr="},
		{"scheduler", "--admin-addr="},
		{"api", token, "--http-addr=127.0.0.1:0"},
		{"task", "some-id"},
		{"dlq", "list"},
		{"dlq", "purge", "--yes"},
		{"schedule", "list"},
		{"schedule", "rm", "s1"},
		{"enqueue", "set-emails", "--order-id=1", "--email=a@example.com"},
		{"dev", "--http-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--no-demo"}, // reads the flag only
	} {
		cmd := strings.Join(args[:1], " ")
		if args[0] == "dlq" || args[0] == "schedule" || args[0] == "enqueue" {
			cmd = strings.Join(args[:2], " ")
		}
		r := runFor(10*time.Second, append(args, "--redis-url="+url)...)
		checkMissingDatabase(t, r, "certmail "+cmd+": --redis-url "+url+": Redis has no database 4 ")
	}
	t.Setenv("REDIS_URL", url)
	r := runFor(10*time.Second, "dlq", "list")
	checkMissingDatabase(t, r, "certmail dlq list: REDIS_URL "+url+": Redis has no database 4 ")
}

func checkMissingDatabase(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 2 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, "ERR DB index is out of range") {
		t.Errorf("exit %d, stderr %q; want 2 and one line starting %q", r.code, r.stderr, want)
	}
}

// A worker, scheduler or API that started while Redis was down waits for
// it as before; when Redis then answers that it has no such database, the
// process stops with the same line and exit status 2 rather than wait on
// (the API, which serves while it waits, rather than answer every request
// with an error).
func TestMissingDatabaseMetAfterWaiting(t *testing.T) {
	t.Parallel()
	token := "--api-tokens=" + strings.Repeat("t", 20)
	for _, tt := range []struct {
		args    []string
		waiting string // what the command says while Redis is down
	}{
		{[]string{"worker", "--digicert-api-key=k", "--admin-addr="}, "waiting for Redis"},
		{[]string{"scheduler", "--admin-addr="}, "waiting for Redis"},
		{[]string{"api", token, "--http-addr=127.0.0.1:0"}, "api started"},
		{[]string{"dev", "--http-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--no-demo"}, "waiting for Redis"},
	} {
		t.Run(tt.args[0], func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t, redistest.Options{Args: []string{"--databases", "4"}})
			url := strings.TrimSuffix(srv.URL(), "/0") + "/4"
			srv.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errOut := &watchedBuffer{want: tt.waiting, seen: make(chan struct{})}
			relaunched := make(chan struct{})
			go func() {
				defer close(relaunched)
				select {
				case <-errOut.seen:
					srv.Relaunch()
				case <-ctx.Done():
				}
			}()
			var out bytes.Buffer
			code := cli.Main(ctx, append(tt.args, "--redis-url="+url), strings.NewReader(""), &out, errOut)
			<-relaunched
			stderr := errOut.String()
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			want := "certmail " + tt.args[0] + ": --redis-url " + url + ": Redis has no database 4 "
			if code != 2 || !strings.HasPrefix(lines[len(lines)-1], want) || !strings.Contains(stderr, tt.waiting) {
				t.Errorf("exit %d, stderr %q; want %q, then exit 2 and a last line starting %q", code, stderr, tt.waiting, want)
			}
		})
	}
}
