package redisconn_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/redisconn"
)

// The shapes of REDIS_URL a password is written into: %s is the user and
// password, "user:password" or ":password"; sentinel_password repeats the
// password in the query where the shape has %[2]s.
var secretShapes = []string{
	"redis://%s@redis.internal:6379/3",
	"redis://%s@redis.internal:6379",
	"rediss://%s@redis.internal:6380/0",
	"redis://%s@10.0.0.1:6379/3?x=1",
	"redis-sentinel://%s@s1:26379,s2:26379/0?master=m",
	"redis-sentinel://%s@s1:26379/5?master=m&sentinel_password=%[2]s",
	"redis-sentinel://s1:26379/5?master=m&sentinel_password=%[2]s",
	"redis://%s@127.0.0.1:6379/0",
	"rediss://%s@127.0.0.1:6380",
	"redis-sentinel://%s@127.0.0.1:26379?master=mymaster",
	"redis-sentinel://%s@s1:26379,s2:26379?master=m&sentinel_username=ops@corp",
}

// The users a password follows.
var secretUsers = []string{"", "certmail", "4821"}

// TestErrorsNeverShowThePassword: whatever a password holds, escaped or
// not (an unescaped /, ?, # or @ cuts it short, and a URL parser takes
// its parts for the address, the database or the query), no error of Open
// shows it or a piece of it of 4 characters or more, nor does the target
// of a URL it accepts.
func TestErrorsNeverShowThePassword(t *testing.T) {
	t.Parallel()
	for _, pw := range []string{
		"/kQz9xLeak+Ab",                    // the reviewed leak: an empty part before the /
		"4821/kQz9xLeak",                   // all digits before the /
		"/kQz9xLeak@redis.internal:6379/3", // a password that looks like an address
		"Secr3t/Pw9",
		"4821?kQz9xLeak",
		"4821?kQz9x=Leak",
		"4821?kQz9x&Leak=1",
		"4821#kQz9xLeak",
		"#kQz9xLeak",
		"?kQz9xLeak",
		"4821/5?kQz9xLeak",
		"kQz9@xLeak/77",
		"kQz9x%zzLeak",
		"kQz9x%41Leak",
		"kQz9xLe@k",
		"kQz9xLeak",
		// A password cut at its ? whose end reads as one of certmail's
		// query parameters, its value running on to the URL's @.
		"12345?master=sec",
		"4821?master=kQz9xLeak",
		"4821?sentinel_username=kQz9xLeak",
		"4821?sentinel_password=kQz9xLeak",
		"4821?master=m&sentinel_password=kQz9xLeak",
		"4821/0?master=m&sentinel_password=kQz9xLeak",
		"?master=kQz9xLeak",
		"kQz9?sentinel_username=xLeak",
		"kQz9@x:6379?master=Leak",
	} {
		for _, user := range secretUsers {
			for _, shape := range secretShapes {
				checkNoPassword(t, shape, user, pw, notInCuts)
			}
		}
	}
}

// FuzzErrorsNeverShowThePassword is TestErrorsNeverShowThePassword over
// any password: digits (none when digits is 0), then the characters of s,
// each followed by one of QJXZ, which nothing else in the URLs or in
// Open's errors holds, so that a piece of 4 with one of them found in an
// error came from the password. The digits let a / in s end an address
// with a valid port, as in the reviewed leak; one of cuts, unmarked, may
// follow them, so that the password's end reads as a query parameter
// certmail takes.
func FuzzErrorsNeverShowThePassword(f *testing.F) {
	for _, s := range []string{"/kQz9xLeak+Ab", "/kQz9", "?a=b&c", "#x@y", "%2F/%", "::@@//", "sec", "a@s1:1/0?", ""} {
		f.Add(uint8(0), uint8(0), uint16(0), uint8(0), s)
		f.Add(uint8(3), uint8(2), uint16(4821), uint8(0), s)
		f.Add(uint8(5), uint8(1), uint16(7), uint8(0), s)
		for cut := range len(cuts) {
			f.Add(uint8(cut), uint8(1), uint16(4821), uint8(cut), s)
			f.Add(uint8(cut+4), uint8(0), uint16(12345), uint8(cut), s)
		}
	}
	f.Fuzz(func(t *testing.T, shape, user uint8, digits uint16, cut uint8, s string) {
		const markers = "QJXZ"
		var pw strings.Builder
		if digits > 0 {
			pw.WriteString(strconv.Itoa(int(digits)))
		}
		pw.WriteString(cuts[int(cut)%len(cuts)])
		for i, r := range []rune(s) {
			if i == 32 {
				break
			}
			pw.WriteRune(r)
			pw.WriteByte(markers[i%len(markers)])
		}
		marked := func(piece string) bool { return strings.ContainsAny(piece, markers) }
		checkNoPassword(t, secretShapes[int(shape)%len(secretShapes)], secretUsers[int(user)%len(secretUsers)], pw.String(), marked)
	})
}

// cuts are what may follow a password's digits in the fuzz target: nothing,
// or a ? (an & after one) that ends the address and starts one of
// certmail's query parameters.
var cuts = []string{"", "?master=", "?sentinel_username=", "?sentinel_password=", "?master=m&sentinel_password=", "/0?master=m&sentinel_username="}

// notInCuts reports whether piece is found in none of cuts: a piece of a
// parameter's name, which Open's errors name, is not the password's.
func notInCuts(piece string) bool {
	return !slices.ContainsFunc(cuts, func(c string) bool { return strings.Contains(c, piece) })
}

// checkNoPassword fails t when Open's error for the URL of shape, user
// and pw, or the target of the URL it accepts, holds pw or a piece of it
// of 4 characters or more (one that the rest of the URL does not hold too,
// and that counts says counts, when it is not nil).
func checkNoPassword(t *testing.T, shape, user, pw string, counts func(piece string) bool) {
	t.Helper()
	rawURL := strings.ReplaceAll(strings.ReplaceAll(shape, "%[2]s", pw), "%s", user+":"+pw)
	var text string
	c, err := redisconn.Open(rawURL)
	if err != nil {
		text = err.Error()
	} else {
		text = c.Target
		c.Client.Close()
	}
	rest := strings.ReplaceAll(strings.ReplaceAll(shape, "%[2]s", ""), "%s", user+":") // the URL but the password
	const piece = 4
	for i := 0; i+piece <= len(pw); i++ {
		if p := pw[i : i+piece]; strings.Contains(text, p) && !strings.Contains(rest, p) && (counts == nil || counts(p)) {
			t.Errorf("REDIS_URL %q: %q shows %q of the password", rawURL, text, pw[i:i+piece])
			return
		}
	}
}
