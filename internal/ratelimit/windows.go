// Package ratelimit keeps all certmail workers together under DigiCert's
// per-key request limits: rolling windows such as 100 requests per 5 seconds
// and 1000 per 3 minutes, counted in Redis so that every process shares them.
// Each process also records the windows it enforces, so that processes of
// one account with other windows, which count apart, are seen (settings.go).
package ratelimit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultWindows is DigiCert's documented limit per API key.
const DefaultWindows = "100/5s,1000/3m"

// The bounds of a window ParseWindows reads. A window's log holds up to its
// limit of members for its period: DigiCert's own are 100 per 5 s and 1000
// per 3 min, and a longer period or a larger limit is a typo ("1/100000h"
// stops every call for years). The limiter's log counts time in
// milliseconds, the least period it tells apart.
const (
	MaxLimit  = 1_000_000
	MinPeriod = time.Millisecond
	MaxPeriod = 24 * time.Hour
)

// Window allows at most Limit requests in any period of length Period.
type Window struct {
	Limit  int
	Period time.Duration
}

// String formats w the way ParseWindows reads it ("100/5s").
func (w Window) String() string {
	return strconv.Itoa(w.Limit) + "/" + shortDuration(w.Period)
}

// shortDuration drops the zero tails time.Duration.String adds: 3m0s → 3m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// ParseWindows reads a comma-separated list of LIMIT/PERIOD pairs such as
// "100/5s,1000/3m" (PERIOD is a Go duration). An empty or blank s is an
// error, not "no limit": a setting left empty by mistake must not turn the
// limiter off. A caller that gives empty a meaning checks for it first.
func ParseWindows(s string) ([]Window, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("no windows given: want LIMIT/PERIOD pairs such as %s", DefaultWindows)
	}
	var ws []Window
	for _, part := range strings.Split(s, ",") {
		limit, period, ok := strings.Cut(strings.TrimSpace(part), "/")
		if !ok {
			return nil, fmt.Errorf("rate limit %.40q: want LIMIT/PERIOD, e.g. 100/5s", part)
		}
		n, err := strconv.Atoi(strings.TrimSpace(limit))
		if err != nil || n <= 0 || n > MaxLimit {
			return nil, fmt.Errorf("rate limit %.40q: limit must be a whole number from 1 to %d", part, MaxLimit)
		}
		d, err := time.ParseDuration(strings.TrimSpace(period))
		if err != nil || d < MinPeriod || d > MaxPeriod {
			return nil, fmt.Errorf("rate limit %.40q: period must be a duration from %s to %s, e.g. 5s or 3m", part, shortDuration(MinPeriod), shortDuration(MaxPeriod))
		}
		ws = append(ws, Window{Limit: n, Period: d})
	}
	return ws, nil
}
