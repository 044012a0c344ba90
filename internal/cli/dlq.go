package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/ops"
)

// DLQCmd works on dead-lettered tasks: those archived after a permanent
// failure, with their entries in the certmail:deadletter stream.
type DLQCmd struct {
	List    DLQListCmd    `cmd:"" help:"List dead-lettered tasks, newest first."`
	Show    DLQShowCmd    `cmd:"" help:"Show the dead letter of one task."`
	Requeue DLQRequeueCmd `cmd:"" help:"Run dead-lettered tasks again (they go back to pending)."`
	Delete  DLQDeleteCmd  `cmd:"" help:"Delete dead-lettered tasks and their entries."`
	Purge   DLQPurgeCmd   `cmd:"" help:"Delete the dead letters of the queues in CERTMAIL_QUEUES or --queues (names alone, or with the workers' weights): their archived tasks (not parked ones) and their dead-letter entries; those of other queues are kept."`
}

// DLQListCmd lists dead letters a page at a time.
type DLQListCmd struct {
	RedisFlags
	LogFlags
	Limit  int    `short:"n" default:"${dlq_limit}" help:"Entries per page (${dlq_limit_range})."`
	Before string `placeholder:"ENTRY-ID" help:"Start after this entry: the previous page's cursor (the table's \"more:\" line on stderr, or the JSON's \"next\")."`
	Output string `short:"o" enum:"json,table" default:"table" help:"Output format: table or json."`
}

// Run prints one page of dead letters.
func (c *DLQListCmd) Run(env *Env) error {
	if err := inRange("--limit", c.Limit, 1, ops.MaxDeadLetterLimit); err != nil {
		return err
	}
	svc, _, done, err := openOps(env, c.RedisFlags, c.LogFlags, ops.Config{})
	if err != nil {
		return err
	}
	defer done()
	page, err := svc.DeadLetters(env.Ctx, c.Limit, c.Before)
	if errors.Is(err, ops.ErrInvalidArgument) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	entries, next := page.Entries, page.Next
	for _, sk := range page.Skipped {
		fmt.Fprintf(env.Stderr, "skipped malformed entry %s: %s\n", sk.EntryID, oneLine(sk.Problem))
	}
	if n := page.SkippedCount - len(page.Skipped); n > 0 {
		fmt.Fprintf(env.Stderr, "skipped %d more malformed entries\n", n)
	}
	if c.Output == "json" {
		return writeJSON(env.Stdout, struct {
			Entries      []ops.DeadLetter     `json:"entries"`
			Next         string               `json:"next,omitempty"`
			Skipped      []deadletter.Skipped `json:"skipped,omitempty"`
			SkippedCount int                  `json:"skipped_count,omitempty"`
		}{entries, next, page.Skipped, page.SkippedCount})
	}
	switch {
	case len(entries) == 0 && page.SkippedCount == 0:
		_, err := fmt.Fprintln(env.Stdout, "no dead-lettered tasks")
		return err
	case len(entries) == 0:
		// A page of malformed entries only: older pages may hold good ones.
		if _, err := fmt.Fprintln(env.Stdout, "no readable dead letters on this page"); err != nil {
			return err
		}
	default:
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(dlqListColumns, "\t"))
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.FailedAt.Format(time.RFC3339), ops.ShowName(e.TaskID), ops.ShowName(e.Type), ops.ShowName(e.Queue),
				e.ErrorCode, httpStatus(e.HTTPStatus), e.Attempts, yesNo(e.Archived))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if next != "" {
		fmt.Fprintf(env.Stderr, "more: certmail dlq list --before %s\n", next)
	}
	return nil
}

// dlqListColumns head dlq list's table; ERROR holds the entry's error_code.
var dlqListColumns = []string{"FAILED AT", "TASK ID", "TYPE", "QUEUE", "ERROR", "HTTP", "ATTEMPTS", "ARCHIVED"}

func httpStatus(s int) string {
	if s == 0 {
		return "-"
	}
	return strconv.Itoa(s)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// DLQShowCmd prints the newest dead letter of one task.
type DLQShowCmd struct {
	RedisFlags
	LogFlags
	TaskID string `arg:"" name:"task-id" help:"Task id."`
	Output string `short:"o" enum:"json,table" default:"json" help:"Output format: json or table."`
}

// Run prints the entry; a task without dead letter is a failure (exit
// status 1), an id no dead letter can have a usage error (checkDeadLetterIDs).
func (c *DLQShowCmd) Run(env *Env) error {
	if err := checkDeadLetterIDs(c.TaskID); err != nil {
		return err
	}
	svc, _, done, err := openOps(env, c.RedisFlags, c.LogFlags, ops.Config{})
	if err != nil {
		return err
	}
	defer done()
	dl, err := svc.DeadLetter(env.Ctx, c.TaskID)
	if err != nil {
		return err
	}
	if c.Output == "json" {
		return writeJSON(env.Stdout, dl)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "task id:\t%s\ntype:\t%s\nqueue:\t%s\nfailed at:\t%s\nerror code:\t%s\nerror:\t%s\nhttp status:\t%s\nattempts:\t%d\narchived:\t%s\nentry id:\t%s\npayload:\t%s\n",
		ops.ShowName(dl.TaskID), ops.ShowName(dl.Type), ops.ShowName(dl.Queue), dl.FailedAt.Format(time.RFC3339), dl.ErrorCode, dl.ErrorMessage,
		httpStatus(dl.HTTPStatus), dl.Attempts, yesNo(dl.Archived), dl.EntryID,
		shownText(dl.Payload, dl.PayloadEncoding, dl.PayloadTruncated, dl.PayloadBytes))
	return tw.Flush()
}

// DLQRequeueCmd runs dead-lettered tasks again.
type DLQRequeueCmd struct {
	RedisFlags
	LogFlags
	TaskIDs []string `arg:"" name:"task-id" help:"Task ids."`
}

// Run requeues each task, going on past failures; any failure makes the
// exit status 1. An id no dead letter can have is a usage error, before
// any is requeued (checkDeadLetterIDs).
func (c *DLQRequeueCmd) Run(env *Env) error {
	if err := checkDeadLetterIDs(c.TaskIDs...); err != nil {
		return err
	}
	svc, log, done, err := openOps(env, c.RedisFlags, c.LogFlags, ops.Config{})
	if err != nil {
		return err
	}
	defer done()
	return eachTask(env, c.TaskIDs, "requeued", func(id string) (string, error) {
		ref, err := svc.Requeue(env.Ctx, id)
		if err != nil {
			return "", err
		}
		log.Debug("dead letter requeued", zap.String("task_id", ref.ID), zap.String("task_type", ref.Type), zap.String("queue", ref.Queue))
		return fmt.Sprintf("requeued %s (%s, queue %s): %s", ops.ShowName(ref.ID), ops.ShowName(ref.Type), ops.ShowName(ref.Queue), ref.State), nil
	})
}

// DLQDeleteCmd deletes dead-lettered tasks.
type DLQDeleteCmd struct {
	RedisFlags
	LogFlags
	TaskIDs []string `arg:"" name:"task-id" help:"Task ids."`
}

// Run deletes each task and its entries, going on past failures; any
// failure makes the exit status 1. When only the entries were left to
// delete (the task is alive again, or gone), it says so. An id no dead
// letter can have is a usage error, before any is deleted
// (checkDeadLetterIDs).
func (c *DLQDeleteCmd) Run(env *Env) error {
	if err := checkDeadLetterIDs(c.TaskIDs...); err != nil {
		return err
	}
	svc, log, done, err := openOps(env, c.RedisFlags, c.LogFlags, ops.Config{})
	if err != nil {
		return err
	}
	defer done()
	return eachTask(env, c.TaskIDs, "deleted", func(id string) (string, error) {
		d, err := svc.DeleteDeadLetter(env.Ctx, id)
		if err != nil {
			return "", err
		}
		log.Debug("dead letter deleted", zap.String("task_id", id), zap.Bool("task_deleted", d.Task != nil), zap.Int("entries", d.Entries))
		if d.Task == nil {
			// Only the entries went: the task is alive, or gone already.
			return fmt.Sprintf("deleted %d dead-letter %s of %s; its task was not deleted: %s", d.Entries,
				plural(d.Entries, "entry", "entries"), ops.ShowName(id), d.Kept), nil
		}
		return fmt.Sprintf("deleted %s (%s, queue %s)", ops.ShowName(id), ops.ShowName(d.Task.Type), ops.ShowName(d.Task.Queue)), nil
	})
}

// eachTask runs fn for every id, printing its message or its error, which
// names the id as ops.ShowName shows it. Once env.Ctx is done (Ctrl-C,
// SIGTERM), it stops, before the next id or as the id it was at fails,
// and returns an interruptedError saying how many were done: the id it
// was at may have been done or not.
func eachTask(env *Env, ids []string, what string, fn func(id string) (string, error)) error {
	failed, done := 0, 0
	interrupted := func(err error) error {
		return interruptedError{done: fmt.Sprintf("%d of %d tasks %s before stopping", done, len(ids), what), err: err}
	}
	for _, id := range ids {
		if err := env.Ctx.Err(); err != nil {
			return interrupted(err)
		}
		msg, err := fn(id)
		if err != nil {
			if ctxErr := env.Ctx.Err(); ctxErr != nil {
				return interrupted(ctxErr)
			}
			failed++
			fmt.Fprintf(env.Stderr, "%s: %s\n", ops.ShowName(id), oneLine(err.Error()))
			continue
		}
		done++
		fmt.Fprintln(env.Stdout, msg)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d tasks not %s", failed, len(ids), what)
	}
	return nil
}

// DLQPurgeCmd deletes the dead letters of the queues in CERTMAIL_QUEUES.
type DLQPurgeCmd struct {
	RedisFlags
	LogFlags
	PurgeQueueFlags
	Yes bool `short:"y" help:"Do not ask for confirmation."`
}

// Run asks for confirmation on stdin unless --yes is given, about the
// tasks and entries ops.CheckPurge counts, and purges that check, so that
// no more goes than was asked about. When stdin is a
// file or pipe rather than a terminal, there is nobody to ask: it refuses
// without --yes. (A reader other than an *os.File, as Main's callers may
// pass, is read as the answer.) A queue asynq has never known is named on
// stderr; when that looks like a mistype (ops.UnknownQueuesError) it is a
// usage error, before anything is asked or deleted.
func (c *DLQPurgeCmd) Run(env *Env) error {
	queues, err := c.queueNames()
	if err != nil {
		return err
	}
	svc, log, done, err := openOps(env, c.RedisFlags, c.LogFlags, ops.Config{PurgeQueues: queues})
	if err != nil {
		return err
	}
	defer done()
	check, err := svc.CheckPurge(env.Ctx)
	if err != nil && env.Ctx.Err() != nil {
		return interruptedError{done: "nothing deleted", err: err}
	}
	if err := purgeRefused(err); err != nil {
		return err
	}
	if note := check.UnknownNote(); note != "" {
		fmt.Fprintf(env.Stderr, "%s: %s; %s no dead letters\n", env.setting("CERTMAIL_QUEUES"), note, plural(len(check.Unknown), "it has", "they have"))
	}
	if !c.Yes {
		// What the purge below deletes, at most: the check is its plan.
		what := deadLetterCount(check.Tasks, check.Entries)
		if check.Tasks == 0 && check.Entries == 0 {
			_, err := fmt.Fprintf(env.Stdout, "no dead-lettered tasks in queues %s\n", ops.QueueList(check.Queues, len(check.Queues)))
			return err
		}
		if f, ok := env.Stdin.(*os.File); ok && !term.IsTerminal(int(f.Fd())) {
			return usagef("%s, and stdin is not a terminal to confirm on: give --yes to purge without asking", what)
		}
		yes, err := confirm(env.Ctx, env.Stdin, env.Stdout, fmt.Sprintf("Delete %s of queues %s? [y/N] ", what, ops.QueueList(check.Queues, len(check.Queues))))
		if err != nil {
			if env.Ctx.Err() != nil {
				return interruptedError{done: "nothing deleted", err: err}
			}
			return err
		}
		if !yes {
			_, err := fmt.Fprintln(env.Stdout, "nothing deleted")
			return err
		}
	}
	purged, err := svc.Purge(env.Ctx, check)
	if err != nil && env.Ctx.Err() != nil {
		return interruptedError{done: "deleted " + deadLetterCount(purged.Tasks, purged.Entries) +
			" before stopping; run it again to delete the rest", err: err}
	}
	if err := purgeRefused(err); err != nil {
		return err
	}
	log.Debug("dead letters purged", zap.Int("entries", purged.Entries), zap.Int("tasks", purged.Tasks), zap.Int("kept", purged.Kept))
	if _, err := fmt.Fprintf(env.Stdout, "deleted %s of queues %s (parked tasks, which wait to be retried, are kept)\n",
		deadLetterCount(purged.Tasks, purged.Entries), ops.QueueList(check.Queues, len(check.Queues))); err != nil {
		return err
	}
	if purged.Kept > 0 {
		fmt.Fprintf(env.Stdout, "kept %d dead-letter %s of tasks parked, or archived during the purge\n", purged.Kept, plural(purged.Kept, "entry", "entries"))
	}
	if check.OtherEntries > 0 {
		fmt.Fprintf(env.Stdout, "kept %d dead-letter %s of other queues (%s)\n", check.OtherEntries, plural(check.OtherEntries, "entry", "entries"),
			ops.QueueList(check.Other, check.OtherCount))
	}
	return nil
}

// purgeRefused makes the refusal of a purge of a queue asynq has never known
// a usage error.
func purgeRefused(err error) error {
	var unknown *ops.UnknownQueuesError
	if errors.As(err, &unknown) {
		return usagef("CERTMAIL_QUEUES: %v; nothing deleted", err)
	}
	return err
}

// deadLetterCount says how many dead-lettered tasks and entries a purge
// counts: "1 dead-lettered task and 2 dead-letter entries".
func deadLetterCount(tasks, entries int) string {
	return fmt.Sprintf("%d dead-lettered %s and %d dead-letter %s",
		tasks, plural(tasks, "task", "tasks"), entries, plural(entries, "entry", "entries"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// confirm prints question and reports whether the answer read from in is
// y or yes (in any case); anything else, or no answer at all, is no. It
// returns ctx's error as soon as ctx is done (Ctrl-C at the question): a
// read from a terminal cannot be stopped, so the read is left to end with
// the process, whose next step is to exit.
func confirm(ctx context.Context, in io.Reader, out io.Writer, question string) (bool, error) {
	if _, err := io.WriteString(out, question); err != nil {
		return false, err
	}
	type line struct {
		answer string
		err    error
	}
	read := make(chan line, 1) // never blocks the reader left behind
	go func() {
		answer, err := bufio.NewReader(in).ReadString('\n')
		read <- line{answer, err}
	}()
	var l line
	select {
	case <-ctx.Done():
		fmt.Fprintln(out) // the answer line never came: end the question's line
		return false, ctx.Err()
	case l = <-read:
	}
	if l.err != nil && !errors.Is(l.err, io.EOF) {
		return false, fmt.Errorf("read answer: %w", l.err)
	}
	if errors.Is(l.err, io.EOF) {
		fmt.Fprintln(out) // the answer line never came: end the question's line
	}
	switch strings.ToLower(strings.TrimSpace(l.answer)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
