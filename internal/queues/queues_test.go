package queues_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/queues"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in      string
		want    map[string]int
		wantErr string
	}{
		{in: queues.Default, want: map[string]int{"critical": 6, "default": 3, "bulk": 1}},
		{in: " a=1 , b_2=5", want: map[string]int{"a": 1, "b_2": 5}},
		{in: "a", wantErr: "want NAME=WEIGHT"},
		{in: "a=0", wantErr: "weight from 1 to 100"},
		{in: "a=x", wantErr: "want NAME=WEIGHT"},
		{in: "a=100,b=1", want: map[string]int{"a": 100, "b": 1}},
		{in: "critical=3000000,default=3,bulk=1", wantErr: "a weight is at most 100"},
		{in: "default=101", wantErr: "a weight is at most 100"},
		{in: "default=99999999999", wantErr: "a weight is at most 100"},
		{in: "default=99999999999999999999", wantErr: "want NAME=WEIGHT"}, // not an int
		{in: "=1", wantErr: "a name is"},
		{in: "Critical=1", wantErr: "a name is"},
		{in: strings.Repeat("q", 64) + "=1", wantErr: "a name is"},
		{in: "a=1,a=2", wantErr: "listed twice"},
		{in: "", wantErr: "want NAME=WEIGHT"},
		// The queue metrics' label of the unserved queues: a served queue
		// of that name would have their figures added to its own.
		{in: "default=3," + queues.Reserved + "=1", wantErr: `queue "other": the name is reserved for the metrics of the queues no process serves`},
	} {
		got, err := queues.Parse(tt.in)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Parse(%q) error = %v, want %q", tt.in, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || !reflect.DeepEqual(got, tt.want)):
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if got := queues.DefaultNames(); !reflect.DeepEqual(got, []string{"bulk", "critical", "default"}) {
		t.Errorf("DefaultNames() = %v", got)
	}
}

// TestParseNames: a command to which weights mean nothing (dlq purge) takes
// names alone, or CERTMAIL_QUEUES as the workers read it; a name is checked
// as Parse checks it, and so is a weight given.
func TestParseNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "bulk", want: []string{"bulk"}},
		{in: " default , bulk", want: []string{"bulk", "default"}},
		{in: queues.Default, want: []string{"bulk", "critical", "default"}},
		{in: "bulk=1,default", want: []string{"bulk", "default"}},
		{in: "", wantErr: "a name is"},
		{in: "bulk,", wantErr: "a name is"},
		{in: "=1", wantErr: "a name is"},
		{in: "Bulk", wantErr: "a name is"},
		{in: "bulk=0", wantErr: "want NAME, or NAME=WEIGHT with a weight from 1 to 100"},
		{in: "bulk=x", wantErr: "want NAME, or NAME=WEIGHT"},
		{in: "bulk=101,default", wantErr: "a weight is at most 100"},
		{in: "bulk,bulk=1", wantErr: "listed twice"},
		// dlq purge acts on a raw producer's queue of the reserved name too.
		{in: "bulk," + queues.Reserved, want: []string{"bulk", queues.Reserved}},
	} {
		got, err := queues.ParseNames(tt.in)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseNames(%q) error = %v, want %q", tt.in, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || !reflect.DeepEqual(got, tt.want)):
			t.Errorf("ParseNames(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}
