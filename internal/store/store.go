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

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// SchemaVersion is the layout of the state file this build reads and writes.
// Bump it, and teach Open to migrate, whenever a record changes incompatibly.
// Version 2 added the intents bucket; Open migrates a version 1 file.
const SchemaVersion = 2

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

// Store is an open state file.
type Store struct {
	db   *bolt.DB
	path string

	// Group commit: the first writer commits at once; writers that arrive
	// while a commit is syncing share the next one. Unlike bbolt's Batch this
	// adds no delay to a lone writer.
	mu      sync.Mutex
	pending []*call
	leading bool

	// idx answers Get, List and Scan; see index.
	idx index
	// render makes a record's List element (SetListRenderer).
	render atomic.Pointer[ListRenderer]

	// CommitObserver, if set, is told how long each durable commit took.
	CommitObserver func(time.Duration)
}

type call struct {
	fn func(*bolt.Tx) error
	// apply, if set, brings the index up to date with what fn's last run
	// wrote; it runs, under the index's lock, only once that run committed.
	apply func(*index)
	done  chan error
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
	s = &Store{db: db, path: path}
	if err := s.checkSchema(o.ReadOnly); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.checkIntegrity(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
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
	if string(version) == "1" {
		// Version 1 is version 2 without intents: nothing to convert. A
		// read-only look (doctor, ls) reads it as it is.
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
			return nil
		})
	})
}

// Close closes the file; pending commits have finished by then.
func (s *Store) Close() error { return s.db.Close() }

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
	data, err := json.Marshal(vol)
	if err != nil {
		return err
	}
	e := s.entryFor(vol, data)
	return s.commitApply(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		if b.Get([]byte(vol.Name)) != nil {
			return ErrExists
		}
		return b.Put([]byte(vol.Name), data)
	}, func(x *index) { x.put(e) })
}

// Update applies fn to the record for name and stores the result in one
// transaction. fn may run more than once and must only change vol.
func (s *Store) Update(name string, fn func(vol *Volume) error) (*Volume, error) {
	var out *Volume
	var e entry
	err := s.commitApply(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		raw := b.Get([]byte(name))
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
		data, err := json.Marshal(vol)
		if err != nil {
			return err
		}
		out, e = vol, s.entryFor(vol, data)
		return b.Put([]byte(name), data)
	}, func(x *index) { x.put(e) })
	return out, err
}

// Delete removes the record for name; ErrNotFound if there is none.
func (s *Store) Delete(name string) error {
	return s.commitApply(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes)
		if b.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(name))
	}, func(x *index) { x.del(name) })
}

// commit runs fn in a durable read-write transaction, grouped with any
// writers that arrive meanwhile. fn must be safe to run more than once.
func (s *Store) commit(fn func(*bolt.Tx) error) error { return s.commitApply(fn, nil) }

// commitApply is commit, then apply to the index once fn's transaction
// committed (and never if it did not).
func (s *Store) commitApply(fn func(*bolt.Tx) error, apply func(*index)) error {
	c := &call{fn: fn, apply: apply, done: make(chan error, 1)}
	s.mu.Lock()
	s.pending = append(s.pending, c)
	if s.leading {
		s.mu.Unlock()
		return <-c.done
	}
	s.leading = true
	for len(s.pending) > 0 {
		group := s.pending
		s.pending = nil
		s.mu.Unlock()
		s.run(group)
		s.mu.Lock()
	}
	s.leading = false
	s.mu.Unlock()
	return <-c.done
}

// errMember marks a group transaction aborted by one member's error.
type errMember struct{ err error }

func (e errMember) Error() string { return e.err.Error() }

func (s *Store) run(group []*call) {
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, c := range group {
			if err := c.fn(tx); err != nil {
				return errMember{err}
			}
		}
		return nil
	})
	if s.CommitObserver != nil {
		s.CommitObserver(time.Since(start))
	}
	if err == nil {
		// In commit order, under one hold of the lock: a reader sees the
		// state before this group or after it.
		s.idx.mu.Lock()
		for _, c := range group {
			if c.apply != nil {
				c.apply(&s.idx)
			}
		}
		s.idx.mu.Unlock()
	}
	var member errMember
	if err == nil || (len(group) == 1 && !errors.As(err, &member)) {
		for _, c := range group {
			c.done <- err
		}
		return
	}
	if len(group) == 1 {
		group[0].done <- member.err
		return
	}
	// One member failed (or the commit did): give each its own transaction
	// so one caller's error is not another's.
	for _, c := range group {
		s.run([]*call{c})
	}
}
