package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/internal/taskresult"
	"github.com/certmail/certmail/internal/worker"
)

const (
	notAcknowledged = "the duplicate guard was written but too few replicas acknowledged it, and a failover could lose it; trying again until a master with enough replicas holds it"
	appliedNotAcked = "the applied sequence was written but too few replicas acknowledged it, and a failover could lose it; trying again until a master with enough replicas holds it"
	acknowledged    = "duplicate guard written and acknowledged by enough replicas"
	appliedAcked    = "applied sequence written and acknowledged by enough replicas"
)

// A delivery whose DigiCert call succeeded does not end until a replica
// acknowledged its duplicate guard (for a set-emails, its applied
// sequence): with the replica stopped (SIGSTOP), the task stays active,
// one WARN line says why, and it completes once the replica runs again,
// the guard on the replica, with one INFO line. A failover's promoted
// replica then holds the guard, and the redelivery of a task whose
// completion the old master lost finds it. DigiCert is called once.
func TestGuardWaitsForReplica(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas = 1 }})
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("info", "worker started")) == 1 }, b.logs.Text)

	replica.Pause()
	cert := b.enqueue(t, "send-cert", `{"certificate_id": 61, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	order := b.enqueue(t, "set-emails", `{"order_id": 62, "additional_emails": ["b@example.com"], "sequence": 7}`)
	waitFor(t, 15*time.Second, func() bool {
		return len(b.logs.Lines("warn", notAcknowledged)) == 1 && len(b.logs.Lines("warn", appliedNotAcked)) == 1
	}, b.logs.Text)
	// Two more tries, each waiting a second for the replica: still active.
	time.Sleep(2500 * time.Millisecond)
	for _, id := range []string{cert, order} {
		if info, err := b.inspector.GetTaskInfo("default", id); err != nil || info.State != asynq.TaskStateActive {
			t.Fatalf("task %s while the replica is stopped: %v %v, want active", id, info, err)
		}
	}
	if n := len(b.logs.Lines("warn", notAcknowledged)); n != 1 {
		t.Errorf("%d WARN lines for the guard not acknowledged, want 1", n)
	}

	replica.Continue()
	for _, id := range []string{cert, order} {
		if r := result(t, b.waitState(t, id, asynq.TaskStateCompleted, 15*time.Second)); r.Outcome != taskresult.Delivered {
			t.Errorf("task %s: outcome %q, want delivered", id, r.Outcome)
		}
	}
	if len(b.logs.Lines("info", acknowledged)) != 1 || len(b.logs.Lines("info", appliedAcked)) != 1 {
		t.Errorf("want one INFO line each once acknowledged:\n%s", b.logs.Text())
	}
	ctx := context.Background()
	for _, key := range []string{"certmail:delivered:" + cert, "certmail:delivered:" + order, "certmail:order:default:62:applied"} {
		if n, err := replica.Client().Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("%s on the replica: %d, %v; want it there", key, n, err)
		}
	}
	if n := len(b.fake.CertSends(61)); n != 1 {
		t.Errorf("certificate 61 emailed %d times, want once", n)
	}
}

// With no replica asked for (the default without Sentinel, or set to 0
// under it), nothing waits for one: a stopped replica does not hold a
// delivery, and no WAIT is sent.
func TestGuardWaitsForNoReplicaWhenNoneAsked(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{fake: digicerttest.Config{AnyIDExists: true}, startWorkers: -1})
	replica := redistest.StartReplica(t, b.redis, redistest.Options{})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas = -1 }})
	replica.Pause()
	b.redis.ResetStats()
	id := b.enqueue(t, "send-cert", `{"certificate_id": 63, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`)
	b.waitState(t, id, asynq.TaskStateCompleted, 5*time.Second)
	if n := b.redis.Commands()["wait"]; n != 0 {
		t.Errorf("%d WAIT commands, want none", n)
	}
	if strings.Contains(b.logs.Text(), "acknowledge") {
		t.Errorf("a line about replicas with none asked:\n%s", b.logs.Text())
	}
}

// A worker that asks for more replicas than the master has says so once
// at start: its deliveries will wait, and how to ask for none.
func TestFewReplicasWarnedAtStart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{startWorkers: -1})
	b.startWorker(t, setupOpts{configure: func(c *worker.Config) { c.GuardReplicas = 1 }})
	const warning = "Redis's master has fewer replicas connected than CERTMAIL_GUARD_REPLICAS asks: deliveries will wait after each DigiCert 2xx " +
		"until enough acknowledge its duplicate guard; for a Redis without replicas, set CERTMAIL_GUARD_REPLICAS=0"
	waitFor(t, 10*time.Second, func() bool { return len(b.logs.Lines("warn", warning)) == 1 }, b.logs.Text)
	line := b.logs.Lines("warn", warning)[0]
	if line["guard_replicas"] != int64(1) || line["connected_replicas"] != int64(0) {
		t.Errorf("the warning's fields %v, want guard_replicas 1 and connected_replicas 0", line)
	}
}

// GuardReplicas defaults to 1 under Sentinel and to none otherwise, and
// is bounded by MaxGuardReplicas.
func TestGuardReplicasDefaults(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url  string
		want int
	}{
		{"redis://127.0.0.1:1/0", 0},
		{"rediss://127.0.0.1:1/0", 0},
		{"redis-sentinel://127.0.0.1:1/0?master=m", 1},
	} {
		conn, err := redisconn.Open(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Client.Close() })
		if got := (worker.Config{Redis: conn}).WithDefaults().GuardReplicas; got != tt.want {
			t.Errorf("%s: default %d, want %d", tt.url, got, tt.want)
		}
		if got := (worker.Config{Redis: conn, GuardReplicas: -1}).WithDefaults().GuardReplicas; got != -1 {
			t.Errorf("%s: -1 became %d, want kept (none)", tt.url, got)
		}
	}
	base := worker.Config{Redis: &redisconn.Conn{}, Logger: zap.NewNop(),
		Accounts: account.Set{"default": account.Account{Name: "default", APIKey: account.Secret(testKey)}}}.WithDefaults()
	for n, ok := range map[int]bool{-1: true, 1: true, worker.MaxGuardReplicas: true, worker.MaxGuardReplicas + 1: false} {
		cfg := base
		cfg.GuardReplicas = n
		if err := cfg.Validate(); (err == nil) != ok {
			t.Errorf("GuardReplicas %d: %v, want accepted %v", n, err, ok)
		}
	}
}
