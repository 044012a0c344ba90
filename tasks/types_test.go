package tasks_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/certmail/certmail/tasks"
)

// minimal is a smallest valid payload of each task type, as a producer
// sends it. A type added to tasks.Types() needs one here.
var minimal = map[string]string{
	tasks.TypeSetEmails:       `{"order_id": 1, "additional_emails": []}`,
	tasks.TypeResendDCV:       `{"order_id": 1}`,
	tasks.TypeSendCert:        `{"certificate_id": 1, "emails": ["a@example.com"], "certificate_collect_format": "attachment"}`,
	tasks.TypeResendDomainDCV: `{"domain_id": 1}`,
}

// TestEveryType ties each switch on the task types to Types(): for every
// type, Parse reads its minimal payload into a value of that type, NewTask
// builds a task of the type from the value and from a pointer to it (the
// pointer goes through concrete), and Parse reads the task's payload back
// into the same Go type.
func TestEveryType(t *testing.T) {
	t.Parallel()
	for _, typ := range tasks.Types() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			body, ok := minimal[typ]
			if !ok {
				t.Fatalf("no minimal payload of %s: add one to minimal", typ)
			}
			p, err := tasks.Parse(typ, []byte(body))
			if err != nil {
				t.Fatalf("Parse(%q, %s): %v; is the type in Parse's switch?", typ, body, err)
			}
			if p.TaskType() != typ {
				t.Fatalf("Parse(%q) gave a %T whose TaskType() is %q", typ, p, p.TaskType())
			}
			ptr := reflect.New(reflect.TypeOf(p))
			ptr.Elem().Set(reflect.ValueOf(p))
			for _, q := range []tasks.Payload{p, ptr.Interface().(tasks.Payload)} {
				task, err := tasks.NewTask(q)
				if err != nil {
					t.Fatalf("NewTask(%T): %v; is the type in the switches of NewTask and concrete?", q, err)
				}
				if task.Type() != typ {
					t.Errorf("NewTask(%T) built a task of type %q", q, task.Type())
				}
				back, err := tasks.Parse(task.Type(), task.Payload())
				if err != nil {
					t.Fatalf("Parse of NewTask(%T)'s payload %s: %v", q, task.Payload(), err)
				}
				if reflect.TypeOf(back) != reflect.TypeOf(p) {
					t.Errorf("NewTask(%T)'s payload parses back as a %T", q, back)
				}
			}
		})
	}
	for typ := range minimal {
		if !slices.Contains(tasks.Types(), typ) {
			t.Errorf("minimal has a payload of %s, which is not in Types()", typ)
		}
	}
}
