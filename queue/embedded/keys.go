package embedded

import (
	"encoding/binary"
	"math"
	"time"
)

// Bucket names. See the package documentation for what each holds.
var (
	bucketMeta    = []byte("meta")
	bucketMsg     = []byte("msg")
	bucketBody    = []byte("ibody")
	bucketFiles   = []byte("files")
	bucketIdem    = []byte("idem")
	bucketDest    = []byte("dest")
	bucketRDue    = []byte("rdue")
	bucketDDue    = []byte("ddue")
	bucketArr     = []byte("arr")
	bucketCorrupt = []byte("corrupt")

	allBuckets = [][]byte{bucketMeta, bucketMsg, bucketBody, bucketFiles, bucketIdem, bucketDest,
		bucketRDue, bucketDDue, bucketArr, bucketCorrupt}

	keyFormat = []byte("format")
)

// formatVersion is the on-disk layout version kept under meta/format.
const formatVersion = 1

// Index keys start with fixed-width big-endian times so that byte order is
// time order: nanoseconds since 1970 with the sign bit flipped. Times outside
// the int64 nanosecond range (years before 1678 or after 2262) are clamped,
// which keeps their order relative to every representable time; the zero
// time, "due at once", sorts first.
const timeLen = 8

var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

func nanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func appendTime(b []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(n)^(1<<63))
}

func readTime(b []byte) int64 {
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
}

// destPrefix is the key prefix of a destination in rdue: the
// uvarint length of the name, then the name, so that no destination's
// prefix is a prefix of another's.
func destPrefix(dest string) []byte {
	b := binary.AppendUvarint(make([]byte, 0, len(dest)+2+timeLen+32), uint64(len(dest)))
	return append(b, dest...)
}

// rdueKey files one (message, destination, NextAttempt) group in the
// per-destination due index: destPrefix, time, ID.
func rdueKey(dest string, t int64, id string) []byte {
	return append(appendTime(destPrefix(dest), t), id...)
}

// parseRDue splits an rdue key. ok is false for a malformed key.
func parseRDue(k []byte) (dest string, t int64, id string, ok bool) {
	n, w := binary.Uvarint(k)
	if w <= 0 || uint64(len(k)-w) < n+timeLen {
		return "", 0, "", false
	}
	k = k[w:]
	return string(k[:n]), readTime(k[n:]), string(k[n+timeLen:]), true
}

// ddueKey files a destination in the destination-level due index under the
// earliest time it could yield work: max(its earliest rdue time, NextAllowed).
func ddueKey(t int64, dest string) []byte {
	return append(appendTime(make([]byte, 0, timeLen+len(dest)), t), dest...)
}

// arrKey files a message with waiting recipients by arrival, for
// ClaimParams.ExpireArrivedBefore.
func arrKey(arrived time.Time, id string) []byte {
	return append(appendTime(make([]byte, 0, timeLen+len(id)), nanos(arrived)), id...)
}
