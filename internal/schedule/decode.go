package schedule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/tasks"
)

// plainName is a member name that is shown as it is in a problem.
var plainName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// DecodeJSON reads a schedule as the API receives it: exactly one JSON
// object whose members are those of Schedule, each at most once and of the
// right JSON type. err is a *tasks.ValidationError when data is not one JSON
// object (malformed, starting with a byte order mark, another value,
// trailing data). Otherwise problems name,
// each under the member's name, the members that could not be read
// (unknown, repeated, of the wrong type), and s holds the others: Store.Add
// judges them with problems, so that every problem comes back at once. The
// payload's own members are checked there too (through tasks.Parse, which
// refuses repeated members as well).
func DecodeJSON(data []byte) (s Schedule, problems []tasks.FieldError, err error) {
	whole := func(msg string) (Schedule, []tasks.FieldError, error) {
		return Schedule{}, nil, tasks.NewValidationError("", tasks.FieldError{Message: msg})
	}
	if msg := enqueue.ByteOrderMark(data); msg != "" {
		return whole(msg)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return whole("must be one JSON schedule object")
	}
	seen := map[string]bool{}
	var val json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return whole("malformed JSON: " + err.Error())
		}
		key, _ := tok.(string)
		val = val[:0]
		if err := dec.Decode(&val); err != nil {
			return whole("malformed JSON: " + err.Error())
		}
		if msg := s.readMember(key, seen, func(target any) error {
			if key == "payload" {
				s.Payload = bytes.Clone(val)
				return nil
			}
			return json.Unmarshal(val, target)
		}); msg != "" {
			problems = append(problems, tasks.FieldError{Field: memberField(key), Message: msg})
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return whole("malformed JSON: " + err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return whole("trailing data after the JSON object")
	}
	return s, problems, nil
}

// errNotMapping is an entry of the schedules file that is not a mapping.
var errNotMapping = errors.New("must be a mapping of a schedule's fields")

// errMergeKey is an entry of the schedules file with a YAML merge key
// (<<: *base): the entry's own members are read one by one, so that each
// is judged (unknown, repeated), and merged ones would be neither.
var errMergeKey = errors.New("YAML merge keys (<<) are not supported: write each field of the entry")

// decodeYAML reads one entry of the schedules file as DecodeJSON reads the
// API's JSON: problems name the members that could not be read, s holds the
// others. The payload, any YAML mapping, is turned into JSON. err is
// errNotMapping when the entry is not a mapping, errMergeKey when it has a
// merge key.
func decodeYAML(node *yaml.Node) (s Schedule, problems []tasks.FieldError, err error) {
	node = resolve(node)
	if node.Kind != yaml.MappingNode {
		return s, nil, errNotMapping
	}
	for i := 0; i < len(node.Content); i += 2 {
		if node.Content[i].ShortTag() == "!!merge" {
			return s, nil, errMergeKey
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i].Value, node.Content[i+1]
		if msg := s.readMember(key, seen, func(target any) error {
			if key != "payload" {
				return val.Decode(target)
			}
			var m map[string]any
			err := val.Decode(&m)
			if _, isType := errors.AsType[*yaml.TypeError](err); isType || err == nil && m == nil {
				return problem("must be a mapping")
			}
			if err != nil { // the decoder's own refusal, such as excessive aliasing
				return problem(strings.TrimPrefix(err.Error(), "yaml: "))
			}
			b, err := json.Marshal(m)
			if err != nil {
				return problem("must be a mapping whose keys are all strings")
			}
			s.Payload = b
			return nil
		}); msg != "" {
			problems = append(problems, tasks.FieldError{Field: memberField(key), Message: msg})
		}
	}
	return s, problems, nil
}

// problem is what is wrong with a member, as its decode says it.
type problem string

func (p problem) Error() string { return string(p) }

// memberField is how a problem names member key: as it is when it is plain,
// quoted and cut short otherwise (never echo much of the input).
func memberField(key string) string {
	if plainName.MatchString(key) {
		return key
	}
	return fmt.Sprintf("%.64q", key)
}

// readMember reads member key of a schedule into s with decode, which
// decodes the member's value into the target it is given (the payload
// decode stores itself). It returns the problem with the member: unknown,
// repeated (recorded in seen) or of the wrong type (the problem decode
// gives, or one for the member); "" when it was read.
func (s *Schedule) readMember(key string, seen map[string]bool, decode func(target any) error) string {
	var target any
	switch key {
	case "id":
		target = &s.ID
	case "cron":
		target = &s.Cron
	case "timezone":
		target = &s.Timezone
	case "type":
		target = &s.Type
	case "payload":
		target = &s.Payload
	case "queue":
		target = &s.Queue
	case "until":
		target = &s.Until
	case "max_runs":
		target = &s.MaxRuns
	case "until_validated":
		target = &s.UntilValidated
	default:
		return "unknown field"
	}
	if seen[key] {
		return "duplicate field"
	}
	seen[key] = true
	err := decode(target)
	if err == nil {
		return ""
	}
	reflect.ValueOf(target).Elem().SetZero() // a failed decode may leave a part of the value behind
	if p, ok := errors.AsType[problem](err); ok {
		return string(p)
	}
	switch key {
	case "until":
		return "must be an RFC 3339 time"
	case "max_runs":
		return "must be an integer"
	case "until_validated":
		return "must be true or false"
	}
	return "must be a string"
}
