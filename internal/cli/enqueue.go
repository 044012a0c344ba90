package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/internal/ops"
	"github.com/certmail/certmail/tasks"
)

// EnqueueCmd enqueues tasks: one described by flags (a subcommand per task
// type), or many from a JSON Lines file (certmail enqueue --file jobs.jsonl).
type EnqueueCmd struct {
	Bulk            EnqueueBulkCmd            `cmd:"" default:"withargs" help:"Enqueue one task per line of a JSON Lines file (the default: certmail enqueue --file jobs.jsonl)."`
	SetEmails       EnqueueSetEmailsCmd       `cmd:"" name:"set-emails" help:"Replace the additional notification emails of an order."`
	ResendDCV       EnqueueResendDCVCmd       `cmd:"" name:"resend-dcv" help:"Resend the domain-control-validation emails of an order (of a DV order; of any order with --only-if-pending)."`
	SendCert        EnqueueSendCertCmd        `cmd:"" name:"send-cert" help:"Email a copy of an issued certificate."`
	ResendDomainDCV EnqueueResendDomainDCVCmd `cmd:"" name:"resend-domain-dcv" help:"Resend the domain-control-validation emails of one domain (OV/EV orders, pre-validated domains)."`
}

// EnqueueFlags are the settings of every enqueue command.
type EnqueueFlags struct {
	RedisFlags
	LogFlags
	AccountFlags
	NewTaskFlags
	DryRun bool `name:"dry-run" help:"Validate only: enqueue nothing (idempotency keys are checked for their form only)."`
}

// service opens Redis and the ops.Service; done closes both.
func (f EnqueueFlags) service(env *Env) (svc *ops.Service, log *zap.Logger, done func(), err error) {
	if err := f.check(); err != nil {
		return nil, nil, nil, err
	}
	accounts, err := f.load(false)
	if err != nil {
		return nil, nil, nil, err
	}
	opts, err := f.opsOptions(accounts, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	return openOps(env, f.RedisFlags, f.LogFlags, opts)
}

// TaskOptionFlags are the options of one task enqueued from flags.
type TaskOptionFlags struct {
	Account        string        `help:"DigiCert account to act for (default: the account \"default\")."`
	Queue          string        `help:"Queue (default: default); one of CERTMAIL_QUEUES."`
	ProcessAt      string        `name:"process-at" placeholder:"RFC3339" help:"Run at this time (e.g. 2026-05-01T09:00:00Z) rather than now; at most 43800h (1825 days) ahead."`
	ProcessIn      time.Duration `name:"process-in" help:"Run after this delay (e.g. 10m) rather than now; at most 43800h (1825 days)."`
	IdempotencyKey string        `name:"idempotency-key" help:"Enqueue at most once per key: a repeat returns the first task, which keeps its first time (--process-in is not compared)."`
}

func (o TaskOptionFlags) request(typ string, payload map[string]any) (enqueue.Request, error) {
	if o.Account != "" {
		payload["account"] = o.Account
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return enqueue.Request{}, fmt.Errorf("encode payload: %w", err)
	}
	req := enqueue.Request{Type: typ, Payload: body, Queue: o.Queue, ProcessIn: o.ProcessIn, IdempotencyKey: o.IdempotencyKey}
	if o.ProcessAt != "" {
		if req.ProcessAt, err = enqueue.ParseTime(o.ProcessAt); err != nil {
			return enqueue.Request{}, usagef("--process-at: want an RFC 3339 time such as 2026-05-01T09:00:00Z")
		}
	}
	return req, nil
}

// EnqueueSetEmailsCmd enqueues one set-emails task.
type EnqueueSetEmailsCmd struct {
	EnqueueFlags
	TaskOptionFlags
	OrderID *int64   `name:"order-id" help:"DigiCert order id."`
	Email   []string `name:"email" sep:"none" help:"An additional email of the order (repeat for several); they replace the current list."`
	Clear   bool     `help:"Replace the list with an empty one (required to send no --email)."`
}

// Run enqueues the task.
func (c *EnqueueSetEmailsCmd) Run(env *Env) error {
	switch {
	case len(c.Email) == 0 && !c.Clear:
		return usagef("no --email given: repeat --email for each address, or give --clear to empty the order's list")
	case len(c.Email) > 0 && c.Clear:
		return usagef("--clear empties the list: give it without --email")
	}
	payload := map[string]any{"additional_emails": append([]string{}, c.Email...)}
	if c.OrderID != nil {
		payload["order_id"] = *c.OrderID
	}
	return c.enqueueOne(env, c.TaskOptionFlags, tasks.TypeSetEmails, payload)
}

// EnqueueResendDCVCmd enqueues one resend-dcv task.
type EnqueueResendDCVCmd struct {
	EnqueueFlags
	TaskOptionFlags
	OrderID       *int64   `name:"order-id" help:"DigiCert order id."`
	Approval      []string `name:"approval" sep:"none" placeholder:"domain=D,email=E[,email-domain=D]" help:"Send the email of one domain to this address (repeat for several domains)."`
	Locale        string   `help:"Language of the emails, ll or ll_CC (e.g. en, de_DE)."`
	OnlyIfPending bool     `name:"only-if-pending" help:"Read the order's validation status first: send nothing (outcome not_pending) once it no longer waits for validation by email; resend an OV/EV order per pending domain."`
}

// Run enqueues the task.
func (c *EnqueueResendDCVCmd) Run(env *Env) error {
	payload := map[string]any{}
	if c.OrderID != nil {
		payload["order_id"] = *c.OrderID
	}
	if len(c.Approval) > 0 {
		entries := make([]map[string]string, 0, len(c.Approval))
		for i, a := range c.Approval {
			e, err := parseApproval(a)
			if err != nil {
				return usagef("--approval #%d: %v", i+1, err)
			}
			entries = append(entries, e)
		}
		payload["domain_approval_emails"] = entries
	}
	if c.Locale != "" {
		payload["locale"] = c.Locale
	}
	if c.OnlyIfPending {
		payload["only_if_pending"] = true
	}
	return c.enqueueOne(env, c.TaskOptionFlags, tasks.TypeResendDCV, payload)
}

// EnqueueResendDomainDCVCmd enqueues one resend-domain-dcv task.
type EnqueueResendDomainDCVCmd struct {
	EnqueueFlags
	TaskOptionFlags
	DomainID  *int64   `name:"domain-id" help:"DigiCert domain id (not the order id)."`
	NameScope string   `name:"name-scope" help:"The FQDN tied to the domain id whose validation the emails are for (e.g. sub.example.com)."`
	Locale    string   `help:"Language of the emails, ll or ll_CC (e.g. en, de_DE)."`
	Email     []string `name:"email" sep:"none" help:"Send only to this DCV address of the domain (repeat for several; default: DigiCert's choice)."`
}

// Run enqueues the task.
func (c *EnqueueResendDomainDCVCmd) Run(env *Env) error {
	payload := map[string]any{}
	if c.DomainID != nil {
		payload["domain_id"] = *c.DomainID
	}
	if c.NameScope != "" {
		payload["name_scope"] = c.NameScope
	}
	if c.Locale != "" {
		payload["locale"] = c.Locale
	}
	if len(c.Email) > 0 {
		payload["email_array"] = c.Email
	}
	return c.enqueueOne(env, c.TaskOptionFlags, tasks.TypeResendDomainDCV, payload)
}

// parseApproval reads "domain=example.com,email=admin@example.com[,email-domain=example.com]".
// Errors never repeat the value: it holds an address.
func parseApproval(s string) (map[string]string, error) {
	e := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		name, known := map[string]string{"domain": "domain", "email": "email", "email-domain": "email_domain", "email_domain": "email_domain"}[k]
		switch {
		case !ok || !known:
			return nil, errors.New("want domain=D,email=E[,email-domain=D]")
		}
		if _, given := e[name]; given {
			return nil, fmt.Errorf("%s given twice", k)
		}
		e[name] = v
	}
	return e, nil
}

// EnqueueSendCertCmd enqueues one send-cert task.
type EnqueueSendCertCmd struct {
	EnqueueFlags
	TaskOptionFlags
	CertificateID *int64   `name:"certificate-id" help:"DigiCert certificate id (not the order id)."`
	Email         []string `name:"email" sep:"none" help:"A recipient (repeat for several)."`
	Format        string   `help:"How the certificate is delivered: attachment, plaintext or downloadlink."`
	Message       string   `help:"Text added to the email."`
}

// Run enqueues the task.
func (c *EnqueueSendCertCmd) Run(env *Env) error {
	payload := map[string]any{"emails": append([]string{}, c.Email...)}
	if c.CertificateID != nil {
		payload["certificate_id"] = *c.CertificateID
	}
	if c.Format != "" {
		payload["certificate_collect_format"] = c.Format
	}
	if c.Message != "" {
		payload["custom_message"] = c.Message
	}
	return c.enqueueOne(env, c.TaskOptionFlags, tasks.TypeSendCert, payload)
}

// enqueueOne validates and enqueues one task and prints what became of it.
func (f EnqueueFlags) enqueueOne(env *Env, o TaskOptionFlags, typ string, payload map[string]any) error {
	req, err := o.request(typ, payload)
	if err != nil {
		return err
	}
	svc, log, done, err := f.service(env)
	if err != nil {
		return err
	}
	defer done()
	if f.DryRun {
		if err := svc.Validate(req); err != nil {
			return enqueueError(err)
		}
		_, err := fmt.Fprintf(env.Stdout, "valid %s task (dry run: nothing enqueued)\n", typ)
		return err
	}
	ref, existing, err := svc.Enqueue(env.Ctx, req)
	if err != nil {
		return enqueueError(err)
	}
	log.Debug("task enqueued", zap.String("task_id", ref.ID), zap.String("task_type", ref.Type),
		zap.String("queue", ref.Queue), zap.String("state", ref.State), zap.Bool("existing", existing))
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\ntype:\t%s\nqueue:\t%s\nstate:\t%s\n", ref.ID, ref.Type, ref.Queue, ref.State)
	if existing {
		fmt.Fprintln(tw, "existing:\tyes (enqueued before with this idempotency key; nothing new was enqueued)")
	}
	return tw.Flush()
}

// enqueueError turns a validation failure into a usage error (exit status 2)
// listing every problem, one per line, and says of an enqueue that Redis
// did not confirm how to find out whether it was enqueued (unconfirmed).
func enqueueError(err error) error {
	var ve *tasks.ValidationError
	switch {
	case errors.As(err, &ve):
		return usageError{fieldsError(ve)}
	case errors.Is(err, ops.ErrIdempotencyConflict):
		return usagef("--idempotency-key: %w", err)
	}
	return unconfirmed(err)
}

// unconfirmed adds to an *ops.EnqueueError that the task may be in its
// queue all the same, and how to look: enqueueing it again could send its
// email twice.
func unconfirmed(err error) error {
	var ee *ops.EnqueueError
	if !errors.As(err, &ee) {
		return err
	}
	return fmt.Errorf("%w (it may have been enqueued all the same: look it up with `certmail task %s` before enqueueing it again)",
		err, ee.TaskID)
}

// fieldsError is a *tasks.ValidationError as Main prints it: one problem
// per line.
func fieldsError(ve *tasks.ValidationError) problemsError {
	return problemsError{head: "invalid " + ve.Type + " task", problems: fieldMessages(ve), err: ve}
}

// fieldMessages are the problems of ve, each as fieldMessage words it.
func fieldMessages(ve *tasks.ValidationError) []string {
	msgs := make([]string, len(ve.Errors))
	for i, fe := range ve.Errors {
		msgs[i] = fieldMessage(fe)
	}
	return msgs
}

func fieldMessage(fe tasks.FieldError) string {
	if fe.Field == "" {
		return fe.Message
	}
	return fe.Field + ": " + fe.Message
}

// EnqueueBulkCmd enqueues the tasks of a JSON Lines file.
type EnqueueBulkCmd struct {
	EnqueueFlags
	File string `name:"file" short:"f" required:"" placeholder:"FILE" help:"JSON Lines file: one {\"type\",\"payload\"[,\"queue\",\"process_at\",\"process_in\",\"idempotency_key\"]} per line; - for stdin. Blank lines and lines starting with # are skipped."`
}

// maxLineBytes is the longest line of a bulk file, newline excluded.
const maxLineBytes = 1 << 20

// progressEvery is how many lines pass between two plain progress reports.
const progressEvery = 1000

// bulkCounts are the outcomes of a bulk run so far.
type bulkCounts struct {
	lines    int // read, skipped ones included
	enqueued int // or, in a dry run, valid
	existing int
	failed   int
	skipped  int
}

// Run reads the file line by line, validates and enqueues each task on its
// own and reports every failed line by number. It fails (exit status 1)
// when any line failed.
func (c *EnqueueBulkCmd) Run(env *Env) error {
	in, name, size, err := c.open(env)
	if err != nil {
		return err
	}
	defer in.Close()
	svc, log, done, err := c.service(env)
	if err != nil {
		return err
	}
	defer done()

	run := &bulkRun{env: env, svc: svc, dryRun: c.DryRun, progress: newBulkProgress(env.Stdout, size, c.DryRun)}
	stopErr := run.all(bufio.NewReaderSize(in, 64<<10))
	run.progress.finish(run.counts)
	run.summary()
	log.Debug("bulk enqueue done", zap.String("file", name), zap.Int("lines", run.counts.lines),
		zap.Int("enqueued", run.counts.enqueued), zap.Int("existing", run.counts.existing),
		zap.Int("failed", run.counts.failed), zap.Bool("dry_run", c.DryRun))
	switch {
	case stopErr != nil && env.Ctx.Err() != nil:
		return interruptedError{done: run.interrupted(name), err: stopErr}
	case stopErr != nil:
		return fmt.Errorf("%s: stopped at line %d, later lines were not read: %w", name, run.counts.lines, stopErr)
	case run.counts.failed > 0:
		return fmt.Errorf("%s: %d of %d tasks failed", name, run.counts.failed, run.counts.lines-run.counts.skipped)
	}
	return nil
}

// open returns the input, its name for messages, and its size when known
// (for the progress bar), or -1. A file that cannot be opened, or a
// directory, is a usage error. Opening a FIFO waits for a writer: Ctrl-C
// ends that wait (openFile).
func (c *EnqueueBulkCmd) open(env *Env) (io.ReadCloser, string, int64, error) {
	if c.File == "-" {
		return io.NopCloser(env.Stdin), "stdin", fileSize(env.Stdin), nil
	}
	f, err := openFile(env.Ctx, c.File)
	switch {
	case err != nil && env.Ctx.Err() != nil:
		return nil, "", 0, interruptedError{done: "nothing enqueued", err: err}
	case err != nil:
		return nil, "", 0, usageError{err}
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		_ = f.Close() // read nothing
		return nil, "", 0, usagef("--file %s: is a directory: give a JSON Lines file, or - for stdin", c.File)
	}
	return f, c.File, fileSize(f), nil
}

// openFile opens path for reading, or gives up when ctx is done: the open
// of a FIFO waits until a writer opens it. A file opened after that is
// closed.
func openFile(ctx context.Context, path string) (*os.File, error) {
	type opened struct {
		f   *os.File
		err error
	}
	done := make(chan opened) // unbuffered: a file is handed over or closed
	go func() {
		f, err := os.Open(path)
		select {
		case done <- opened{f, err}:
		case <-ctx.Done():
			if f != nil {
				_ = f.Close() // nobody reads it
			}
		}
	}()
	select {
	case o := <-done:
		return o.f, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func fileSize(r io.Reader) int64 {
	f, ok := r.(*os.File)
	if !ok {
		return -1
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return -1
	}
	return st.Size()
}

// bulkRun is one pass over a bulk file.
type bulkRun struct {
	env      *Env
	svc      *ops.Service
	dryRun   bool
	progress *bulkProgress
	counts   bulkCounts
}

// all processes every line of in. It returns an error, after reporting it,
// only when going on makes no sense: the input cannot be read, Redis fails,
// or the command is interrupted. The lines are read in a goroutine
// (readLines), so that Ctrl-C stops the run while it waits on a terminal,
// a pipe or a FIFO.
func (r *bulkRun) all(in *bufio.Reader) error {
	next, lines := make(chan []byte, 1), make(chan readResult, 1)
	defer close(next)
	go readLines(in, next, lines)
	var buf []byte
	for {
		next <- buf[:0]
		var got readResult
		select {
		case <-r.env.Ctx.Done():
			return r.env.Ctx.Err()
		case got = <-lines:
		}
		line, n, err := got.line, got.n, got.err
		buf = line
		if errors.Is(err, io.EOF) && n == 0 {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read: %w", err)
		}
		r.counts.lines++
		if r.counts.lines == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // a byte order mark
		}
		if stop := r.one(line, got.tooLong); stop != nil {
			return stop
		}
		r.progress.add(n, r.counts)
	}
}

// readResult is what readLine returned.
type readResult struct {
	line    []byte
	n       int
	tooLong bool
	err     error
}

// readLines reads one line of in into each buffer received from next and
// sends it on lines, until next is closed. A read from a terminal or a pipe
// cannot be stopped: when the run stops during one, the read is left to end
// with the input or the process (whose next step is to exit), and lines has
// room for its result.
func readLines(in *bufio.Reader, next <-chan []byte, lines chan<- readResult) {
	for buf := range next {
		line, n, tooLong, err := readLine(in, buf)
		lines <- readResult{line, n, tooLong, err}
	}
}

// one processes line number r.counts.lines; it returns an error only when
// the run must stop.
func (r *bulkRun) one(line []byte, tooLong bool) error {
	no := r.counts.lines
	if tooLong {
		r.fail(no, fmt.Sprintf("longer than %d bytes", maxLineBytes))
		return nil
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		r.counts.skipped++
		return nil
	}
	req, lineErrs := enqueue.DecodeLine(line)
	if len(lineErrs) > 0 {
		problems := make([]string, len(lineErrs))
		for i, fe := range lineErrs {
			problems[i] = fieldMessage(fe)
		}
		if req.Type != "" && req.Payload != nil { // list the payload's problems too
			problems = append(problems, validationProblems(req, r.svc.Validate(req))...)
		}
		r.fail(no, problems...)
		return nil
	}
	var (
		existing bool
		err      error
	)
	if r.dryRun {
		err = r.svc.Validate(req)
	} else {
		_, existing, err = r.svc.Enqueue(r.env.Ctx, req)
	}
	switch {
	case err == nil && existing:
		r.counts.existing++
	case err == nil:
		r.counts.enqueued++
	case errors.Is(err, ops.ErrIdempotencyConflict):
		r.fail(no, "idempotency_key: "+err.Error())
	default:
		problems := validationProblems(req, err)
		if problems == nil { // not the line's fault: Redis, or an interruption
			err = unconfirmed(err)
			r.fail(no, err.Error())
			return err
		}
		r.fail(no, problems...)
	}
	return nil
}

// validationProblems returns the messages of a validation error of a line
// (an invalid payload or option, an unknown type; lineMessages), nil for
// any other error.
func validationProblems(req enqueue.Request, err error) []string {
	var ve *tasks.ValidationError
	switch {
	case errors.As(err, &ve):
		return lineMessages(ve)
	case errors.Is(err, tasks.ErrUnknownType):
		return []string{fmt.Sprintf("type: unknown task type %.64q (want one of %s)", req.Type, strings.Join(tasks.Types(), ", "))}
	}
	return nil
}

// lineMessages are the problems of ve, a line's, as fieldMessages words
// them, but for a problem of the payload as a whole (Field "": tasks.Parse
// speaks of the payload alone), which names the member at fault: "payload:
// must be a JSON object", where the same words alone are a problem of the
// line as a whole (enqueue.DecodeLine). The last entry, when it counts the
// problems not listed, names none.
func lineMessages(ve *tasks.ValidationError) []string {
	msgs := fieldMessages(ve)
	listed := len(ve.Errors)
	if ve.Omitted > 0 && listed > 0 {
		listed--
	}
	for i, fe := range ve.Errors[:listed] {
		if fe.Field == "" {
			msgs[i] = "payload: " + fe.Message
		}
	}
	return msgs
}

// fail counts a failed line and reports each of its problems on stderr.
func (r *bulkRun) fail(no int, problems ...string) {
	r.counts.failed++
	r.progress.clear()
	for _, p := range problems {
		fmt.Fprintf(r.env.Stderr, "line %d: %s\n", no, oneLine(p))
	}
}

// interrupted says what a run stopped by Ctrl-C or SIGTERM did with the
// lines of name it read: "3 tasks enqueued from the 4 lines of stdin read
// before stopping".
func (r *bulkRun) interrupted(name string) string {
	c := r.counts
	verb := "enqueued"
	if r.dryRun {
		verb = "valid (dry run: nothing enqueued)"
	}
	return fmt.Sprintf("%d %s %s from the %d %s of %s read before stopping; later lines were not read",
		c.enqueued, plural(c.enqueued, "task", "tasks"), verb, c.lines, plural(c.lines, "line", "lines"), name)
}

func (r *bulkRun) summary() {
	c := r.counts
	tw := tabwriter.NewWriter(r.env.Stdout, 0, 4, 1, ' ', 0)
	if r.dryRun {
		fmt.Fprintf(tw, "valid:\t%d (dry run: nothing enqueued)\n", c.enqueued)
	} else {
		fmt.Fprintf(tw, "enqueued:\t%d\n", c.enqueued)
		fmt.Fprintf(tw, "already enqueued:\t%d (idempotent replays)\n", c.existing)
	}
	fmt.Fprintf(tw, "failed:\t%d\n", c.failed)
	fmt.Fprintf(tw, "skipped:\t%d (blank and comment lines)\n", c.skipped)
	_ = tw.Flush() // stdout gone: nothing left to tell
}

// readLine reads one line into buf (without its line ending) and returns
// it, the number of bytes consumed and whether the line was longer than
// maxLineBytes, in which case its content is dropped but the line is still
// consumed whole. err is io.EOF at the end of input; a last line without
// newline comes with n > 0.
func readLine(in *bufio.Reader, buf []byte) (line []byte, n int, tooLong bool, err error) {
	for {
		chunk, err := in.ReadSlice('\n')
		n += len(chunk)
		if !tooLong {
			if len(buf)+len(chunk) > maxLineBytes+2 { // room for \r\n
				tooLong, buf = true, buf[:0]
			} else {
				buf = append(buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = bytes.TrimSuffix(bytes.TrimSuffix(buf, []byte("\n")), []byte("\r"))
		if !tooLong && len(buf) > maxLineBytes {
			tooLong, buf = true, buf[:0]
		}
		return buf, n, tooLong, err
	}
}

// bulkProgress reports how far a bulk run is: a progress bar with rate and
// ETA when stdout is a terminal, a line of counts every progressEvery lines
// otherwise.
type bulkProgress struct {
	out      io.Writer
	verb     string                   // "enqueued", or "valid" in a dry run
	bar      *progressbar.ProgressBar // nil when stdout is not a terminal
	reported int                      // lines at the last plain report
}

func newBulkProgress(out io.Writer, size int64, dryRun bool) *bulkProgress {
	p := &bulkProgress{out: out, verb: "enqueued"}
	if dryRun {
		p.verb = "valid"
	}
	f, ok := out.(interface{ Fd() uintptr })
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return p
	}
	if size <= 0 {
		size = -1 // unknown: a spinner with counts and rate
	}
	p.bar = progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetDescription("enqueue"),
		progressbar.OptionShowBytes(true), // rate in bytes/s; with a known size, the ETA
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetSpinnerChangeInterval(0), // no ticker goroutine
		progressbar.OptionFullWidth(),
	)
	return p
}

func (p *bulkProgress) add(n int, c bulkCounts) {
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("%d lines, %d failed", c.lines, c.failed))
		_ = p.bar.Add(n) // rendering only
		return
	}
	if c.lines%progressEvery == 0 {
		p.report(c)
	}
}

// clear erases the bar so that a message can be printed; the next add draws it again.
func (p *bulkProgress) clear() {
	if p.bar != nil {
		_ = p.bar.Clear() // rendering only
	}
}

func (p *bulkProgress) finish(c bulkCounts) {
	if p.bar != nil {
		_ = p.bar.Finish() // rendering only
		fmt.Fprintln(p.out)
		return
	}
	if c.lines != p.reported {
		p.report(c)
	}
}

func (p *bulkProgress) report(c bulkCounts) {
	p.reported = c.lines
	fmt.Fprintf(p.out, "%d lines: %d %s, %d already enqueued, %d failed, %d skipped\n",
		c.lines, c.enqueued, p.verb, c.existing, c.failed, c.skipped)
}
