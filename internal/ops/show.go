package ops

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/certmail/certmail/internal/deadletter"
)

// MaxShownBytes is the most bytes of a task's payload or result an answer
// shows (the same as a dead-letter entry keeps); beyond it the value is cut
// and marked truncated.
const MaxShownBytes = deadletter.PayloadMax

// Encodings of a shown payload or result.
const (
	// EncodingText: the value is a JSON string holding the bytes as text,
	// because they are not a JSON object or were cut.
	EncodingText = "text"
	// EncodingBase64: the value is a JSON string holding the bytes in
	// standard base64, because they are not valid UTF-8.
	EncodingBase64 = "base64"
)

// Shown is a stored payload or result as an answer shows it: the JSON
// itself when the bytes are a whole, valid UTF-8 JSON object of at most
// MaxShownBytes; otherwise a JSON string of the first MaxShownBytes as text
// or base64, with Encoding saying which. Other JSON (an array, a number,
// a string, null), which only a raw asynq producer can store, is text too,
// so that an answer's payload is always an object or a string, as the API's
// document says. An answer holding it is then always valid UTF-8 and
// bounded.
type Shown struct {
	Value     json.RawMessage
	Encoding  string // "" for the JSON itself, EncodingText or EncodingBase64
	Truncated bool   // Value holds only the first MaxShownBytes of Size
	Size      int    // bytes of the whole value
}

// Show returns b as an answer shows it; size is the length of the whole
// value, of which b may be only the beginning (a dead-letter entry keeps at
// most MaxShownBytes).
func Show(b []byte, size int) Shown {
	size = max(size, len(b))
	if size <= MaxShownBytes && isObject(b) && utf8.Valid(b) && json.Valid(b) {
		return Shown{Value: json.RawMessage(b), Size: size}
	}
	cut := b[:min(len(b), MaxShownBytes)]
	sh := Shown{Truncated: size > len(cut), Size: size, Encoding: EncodingText}
	text := cut
	if sh.Truncated { // a rune cut in two at the end is not a reason for base64
		for i := 0; i < utf8.UTFMax && len(text) > 0 && !utf8.Valid(text); i++ {
			text = text[:len(text)-1]
		}
	}
	var s string
	if utf8.Valid(text) {
		s = string(text)
	} else {
		s, sh.Encoding = base64.StdEncoding.EncodeToString(cut), EncodingBase64
	}
	sh.Value, _ = json.Marshal(s) // a valid UTF-8 string always encodes
	return sh
}

// isObject reports whether b, when it is JSON, is an object: whether its
// first byte other than JSON's white space is '{'.
func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// maxShownName is the longest task id, type or queue name ShowName shows
// whole, in bytes: the longest task id certmail's entry points take.
const maxShownName = deadletter.MaxID

// cutName is how many bytes of a longer name ShowName shows.
const cutName = 32

// ShowName returns a task id, task type or queue name as text output and
// messages show it. A name of 1 to 256 bytes of printable characters, no
// space among them, that does not begin with a double quote, is itself.
// Any other is quoted as Go quotes a string (strconv.Quote), every control
// character, invalid byte or space escaped or inside the quotes, so that a
// name chosen by a producer can neither drive the operator's terminal nor
// split a line or a column; one over 256 bytes is cut to its first 32,
// followed by "…" and its length, as in "aaaa"… (100000 bytes). JSON
// output has no need of it: encoding/json escapes what it must.
func ShowName(s string) string {
	if len(s) > maxShownName {
		cut := cutName
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
	}
	if plainName(s) {
		return s
	}
	return strconv.Quote(s)
}

// plainName reports whether ShowName shows s as it is.
func plainName(s string) bool {
	if s == "" || s[0] == '"' || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == ' ' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
