package main

import "testing"

func TestParseCPUSplit(t *testing.T) {
	for _, tt := range []struct {
		list        string
		n           int
		redis, rest string
	}{
		{"1", 2, "1", "0"},
		{"0", 4, "0", "1,2,3"},
		{"2-3", 4, "2,3", "0,1"},
		{"0, 3", 4, "0,3", "1,2"},
	} {
		s, err := parseCPUSplit(tt.list, tt.n)
		if err != nil || s.redis != tt.redis || s.rest != tt.rest {
			t.Errorf("parseCPUSplit(%q, %d) = %+v, %v; want redis %s, rest %s", tt.list, tt.n, s, err, tt.redis, tt.rest)
		}
	}
	for _, bad := range []string{"", "2", "0-1", "1-0", "x", "-1", "0,"} {
		if s, err := parseCPUSplit(bad, 2); err == nil {
			t.Errorf("parseCPUSplit(%q, 2) = %+v, want an error", bad, s)
		}
	}
}
