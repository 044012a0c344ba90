package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/schedule"
	"github.com/certmail/certmail/internal/scheduler"
	"github.com/certmail/certmail/tasks"
)

// SchedulerCmd enqueues periodic tasks; run as many replicas as wanted.
type SchedulerCmd struct {
	ProducerFlags
	File      string        `name:"schedules-file" env:"CERTMAIL_SCHEDULES_FILE" type:"file" help:"YAML file of schedules (reloaded when it changes)."`
	AdminAddr string        `name:"admin-addr" env:"CERTMAIL_ADMIN_ADDR" default:"${admin_addr}" help:"Listen address of /healthz, /readyz and /metrics (empty: none)."`
	Lease     time.Duration `name:"lease" env:"CERTMAIL_SCHEDULER_LEASE" default:"${scheduler_lease}" help:"Leader lease: a dead leader's replica takes over within it (${scheduler_lease_range})."`
}

// Run schedules until SIGTERM/SIGINT.
func (c *SchedulerCmd) Run(env *Env) (err error) {
	if err := inRange("CERTMAIL_SCHEDULER_LEASE", c.Lease, scheduler.MinLease, scheduler.MaxLease); err != nil {
		return err
	}
	if err := checkListenAddr("CERTMAIL_ADMIN_ADDR", c.AdminAddr); err != nil {
		return err
	}
	p, err := c.producer(env, 0)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.close()) }()
	s, err := scheduler.New(scheduler.Config{Redis: p.conn, Ops: p.ops, Store: p.store, File: c.File, Lease: c.Lease,
		AdminAddr: c.AdminAddr, Logger: p.log})
	if err != nil {
		return usageError{err}
	}
	return s.Run(env.Ctx, nil)
}

// ScheduleCmd manages the schedules kept in Redis.
type ScheduleCmd struct {
	List ScheduleListCmd `cmd:"" help:"List every schedule (file and API) with its next and last run."`
	Add  ScheduleAddCmd  `cmd:"" help:"Add a schedule (stored in Redis, picked up by the scheduler within seconds)."`
	Rm   ScheduleRmCmd   `cmd:"" name:"rm" help:"Remove a schedule added with add or the API."`
}

// scheduleFlags open the schedule store.
type scheduleFlags struct {
	RedisFlags
	LogFlags
	AccountFlags
	QueueFlags
	ScheduleRuleFlags
}

// store opens the schedule store, which keeps at most maxSchedules API
// schedules (0: the default; only add adds any). go-redis's own messages go
// to the command's logger, as those of the other operator commands do;
// Ctrl-C closes the connection at once (Env.closeOnInterrupt).
func (f scheduleFlags) store(env *Env, maxSchedules int) (*schedule.Store, func(), error) {
	if err := f.check(); err != nil {
		return nil, nil, err
	}
	log, err := f.logger(env)
	if err != nil {
		return nil, nil, err
	}
	accounts, err := f.load(false)
	if err != nil {
		return nil, nil, err
	}
	rules, err := f.rules(accounts)
	if err != nil {
		return nil, nil, err
	}
	conn, err := f.open(env)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.scheduleStore(conn, rules, maxSchedules, nil)
	if err != nil {
		_ = conn.Client.Close()
		return nil, nil, err
	}
	// Nothing is left to flush at this point: close errors say nothing useful.
	env.closeOnInterrupt(func() { _ = conn.Client.Close() })
	return st, func() {
		_ = conn.Client.Close()
		_ = log.Sync()
	}, nil
}

// ScheduleListCmd lists schedules.
type ScheduleListCmd struct {
	scheduleFlags
	Output string `short:"o" enum:"json,table" default:"table" help:"Output format: table or json."`
}

// Run prints the schedules.
func (c *ScheduleListCmd) Run(env *Env) error {
	st, done, err := c.store(env, 0)
	if err != nil {
		return err
	}
	defer done()
	l, err := st.Listing(env.Ctx)
	if err != nil {
		return err
	}
	all := l.Schedules
	// Not in the table or the JSON: they have no next run.
	for _, sk := range l.Skipped {
		fmt.Fprintf(env.Stderr, "skipped %s schedule %s, which the scheduler does not fire: %s\n", sk.Source, sk.ID, oneLine(sk.Problem))
	}
	if n := l.SkippedCount - len(l.Skipped); n > 0 {
		fmt.Fprintf(env.Stderr, "skipped %d more schedules the scheduler does not fire\n", n)
	}
	if c.Output == "json" {
		return writeJSON(env.Stdout, all)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tCRON\tTYPE\tNEXT RUN\tLAST RUN\tRUNS")
	for _, s := range all {
		next := timeString(s.NextRun)
		if s.Ended {
			next = endedText(s)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.ID, s.Source, s.Cron, s.Type, next, orDash(timeString(s.LastRun)), s.Runs)
	}
	return tw.Flush()
}

// endedText says why a schedule ended: "(ended: max_runs)", or for an
// until_validated one "(ended: validated, order issued)".
func endedText(s schedule.Status) string {
	switch {
	case s.EndedReason == "":
		return "(ended)"
	case s.OrderStatus != "":
		return "(ended: " + s.EndedReason + ", order " + s.OrderStatus + ")"
	default:
		return "(ended: " + s.EndedReason + ")"
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ScheduleAddCmd adds a schedule.
type ScheduleAddCmd struct {
	scheduleFlags
	ScheduleCapFlags
	ID             string `name:"id" required:"" help:"Unique, stable id (a-z, 0-9, '.', '_', '-')."`
	Cron           string `name:"cron" required:"" help:"5-field cron spec, or @every <duration>, @daily, @hourly ..."`
	Timezone       string `name:"timezone" help:"Time zone of the cron spec (default UTC), e.g. Europe/Berlin."`
	Type           string `name:"type" required:"" help:"Task type, one of: ${task_types}."`
	Payload        string `name:"payload" required:"" help:"Task payload as JSON, e.g. '{\"order_id\": 1002}'."`
	Queue          string `name:"queue" help:"Queue (default bulk); one of CERTMAIL_QUEUES."`
	Until          string `name:"until" placeholder:"RFC3339" help:"Last time a tick may run (in the future)."`
	MaxRuns        *int   `name:"max-runs" help:"End the schedule after this many runs (at least 1; leave the flag out for no limit)."`
	UntilValidated *bool  `name:"until-validated" negatable:"" help:"resend-dcv only (and its default): ticks carry only_if_pending, and the first not_pending outcome ends the schedule. --no-until-validated keeps it running."`
}

// Run validates and stores the schedule; validation problems are a usage error.
func (c *ScheduleAddCmd) Run(env *Env) error {
	s := schedule.Schedule{ID: c.ID, Cron: c.Cron, Timezone: c.Timezone, Type: c.Type, Payload: []byte(c.Payload),
		Queue: c.Queue, UntilValidated: c.UntilValidated}
	if c.MaxRuns != nil {
		// The API and the schedules file read max_runs 0 as no limit; a
		// flag given 0 most likely means something else.
		if err := mustBePositive("--max-runs", int64(*c.MaxRuns)); err != nil {
			return usagef("%w: leave the flag out for no limit", err)
		}
		s.MaxRuns = *c.MaxRuns
	}
	var found []tasks.FieldError // reported with the schedule's other problems
	if c.Until != "" {
		t, err := time.Parse(time.RFC3339, c.Until)
		if err != nil {
			found = append(found, tasks.FieldError{Field: "until", Message: "must be an RFC 3339 time"})
		} else {
			s.Until = &t
		}
	}
	if err := c.checkMax(); err != nil {
		return err
	}
	st, done, err := c.store(env, c.MaxSchedules)
	if err != nil {
		return err
	}
	defer done()
	status, err := st.Add(env.Ctx, s, found...)
	var ve *tasks.ValidationError
	if errors.As(err, &ve) {
		return usageError{problemsError{head: "invalid schedule", problems: fieldMessages(ve), err: ve}}
	}
	if err != nil {
		return err
	}
	return writeJSON(env.Stdout, status)
}

// ScheduleRmCmd removes a schedule.
type ScheduleRmCmd struct {
	scheduleFlags
	ID string `arg:"" name:"id" help:"Schedule id."`
}

// Run removes the schedule.
func (c *ScheduleRmCmd) Run(env *Env) error {
	st, done, err := c.store(env, 0)
	if err != nil {
		return err
	}
	defer done()
	// Its last tick's task, read first: the state that names it goes with
	// the schedule. Only a line of the output depends on it.
	prev, prevErr := st.Get(env.Ctx, c.ID)
	if err := st.Delete(env.Ctx, c.ID); err != nil {
		return fmt.Errorf("%s: %w", ops.ShowName(c.ID), err)
	}
	if inFile, err := st.FileHas(env.Ctx, c.ID); err == nil && inFile {
		fmt.Fprintf(env.Stdout, "removed the API schedule %s; the schedules file's schedule of this id goes on as it was\n", ops.ShowName(c.ID))
		return nil
	}
	fmt.Fprintf(env.Stdout, "removed schedule %s\n", ops.ShowName(c.ID))
	if prevErr == nil && prev.Source == schedule.SourceAPI && prev.LastTaskID != "" {
		id := ops.ShowName(prev.LastTaskID)
		fmt.Fprintf(env.Stdout, "its last tick's task %s (queue %s) stays: removing a schedule leaves the tasks it enqueued, "+
			"which run, retry or are dead-lettered as any task (certmail task %s)\n", id, ops.ShowName(prev.Queue), id)
	}
	return nil
}
