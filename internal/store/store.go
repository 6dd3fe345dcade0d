// Package store keeps stowage's durable state: one bbolt file holding a record
// per volume, with its mount ledger. It is the only package that touches bbolt.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// SchemaVersion is the layout of the state file this build reads and writes.
// Bump it, and teach Open to migrate, whenever a record changes incompatibly.
// Version 2 added the intents bucket; version 3 the journal (the file alone
// is no longer the whole state, so an older stowage must refuse it). Open
// migrates a version 1 or 2 file.
const SchemaVersion = 3

// FileName is the state file's name under the daemon's root.
const FileName = "stowage.db"

var (
	bucketMeta    = []byte("meta")
	bucketVolumes = []byte("volumes")
	bucketIntents = []byte("intents")
	keySchema     = []byte("schema")
)

var (
	// ErrNotFound means no record exists under that name.
	ErrNotFound = errors.New("no such volume")
	// ErrExists means a record exists already under that name.
	ErrExists = errors.New("volume already exists")
)

// Volume is the durable record of one volume.
type Volume struct {
	Name      string            `json:"name"`
	Backend   string            `json:"backend"`
	Options   map[string]string `json:"options,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	// Mounts is the ledger: Docker's mount ID → how many times it mounted
	// without unmounting. Docker may repeat an ID, so it is a count, not a set.
	Mounts map[string]Mount `json:"mounts,omitempty"`
	// Private holds facts a backend must remember about this volume (a
	// resolved host path, an image file name), opaque to everyone else.
	Private map[string]string `json:"private,omitempty"`
	// Requested is the create request's own options when they differ from
	// Options (a clone records what it inherits from its source), so a
	// retried Create can be told from a different one. Older records lack it.
	Requested map[string]string `json:"requested,omitempty"`
}

// Mount is one ledger entry.
type Mount struct {
	Count int `json:"count"`
	// Boot is the kernel boot ID when the entry was last counted: an entry
	// from another boot cannot be backed by a live container mount.
	Boot  string    `json:"boot"`
	Since time.Time `json:"since"`
}

// ActiveMounts is the sum of the ledger's counts.
func (v *Volume) ActiveMounts() int {
	n := 0
	for _, m := range v.Mounts {
		n += m.Count
	}
	return n
}

// Clone returns a deep copy, so callers can change it without touching what
// another goroutine reads.
func (v *Volume) Clone() *Volume {
	c := *v
	c.Options = cloneMap(v.Options)
	c.Private = cloneMap(v.Private)
	c.Requested = cloneMap(v.Requested)
	if v.Mounts != nil {
		c.Mounts = make(map[string]Mount, len(v.Mounts))
		for k, m := range v.Mounts {
			c.Mounts[k] = m
		}
	}
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Store is an open state file and its journal. The state in memory (the
// index and the intents) is bbolt's as of the last checkpoint plus every
// journaled change since: reads answer from it, and a change reaches it
// only once its journal entry is durable.
type Store struct {
	db       *bolt.DB
	path     string
	readOnly bool
	log      logrus.FieldLogger

	// Group commit: the first writer leads and commits at once; writers
	// that arrive while it syncs share the next one. Unlike bbolt's Batch
	// this adds no delay to a lone writer. cond tells those waiting for
	// the lead (a checkpoint, Close) that it is free.
	mu      sync.Mutex
	cond    *sync.Cond
	pending []*call
	leading bool

	// Owned by the leader.
	jf       *os.File // the journal, open for writing; nil when read-only
	tail     int64    // where the next entry goes
	gen      uint64   // the generation entries carry (the meta bucket's)
	next     uint64   // the next entry's sequence number
	folded   uint64   // the last sequence number folded into bbolt
	unfolded []mutation
	buf      []byte
	broken   error
	closed   bool
	// jtail is tail, for the checkpointer to read without the lead.
	jtail atomic.Int64
	// lastWrite is when the journal was last written (UnixNano); armed:
	// the checkpointer's idle timer is set and will look at lastWrite, so
	// a write need not wake it.
	lastWrite atomic.Int64
	armed     atomic.Bool

	kick    chan struct{}
	stop    chan struct{}
	stopped bool // under mu
	wg      sync.WaitGroup

	// idx answers Get, List and Scan; see index. intents holds the open
	// intents' records, under idx.mu.
	idx     index
	intents map[string][]byte
	// render makes a record's List element (SetListRenderer).
	render atomic.Pointer[ListRenderer]

	// CommitObserver, if set, is told how long each durable commit took.
	CommitObserver func(time.Duration)

	// Test hooks: told of every fdatasync of the journal, and run after a
	// checkpoint's bbolt commit (an error stops the checkpoint there).
	syncObserver func(what string)
	afterFold    func() error
}

// ListRenderer appends to dst the element a List answer holds for a volume.
// It must be cheap and pure: it runs for every record at SetListRenderer and
// for every committed change.
type ListRenderer func(dst []byte, vol *Volume) []byte

// Options tune Open.
type Options struct {
	// ReadOnly opens the file shared, for inspection; writes fail.
	ReadOnly bool
	// LockTimeout bounds the wait for another process's lock on the file.
	LockTimeout time.Duration
	// Log is told what Open finds amiss in the journal; nil means logrus's
	// standard logger.
	Log logrus.FieldLogger
}

// Open opens (or, if absent and not read-only, creates) the state file at
// path. It refuses — with an error naming the file and the reason — a file
// that is corrupt, locked, of another schema version, or not a stowage state
// file: starting empty over existing volumes would make Docker forget them.
func Open(path string, o Options) (s *Store, err error) {
	if o.LockTimeout == 0 {
		o.LockTimeout = 2 * time.Second
	}
	// bbolt initialises an empty file as a new database: that would be
	// starting empty over a state file someone truncated.
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		return nil, fmt.Errorf("state file %s is empty (0 bytes); stowage will not start over it: restore it from a backup, or, only if this is a new install whose first start was cut short, delete it", path)
	}
	if !o.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("state file %s: cannot create its directory: %w", path, err)
		}
	} else if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	// bbolt panics on some kinds of damage instead of returning an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file %s is corrupt (%v); stowage will not start over it: restore it from a backup, or move it aside only if you know no volume is recorded in it", path, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout, ReadOnly: o.ReadOnly})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("state file %s is locked by another process (is another stowage already running with this root?)", path)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
			return nil, fmt.Errorf("state file %s is corrupt or not a stowage state file (%v); stowage will not start over it: restore it from a backup, or move it aside only if you know no volume is recorded in it", path, err)
		}
		return nil, fmt.Errorf("state file %s: cannot open: %w", path, err)
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	s = &Store{db: db, path: path, readOnly: o.ReadOnly, log: o.Log, intents: map[string][]byte{},
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	if err := s.checkSchema(o.ReadOnly); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.checkIntegrity(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.openJournal(); err != nil {
		if s.jf != nil {
			s.jf.Close()
		}
		db.Close()
		return nil, err
	}
	// Replay and the first fold read the file again: drop those pages too.
	var size int64
	if err := s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }); err == nil {
		s.dropMapped(size)
	}
	if !o.ReadOnly {
		s.wg.Add(1)
		go s.checkpointer()
	}
	return s, nil
}

// openJournal replays the journal into memory and, unless read-only,
// folds it into bbolt at once, so the steady state starts empty.
func (s *Store) openJournal() error {
	var folded, gen uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		var ok bool
		if v := m.Get(keyFolded); v != nil {
			if folded, ok = readU64(v); !ok {
				return fmt.Errorf("state file %s: its journal position is malformed; stowage will not start over it", s.path)
			}
		}
		if v := m.Get(keyGen); v != nil {
			if gen, ok = readU64(v); !ok {
				return fmt.Errorf("state file %s: its journal generation is malformed; stowage will not start over it", s.path)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	jpath := JournalPath(s.path)
	r := readJournal(jpath, folded, gen)
	if r.readError != nil {
		return fmt.Errorf("state journal %s: cannot read (%v); stowage will not start without the changes it may hold: fix its permissions or the disk", jpath, r.readError)
	}
	s.folded, s.gen, s.next = folded, gen, r.next
	if r.foreign {
		l := s.log.WithFields(logrus.Fields{"journal": jpath, "state_file": s.path,
			"entry_seq": r.firstSeq, "entry_generation": r.firstGen, "state_folded": folded, "state_generation": gen})
		if s.readOnly {
			l.Warn("the state journal belongs to another copy of the state file (was one restored from a backup?); ignoring it")
		} else {
			dst, err := moveAside(jpath)
			if err != nil {
				return fmt.Errorf("state journal %s belongs to another copy of the state file %s, and cannot be moved aside: %w", jpath, s.path, err)
			}
			l.WithField("moved_to", dst).Warn("the state journal belongs to another copy of the state file (was one restored from a backup?); kept it, moved aside, unapplied: compare it with the volumes before deleting it")
			r.missing = true
		}
	}
	for i, muts := range r.entries {
		for _, m := range muts {
			var err error
			if m.val != nil && m.bucket == bktVolumes {
				_, err = decode([]byte(m.key), m.val)
			} else if m.val != nil {
				_, err = decodeIntent([]byte(m.key), m.val)
			}
			if err != nil {
				return fmt.Errorf("state journal %s: entry %d: %w; stowage will not start over it: restore the state from a backup", jpath, folded+1+uint64(i), err)
			}
		}
	}
	s.applyMutations(r.entries)
	if s.readOnly {
		return nil
	}
	if err := s.fold(); err != nil {
		if r.missing || r.size != JournalSize {
			return err
		}
		// bbolt cannot take it now (a full disk): carry on in the journal,
		// whose space is its own. What lies past the last replayed entry
		// is an earlier run's cut write; zeroed, it can never pass for
		// the next entry of this generation.
		f, oerr := os.OpenFile(jpath, os.O_RDWR, 0)
		if oerr != nil {
			return fmt.Errorf("state journal %s: cannot open: %w", jpath, oerr)
		}
		s.jf = f
		if _, werr := f.WriteAt(make([]byte, JournalSize-r.end), r.end); werr != nil {
			return fmt.Errorf("%v; and state journal %s: %w", err, jpath, werr)
		}
		if serr := fdatasync(f); serr != nil {
			return fmt.Errorf("%v; and state journal %s: %w", err, jpath, serr)
		}
		s.tail = r.end
		s.jtail.Store(r.end)
		s.log.WithError(err).WithField("journal", jpath).Warn("cannot fold the journal into the state file at start; carrying on in the journal")
		return nil
	}
	if r.missing || r.size != JournalSize {
		// Nothing in it is unfolded now: a new one may replace it.
		f, err := createJournal(jpath)
		if err != nil {
			return fmt.Errorf("state journal %s: cannot create: %w", jpath, err)
		}
		s.jf = f
		return nil
	}
	f, err := os.OpenFile(jpath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("state journal %s: cannot open: %w", jpath, err)
	}
	s.jf = f
	return s.reuse()
}

// dropMapped takes the state file's pages, which the integrity check reads
// through bbolt's read-only shared mapping, out of the process's resident
// memory: the index answers reads. The pages stay in the page cache and
// fault back in when read again (by the check itself, or a write); nothing
// is lost, as the mapping is of the file itself and never written through.
func (s *Store) dropMapped(size int64) {
	if size <= 0 {
		return
	}
	// Best effort: without it, only memory use differs.
	unix.Syscall(unix.SYS_MADVISE, s.db.Info().Data, uintptr(size), unix.MADV_DONTNEED)
}

// dropEvery is how many records the integrity check decodes between two
// dropMapped: ~1-2 MiB of the file, so the file's pages and the index
// being built are never resident together.
const dropEvery = 4096

func (s *Store) checkSchema(readOnly bool) error {
	var found bool
	var version []byte
	var other []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			switch {
			case bytes.Equal(name, bucketMeta):
				found = true
				version = append([]byte(nil), b.Get(keySchema)...)
			case bytes.Equal(name, bucketVolumes), bytes.Equal(name, bucketIntents):
			default:
				other = append(other, string(name))
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("state file %s: cannot read: %w", s.path, err)
	}
	if len(other) > 0 {
		return fmt.Errorf("state file %s is not a stowage state file (it holds buckets %q); stowage will not start over it", s.path, other)
	}
	if !found {
		if readOnly {
			return fmt.Errorf("state file %s has no schema version: it was never initialised by stowage", s.path)
		}
		return s.db.Update(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketVolumes) != nil {
				return fmt.Errorf("state file %s holds volumes but no schema version; stowage will not guess its format", s.path)
			}
			m, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			if err := m.Put(keySchema, []byte(fmt.Sprint(SchemaVersion))); err != nil {
				return err
			}
			if _, err = tx.CreateBucket(bucketVolumes); err != nil {
				return err
			}
			_, err = tx.CreateBucket(bucketIntents)
			return err
		})
	}
	if string(version) == "1" || string(version) == "2" {
		// Version 1 is version 2 without intents, and version 2 is
		// version 3 without a journal: nothing to convert. A read-only
		// look (doctor, ls) reads it as it is.
		if readOnly {
			return nil
		}
		return s.db.Update(func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucketIfNotExists(bucketIntents); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte(fmt.Sprint(SchemaVersion)))
		})
	}
	if string(version) != fmt.Sprint(SchemaVersion) {
		return fmt.Errorf("state file %s has schema version %q; this stowage reads version %d: run the stowage release that wrote it, or a newer one", s.path, version, SchemaVersion)
	}
	return nil
}

// checkIntegrity walks every page and decodes every record once, so damage
// is found at start rather than as a failing Get later, and builds the
// index in the same pass. The file's pages it read are dropped from the
// process as it goes (dropMapped): the whole file resident at once, beside
// the index, would be the daemon's peak.
func (s *Store) checkIntegrity() error {
	return s.db.View(func(tx *bolt.Tx) error {
		defer s.dropMapped(tx.Size())
		for err := range tx.Check() {
			return fmt.Errorf("state file %s is corrupt (%v); stowage will not start over it: restore it from a backup", s.path, err)
		}
		s.dropMapped(tx.Size())
		b := tx.Bucket(bucketVolumes)
		if b == nil {
			return fmt.Errorf("state file %s has no volumes bucket; stowage will not start over it", s.path)
		}
		s.idx.mu.Lock()
		defer s.idx.mu.Unlock()
		n := 0
		if err := b.ForEach(func(k, v []byte) error {
			if _, err := decode(k, v); err != nil {
				return fmt.Errorf("state file %s: %w; stowage will not start over it", s.path, err)
			}
			s.idx.appendSorted(newEntry(string(k), v, nil))
			if n++; n%dropEvery == 0 {
				s.dropMapped(tx.Size())
			}
			return nil
		}); err != nil {
			return err
		}
		ib := tx.Bucket(bucketIntents)
		if ib == nil {
			return nil // a version 1 file opened read-only
		}
		return ib.ForEach(func(k, v []byte) error {
			if _, err := decodeIntent(k, v); err != nil {
				return fmt.Errorf("state file %s: %w; stowage will not start over it", s.path, err)
			}
			s.intents[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
}

// Close folds the journal into the state file and closes both; pending
// commits have finished by then, and later ones fail.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	s.lockLeader()
	var err error
	if s.tail > 0 && s.writable() == nil {
		err = s.checkpoint()
	}
	s.closed = true
	s.unlockLeader()
	if s.jf != nil {
		if cerr := s.jf.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

func decode(k, v []byte) (*Volume, error) {
	vol, ok := fastDecode(v)
	if !ok {
		vol = &Volume{}
		if err := json.Unmarshal(v, vol); err != nil {
			return nil, fmt.Errorf("record %q is unreadable: %v", k, err)
		}
	}
	if vol.Name != string(k) {
		return nil, fmt.Errorf("record %q names volume %q", k, vol.Name)
	}
	return vol, nil
}

// Get returns the record for name, or ErrNotFound. It reads the index:
// the record as last committed.
func (s *Store) Get(name string) (*Volume, error) {
	e, ok := s.idx.get(name)
	if !ok {
		return nil, ErrNotFound
	}
	return decode(e.key(), e.record())
}

// List returns every record, sorted by name.
func (s *Store) List() ([]*Volume, error) {
	out := make([]*Volume, 0, s.idx.len())
	err := s.Scan(func(v *Volume) error {
		out = append(out, v)
		return nil
	})
	return out, err
}

// scanChunk is how many records Scan copies per hold of the index's lock.
const scanChunk = 512

// Scan calls fn with every record in name order. It copies a chunk of
// entries per hold of the index's read lock and calls fn outside it, so a
// slow consumer (List's answer going to a slow client) never holds up a
// commit, and memory does not grow with the number of volumes. A record
// that exists throughout is seen exactly once; one created or deleted
// meanwhile may or may not be seen.
func (s *Store) Scan(fn func(*Volume) error) error { return s.scan(scanChunk, fn) }

func (s *Store) scan(chunk int, fn func(*Volume) error) error {
	return s.scanEntries(chunk, func(e entry) error {
		vol, err := decode(e.key(), e.record())
		if err != nil {
			return err
		}
		return fn(vol)
	})
}

// ScanListings is Scan for List's answer: it calls fn with each volume's
// List element, as SetListRenderer's renderer made it, in name order. The
// bytes are shared: fn must not change or keep them.
func (s *Store) ScanListings(fn func([]byte) error) error {
	if s.render.Load() == nil {
		return errors.New("store: no List renderer set")
	}
	return s.scanEntries(scanChunk, func(e entry) error { return fn(e.listing()) })
}

func (s *Store) scanEntries(chunk int, fn func(entry) error) error {
	var after string
	first := true
	batch := make([]entry, 0, chunk)
	for {
		batch = s.idx.after(after, first, chunk, batch[:0])
		for _, e := range batch {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(batch) < chunk {
			return nil
		}
		after, first = string(batch[len(batch)-1].key()), false
	}
}

// SetListRenderer sets how a volume's List element is made and renders
// every record's now. Later changes are rendered as they commit.
func (s *Store) SetListRenderer(r ListRenderer) error {
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	s.render.Store(&r)
	var scratch []byte
	for _, c := range s.idx.chunks {
		for i, e := range c {
			vol, err := decode(e.key(), e.record())
			if err != nil {
				return err
			}
			c[i], scratch = renderEntry(vol.Name, e.record(), vol, r, scratch)
		}
	}
	return nil
}

// entryFor makes vol's index entry from its committed bytes.
func (s *Store) entryFor(vol *Volume, data []byte) entry {
	if r := s.render.Load(); r != nil {
		e, _ := renderEntry(vol.Name, data, vol, *r, make([]byte, 0, 256))
		return e
	}
	return newEntry(vol.Name, data, nil)
}

// Create stores a new record; ErrExists if the name is taken.
func (s *Store) Create(vol *Volume) error {
	data, err := encode(vol)
	if err != nil {
		return err
	}
	vol = vol.Clone()
	return s.commit(func(t *txn) error {
		if t.get(bktVolumes, vol.Name) != nil {
			return ErrExists
		}
		return t.put(bktVolumes, vol.Name, data, vol)
	})
}

// Update applies fn to the record for name and stores the result in one
// change. fn may run more than once and must only change vol.
func (s *Store) Update(name string, fn func(vol *Volume) error) (*Volume, error) {
	var out *Volume
	err := s.commit(func(t *txn) error {
		raw := t.get(bktVolumes, name)
		if raw == nil {
			return ErrNotFound
		}
		vol, err := decode([]byte(name), raw)
		if err != nil {
			return err
		}
		if err := fn(vol); err != nil {
			return err
		}
		if vol.Name != name {
			return fmt.Errorf("store: update of %q may not rename it", name)
		}
		data, err := encode(vol)
		if err != nil {
			return err
		}
		out = vol
		return t.put(bktVolumes, name, data, vol.Clone())
	})
	return out, err
}

// Delete removes the record for name; ErrNotFound if there is none.
func (s *Store) Delete(name string) error {
	return s.commit(func(t *txn) error {
		if t.get(bktVolumes, name) == nil {
			return ErrNotFound
		}
		t.del(bktVolumes, name)
		return nil
	})
}
