package api

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/tasks"
)

// ScheduleList is the answer of GET /v1/schedules.
type ScheduleList struct {
	Schedules []schedule.Status `json:"schedules"`
	// Skipped names the schedules kept in Redis that the scheduler does not
	// fire (at most schedule.MaxSkippedListed), each with its problem: those
	// that cannot be read, and API schedules the rules in force refuse. They
	// are left out of Schedules and logged; SkippedCount counts them all.
	Skipped      []schedule.Skipped `json:"skipped,omitempty"`
	SkippedCount int                `json:"skipped_count,omitempty"`
}

// listSchedules is GET /v1/schedules: every schedule, file and API.
func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) {
	l, err := s.schedules.Listing(r.Context())
	if err != nil {
		s.writeScheduleError(w, r, err)
		return
	}
	if l.Schedules == nil {
		l.Schedules = []schedule.Status{}
	}
	s.writeJSON(w, r, http.StatusOK, ScheduleList{Schedules: l.Schedules, Skipped: l.Skipped, SkippedCount: l.SkippedCount})
}

// addSchedule is POST /v1/schedules: 201 with the schedule, 400 listing
// every problem (a member given twice too), 409 when the id is taken.
func (s *Server) addSchedule(w http.ResponseWriter, r *http.Request) {
	body, release, ok := s.readJSONBody(w, r)
	if !ok {
		return
	}
	defer release()
	sc, problems, err := schedule.DecodeJSON(body)
	if err != nil {
		s.writeScheduleError(w, r, err)
		return
	}
	st, err := s.schedules.Add(r.Context(), sc, problems...)
	if err != nil {
		s.writeScheduleError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/schedules/"+url.PathEscape(st.ID))
	s.writeJSON(w, r, http.StatusCreated, st)
}

// getSchedule is GET /v1/schedules/{id}: 404 also for a schedule the list
// names under skipped, saying why.
func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) {
	st, err := s.schedules.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeScheduleError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, st)
}

// deleteSchedule is DELETE /v1/schedules/{id}: 204; 409 for a file schedule.
// An API schedule whose id the file holds is deleted alone (see
// schedule.Store.Delete).
func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	if err := s.schedules.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.writeScheduleError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) writeScheduleError(w http.ResponseWriter, r *http.Request, err error) {
	var ve *tasks.ValidationError
	var skipped *schedule.SkippedError
	switch {
	case errors.As(err, &ve):
		s.writeProblem(w, r, validationProblem(ve.Errors), nil)
	case errors.As(err, &skipped):
		s.writeProblem(w, r, Problem{Status: http.StatusNotFound,
			Detail: "the scheduler skips this schedule (GET /v1/schedules names it under skipped): " + skipped.Problem}, nil)
	case errors.Is(err, schedule.ErrNotFound):
		s.writeProblem(w, r, Problem{Status: http.StatusNotFound, Detail: "no schedule has this id"}, nil)
	case errors.Is(err, schedule.ErrInFile):
		s.writeProblem(w, r, Problem{Status: http.StatusConflict,
			Detail: "a schedule of the schedules file has this id: pick another id (an API schedule cannot share it)"}, nil)
	case errors.Is(err, schedule.ErrExists):
		s.writeProblem(w, r, Problem{Status: http.StatusConflict, Detail: "a schedule with this id exists; delete it first or pick another id"}, nil)
	case errors.Is(err, schedule.ErrTooMany):
		s.writeProblem(w, r, Problem{Status: http.StatusConflict,
			Detail: "the most schedules allowed (CERTMAIL_SCHEDULE_MAX) exist, and too few of them have ended to make room; delete one first"}, nil)
	case errors.Is(err, schedule.ErrFileSchedule):
		s.writeProblem(w, r, Problem{Status: http.StatusConflict, Detail: "this schedule comes from the schedules file; change it there"}, nil)
	default:
		s.writeOpsError(w, r, err, "")
	}
}
