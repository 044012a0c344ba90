package api

import (
	"net/http"
	"strconv"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/tasks"
)

// DeadLetterPage is the answer to GET /v1/dead-letters: entries newest first
// and, when there are more, the cursor to pass as before for the next page.
type DeadLetterPage struct {
	DeadLetters []ops.DeadLetter `json:"dead_letters"`
	Next        string           `json:"next,omitempty"`
	// Skipped names the page's malformed stream entries (at most
	// ops.MaxSkippedListed), left out of DeadLetters; SkippedCount counts
	// them all.
	Skipped      []deadletter.Skipped `json:"skipped,omitempty"`
	SkippedCount int                  `json:"skipped_count,omitempty"`
}

// deadLetters is GET /v1/dead-letters?limit=&before=.
func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	q, errs := queryParams(r.URL.RawQuery, "limit", "before")
	limit := 0
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ops.MaxDeadLetterLimit {
			errs = append(errs, tasks.FieldError{Field: "limit", Message: "must be an integer from 1 to " + strconv.Itoa(ops.MaxDeadLetterLimit)})
		}
		limit = n
	}
	before := q["before"]
	if _, ok := q["before"]; ok && !deadletter.ValidID(before) {
		errs = append(errs, tasks.FieldError{Field: "before", Message: "must be a cursor from next of an earlier page"})
	}
	if len(errs) > 0 {
		s.writeProblem(w, r, validationProblem(errs), nil)
		return
	}
	page, err := s.ops.DeadLetters(r.Context(), limit, before)
	if err != nil {
		s.writeOpsError(w, r, err, "")
		return
	}
	s.writeJSON(w, r, http.StatusOK, DeadLetterPage{DeadLetters: page.Entries, Next: page.Next,
		Skipped: page.Skipped, SkippedCount: page.SkippedCount})
}

// requeue is POST /v1/dead-letters/{id}/requeue: the archived task goes back
// to pending and its dead-letter entries go.
func (s *Server) requeue(w http.ResponseWriter, r *http.Request) {
	ref, err := s.ops.Requeue(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeOpsError(w, r, err, notFoundDetail(err))
		return
	}
	out := taskRef(ref)
	w.Header().Set("Location", out.StatusURL)
	s.writeJSON(w, r, http.StatusOK, out)
}

// deleteDeadLetter is DELETE /v1/dead-letters/{id}: 204 once the archived
// task and its entries are gone.
func (s *Server) deleteDeadLetter(w http.ResponseWriter, r *http.Request) {
	if _, err := s.ops.DeleteDeadLetter(r.Context(), r.PathValue("id")); err != nil {
		s.writeOpsError(w, r, err, notFoundDetail(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// notFoundDetail is the detail of a dead letter that is not there. ops says
// more than "not found" when the entry exists but asynq's retention already
// deleted the archived task; its messages hold ids, never payloads.
func notFoundDetail(err error) string {
	if msg := err.Error(); msg != ops.ErrNotFound.Error() {
		return msg
	}
	return "no dead letter for this task id"
}
