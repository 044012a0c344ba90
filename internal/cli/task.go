package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/deadletter"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/internal/queues"
	"github.com/certmail/certmail/tasks"
)

// TaskCmd prints what is known of one task.
type TaskCmd struct {
	RedisFlags
	LogFlags
	ID       string  `arg:"" name:"id" help:"Task id, as enqueue printed it."`
	Queue    *string `name:"queue" placeholder:"NAME" help:"Look in this queue only. Without it, every queue is looked in: the first asynq lists that holds the id is shown, and the others that hold it are named."`
	Output   string  `short:"o" enum:"json,table" default:"json" help:"Output format: json or table."`
	MaxRetry int     `name:"max-retry" env:"CERTMAIL_MAX_RETRY" default:"${max_retry}" help:"The workers' cap on retries: max_retry shows the lower of this and the task's own (${max_retry_range})." group:"Tasks"`
}

// Run prints the task's status; a task no queue has, or not the queue
// given, is a failure (exit status 1).
func (c *TaskCmd) Run(env *Env) error {
	// Not bounded by length: a raw producer's task keeps a long id whole in asynq.
	if err := checkTaskID(c.ID, "enqueue printed"); err != nil {
		return err
	}
	if c.Queue != nil && !tasks.ValidQueueName(*c.Queue) {
		return usagef("--queue: a queue name is %s", queues.NameRule)
	}
	if err := inRange("CERTMAIL_MAX_RETRY", c.MaxRetry, 0, maxMaxRetry); err != nil {
		return err
	}
	svc, _, done, err := openOps(env, c.RedisFlags, c.LogFlags, ops.Config{MaxRetry: maxRetryConfig(c.MaxRetry)})
	if err != nil {
		return err
	}
	defer done()
	var st ops.TaskStatus
	if c.Queue != nil {
		st, err = svc.TaskInQueue(env.Ctx, *c.Queue, c.ID)
	} else {
		st, err = svc.Task(env.Ctx, c.ID)
	}
	if err != nil {
		return err
	}
	if c.Output == "table" {
		return taskTable(env.Stdout, st)
	}
	return writeJSON(env.Stdout, st)
}

func taskTable(w io.Writer, st ops.TaskStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", ops.ShowName(st.ID))
	row("type", ops.ShowName(st.Type))
	row("queue", ops.ShowName(st.Queue))
	row("state", st.State)
	row("retried", strconv.Itoa(st.Retried)+" of "+strconv.Itoa(st.MaxRetry))
	row("last error", st.LastError)
	row("last failed at", timeString(st.LastFailedAt))
	row("next process at", timeString(st.NextProcessAt))
	row("completed at", timeString(st.CompletedAt))
	row("result", shownText(st.Result, st.ResultEncoding, st.ResultTruncated, 0))
	row("payload", shownText(st.Payload, st.PayloadEncoding, st.PayloadTruncated, st.PayloadBytes))
	if st.OtherQueuesCount > 0 {
		names := make([]string, len(st.OtherQueues))
		for i, q := range st.OtherQueues {
			names[i] = ops.ShowName(q)
		}
		row(plural(st.OtherQueuesCount, "also in queue", "also in queues"),
			ops.QueueList(names, st.OtherQueuesCount)+" (pick one with --queue)")
	}
	return tw.Flush()
}

// shownText is a payload or result as a table shows it: its JSON, or the
// JSON string that stands for it followed by what it is ("(text)",
// "(base64)", "(truncated: 10485760 bytes in all)").
func shownText(v json.RawMessage, encoding string, truncated bool, size int) string {
	s := string(v)
	var notes []string
	if encoding != "" {
		notes = append(notes, encoding)
	}
	if truncated {
		notes = append(notes, "truncated: "+strconv.Itoa(size)+" bytes in all")
		if size == 0 {
			notes[len(notes)-1] = "truncated"
		}
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, "; ") + ")"
	}
	return s
}

func timeString(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// checkTaskID refuses, as a usage mistake, an empty task id, which names
// no task (a shell variable left unset): before Redis is opened, saying
// where the ids to give are shown (where: "enqueue printed").
func checkTaskID(id, where string) error {
	if id == "" {
		return usagef("task id %s: empty; give the id %s", ops.ShowName(id), where)
	}
	return nil
}

// checkDeadLetterIDs refuses, as a usage mistake, the first of ids that no
// dead letter can have, before Redis is opened and any id acted on: an
// empty one (checkTaskID), or one over deadletter.MaxID bytes, as the
// dead letter of a longer id is kept under its shortened form
// (deadletter.BoundedID), which dlq list shows.
func checkDeadLetterIDs(ids ...string) error {
	const where = "dlq list shows"
	for _, id := range ids {
		if err := checkTaskID(id, where); err != nil {
			return err
		}
		if len(id) > deadletter.MaxID {
			return usagef("task id %s: longer than %d bytes, which no dead letter's id is; give the id %s (a longer one shortened)",
				ops.ShowName(id), deadletter.MaxID, where)
		}
	}
	return nil
}

// openOps opens Redis and an ops.Service on it with a logger from lf;
// done closes both, and so does Ctrl-C, at once (Env.closeOnInterrupt).
func openOps(env *Env, rf RedisFlags, lf LogFlags, opts ops.Config) (svc *ops.Service, log *zap.Logger, done func(), err error) {
	log, err = lf.logger(env)
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := rf.open(env)
	if err != nil {
		return nil, nil, nil, err
	}
	opts.Redis = conn
	if svc, err = ops.New(opts); err != nil {
		_ = conn.Client.Close()
		return nil, nil, nil, usageError{err}
	}
	closeAll := func() {
		// Nothing is left to flush at this point: close errors say nothing useful.
		_ = svc.Close()
		_ = conn.Client.Close()
	}
	env.closeOnInterrupt(closeAll)
	return svc, log, func() {
		closeAll()
		_ = log.Sync()
	}, nil
}
