package schedule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The record under publishedKey tells scheduler replicas with different
// schedules files apart from an edit of the file or a rolling deploy. Each
// leader publishes its own file (MirrorFile), so replicas whose files differ
// swap the file's schedules at each change of leader; the record keeps
// which version of the file (its digest) which replica published last, and
// the version before it, so that a leader that publishes again the version
// another replica replaced says so.

// maxRecordedBytes bounds each field of the record as it is kept and as
// lines name it: a replica id is a lease token (32 hex digits), a digest
// 64, a time 20, unless someone wrote the hash by hand.
const maxRecordedBytes = 128

// shortDigest is how many hex digits of a digest lines show: enough to tell
// versions apart by eye.
const shortDigest = 12

// publication is one version of the schedules file as a leader published it.
type publication struct {
	by     string // the publishing scheduler replica: its leader lease token
	digest string // fileDigest of the schedules published
	at     string // when by published it, RFC 3339
}

// publications is the record: the version published last (cur) and the
// one before it (prev), each a few bytes, so the record never grows.
type publications struct{ cur, prev publication }

// publicationFields are the record's fields, in the order
// decodePublications reads them: the hash is read by name, so that
// whatever else it holds is never read.
var publicationFields = []string{"by", "digest", "at", "prev_by", "prev_digest", "prev_at"}

// decodePublications reads the record from the values of its
// publicationFields (nil for a field not there: no leader of this version
// published yet).
func decodePublications(vals []any) publications {
	get := func(i int) string {
		if i >= len(vals) {
			return ""
		}
		v, _ := vals[i].(string)
		return capBytes(v, maxRecordedBytes)
	}
	return publications{
		cur:  publication{by: get(0), digest: get(1), at: get(2)},
		prev: publication{by: get(3), digest: get(4), at: get(5)},
	}
}

// after returns the record once replica by published version digest at
// time at. Another version moves the current one to prev; the same version
// published again (by a replica with the same file, or by a leader that
// leads again) only names who published it last, so that prev stays the
// version before.
func (p publications) after(by, digest, at string) publications {
	if p.cur.digest != digest {
		p.prev = p.cur
	}
	p.cur = publication{by: capBytes(by, maxRecordedBytes), digest: digest, at: at}
	return p
}

// write replaces the record with p, all six fields at once.
func (p publications) write(ctx context.Context, pipe redis.Pipeliner) {
	f := publicationFields
	pipe.HSet(ctx, publishedKey, f[0], p.cur.by, f[1], p.cur.digest, f[2], p.cur.at,
		f[3], p.prev.by, f[4], p.prev.digest, f[5], p.prev.at)
}

// news is what a publication tells of the replicas (see
// publications.change).
type news int

const (
	// sameFile: the first publication recorded, the version published
	// last, or an edit by the replica that published it.
	sameFile news = iota
	// otherFile: another replica's version replaced, as a rolling deploy
	// does once.
	otherFile
	// flap: another replica's version replaced by the version it had
	// replaced: the replicas' files differ, and the schedules swap at each
	// change of leader. Replicas restart with new lease tokens, so the
	// versions are compared, not the replicas: a rollback to the version a
	// deploy replaced looks the same, and warns once.
	flap
)

// change says what replica by publishing version digest tells, the record
// being p before it.
func (p publications) change(by, digest string) news {
	switch {
	case p.cur.digest == "" || p.cur.digest == digest || p.cur.by == capBytes(by, maxRecordedBytes):
		return sameFile
	case p.prev.digest == digest:
		return flap
	}
	return otherFile
}

// reportPublication logs what replica by publishing version digest tells,
// the record being before: a WARN for a flap, an INFO for another replica's
// version replaced, nothing otherwise.
func (st *Store) reportPublication(before publications, by, digest string) {
	fields := []zap.Field{zap.String("replica", capBytes(by, maxRecordedBytes)), zap.String("digest", short(digest)),
		zap.String("other_replica", before.cur.by), zap.String("other_digest", short(before.cur.digest)),
		zap.String("published_at", before.cur.at)}
	switch before.change(by, digest) {
	case flap:
		st.log.Warn("the scheduler replicas have different schedules files: each leader publishes its own, so the schedules "+
			"change at each change of leader; give every scheduler the same CERTMAIL_SCHEDULES_FILE", fields...)
	case otherFile:
		st.log.Info("published a schedules file that differs from the one another scheduler published", fields...)
	}
}

// fileDigest is the digest of a version of the schedules file as published,
// from its entries' digests (as mirror computes them): a SHA-256 of them
// sorted, since the order of the entries in the file changes nothing that
// is published.
func fileDigest(entries []string) string {
	h := sha256.New()
	for _, d := range slices.Sorted(slices.Values(entries)) {
		_, _ = io.WriteString(h, d+"\n") // a hash.Hash never fails to write
	}
	return hex.EncodeToString(h.Sum(nil))
}

// short is the first shortDigest hex digits of a digest.
func short(digest string) string { return digest[:min(len(digest), shortDigest)] }

// capBytes cuts s to at most n bytes, dropping a character cut in two.
func capBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
