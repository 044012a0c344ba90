package ops

import (
	"encoding/base64"
	"encoding/json"
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
	// because they are not JSON or were cut.
	EncodingText = "text"
	// EncodingBase64: the value is a JSON string holding the bytes in
	// standard base64, because they are not valid UTF-8.
	EncodingBase64 = "base64"
)

// Shown is a stored payload or result as an answer shows it: the JSON
// itself when the bytes are whole, valid UTF-8 JSON of at most
// MaxShownBytes; otherwise a JSON string of the first MaxShownBytes as text
// or base64, with Encoding saying which. An answer holding it is then always
// valid UTF-8 and bounded.
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
	if size <= MaxShownBytes && len(b) > 0 && utf8.Valid(b) && json.Valid(b) {
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
