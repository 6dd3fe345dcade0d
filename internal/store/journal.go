package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The journal makes a change durable with one fdatasync where a bbolt
// commit costs two (its pages, then its meta page). It is a file of fixed
// size beside the state file, written full of zeros once, so that
// overwriting it never allocates and fdatasync has no metadata to commit.
// A group of changes is appended at the tail with one pwrite and one
// fdatasync; the checkpointer later folds them into bbolt in one
// transaction that also records the last folded sequence number and a new
// generation id, and then the journal is reused from its start.
//
// Entry layout (little endian):
//
//	0  u32 length of the whole entry, header included
//	4  u32 CRC32C (Castagnoli) of bytes 8..length
//	8  u64 generation id: the one the state file's meta bucket holds
//	16 u64 sequence number: folded+1, folded+2, … with no gap
//	24 u8  format version (journalVersion)
//	25 u8  zero
//	26 u16 number of mutations
//	28 u32 zero
//	32 mutations: u8 bucket, u8 op, u16 key length, u32 value length, key, value
//
// Replay takes entries from the start while each is whole (length, CRC),
// of the state file's generation and the next sequence number, and stops at
// the first that is not: a cut write is never applied in part.
const (
	// JournalSize is the journal file's fixed size.
	JournalSize    = 2 << 20
	journalHeader  = 32
	journalVersion = 1
	mutHeader      = 8
	// journalHead is what a checkpoint zeroes to mark the journal empty.
	journalHead = 4096
)

const (
	bktVolumes byte = 1
	bktIntents byte = 2

	opPut byte = 1
	opDel byte = 2
)

var (
	keyFolded = []byte("journal-folded")
	keyGen    = []byte("journal-generation")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// JournalPath is the journal's path for the state file at statePath.
func JournalPath(statePath string) string {
	return strings.TrimSuffix(statePath, filepath.Ext(statePath)) + ".journal"
}

// JournalPending reports whether the journal beside the state file at
// statePath holds changes not yet folded into it: false once a checkpoint
// has reused it (or when there is none). It reads without any lock.
func JournalPending(statePath string) (bool, error) {
	f, err := os.Open(JournalPath(statePath))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return false, err
	}
	return binary.LittleEndian.Uint32(b[:]) != 0, nil
}

// mutation is one logical change: val nil deletes the key.
type mutation struct {
	bucket byte
	key    string
	val    []byte
	// vol is val decoded, when the call had it at hand.
	vol *Volume
}

func mutationsSize(muts []mutation) int {
	n := journalHeader
	for _, m := range muts {
		n += mutHeader + len(m.key) + len(m.val)
	}
	return n
}

// appendEntry appends muts as one entry. The caller has checked the sizes.
func appendEntry(dst []byte, gen, seq uint64, muts []mutation) []byte {
	start := len(dst)
	var h [journalHeader]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(mutationsSize(muts)))
	binary.LittleEndian.PutUint64(h[8:], gen)
	binary.LittleEndian.PutUint64(h[16:], seq)
	h[24] = journalVersion
	binary.LittleEndian.PutUint16(h[26:], uint16(len(muts)))
	dst = append(dst, h[:]...)
	for _, m := range muts {
		var mh [mutHeader]byte
		mh[0] = m.bucket
		mh[1] = opPut
		if m.val == nil {
			mh[1] = opDel
		}
		binary.LittleEndian.PutUint16(mh[2:], uint16(len(m.key)))
		binary.LittleEndian.PutUint32(mh[4:], uint32(len(m.val)))
		dst = append(append(append(dst, mh[:]...), m.key...), m.val...)
	}
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+8:], castagnoli))
	return dst
}

type entryHead struct {
	gen, seq uint64
	n        int // bytes, header included
}

// parseEntry reads the entry at the start of b; ok is false for anything
// that is not one whole, well-formed entry (zeros, a cut write, garbage).
func parseEntry(b []byte) (h entryHead, muts []mutation, ok bool) {
	if len(b) < journalHeader {
		return h, nil, false
	}
	n := int(binary.LittleEndian.Uint32(b[0:]))
	if n < journalHeader || n > len(b) {
		return h, nil, false
	}
	if crc32.Checksum(b[8:n], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return h, nil, false
	}
	if b[24] != journalVersion {
		return h, nil, false
	}
	h = entryHead{gen: binary.LittleEndian.Uint64(b[8:]), seq: binary.LittleEndian.Uint64(b[16:]), n: n}
	count := int(binary.LittleEndian.Uint16(b[26:]))
	p := b[journalHeader:n]
	for i := 0; i < count; i++ {
		if len(p) < mutHeader {
			return h, nil, false
		}
		bk, op := p[0], p[1]
		kl, vl := int(binary.LittleEndian.Uint16(p[2:])), int(binary.LittleEndian.Uint32(p[4:]))
		p = p[mutHeader:]
		if (bk != bktVolumes && bk != bktIntents) || (op != opPut && op != opDel) || kl == 0 || kl+vl > len(p) || (op == opDel && vl != 0) {
			return h, nil, false
		}
		m := mutation{bucket: bk, key: string(p[:kl])}
		if op == opPut {
			m.val = append(make([]byte, 0, vl), p[kl:kl+vl]...)
		}
		muts = append(muts, m)
		p = p[kl+vl:]
	}
	if len(p) != 0 {
		return h, nil, false
	}
	return h, muts, true
}

// replay is what Open found in the journal.
type replay struct {
	entries [][]mutation
	next    uint64 // the sequence number the next entry takes
	end     int64  // where the last entry replayed ends
	// foreign is set when the journal's first entry is whole but of
	// another generation, or out of sequence: it belongs to another state
	// file (this one was restored from a backup, or the journal was).
	foreign   bool
	firstSeq  uint64
	firstGen  uint64
	size      int64
	missing   bool
	readError error
}

// readJournal parses the journal at path against the state file's folded
// sequence number and generation. It only reads.
func readJournal(path string, folded, gen uint64) (r replay) {
	r.next = folded + 1
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		r.missing = true
		return r
	}
	if err != nil {
		r.readError = err
		return r
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		r.readError = err
		return r
	}
	r.size = fi.Size()
	if r.size < journalHeader {
		return r
	}
	// Mapped, not read: the pages leave the process with the mapping.
	b, err := unix.Mmap(int(f.Fd()), 0, int(r.size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		r.readError = err
		return r
	}
	defer unix.Munmap(b)
	for off := 0; ; {
		h, muts, ok := parseEntry(b[off:])
		if !ok || h.seq <= folded {
			// The end, or an entry folded already: the journal was reused
			// from its start after it (or the checkpoint's reuse was cut).
			return r
		}
		if h.gen != gen || h.seq != r.next {
			if off == 0 {
				r.foreign, r.firstSeq, r.firstGen = true, h.seq, h.gen
			}
			// Past the first entry this is an earlier run's leftover
			// beyond the last whole write: the end.
			return r
		}
		r.entries = append(r.entries, muts)
		r.next++
		off += h.n
		r.end = int64(off)
	}
}

// createJournal writes a new zero-filled journal at path (through a
// temporary file and a rename, so a cut creation leaves no short journal).
func createJournal(path string) (*os.File, error) {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < JournalSize; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros, off); err != nil {
			f.Close()
			os.Remove(tmp)
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// moveAside renames a journal that belongs to another state file out of
// the way, keeping it: it may hold the only copy of changes.
func moveAside(path string) (string, error) {
	dst := fmt.Sprintf("%s.foreign-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(path, dst); err != nil {
		return "", err
	}
	return dst, syncDir(filepath.Dir(path))
}

func newGeneration() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		if g := binary.LittleEndian.Uint64(b[:]); g != 0 {
			return g, nil
		}
	}
}

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
