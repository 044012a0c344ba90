package redisconn_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/cli"
	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// TestSentinelURLReachesProtectedMasterInItsDatabase: through real
// sentinels that ask for their own password, both handles reach a master
// with requirepass, in the database the URL names, and nothing lands in
// database 0.
func TestSentinelURLReachesProtectedMasterInItsDatabase(t *testing.T) {
	t.Parallel()
	const masterPW, sentinelPW = "master-pw-5d1c", "sentinel-pw-9e07"
	g := redistest.StartSentinel(t, redistest.SentinelOptions{Password: masterPW, SentinelPassword: sentinelPW})
	c, err := redisconn.Open("redis-sentinel://:" + masterPW + "@" + strings.Join(g.Addrs(), ",") +
		"/3?master=" + redistest.SentinelMaster + "&sentinel_password=" + sentinelPW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Client.Close() })
	if strings.Contains(c.Target, masterPW) || strings.Contains(c.Target, sentinelPW) || !strings.Contains(c.Target, "/3?") {
		t.Errorf("target %q: want database 3 and no password", c.Target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Wait(ctx, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Set(ctx, "certmail:test:own", "v", 0).Err(); err != nil {
		t.Fatalf("go-redis client: %v", err)
	}
	client := asynq.NewClient(c.Opt)
	t.Cleanup(func() { client.Close() })
	info, err := client.EnqueueContext(ctx, asynq.NewTask("test-task", nil), asynq.Queue("q"))
	if err != nil {
		t.Fatalf("asynq client: %v", err)
	}

	db3 := redis.NewClient(&redis.Options{Addr: g.Master.Addr(), Password: masterPW, DB: 3})
	t.Cleanup(func() { db3.Close() })
	if v, err := db3.Get(ctx, "certmail:test:own").Result(); err != nil || v != "v" {
		t.Errorf("go-redis client's key in database 3 of the master: %q, %v", v, err)
	}
	if n, err := db3.Exists(ctx, "asynq:{q}:t:"+info.ID).Result(); err != nil || n != 1 {
		t.Errorf("asynq's task in database 3 of the master: %d, %v", n, err)
	}
	if n, err := g.Master.Client().DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("database 0 of the master holds %d keys (%v), want none", n, err)
	}
}

// TestSentinelRefusalsSayWhatToCheck: when the sentinels answer but give no
// master, a one-shot command's line says why and what to check: a master
// name they do not know names the master and ?master=, a refused
// password names sentinel_password; neither says that Redis did not
// answer. Sentinels that do not answer keep that advice.
func TestSentinelRefusalsSayWhatToCheck(t *testing.T) {
	t.Parallel()
	const masterPW, sentinelPW = "master-pw-77a1", "sentinel-pw-3c52"
	g := redistest.StartSentinel(t, redistest.SentinelOptions{Password: masterPW, SentinelPassword: sentinelPW})
	addrs := strings.Join(g.Addrs(), ",")
	for _, tc := range []struct {
		name, url string
		want      []string
	}{{
		name: "unknown master",
		url:  "redis-sentinel://:" + masterPW + "@" + addrs + "/2?master=nosuch&sentinel_password=" + sentinelPW,
		want: []string{`do not know master "nosuch"`, "check ?master= in --redis-url"},
	}, {
		name: "wrong sentinel password",
		url:  "redis-sentinel://:" + masterPW + "@" + addrs + "/2?master=" + redistest.SentinelMaster + "&sentinel_password=wrong-7f",
		want: []string{"refused the password", "check sentinel_password", "in --redis-url", "WRONGPASS"},
	}, {
		name: "no sentinel password",
		url:  "redis-sentinel://:" + masterPW + "@" + addrs + "/2?master=" + redistest.SentinelMaster,
		want: []string{"refused the password", "check sentinel_password", "NOAUTH"},
	}, {
		name: "no sentinel answers",
		url:  "redis-sentinel://127.0.0.1:1,127.0.0.1:2/2?master=nosuch",
		want: []string{"did not answer: check that it is running and that --redis-url names it"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr strings.Builder
			code := cli.Main(context.Background(), []string{"dlq", "list", "--redis-url", tc.url}, strings.NewReader(""), &stdout, &stderr)
			line := stderr.String()
			if code != 1 || strings.Count(line, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want 1 and one line", code, line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("line %q does not say %q", line, w)
				}
			}
			if strings.Contains(line, masterPW) || strings.Contains(line, sentinelPW) {
				t.Errorf("line %q shows a password", line)
			}
			if tc.name != "no sentinel answers" && strings.Contains(line, "did not answer") {
				t.Errorf("line %q says Redis did not answer, yet the sentinels did", line)
			}
		})
	}
}
