package worker

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/internal/ratelimit"
	"github.com/certmail/certmail/internal/redistest"
)

// BenchmarkScriptsRedisCPU measures what Redis spends on a delivery's two
// scripts, the one before the DigiCert call and the one after it, sent as
// a resend-dcv delivery sends them (20 at a time, the worker's concurrency;
// two rate-limit windows that never bind, as in `make bench`).
// redis-cpu-ns/op is redis-server's CPU per delivery (INFO cpu), steadier
// than time on a shared machine. Three sets of scripts take the same keys
// and arguments:
//
//	floor    scripts that return at once: the two round trips alone
//	nolimit  the duplicate guard, auth gate and result, without the limiter
//	shipped  the worker's beforeScript and afterScript
//
// so that shipped less nolimit is the limiter's share, nolimit less floor
// the rest of the scripts' work.
func BenchmarkScriptsRedisCPU(b *testing.B) {
	rs := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr(), PoolSize: 40})
	b.Cleanup(func() { rdb.Close() })
	windows, err := ratelimit.ParseWindows("1000000/100ms,1000000/1s")
	if err != nil {
		b.Fatal(err)
	}
	nolimitAfter := newScript(`
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[1]) end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 0`)
	nolimitBefore := newScript(gateLua + `
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return {3, 0, -1} end
local g = gate(2, ARGV[2], ARGV[3])
return {g[1], g[2], 0}`)
	for _, v := range []struct {
		name          string
		before, after *script
	}{
		{"floor", newScript(`return {1, 0, 0}`), newScript(`return 0`)},
		{"nolimit", nolimitBefore, nolimitAfter},
		{"shipped", beforeScript, afterScript},
	} {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			p := &processor{rdb: rdb, retention: 24 * time.Hour}
			gate := newAuthGate(rdb, "default", time.Minute)
			lim := ratelimit.NewLimiter(rdb, ratelimit.Config{Account: "default", Windows: windows})
			var n atomic.Int64
			cpu0 := redisCPU(b, rdb)
			b.SetParallelism(10) // 20 at a time on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := "bench-" + strconv.FormatInt(n.Add(1), 10)
					d := &delivery{ticket: lim.NewTicket(), queue: "default", taskID: id, dedupKey: deliveredKey(id),
						result: []byte(`{"outcome":"delivered","http_status":204}`)}
					cmd := append(v.before.command(7), d.dedupKey, gate.boxed[0], gate.boxed[1], gate.boxed[2])
					verdict, _, err := gate.run(ctx, v.before, cmd, d.ticket, "1", randomToken(), gate.boxed[3])
					if err != nil || verdict != gateGo {
						b.Errorf("before: verdict %d, %v", verdict, err)
						return
					}
					cmd = p.afterCommand(v.after, d, []any{queues.AsynqTaskKey(d.queue, d.taskID), d.dedupKey},
						d.result, time.Now().UTC().Format(time.RFC3339), p.retention.Milliseconds())
					if err := v.after.run(ctx, rdb, cmd).Err(); err != nil {
						b.Errorf("after: %v", err)
						return
					}
				}
			})
			b.ReportMetric(float64(redisCPU(b, rdb)-cpu0)/float64(b.N), "redis-cpu-ns/op")
		})
	}
}

// redisCPU is the CPU time the Redis server has used (INFO cpu), in ns.
func redisCPU(b *testing.B, rdb *redis.Client) time.Duration {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, line := range strings.Split(info, "\r\n") {
		name, v, _ := strings.Cut(line, ":")
		if name != "used_cpu_sys" && name != "used_cpu_user" {
			continue
		}
		s, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("redis INFO cpu: %q", line)
		}
		total += time.Duration(s * float64(time.Second))
	}
	return total
}
