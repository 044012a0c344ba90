package tasks

import "encoding/json"

// The functions here walk JSON text that json.Valid has accepted (body
// checks the whole payload once), so that members and elements are found
// without a json.Decoder per object or array, which scans every value again
// and allocates for each. On text that is not valid JSON their results are
// meaningless.

// skipSpace returns the index of the first byte at or after i in v that is
// not JSON whitespace.
func skipSpace(v []byte, i int) int {
	for i < len(v) {
		switch v[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// valueEnd returns the index just past the JSON value that starts at v[i].
func valueEnd(v []byte, i int) int {
	switch v[i] {
	case '"':
		return stringEnd(v, i)
	case '{', '[':
		depth := 0
		for i < len(v) {
			switch v[i] {
			case '"':
				i = stringEnd(v, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(v) { // a number, true, false or null
		switch v[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string that starts at v[i].
func stringEnd(v []byte, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++ // the escaped byte; \uXXXX's hex digits are plain bytes
		case '"':
			return i + 1
		}
	}
	return i
}

// unquote decodes the JSON string s (quotes included). Without a backslash
// its bytes are the string's, as the input is valid UTF-8; with one,
// encoding/json decodes the escapes.
func unquote(s []byte) string {
	for _, c := range s {
		if c == '\\' {
			var out string
			_ = json.Unmarshal(s, &out) // valid JSON: cannot fail
			return out
		}
	}
	return string(s[1 : len(s)-1])
}

// eachMember calls fn with the name and the value of each member of the JSON
// object that starts at v[i], in order.
func eachMember(v []byte, i int, fn func(key string, val []byte)) {
	eachRawMember(v, i, func(key, val []byte) { fn(unquote(key), val) })
}

// eachRawMember is eachMember giving each name as the JSON string it is in
// v, quotes included, so that the caller decodes only the names it needs.
func eachRawMember(v []byte, i int, fn func(key, val []byte)) {
	i = skipSpace(v, i+1) // past '{'
	for i < len(v) && v[i] != '}' {
		end := stringEnd(v, i)
		key := v[i:end]
		i = skipSpace(v, skipSpace(v, end)+1) // past ':'
		end = valueEnd(v, i)
		fn(key, v[i:end])
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
}

// eachElement calls fn with the index and the value of each element of the
// JSON array that starts at v[i], in order, while fn returns true.
func eachElement(v []byte, i int, fn func(i int, e []byte) bool) {
	i = skipSpace(v, i+1) // past '['
	for n := 0; i < len(v) && v[i] != ']'; n++ {
		end := valueEnd(v, i)
		if !fn(n, v[i:end]) {
			return
		}
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
}
