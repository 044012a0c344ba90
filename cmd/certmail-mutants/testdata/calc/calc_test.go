package calc

import (
	"slices"
	"testing"
)

func TestSign(t *testing.T) {
	for n, want := range map[int]int{-3: -1, 0: 0, 4: 1} {
		if got := Sign(n); got != want {
			t.Errorf("Sign(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestConstants(t *testing.T) {
	if Scale != 10 || Greeting != "hello, world" {
		t.Errorf("Scale %d, Greeting %q", Scale, Greeting)
	}
}

func TestEvens(t *testing.T) {
	if got := Evens(3); !slices.Equal(got, []int{0, 2, 4}) {
		t.Errorf("Evens(3) = %v", got)
	}
}

func TestSum(t *testing.T) {
	if got := Sum(4); got != 6 {
		t.Errorf("Sum(4) = %d, want 6", got)
	}
}
