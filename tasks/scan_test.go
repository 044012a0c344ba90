package tasks

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// walked is what the walk of a JSON value found: for an object its members'
// names and values, for an array its elements, each value walked again.
type walked struct {
	Kind  byte
	Keys  []string
	Items []walked
	Text  string // a string's decoded text, or a literal's bytes
}

// walkScan walks valid JSON text v with eachMember and eachElement.
func walkScan(v []byte) walked {
	v = bytes.TrimSpace(v)
	w := walked{Kind: kind(v)}
	switch w.Kind {
	case '{':
		eachMember(v, 0, func(key string, val []byte) {
			w.Keys = append(w.Keys, key)
			w.Items = append(w.Items, walkScan(val))
		})
	case '[':
		eachElement(v, 0, func(_ int, e []byte) bool {
			w.Items = append(w.Items, walkScan(e))
			return true
		})
	case '"':
		w.Text, _ = stringValue(v)
	default:
		w.Text = string(v)
	}
	return w
}

// walkDecoder walks the same text with a json.Decoder, as Parse did before.
func walkDecoder(t *testing.T, v []byte) walked {
	v = bytes.TrimSpace(v)
	w := walked{Kind: kind(v)}
	dec := json.NewDecoder(bytes.NewReader(v))
	switch w.Kind {
	case '{', '[':
		if _, err := dec.Token(); err != nil {
			t.Fatal(err)
		}
		for dec.More() {
			if w.Kind == '{' {
				tok, err := dec.Token()
				if err != nil {
					t.Fatal(err)
				}
				w.Keys = append(w.Keys, tok.(string))
			}
			var val json.RawMessage
			if err := dec.Decode(&val); err != nil {
				t.Fatal(err)
			}
			w.Items = append(w.Items, walkDecoder(t, val))
		}
	case '"':
		if err := json.Unmarshal(v, &w.Text); err != nil {
			t.Fatal(err)
		}
	default:
		w.Text = string(v)
	}
	return w
}

// FuzzScan checks that the walk Parse uses finds in any valid JSON text the
// same members, elements and strings as encoding/json's Decoder, for the
// text Parse walks: valid JSON in valid UTF-8.
func FuzzScan(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, ` { "a" : 1 , "b" : [ 1 , 2.5e3 , -0 ] } `, `{"a":{"b":{"c":[{}]}},"d":null}`,
		`{"k\"ey":"v\\al\"ue","\u00e9":"\ud83d\ude00","x":"a]}{[,"}`, `["\"",",","}","]",true,false,null]`,
		`{"a":"\ud800"}`, `[[[],[{}]],{"":""}]`, "{\t\"a\"\n:\r1}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) || !utf8.Valid(data) { // what Parse walks
			return
		}
		if got, want := walkScan(data), walkDecoder(t, data); !reflect.DeepEqual(got, want) {
			t.Fatalf("walk of %q:\n got %+v\nwant %+v", data, got, want)
		}
	})
}
