package schedule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"

	"github.com/certmail/certmail/tasks"
)

// plainName is a member name that is shown as it is in a problem.
var plainName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// scheduleMembers are the members of a schedule as JSON.
var scheduleMembers = []string{"id", "cron", "timezone", "type", "payload", "queue", "until", "max_runs", "until_validated"}

// DecodeJSON reads a schedule as the API receives it: exactly one JSON
// object whose members are those of Schedule, each at most once and of the
// right JSON type. Every problem is reported under the member's name in one
// bounded *tasks.ValidationError; the payload's own members are checked by
// Validate (through tasks.Parse, which refuses repeated members too).
func DecodeJSON(data []byte) (Schedule, error) {
	var s Schedule
	var errs []tasks.FieldError
	add := func(field, msg string) { errs = append(errs, tasks.FieldError{Field: field, Message: msg}) }
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return s, tasks.NewValidationError("", tasks.FieldError{Message: "must be one JSON schedule object"})
	}
	seen := map[string]bool{}
	var val json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return s, tasks.NewValidationError("", tasks.FieldError{Message: "malformed JSON: " + err.Error()})
		}
		key, _ := tok.(string)
		val = val[:0]
		if err := dec.Decode(&val); err != nil {
			return s, tasks.NewValidationError("", tasks.FieldError{Message: "malformed JSON: " + err.Error()})
		}
		field := key
		if !plainName.MatchString(key) {
			field = fmt.Sprintf("%.64q", key) // never echo much of the input
		}
		switch {
		case !slices.Contains(scheduleMembers, key):
			add(field, "unknown field")
		case seen[key]:
			add(field, "duplicate field")
		default:
			seen[key] = true
			if err := decodeMember(&s, key, val); err != nil {
				add(key, err.Error())
			}
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return s, tasks.NewValidationError("", tasks.FieldError{Message: "malformed JSON: " + err.Error()})
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		add("", "trailing data after the JSON object")
	}
	if len(errs) > 0 {
		return s, tasks.NewValidationError(s.Type, errs...)
	}
	return s, nil
}

// decodeMember decodes the member key of a schedule into s.
func decodeMember(s *Schedule, key string, v json.RawMessage) error {
	if key == "payload" {
		s.Payload = bytes.Clone(v)
		return nil
	}
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
	case "queue":
		target = &s.Queue
	case "until":
		target = &s.Until
	case "max_runs":
		target = &s.MaxRuns
	case "until_validated":
		target = &s.UntilValidated
	}
	if err := json.Unmarshal(v, target); err != nil {
		switch key {
		case "until":
			return errors.New("must be an RFC 3339 time")
		case "max_runs":
			return errors.New("must be an integer")
		case "until_validated":
			return errors.New("must be true or false")
		}
		return errors.New("must be a string")
	}
	return nil
}
