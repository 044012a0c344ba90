package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// oneShot is a one-shot command of the binary, started by a test.
type oneShot struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	code           int
}

// startOneShot runs certmail with args in a minimal environment, and kills
// it at the test's end if it is still running.
func startOneShot(t *testing.T, args ...string) *oneShot {
	t.Helper()
	o := &oneShot{cmd: exec.Command(binary, args...), done: make(chan struct{})}
	o.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	o.cmd.Stdout, o.cmd.Stderr = &o.stdout, &o.stderr
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(o.done)
		var exit *exec.ExitError
		if err := o.cmd.Wait(); errors.As(err, &exit) {
			o.code = exit.ExitCode()
		}
	}()
	t.Cleanup(func() {
		_ = o.cmd.Process.Kill()
		<-o.done
	})
	return o
}

// wait waits at most within for the command to exit.
func (o *oneShot) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(within):
		t.Fatalf("%v still running after %v", o.cmd.Args[1:], within)
	}
}

// The one-shot commands, given a Redis that refuses connections, print
// one line: what failed, where Redis was looked for and what to check;
// go-redis's own lines (its failed dials) are DEBUG lines of the command's
// JSON log, not on stderr at the default level, and never plain text.
// Under Sentinel, go-redis joins the errors of the sentinels it could not
// reach with newlines: the line holds them all, "; " between them.
func TestOneShotRedisDownSaysSoInOneLine(t *testing.T) {
	t.Parallel()
	// Nothing listens on ports 1 and 2 (privileged, and no test binds them).
	for _, tt := range []struct{ url, shown string }{
		{"redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"},
		{"redis-sentinel://127.0.0.1:1,127.0.0.1:2?master=m", "redis-sentinel://127.0.0.1:1,127.0.0.1:2/0?master=m"},
	} {
		url := tt.url
		sentinel := strings.HasPrefix(url, "redis-sentinel:")
		hint := "; Redis at " + tt.shown + " did not answer: check that it is running and that --redis-url names it\n"
		for _, args := range [][]string{
			{"task", "abc"},
			{"dlq", "list"},
			{"dlq", "purge", "--yes"},
			{"schedule", "list"},
			{"enqueue", "set-emails", "--order-id", "1", "--email", "a@example.com"},
		} {
			name := "certmail " + strings.Join(args[:2], " ")
			if args[0] == "task" {
				name = "certmail task"
			}
			t.Run(strings.SplitN(url, ":", 2)[0]+"/"+strings.Join(args[:2], " "), func(t *testing.T) {
				t.Parallel()
				o := startOneShot(t, append(args, "--redis-url", url)...)
				o.wait(t, 30*time.Second)
				got := o.stderr.String()
				if o.code != 1 || strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, name+": ") || !strings.HasSuffix(got, hint) ||
					strings.Contains(got, "failed to dial") || (!sentinel && strings.Contains(got, "redis: ")) {
					t.Errorf("exit %d, stderr %q; want 1 and one line %q…%q", o.code, got, name+": ", hint)
				}
				// go-redis dials the sentinels at once: their errors come in either order.
				if sentinel && (!strings.Contains(got, "127.0.0.1:1: connect: connection refused") || !strings.Contains(got, "127.0.0.1:2: connect: connection refused") ||
					!strings.Contains(got, "connection refused; dial tcp 127.0.0.1:")) {
					t.Errorf("stderr %q; want both sentinels' errors, \"; \" between them", got)
				}
				if sentinel {
					return // go-redis logs no dial of a sentinel: the lines at debug are those of the URL above
				}

				debug := startOneShot(t, append(args, "--redis-url", url, "--log-level", "debug")...)
				debug.wait(t, 30*time.Second)
				lines := strings.Split(strings.TrimSuffix(debug.stderr.String(), "\n"), "\n")
				if last := lines[len(lines)-1] + "\n"; debug.code != 1 || last != got {
					t.Errorf("at debug: exit %d, last line %q; want 1 and %q", debug.code, last, got)
				}
				dials := 0
				for _, line := range lines[:len(lines)-1] {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Errorf("at debug: a line that is not JSON: %q", line)
						continue
					}
					if msg, _ := m["msg"].(string); m["logger"] == "redis" && strings.Contains(msg, "failed to dial") {
						dials++
						if m["level"] != "debug" {
							t.Errorf("at debug: go-redis's line at %v, want debug: %q", m["level"], line)
						}
					}
				}
				if dials == 0 {
					t.Errorf("at debug: go-redis's failed dial is in no JSON line:\n%s", debug.stderr.String())
				}
			})
		}
	}
}

// The one-shot commands, given a Redis whose listen queue is full (the
// kernel drops their SYNs: a dial neither succeeds nor is refused), fail
// within redisconn.OneShotCommandBound with the one line of a Redis that
// did not answer, rather than after go-redis's dials and retries (103 s).
// A command fails at its first Redis command that fails: the bound is
// that of one Redis command, and a second of room for the process.
func TestOneShotBlackholedRedisFailsWithinTheBound(t *testing.T) {
	t.Parallel()
	url := "redis://" + redistest.Blackhole(t) + "/0"
	hint := "; Redis at " + url + " did not answer: check that it is running and that --redis-url names it\n"
	bound := redisconn.OneShotCommandBound + time.Second
	for _, args := range [][]string{
		{"task", "abc"},
		{"dlq", "list"},
		{"dlq", "purge", "--yes"},
		{"dlq", "requeue", "abc"},
		{"schedule", "list"},
		{"schedule", "add", "--id", "a", "--cron", "@daily", "--type", "set-emails", "--payload", `{"order_id": 1, "additional_emails": []}`},
		{"schedule", "rm", "a"},
		{"enqueue", "set-emails", "--order-id", "1", "--email", "a@example.com"},
	} {
		name := "certmail " + strings.Join(args[:2], " ")
		if args[0] == "task" {
			name = "certmail task"
		}
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			t.Parallel()
			started := time.Now()
			o := startOneShot(t, append(args, "--redis-url", url)...)
			o.wait(t, 30*time.Second)
			if took := time.Since(started); took > bound {
				t.Errorf("failed after %v, want within %v", took.Round(time.Millisecond), bound)
			}
			if args[1] == "requeue" { // a line for each id it could not requeue, then the count
				want := "abc: read dead letters: dial tcp "
				if got := o.stderr.String(); o.code != 1 || !strings.HasPrefix(got, want) || !strings.Contains(got, "i/o timeout") {
					t.Errorf("exit %d, stderr %q; want 1 and %q…i/o timeout", o.code, got, want)
				}
				return
			}
			if got := o.stderr.String(); o.code != 1 || strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, name+": ") ||
				!strings.HasSuffix(got, hint) || !strings.Contains(got, "i/o timeout") {
				t.Errorf("exit %d, stderr %q; want 1 and one line %q…i/o timeout%q", o.code, got, name+": ", hint)
			}
		})
	}
}

// Ctrl-C while Redis takes a command in and never answers (the server
// stopped with SIGSTOP) stops task and dlq purge within a second, with
// exit status 130 and one line saying they were interrupted and, for
// dlq purge, how far it got; run again once Redis answers, the purge
// deletes the rest.
func TestOneShotInterruptedWhileRedisStalls(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		trigger func(id string) string // the command before which Redis stops
		want    string
		rerun   string // dlq purge's output once Redis answers again
	}{
		{"task", []string{"task", "abc"}, func(string) string { return "smembers" },
			"certmail task: interrupted\n", ""},
		{"dlq purge while it checks", []string{"dlq", "purge", "--yes", "--queues", "default"}, func(string) string { return "smembers" },
			"certmail dlq purge: interrupted: nothing deleted\n",
			"deleted 1 dead-lettered task and 1 dead-letter entry of queues default"},
		// Its task is deleted; its dead-letter marker, and its entry after
		// it, are not.
		{"dlq purge while it deletes", []string{"dlq", "purge", "--yes", "--queues", "default"}, func(id string) string { return deadletter.MarkerKey("default", id) },
			"certmail dlq purge: interrupted: deleted 1 dead-lettered task and 0 dead-letter entries before stopping; run it again to delete the rest\n",
			"deleted 0 dead-lettered tasks and 1 dead-letter entry of queues default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			id := deadLetterOne(t, srv)
			proxy := srv.Proxy()
			stalled := make(chan struct{})
			proxy.BeforeOnce(tt.trigger(id), func() {
				srv.Pause()
				close(stalled)
			})
			url := "redis://" + proxy.Addr() + "/0"
			o := startOneShot(t, append(tt.args, "--redis-url", url)...)
			select {
			case <-stalled:
			case <-o.done:
				t.Fatalf("exited %d before Redis stalled: %q", o.code, o.stderr.String())
			case <-time.After(30 * time.Second):
				t.Fatal("the command never reached Redis")
			}
			sent := time.Now()
			if err := o.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			o.wait(t, 10*time.Second)
			if took := time.Since(sent); took > time.Second {
				t.Errorf("stopped %v after Ctrl-C, want within 1 s", took.Round(time.Millisecond))
			}
			if got := o.stderr.String(); o.code != 130 || got != tt.want {
				t.Errorf("exit %d, stderr %q; want 130 and %q", o.code, got, tt.want)
			}
			if tt.rerun == "" {
				return
			}
			srv.Continue()
			proxy.Resume()
			again := startOneShot(t, append(tt.args, "--redis-url", srv.URL())...)
			again.wait(t, 30*time.Second)
			if again.code != 0 || !strings.Contains(again.stdout.String(), tt.rerun) {
				t.Errorf("run again: exit %d, stdout %q, stderr %q; want 0 and %q", again.code, again.stdout.String(), again.stderr.String(), tt.rerun)
			}
		})
	}
}

// deadLetterOne archives a task of queue default with its dead-letter
// entry, as the worker does, and returns its id.
func deadLetterOne(t *testing.T, srv *redistest.Server) string {
	t.Helper()
	client := asynq.NewClientFromRedisClient(srv.Client())
	info, err := client.Enqueue(asynq.NewTask("set-emails", []byte(`{"order_id": 1, "additional_emails": []}`)))
	if err != nil {
		t.Fatal(err)
	}
	inspector := asynq.NewInspector(srv.ConnOpt())
	defer inspector.Close()
	if err := inspector.ArchiveTask("default", info.ID); err != nil {
		t.Fatal(err)
	}
	entry := deadletter.Entry{TaskID: info.ID, Type: "set-emails", Queue: "default", ErrorCode: "invalid_payload", FailedAt: time.Now()}
	if _, err := deadletter.Append(context.Background(), srv.Client(), entry, 1000); err != nil {
		t.Fatal(err)
	}
	return info.ID
}
