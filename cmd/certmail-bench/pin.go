package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuSplit is -redis-cpus: redis-server runs on redis, the driver and every
// process it starts (the programs measured, the fake CertCentral) on rest,
// so that the programs do not share cores with Redis, as in a deployment
// where Redis runs on a host of its own.
type cpuSplit struct {
	redis, rest string // taskset CPU lists
}

// parseCPUSplit reads a list of CPU numbers and ranges ("1", "2-3,6"), each
// one of allowed (the CPUs the driver may use); the rest must not be empty.
func parseCPUSplit(list string, allowed []int) (cpuSplit, error) {
	may := map[int]bool{}
	for _, c := range allowed {
		may[c] = true
	}
	taken := map[int]bool{}
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || b < a || b-a >= len(allowed) {
			return cpuSplit{}, fmt.Errorf("-redis-cpus %q: want CPU numbers or ranges such as 1 or 2-3", list)
		}
		for c := a; c <= b; c++ {
			if !may[c] {
				return cpuSplit{}, fmt.Errorf("-redis-cpus %q: CPU %d is not one this process may use (%s)", list, c, join(allowed))
			}
			taken[c] = true
		}
	}
	var redis, rest []int
	for _, c := range allowed {
		if taken[c] {
			redis = append(redis, c)
		} else {
			rest = append(rest, c)
		}
	}
	if len(rest) == 0 {
		return cpuSplit{}, fmt.Errorf("-redis-cpus %q leaves no CPU for the programs measured", list)
	}
	return cpuSplit{redis: join(redis), rest: join(rest)}, nil
}

// allowedCPUs are the CPUs the driver may run on (its affinity mask, which
// in a container need not start at 0).
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("read the CPU affinity: %w", err)
	}
	var cpus []int
	for c := range 1024 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

func join(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
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
