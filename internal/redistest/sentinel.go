package redistest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name the Sentinel group monitors.
const SentinelMaster = "mymaster"

// SentinelGroup is a master, its replicas (one unless SentinelOptions
// asks more) and three sentinels on loopback, as in a small production
// setup; failover happens within a few seconds of the master's death
// (down-after-milliseconds 1000).
type SentinelGroup struct {
	Master *Server
	// Replica is the first of Replicas.
	Replica *Server
	// Replicas are the master's replicas, as the group started.
	Replicas  []*Server
	opts      SentinelOptions
	sentinels []*exec.Cmd
	addrs     []string
}

// SentinelOptions tune the group. The zero value asks no password anywhere.
type SentinelOptions struct {
	// Password is the master's and the replica's (requirepass, masterauth);
	// the sentinels know it (auth-pass).
	Password string
	// SentinelPassword is the sentinels' own (requirepass in their config).
	SentinelPassword string
	// Replicas is how many replicas the master has: 0 means 1.
	Replicas int
}

// StartSentinel starts the group and waits until every replica is in sync
// and every sentinel knows the master and each of its replicas, so that
// a failover may promote any of them. Everything stops at the test's end.
func StartSentinel(tb testing.TB, opts ...SentinelOptions) *SentinelGroup {
	tb.Helper()
	if _, err := exec.LookPath("redis-sentinel"); err != nil {
		tb.Fatalf("redistest: redis-sentinel not found on PATH (apt-get install -y redis-sentinel): %v", err)
	}
	g := &SentinelGroup{}
	if len(opts) > 0 {
		g.opts = opts[0]
	}
	g.Master = Start(tb, Options{AppendOnly: true, Password: g.opts.Password})
	for range max(g.opts.Replicas, 1) {
		g.Replicas = append(g.Replicas, StartReplica(tb, g.Master, Options{AppendOnly: true}))
	}
	g.Replica = g.Replicas[0]
	for i := range 3 {
		port, err := FreePort()
		if err != nil {
			tb.Fatal(err)
		}
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		content := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
sentinel parallel-syncs %s 1
`, port, dir, SentinelMaster, g.Master.Port(), SentinelMaster, SentinelMaster, SentinelMaster)
		if g.opts.Password != "" {
			content += fmt.Sprintf("sentinel auth-pass %s %s\n", SentinelMaster, g.opts.Password)
		}
		if g.opts.SentinelPassword != "" {
			content += fmt.Sprintf("requirepass %s\n", g.opts.SentinelPassword)
		}
		if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
		log, err := os.Create(filepath.Join(dir, "sentinel.log"))
		if err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command("redis-sentinel", conf)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			tb.Fatalf("redistest: start sentinel %d: %v", i, err)
		}
		tb.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			log.Close()
		})
		g.sentinels = append(g.sentinels, cmd)
		g.addrs = append(g.addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	for _, addr := range g.addrs {
		c := g.sentinelClient(addr)
		err := waitFor(15*time.Second, func() bool {
			a, err := c.GetMasterAddrByName(context.Background(), SentinelMaster).Result()
			return err == nil && len(a) == 2 && a[1] == strconv.Itoa(g.Master.Port())
		})
		if err == nil {
			err = g.waitReplicasKnown(c)
		}
		c.Close()
		if err != nil {
			tb.Fatalf("redistest: sentinel %s does not know the master and its %d replicas: %v", addr, len(g.Replicas), err)
		}
	}
	return g
}

// waitReplicasKnown waits until the sentinel c lists every replica of g as
// one (flags "slave") whose link to the master is up.
func (g *SentinelGroup) waitReplicasKnown(c *redis.SentinelClient) error {
	return waitFor(15*time.Second, func() bool {
		known, err := c.Replicas(context.Background(), SentinelMaster).Result()
		if err != nil {
			return false
		}
		up := map[string]bool{}
		for _, r := range known {
			if r["flags"] == "slave" && r["master-link-status"] == "ok" {
				up[r["ip"]+":"+r["port"]] = true
			}
		}
		for _, r := range g.Replicas {
			if !up[r.Addr()] {
				return false
			}
		}
		return true
	})
}

// StartReplica starts a replica of master (--replicaof, with master's
// password as its own and as masterauth; opts' Args come after) and waits
// until it is in sync. It stops at the test's end; Pause stops it
// acknowledging the master's writes, as a replica that falls behind or a
// broken link does.
func StartReplica(tb testing.TB, master *Server, opts Options) *Server {
	tb.Helper()
	opts.Password = master.opts.Password
	opts.Args = append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}, opts.Args...)
	r := Start(tb, opts)
	c := r.Client()
	if err := waitFor(15*time.Second, func() bool {
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}); err != nil {
		tb.Fatalf("redistest: replica not in sync: %v", err)
	}
	return r
}

// Addrs are the sentinels' addresses.
func (g *SentinelGroup) Addrs() []string { return g.addrs }

// URL is the group as a REDIS_URL (database 0), passwords included.
func (g *SentinelGroup) URL() string {
	u := url.URL{Scheme: "redis-sentinel", Host: strings.Join(g.addrs, ","), Path: "/0"}
	if g.opts.Password != "" {
		u.User = url.UserPassword("", g.opts.Password)
	}
	q := url.Values{"master": {SentinelMaster}}
	if g.opts.SentinelPassword != "" {
		q.Set("sentinel_password", g.opts.SentinelPassword)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func (g *SentinelGroup) sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: g.opts.SentinelPassword, ContextTimeoutEnabled: true})
}

// CurrentMaster asks the first sentinel that answers for the master's address.
func (g *SentinelGroup) CurrentMaster(ctx context.Context) (string, error) {
	var lastErr error
	for _, addr := range g.addrs {
		c := g.sentinelClient(addr)
		a, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		c.Close()
		if err == nil && len(a) == 2 {
			return a[0] + ":" + a[1], nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("no sentinel answered: %w", lastErr)
}

// Member is the group's server at addr (the master or a replica, as the
// group started), nil when none is.
func (g *SentinelGroup) Member(addr string) *Server {
	for _, s := range append([]*Server{g.Master}, g.Replicas...) {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// Failover asks the sentinels, in turn, for an orderly failover (SENTINEL
// FAILOVER) until one accepts: a replica is promoted while the master
// still runs and takes writes, until the sentinels make it the new master's
// replica, seconds later, dropping them; the other replicas are made the
// new master's replicas as soon as the promotion is seen. A sentinel refuses while a
// failover is under way or no replica is in sync with the master; the
// error is then the last refusal.
func (g *SentinelGroup) Failover(ctx context.Context) error {
	var lastErr error
	for _, addr := range g.addrs {
		c := g.sentinelClient(addr)
		lastErr = c.Failover(ctx, SentinelMaster).Err()
		c.Close()
		if lastErr == nil {
			return nil
		}
	}
	return fmt.Errorf("no sentinel started a failover: %w", lastErr)
}

func waitFor(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
