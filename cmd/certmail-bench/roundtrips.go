package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// roundTrips counts, from Redis, what each delivered task costs in round
// trips and commands: certmail on one queue, the plain and guarded
// handlers on one queue, and certmail on the default three queues (tasks in
// "default").
func roundTrips(ctx context.Context, r *redisServer, o options) ([]figure, error) {
	rc := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rc.Close()
	fake, err := startFake(digicerttest.Config{}, nil)
	if err != nil {
		return nil, err
	}
	defer fake.stop()
	runs := []struct {
		name string
		prog program
	}{
		{"", program{kind: "worker", queues: oneQueue}},
		{"_plain", program{kind: "plain", queues: oneQueue}},
		{"_guarded", program{kind: "guarded", queues: oneQueue}},
		{"_3_queues", program{kind: "worker", queues: defaultQueues}},
	}
	var figures []figure
	for _, run := range runs {
		c, err := countRound(ctx, o, r, rc, fake, run.prog, o.countTasks)
		if err != nil {
			return nil, fmt.Errorf("%s on %s: %w", run.prog, run.prog.queues, err)
		}
		fmt.Printf("  %s on %s: %.3f round trips, %.3f commands per delivered task (%d tasks counted)\n",
			run.prog, run.prog.queues, c.roundTrips, c.commands, c.tasks)
		for _, l := range breakdown(c.labels, c.tasks) {
			fmt.Printf("      %6.2f  %s\n", l.perTask, l.label)
		}
		fmt.Printf("    and %.2f commands per task run by those scripts:", c.scriptCommands)
		for _, l := range breakdown(c.scriptLabels, c.tasks) {
			fmt.Printf(" %s %.2f,", l.label, l.perTask)
		}
		fmt.Println()
		rt := figure{name: "redis_round_trips_per_task" + run.name, value: round(c.roundTrips, 2)}
		if run.name == "" {
			// Judged at one decimal: periodic work in the span (asynq's
			// heartbeats and forwarders, the parked set) and new pooled
			// connections' HELLO add a few hundredths no task makes.
			rt = target(rt.name, rt.value, func(bound float64) (func(float64) bool, string) {
				return func(v float64) bool { return round(v, 1) <= bound }, "<= 4 (at one decimal)"
			}, 4)
		}
		figures = append(figures, rt, figure{name: "redis_commands_per_task" + run.name, value: round(c.commands, 2)},
			figure{name: "redis_script_commands_per_task" + run.name, value: round(c.scriptCommands, 2)})
	}
	return figures, nil
}

// count is what Redis did for the tasks delivered in the counted span.
type count struct {
	tasks          int
	roundTrips     float64 // read events Redis processed, per task
	commands       float64 // commands clients sent, per task
	labels         map[string]int
	scriptCommands float64 // commands Lua scripts ran, per task
	scriptLabels   map[string]int
}

type labelled struct {
	label   string
	perTask float64
}

// breakdown is the commands per task by label, most first, those under
// 0.01 per task summed last as "others".
func breakdown(labels map[string]int, tasks int) []labelled {
	var l []labelled
	others := 0.0
	for k, v := range labels {
		if pt := float64(v) / float64(tasks); pt >= 0.01 {
			l = append(l, labelled{k, pt})
		} else {
			others += pt
		}
	}
	sort.Slice(l, func(i, j int) bool {
		return l[i].perTask > l[j].perTask || l[i].perTask == l[j].perTask && l[i].label < l[j].label
	})
	if others > 0 {
		l = append(l, labelled{"others (each under 0.01)", others})
	}
	return l
}

// countRound drains n queued tasks with prog and counts, between 10 % and
// 90 % of the DigiCert calls, Redis's read events (INFO stats
// total_reads_processed: one per round trip, a pipeline arrives in one) and
// the commands MONITOR shows from clients, and apart those Lua scripts run.
// Nothing else talks to Redis in that span but asynq's periodic work.
func countRound(ctx context.Context, o options, r *redisServer, rc *redis.Client, fake *fakeCertCentral, prog program, n int) (c count, err error) {
	if err := flush(ctx, rc); err != nil {
		return c, err
	}
	if err := enqueueResends(ctx, r, n, 100000, "default"); err != nil {
		return c, err
	}
	info, err := net.Dial("tcp", r.addr)
	if err != nil {
		return c, err
	}
	defer info.Close()
	mon, err := startMonitor(r.addr, info.LocalAddr().String())
	if err != nil {
		return c, err
	}
	defer mon.close()
	p, err := prog.start(ctx, o, r, fake.baseURL)
	if err != nil {
		return c, err
	}
	defer func() { err = errors.Join(err, p.stop()) }()

	base := fake.RequestCount()
	calls := func(k int) func() (bool, error) {
		return func() (bool, error) { return fake.RequestCount()-base >= k, nil }
	}
	if err := waitFor(ctx, p, 5*time.Minute, "10 % of the calls", calls(n/10)); err != nil {
		return c, err
	}
	reads0, err := totalReads(info)
	if err != nil {
		return c, err
	}
	calls0 := fake.RequestCount()
	mon.counting.Store(true)
	if err := waitFor(ctx, p, 5*time.Minute, "90 % of the calls", calls(n*9/10)); err != nil {
		return c, err
	}
	mon.counting.Store(false)
	calls1 := fake.RequestCount()
	reads1, err := totalReads(info)
	if err != nil {
		return c, err
	}
	if err := waitUnfinished(ctx, rc, p, "default", 0); err != nil {
		return c, err
	}
	if err := checkCompleted(ctx, rc, "default", n); err != nil {
		return c, err
	}
	c.tasks = calls1 - calls0
	c.roundTrips = float64(reads1-reads0-1) / float64(c.tasks) // less the second INFO's own read
	c.labels, c.commands, c.scriptLabels, c.scriptCommands = mon.counts()
	c.commands /= float64(c.tasks)
	c.scriptCommands /= float64(c.tasks)
	return c, nil
}

// totalReads asks Redis on conn for INFO stats' total_reads_processed.
func totalReads(conn net.Conn) (int64, error) {
	if _, err := conn.Write([]byte("INFO stats\r\n")); err != nil {
		return 0, err
	}
	br := bufio.NewReader(conn)
	head, err := br.ReadString('\n')
	if err != nil {
		return 0, err
	}
	size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil {
		return 0, fmt.Errorf("INFO answered %q", head)
	}
	body := make([]byte, size+2)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_reads_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no total_reads_processed in INFO stats (Redis 6 or later needed)")
}

// monitor tallies the commands clients send to Redis while counting is
// set, by MONITOR, leaving out those of the address ignore, and apart, by
// name, the commands Lua scripts run.
type monitor struct {
	conn         net.Conn
	ignore       string
	counting     atomic.Bool
	mu           sync.Mutex
	labels       map[string]int
	total        int
	scriptLabels map[string]int
	scriptTotal  int
	done         chan struct{}
}

func startMonitor(addr, ignore string) (*monitor, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := &monitor{conn: conn, ignore: ignore, labels: map[string]int{}, scriptLabels: map[string]int{}, done: make(chan struct{})}
	br := bufio.NewReaderSize(conn, 1<<16)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		conn.Close()
		return nil, err
	}
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		conn.Close()
		return nil, fmt.Errorf("MONITOR answered %q: %v", line, err)
	}
	go func() {
		defer close(m.done)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if m.counting.Load() {
				m.add(line)
			}
		}
	}()
	return m, nil
}

// add tallies one MONITOR line: +<time> [<db> <client>] "cmd" "arg" ...
func (m *monitor) add(line string) {
	open, end := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
	if open < 0 || end < open {
		return
	}
	client := line[open+1 : end]
	if i := strings.IndexByte(client, ' '); i >= 0 {
		client = client[i+1:]
	}
	if client == m.ignore {
		return
	}
	if client == "lua" {
		name := "?"
		if args := quoted(line[end+1:], 1); len(args) == 1 {
			name = strings.ToLower(args[0])
		}
		m.mu.Lock()
		m.scriptLabels[name]++
		m.scriptTotal++
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	m.labels[commandLabel(quoted(line[end+1:], 4))]++
	m.total++
	m.mu.Unlock()
}

// counts returns the clients' commands by label and in all, then the
// scripts' by name and in all.
func (m *monitor) counts() (map[string]int, float64, map[string]int, float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.labels, float64(m.total), m.scriptLabels, float64(m.scriptTotal)
}

func (m *monitor) close() {
	m.conn.Close()
	<-m.done
}

var (
	idPattern     = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	numberPattern = regexp.MustCompile(`[0-9]+`)
)

// commandLabel names a command by its name and its first key, ids and
// numbers left out: "evalsha asynq:{default}:pending", "hset certmail:…".
func commandLabel(args []string) string {
	if len(args) == 0 {
		return "?"
	}
	name := strings.ToLower(args[0])
	key := ""
	switch {
	case (name == "evalsha" || name == "eval") && len(args) >= 4:
		key = args[3]
	case name != "evalsha" && name != "eval" && len(args) >= 2:
		key = args[1]
	}
	key = numberPattern.ReplaceAllString(idPattern.ReplaceAllString(key, "<id>"), "N")
	return strings.TrimSpace(name + " " + key)
}

// quoted reads up to n double-quoted, backslash-escaped tokens from s.
func quoted(s string, n int) []string {
	var out []string
	for len(out) < n {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			break
		}
		s = s[i+1:]
		var b strings.Builder
		j := 0
		for ; j < len(s) && s[j] != '"'; j++ {
			if s[j] == '\\' && j+1 < len(s) {
				j++
			}
			b.WriteByte(s[j])
		}
		out = append(out, b.String())
		if j >= len(s) {
			break
		}
		s = s[j+1:]
	}
	return out
}
