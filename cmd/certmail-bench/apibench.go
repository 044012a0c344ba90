package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const benchToken = "bench-token-7d2f91c4"

// apiEnqueue compares `certmail api` with the minimal bridge: set-emails
// enqueues by o.clients concurrent HTTP clients, alternating rounds.
func apiEnqueue(ctx context.Context, r *redisServer, o options) (figures []figure, err error) {
	rc := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rc.Close()
	apiAddr, err1 := freeAddr()
	bridgeAddr, err2 := freeAddr()
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	api, err := startCertmail(ctx, o.binary, []string{"REDIS_URL=" + r.url(), "CERTMAIL_HTTP_ADDR=" + apiAddr,
		"CERTMAIL_API_TOKENS=" + benchToken}, "api")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, api.stop()) }()
	bridge, err := startChild(ctx, childOptions{mode: "bridge", redisAddr: r.addr, listen: bridgeAddr})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, bridge.stop()) }()
	if err := errors.Join(waitHTTP(ctx, api, "http://"+apiAddr+"/healthz"), waitHTTP(ctx, bridge, "http://"+bridgeAddr+"/healthz")); err != nil {
		return nil, err
	}

	servers := []struct {
		p    *process
		addr string
	}{{api, apiAddr}, {bridge, bridgeAddr}}
	var res [2][]enqueueRound
	var ratios []float64
	for i := range o.rounds {
		for k, s := range servers {
			if err := flush(ctx, rc); err != nil {
				return nil, err
			}
			e, err := enqueueRun(ctx, s.p, s.addr, o)
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", s.p.name, i+1, err)
			}
			fmt.Printf("  round %d %-14s %8.0f enqueues/s, p99 %v, %5.1f µs CPU/request\n", i+1, s.p.name, e.tps,
				e.p99.Round(10*time.Microsecond), e.cpuUS)
			res[k] = append(res[k], e)
		}
		ratios = append(ratios, res[0][i].tps/res[1][i].tps)
	}
	med := func(k int, f func(enqueueRound) float64) float64 {
		var v []float64
		for _, e := range res[k] {
			v = append(v, f(e))
		}
		return median(v)
	}
	tps := func(e enqueueRound) float64 { return e.tps }
	p99 := func(e enqueueRound) float64 { return ms(e.p99) }
	cpu := func(e enqueueRound) float64 { return e.cpuUS }
	return []figure{
		{name: "api_tps", value: round(med(0, tps), 0)},
		{name: "bridge_tps", value: round(med(1, tps), 0)},
		target("api_vs_bridge_ratio", round(median(ratios), 3), atLeast, 0.85),
		{name: "api_enqueue_p99_ms", value: med(0, p99)},
		{name: "bridge_enqueue_p99_ms", value: med(1, p99)},
		{name: "api_cpu_us_per_request", value: round(med(0, cpu), 1)},
		{name: "bridge_cpu_us_per_request", value: round(med(1, cpu), 1)},
	}, nil
}

// enqueueRound is one server's round.
type enqueueRound struct {
	tps   float64
	p99   time.Duration
	cpuUS float64 // the server process's CPU per request, µs
}

// enqueueRun sends o.apiRequests set-emails enqueues to the server at addr.
func enqueueRun(ctx context.Context, p *process, addr string, o options) (enqueueRound, error) {
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.clients,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}, Timeout: 10 * time.Second}
	defer httpClient.CloseIdleConnections()
	body := []byte(`{"order_id": 4242, "additional_emails": ["bench@example.com"]}`)
	url := "http://" + addr + "/v1/tasks/set-emails"
	var mu sync.Mutex
	latencies := make([]time.Duration, 0, o.apiRequests)
	cpu0, err := cpuTime(p.pid())
	if err != nil {
		return enqueueRound{}, err
	}
	took, err := concurrently(o.clients, o.apiRequests, func(int64) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+benchToken)
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("answered %d", resp.StatusCode)
		}
		mu.Lock()
		latencies = append(latencies, d)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return enqueueRound{}, err
	}
	cpu1, err := cpuTime(p.pid())
	if err != nil {
		return enqueueRound{}, err
	}
	slices.Sort(latencies)
	return enqueueRound{
		tps:   float64(o.apiRequests) / took.Seconds(),
		p99:   percentile(latencies, 99),
		cpuUS: float64((cpu1 - cpu0).Microseconds()) / float64(o.apiRequests),
	}, nil
}
