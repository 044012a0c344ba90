package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/certmail/certmail/internal/schedule"
)

// MaxFileBytes is the largest schedules file the scheduler reads (4 MiB,
// some 40 000 lines): a larger one is refused unread, as one that cannot be
// read is. With schedule.MaxFileEntries it bounds what a reload costs.
const MaxFileBytes = 4 << 20

// racyWindow is how recently before a read the file may have been modified
// for its size and modification time not to be trusted at the next look: a
// rewrite within the timestamp granularity of the file system (up to 2 s on
// some) can keep both, so such a file is read again, and its content
// compared, until it has been left alone for this long.
const racyWindow = 3 * time.Second

// racy reports whether a file modified at mtime, read at start, may be
// rewritten later with the same modification time: modified within
// racyWindow of the read. A time further ahead (a file copied with its
// times from a host whose clock runs ahead) counts as settled too, so that
// such a file is not read at every look until the clock catches up.
func racy(mtime, start time.Time) bool {
	d := start.Sub(mtime)
	return d < racyWindow && d > -racyWindow
}

// errFileTooLarge is a schedules file over MaxFileBytes.
var errFileTooLarge = errors.New("larger than 4 MiB, the most the scheduler reads (CERTMAIL_SCHEDULES_FILE)")

// fileReader reads the schedules file, and again only when it changed.
// One goroutine at a time calls look: New, then Run's watchFile.
type fileReader struct {
	path  string
	rules schedule.Rules
	// parse is schedule.ParseFile (a test slows it down).
	parse func([]byte, schedule.Rules) ([]*schedule.Compiled, []*schedule.EntryError, error)
	// seen is the file as it was last read; nil when it could not be, or
	// when it had been modified within racyWindow of that read.
	seen os.FileInfo
	// hash is the digest of the content last parsed; "" after a problem
	// reading it, so that the content is taken again once readable.
	hash string
	// problem is the last problem in reading the file that was reported,
	// so that each is reported once.
	problem string
}

func newFileReader(path string, rules schedule.Rules) *fileReader {
	return &fileReader{path: path, rules: rules, parse: schedule.ParseFile}
}

// fileVersion is what a look at the schedules file found: its schedules,
// or why the last good version stays.
type fileVersion struct {
	good []*schedule.Compiled
	bad  []*schedule.EntryError
	err  error // the file could not be read (parse false) or parsed (parse true)
	// parse tells a file that was read but could not be parsed.
	parse bool
}

// look reads and parses the file when it changed since the last look:
// another file at the path (a Kubernetes ConfigMap update points the
// path's symbolic links at a new file), or another size or modification
// time, or a file modified within racyWindow of the last read, and then
// its content. nil when there is nothing new to report: the file
// unchanged, its content unchanged, or the same problem reading it.
func (r *fileReader) look() *fileVersion {
	start := time.Now()
	data, info, err := r.read()
	switch {
	case err != nil:
		r.seen, r.hash = nil, ""
		if err.Error() == r.problem {
			return nil
		}
		r.problem = err.Error()
		return &fileVersion{err: err}
	case data == nil:
		return nil
	}
	r.seen, r.problem = info, ""
	if racy(info.ModTime(), start) {
		r.seen = nil
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	if hash == r.hash {
		return nil
	}
	r.hash = hash
	good, bad, err := r.parse(data, r.rules)
	if err != nil {
		return &fileVersion{err: err, parse: true}
	}
	return &fileVersion{good: good, bad: bad}
}

// read returns the file's content and what it is; data is nil when the
// file is the one last read, unchanged. Only a regular file (after
// following symbolic links) of at most MaxFileBytes is read: a device
// (/dev/zero) would never end, and a named pipe would block the scheduler
// until a writer comes. It is opened without blocking, and judged again
// once open, in case another file took the path meanwhile.
func (r *fileReader) read() (data []byte, info os.FileInfo, err error) {
	if info, err = os.Stat(r.path); err != nil {
		return nil, nil, err
	}
	if err := r.fits(info); err != nil {
		return nil, nil, err
	}
	if r.seen != nil && os.SameFile(r.seen, info) && info.Size() == r.seen.Size() && info.ModTime().Equal(r.seen.ModTime()) {
		return nil, info, nil
	}
	f, err := os.OpenFile(r.path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		return nil, nil, err
	}
	if err := r.fits(info); err != nil {
		return nil, nil, err
	}
	data, err = io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	switch {
	case err != nil:
		return nil, nil, &fs.PathError{Op: "read", Path: r.path, Err: err}
	case len(data) > MaxFileBytes: // it grew since
		return nil, nil, &fs.PathError{Op: "read", Path: r.path, Err: errFileTooLarge}
	}
	return data, info, nil
}

// fits returns why the file info describes is not read: not a regular
// file, or over MaxFileBytes.
func (r *fileReader) fits(info os.FileInfo) error {
	switch mode := info.Mode(); {
	case mode.IsDir():
		return &fs.PathError{Op: "read", Path: r.path, Err: errors.New("is a directory")}
	case !mode.IsRegular():
		return &fs.PathError{Op: "read", Path: r.path, Err: fmt.Errorf("not a regular file (%s)", fileKind(mode))}
	case info.Size() > MaxFileBytes:
		return &fs.PathError{Op: "read", Path: r.path, Err: errFileTooLarge}
	}
	return nil
}

// fileKind names the kind of a file that is not a regular file.
func fileKind(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case mode&fs.ModeCharDevice != 0:
		return "a character device"
	case mode&fs.ModeDevice != 0:
		return "a device"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + mode.String()
}

// watchFile looks at the schedules file every ReloadInterval and sends what
// it found to out, until ctx is done. It runs beside Run's loop, so that
// reading and parsing a large file never holds up the renewal of the
// leader lease or the ticks; the loop takes each version in (takeFile).
func (s *Scheduler) watchFile(ctx context.Context, out chan<- *fileVersion) {
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if v := s.file.look(); v != nil {
			select {
			case out <- v:
			case <-ctx.Done():
				return
			}
		}
	}
}
