package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// cpuSplit is -redis-cpus: redis-server runs on redis, the driver and every
// process it starts (the programs measured, the fake CertCentral) on rest,
// so that the programs do not share cores with Redis, as in a deployment
// where Redis runs on a host of its own.
type cpuSplit struct {
	redis, rest string // taskset CPU lists
}

// parseCPUSplit reads a list of CPU numbers and ranges ("1", "2-3,6") out
// of n CPUs; the rest must not be empty.
func parseCPUSplit(list string, n int) (cpuSplit, error) {
	taken := make([]bool, n)
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= n {
			return cpuSplit{}, fmt.Errorf("-redis-cpus %q: want CPU numbers or ranges below %d, such as 1 or 2-3", list, n)
		}
		for c := a; c <= b; c++ {
			taken[c] = true
		}
	}
	var redis, rest []string
	for c, t := range taken {
		if t {
			redis = append(redis, strconv.Itoa(c))
		} else {
			rest = append(rest, strconv.Itoa(c))
		}
	}
	if len(rest) == 0 {
		return cpuSplit{}, fmt.Errorf("-redis-cpus %q leaves no CPU for the programs measured", list)
	}
	return cpuSplit{redis: strings.Join(redis, ","), rest: strings.Join(rest, ",")}, nil
}

// pinSelf moves every thread of the driver to the rest; processes started
// afterwards inherit it.
func (s cpuSplit) pinSelf() error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", s.rest, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset (util-linux): %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// redisCommand is how redis-server is started: under taskset when pinned.
func (s cpuSplit) redisCommand(args ...string) (string, []string) {
	if s.redis == "" {
		return "redis-server", args
	}
	return "taskset", append([]string{"-c", s.redis, "redis-server"}, args...)
}
