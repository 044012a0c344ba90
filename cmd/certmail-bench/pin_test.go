package main

import "testing"

func TestParseCPUSplit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		list        string
		allowed     []int
		redis, rest string
	}{
		{"1", []int{0, 1}, "1", "0"},
		{"0", []int{0, 1, 2, 3}, "0", "1,2,3"},
		{"2-3", []int{0, 1, 2, 3}, "2,3", "0,1"},
		{"0, 3", []int{0, 1, 2, 3}, "0,3", "1,2"},
		{"5", []int{4, 5}, "5", "4"}, // a container on CPUs 4 and 5
	} {
		s, err := parseCPUSplit(tt.list, tt.allowed)
		if err != nil || s.redis != tt.redis || s.rest != tt.rest {
			t.Errorf("parseCPUSplit(%q, %v) = %+v, %v; want redis %s, rest %s", tt.list, tt.allowed, s, err, tt.redis, tt.rest)
		}
	}
	for _, bad := range []string{"", "2", "0-1", "1-0", "x", "-1", "0,", "0-99999999"} {
		if s, err := parseCPUSplit(bad, []int{0, 1}); err == nil {
			t.Errorf("parseCPUSplit(%q, [0 1]) = %+v, want an error", bad, s)
		}
	}
}
