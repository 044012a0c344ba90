package logging

import (
	"strings"

	"go.uber.org/zap/zapcore"
)

// panicPrefixes start the line net/http writes for a handler's panic:
// "http: panic serving ADDR: VALUE\ngoroutine N [running]:\n" and the
// stack (http2: for a request over HTTP/2).
var panicPrefixes = []string{"http: panic serving ", "http2: panic serving "}

// maxSite bounds the site of a panic in its key: its end (the file's name
// and line) is kept, leaving the rest of Key's 200 bytes to the value.
const maxSite = 100

// isPanic reports whether msg is net/http's line for a handler's panic.
func isPanic(msg string) bool {
	for _, p := range panicPrefixes {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// panicKey is the throttle key of net/http's line for a handler's panic:
// its site (panicSite) and its value, without the client's address, as Key
// makes it (so at most 200 bytes). Two bugs are two keys even when their
// values read alike (two runtime errors), and the same bug hit by any
// client is one.
func panicKey(msg string) string {
	rest := msg
	for _, p := range panicPrefixes {
		rest = strings.TrimPrefix(rest, p)
	}
	value, stack, found := strings.Cut(rest, "\ngoroutine ")
	if !found {
		value, _, _ = strings.Cut(rest, "\n")
	}
	if _, v, ok := strings.Cut(value, ": "); ok { // "ADDR: VALUE"; an address has no ": "
		value = v
	}
	site := panicSite(stack)
	site = site[max(0, len(site)-maxSite):]
	return Key(zapcore.ErrorLevel, "http: panic at "+site+": "+value)
}

// panicSite is the file and line of the first frame of a panic's stack
// (the text after "goroutine ") outside net/http and the runtime: where
// the bug is. It is "unknown" when there is none (a stack cut short).
func panicSite(stack string) string {
	lines := strings.Split(stack, "\n")
	for i := 1; i+1 < len(lines); i++ {
		fn, at := lines[i], lines[i+1]
		if !strings.HasPrefix(at, "\t") || strings.HasPrefix(fn, "\t") {
			continue
		}
		if isLibraryFrame(fn) {
			i++
			continue
		}
		at = strings.TrimPrefix(at, "\t")
		at, _, _ = strings.Cut(at, " +0x") // the offset in the function's code
		return at
	}
	return "unknown"
}

// isLibraryFrame reports whether fn, a function line of a stack, is in
// net/http or in the runtime: not where a handler's bug is.
func isLibraryFrame(fn string) bool {
	for _, p := range []string{"net/http.", "runtime.", "internal/runtime/", "panic(", "created by "} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}
