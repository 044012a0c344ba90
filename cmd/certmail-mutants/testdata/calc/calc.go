// Package calc is a module for testing certmail-mutants: gremlins reports
// the conditions of Sign's cases and the constants as not covered.
package calc

// Sign returns -1, 0 or 1.
func Sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// Greeting's + has no mutant that compiles.
const Greeting = "hello, " + "world"

// Scale is pinned by the tests.
const Scale = 2 * 5

// Evens returns the first n even numbers.
func Evens(n int) []int {
	out := make([]int, 0, n*2) // a capacity only: its mutant lives
	for i := range n {
		out = append(out, 2*i)
	}
	return out
}

// Sum returns 0 + 1 + ... + n-1. Its i-- mutant never ends; the loop
// allocates nothing, so that mutant only spins until its deadline.
func Sum(n int) (s int) {
	for i := 0; i < n; i++ {
		s += i
	}
	return s
}
