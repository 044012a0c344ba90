package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/api"
	"github.com/certmail/certmail/internal/ops"
)

// deadLetter enqueues a set-emails task for an order the fake CertCentral
// does not know through the API, and waits until the worker dead-letters it.
func (b *bundle) deadLetter(t testing.TB, orderID int) api.TaskRef {
	t.Helper()
	var ref api.TaskRef
	body := `{"order_id":` + itoa(orderID) + `,"additional_emails":["jill@example.com"]}`
	mustJSON(t, b.do(t, http.MethodPost, "/v1/tasks/set-emails", body, nil), http.StatusAccepted, &ref)
	b.waitState(t, ref.ID, "archived")
	return ref
}

// waitState waits until GET /v1/tasks/{id} says state.
func (b *bundle) waitState(t testing.TB, id, state string) ops.TaskStatus {
	t.Helper()
	var st ops.TaskStatus
	waitFor(t, 15*time.Second, func() bool {
		res := b.get(t, "/v1/tasks/"+id)
		if res.status != http.StatusOK {
			return false
		}
		st = ops.TaskStatus{}
		return json.Unmarshal(res.body, &st) == nil && st.State == state
	}, func() string { return "task " + id + " is " + st.State + ", want " + state })
	return st
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{worker: true})
	first := b.deadLetter(t, 1001)
	second := b.deadLetter(t, 1002)

	st := b.waitState(t, first.ID, "archived")
	if st.LastError == "" || st.LastFailedAt == nil {
		t.Errorf("archived task without last error: %+v", st)
	}

	// The whole list, newest first.
	var page api.DeadLetterPage
	mustJSON(t, b.get(t, "/v1/dead-letters"), http.StatusOK, &page)
	if len(page.DeadLetters) != 2 || page.Next != "" {
		t.Fatalf("list %+v, want 2 entries and no next", page)
	}
	newest := page.DeadLetters[0]
	if newest.TaskID != second.ID || page.DeadLetters[1].TaskID != first.ID {
		t.Errorf("entries %s, %s; want %s, %s", newest.TaskID, page.DeadLetters[1].TaskID, second.ID, first.ID)
	}
	if newest.Type != "set-emails" || newest.Queue != "default" || newest.HTTPStatus != http.StatusNotFound ||
		newest.ErrorCode == "" || newest.Attempts != 1 || !newest.Archived || newest.FailedAt.IsZero() || newest.EntryID == "" {
		t.Errorf("entry %+v", newest)
	}
	var payload struct {
		OrderID int `json:"order_id"`
	}
	if err := json.Unmarshal(newest.Payload, &payload); err != nil || payload.OrderID != 1002 {
		t.Errorf("payload %s: %v", newest.Payload, err)
	}

	// Page by page.
	var p1, p2 api.DeadLetterPage
	mustJSON(t, b.get(t, "/v1/dead-letters?limit=1"), http.StatusOK, &p1)
	if len(p1.DeadLetters) != 1 || p1.DeadLetters[0].TaskID != second.ID || p1.Next == "" {
		t.Fatalf("first page %+v", p1)
	}
	mustJSON(t, b.get(t, "/v1/dead-letters?limit=1&before="+url.QueryEscape(p1.Next)), http.StatusOK, &p2)
	if len(p2.DeadLetters) != 1 || p2.DeadLetters[0].TaskID != first.ID || p2.Next != "" {
		t.Fatalf("second page %+v", p2)
	}

	// Requeue the first: it is pending again (or already taken by the
	// worker) and its entry is gone.
	var ref api.TaskRef
	res := b.do(t, http.MethodPost, "/v1/dead-letters/"+first.ID+"/requeue", "", nil)
	mustJSON(t, res, http.StatusOK, &ref)
	if ref.ID != first.ID || ref.State != "pending" || ref.Queue != "default" || ref.StatusURL != first.StatusURL {
		t.Errorf("requeue answer %+v", ref)
	}
	// The worker dead-letters it again: a new entry, archived again.
	b.waitState(t, first.ID, "archived")
	waitFor(t, 10*time.Second, func() bool {
		var page api.DeadLetterPage
		mustJSON(t, b.get(t, "/v1/dead-letters"), http.StatusOK, &page)
		return len(page.DeadLetters) == 2 && page.DeadLetters[0].TaskID == first.ID
	}, func() string { return "no new dead letter for the requeued task" })

	// Delete both: 204, then they are gone everywhere.
	for _, id := range []string{first.ID, second.ID} {
		res := b.do(t, http.MethodDelete, "/v1/dead-letters/"+id, "", nil)
		if res.status != http.StatusNoContent || len(res.body) != 0 {
			t.Fatalf("DELETE %s: %d %s", id, res.status, res.body)
		}
		mustProblem(t, b.get(t, "/v1/tasks/"+id), http.StatusNotFound)
		mustProblem(t, b.do(t, http.MethodDelete, "/v1/dead-letters/"+id, "", nil), http.StatusNotFound)
		mustProblem(t, b.do(t, http.MethodPost, "/v1/dead-letters/"+id+"/requeue", "", nil), http.StatusNotFound)
	}
	mustJSON(t, b.get(t, "/v1/dead-letters"), http.StatusOK, &page)
	if len(page.DeadLetters) != 0 {
		t.Errorf("after delete: %+v", page)
	}
}

func TestDeadLettersEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.get(t, "/v1/dead-letters")
	var page api.DeadLetterPage
	mustJSON(t, res, http.StatusOK, &page)
	if string(res.body) != `{"dead_letters":[]}`+"\n" {
		t.Errorf("empty list %s, want an empty array and no next", res.body)
	}
	mustProblem(t, b.do(t, http.MethodPost, "/v1/dead-letters/nope/requeue", "", nil), http.StatusNotFound)
	mustProblem(t, b.do(t, http.MethodDelete, "/v1/dead-letters/nope", "", nil), http.StatusNotFound)
}

func TestDeadLettersRejects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name, method, path string
		status             int
		fields             []string
	}{
		{"limit zero", http.MethodGet, "/v1/dead-letters?limit=0", 400, []string{"limit"}},
		{"limit too large", http.MethodGet, "/v1/dead-letters?limit=1001", 400, []string{"limit"}},
		{"limit not a number", http.MethodGet, "/v1/dead-letters?limit=ten", 400, []string{"limit"}},
		{"before not a cursor", http.MethodGet, "/v1/dead-letters?before=yesterday", 400, []string{"before"}},
		{"before without sequence", http.MethodGet, "/v1/dead-letters?before=1718000000000", 400, []string{"before"}},
		{"before beyond uint64", http.MethodGet, "/v1/dead-letters?before=18446744073709551616-0", 400, []string{"before"}},
		{"before's sequence beyond uint64", http.MethodGet, "/v1/dead-letters?before=1-99999999999999999999", 400, []string{"before"}},
		{"both bad", http.MethodGet, "/v1/dead-letters?limit=-1&before=x", 400, []string{"limit", "before"}},
		{"unknown parameter", http.MethodGet, "/v1/dead-letters?page=2", 400, []string{"page"}},
		{"POST on the list", http.MethodPost, "/v1/dead-letters", 405, nil},
		{"GET on requeue", http.MethodGet, "/v1/dead-letters/x/requeue", 405, nil},
		{"GET on an entry", http.MethodGet, "/v1/dead-letters/x", 405, nil},
		{"no token", http.MethodGet, "/v1/dead-letters", 401, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h http.Header
			if tt.status == 401 {
				h = http.Header{}
			}
			p := mustProblem(t, b.do(t, tt.method, tt.path, "", h), tt.status)
			var got []string
			for _, fe := range p.Errors {
				got = append(got, fe.Field)
			}
			if !slices.Equal(got, tt.fields) {
				t.Errorf("fields %q, want %q", got, tt.fields)
			}
		})
	}
}
