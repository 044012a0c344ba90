package digicerttest

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// Request is one request the Server received. Header holds every header as
// sent, X-DC-DEVKEY included, for tests to check; String and Format never
// print it. Status is the status answered, 0 while unanswered or when the
// connection was reset or the client gave up.
type Request struct {
	Method   string
	Path     string
	Header   http.Header
	Body     []byte // the first MaxRecordedBody bytes of the body
	BodySize int    // the size of the body received
	Status   int
	At       time.Time
	KeyValid bool // whether X-DC-DEVKEY held a valid key when the request arrived, View Only or not
	ViewOnly bool // whether that valid key was View Only (Config.ViewOnlyKeys)
}

// String reads like "PUT /services/v2/certificate/1/sendemail: 204 (key valid, 87-byte body)",
// "key valid, view only" for a View Only key.
func (r Request) String() string {
	key := "key invalid"
	switch {
	case r.ViewOnly:
		key = "key valid, view only"
	case r.KeyValid:
		key = "key valid"
	}
	return fmt.Sprintf("%s %s: %d (%s, %d-byte body)", r.Method, r.Path, r.Status, key, r.BodySize)
}

// Format prints String for every verb, so that no verb prints the key header.
func (r Request) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, r.String())
}

// record is a Request as the Server keeps it.
type record struct {
	Request
	gen uint64 // the Reset generation it was received in
}

// clone returns a deep copy of r.
func (r *Request) clone() Request {
	c := *r
	c.Header = r.Header.Clone()
	c.Body = append([]byte(nil), r.Body...)
	return c
}
