package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// checkpointIdle is how long the journal must see no write before the
// checkpointer folds it into bbolt.
const checkpointIdle = 500 * time.Millisecond

// call is one writer's change, computed by the leader against the state in
// memory plus what earlier members of its group change.
type call struct {
	fn   func(*txn) error
	done chan error
}

type mkey struct {
	bucket byte
	key    string
}

// txn is what a call's fn reads and changes: memory as of every earlier
// member of its group, and its own mutations so far.
type txn struct {
	s     *Store
	group map[mkey][]byte // nil value: deleted
	muts  []mutation
}

func (t *txn) get(bucket byte, key string) []byte {
	for i := len(t.muts) - 1; i >= 0; i-- {
		if m := t.muts[i]; m.bucket == bucket && m.key == key {
			return m.val
		}
	}
	if v, ok := t.group[mkey{bucket, key}]; ok {
		return v
	}
	return t.s.memGet(bucket, key)
}

// put records key = val; vol, if not nil, is val decoded.
func (t *txn) put(bucket byte, key string, val []byte, vol *Volume) error {
	if key == "" || len(key) > 0xffff {
		return fmt.Errorf("store: a key of %d bytes cannot be stored", len(key))
	}
	if val == nil {
		val = []byte{}
	}
	t.muts = append(t.muts, mutation{bucket: bucket, key: key, val: val, vol: vol})
	return nil
}

// del deletes key, if it is there.
func (t *txn) del(bucket byte, key string) {
	if t.get(bucket, key) != nil {
		t.muts = append(t.muts, mutation{bucket: bucket, key: key})
	}
}

// memGet reads the state in memory: bbolt and the journal as replayed and
// committed since.
func (s *Store) memGet(bucket byte, key string) []byte {
	if bucket == bktVolumes {
		e, ok := s.idx.get(key)
		if !ok {
			return nil
		}
		return e.record()
	}
	s.idx.mu.RLock()
	defer s.idx.mu.RUnlock()
	return s.intents[key]
}

// commit runs fn under the group-commit leader and answers once its
// changes are durable in the journal (and in memory). Writers that arrive
// while a group is syncing share the next one; a lone writer waits for
// nothing but its own sync.
func (s *Store) commit(fn func(*txn) error) error {
	c := &call{fn: fn, done: make(chan error, 1)}
	s.mu.Lock()
	s.pending = append(s.pending, c)
	if s.leading {
		s.mu.Unlock()
		return <-c.done
	}
	s.leading = true
	s.lead()
	return <-c.done
}

// lead runs pending groups until there are none, then gives up the lead.
// It is called with mu held and leading set, and returns with mu unlocked.
func (s *Store) lead() {
	for len(s.pending) > 0 {
		group := s.pending
		s.pending = nil
		s.mu.Unlock()
		s.run(group)
		s.mu.Lock()
	}
	s.leading = false
	s.cond.Broadcast()
	s.mu.Unlock()
}

// lockLeader takes the lead for work that must see no commit meanwhile
// (a checkpoint, Close); unlockLeader runs what queued up meanwhile.
func (s *Store) lockLeader() {
	s.mu.Lock()
	for s.leading {
		s.cond.Wait()
	}
	s.leading = true
	s.mu.Unlock()
}

func (s *Store) unlockLeader() {
	s.mu.Lock()
	s.lead()
}

func (s *Store) writable() error {
	switch {
	case s.readOnly:
		return fmt.Errorf("state file %s is open read-only", s.path)
	case s.closed:
		return fmt.Errorf("state file %s is closed", s.path)
	}
	return s.broken
}

type member struct {
	c    *call
	muts []mutation
	err  error
}

func (s *Store) run(group []*call) {
	if err := s.writable(); err != nil {
		for _, c := range group {
			c.done <- err
		}
		return
	}
	overlay := make(map[mkey][]byte)
	members := make([]member, 0, len(group))
	for _, c := range group {
		t := &txn{s: s, group: overlay}
		err := c.fn(t)
		if err == nil && mutationsSize(t.muts) > JournalSize/2 {
			err = fmt.Errorf("state file %s: a change of %d bytes is larger than the journal takes", s.path, mutationsSize(t.muts))
		}
		if err != nil {
			// Answered after the group's sync: the error may rest on an
			// earlier member's change, which must be durable first.
			members = append(members, member{c: c, err: err})
			continue
		}
		for _, m := range t.muts {
			overlay[mkey{m.bucket, m.key}] = m.val
		}
		members = append(members, member{c: c, muts: t.muts})
	}
	written, err := s.write(members)
	for i, m := range members {
		switch {
		case m.err != nil:
			m.c.done <- m.err
		case i < written:
			m.c.done <- nil
		default:
			m.c.done <- err
		}
	}
}

// write appends the members' entries with one write and one fdatasync (two
// and a checkpoint between, if the journal fills), then applies them to
// memory in order. members[:written] are durable whatever err says.
func (s *Store) write(members []member) (written int, err error) {
	buf := s.buf[:0]
	from, entries := 0, uint64(0)
	for i, m := range members {
		if m.err != nil || len(m.muts) == 0 {
			continue
		}
		if size := mutationsSize(m.muts); s.tail+int64(len(buf)+size) > JournalSize {
			// Full: what fits goes first, then a checkpoint frees the
			// journal. Writers wait meanwhile; nothing is dropped.
			if err := s.flush(members[from:i], buf, entries); err != nil {
				return from, err
			}
			if err := s.checkpoint(); err != nil {
				return i, err
			}
			from, entries, buf = i, 0, buf[:0]
		}
		buf = appendEntry(buf, s.gen, s.next+entries, m.muts)
		entries++
	}
	if err := s.flush(members[from:], buf, entries); err != nil {
		return from, err
	}
	if cap(buf) <= 64<<10 {
		s.buf = buf[:0]
	}
	return len(members), nil
}

func (s *Store) flush(members []member, buf []byte, entries uint64) error {
	if len(buf) > 0 {
		start := time.Now()
		_, err := s.jf.WriteAt(buf, s.tail)
		if err == nil {
			err = fdatasync(s.jf)
		}
		s.observeSync("journal")
		if s.CommitObserver != nil {
			s.CommitObserver(time.Since(start))
		}
		if err != nil {
			// After a failed fdatasync the file's state is unknown: no
			// later write may be acknowledged on top of it.
			s.broken = fmt.Errorf("state journal %s: write failed (%v); changes since are refused: restart stowage", s.jf.Name(), err)
			s.log.WithError(err).WithField("journal", s.jf.Name()).Error("state journal write failed; refusing further changes")
			return s.broken
		}
		s.tail += int64(len(buf))
		s.next += entries
		s.jtail.Store(s.tail)
		s.lastWrite.Store(start.UnixNano())
	}
	s.applyMembers(members)
	// Waking the checkpointer costs a thread wake-up per commit; an armed
	// one reads lastWrite when its timer fires.
	if len(buf) > 0 && (!s.armed.Load() || s.tail >= JournalSize/2) {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// applyMembers brings memory up to date with members' durable changes, in
// commit order, under one hold of the lock: a reader sees the state before
// this group or after it.
func (s *Store) applyMembers(members []member) {
	var all [][]mutation
	for _, m := range members {
		if m.err == nil && len(m.muts) > 0 {
			all = append(all, m.muts)
		}
	}
	s.applyMutations(all)
}

func (s *Store) applyMutations(all [][]mutation) {
	if len(all) == 0 {
		return
	}
	ents := make([][]entry, len(all))
	for i, muts := range all {
		ents[i] = make([]entry, len(muts))
		for j, m := range muts {
			if m.bucket != bktVolumes || m.val == nil {
				continue
			}
			vol := m.vol
			if vol == nil {
				var err error
				if vol, err = decode([]byte(m.key), m.val); err != nil {
					ents[i][j] = newEntry(m.key, m.val, nil)
					continue
				}
			}
			ents[i][j] = s.entryFor(vol, m.val)
		}
	}
	s.idx.mu.Lock()
	for i, muts := range all {
		for j, m := range muts {
			switch {
			case m.bucket == bktVolumes && m.val == nil:
				s.idx.del(m.key)
			case m.bucket == bktVolumes:
				s.idx.put(ents[i][j])
			case m.val == nil:
				delete(s.intents, m.key)
			default:
				s.intents[m.key] = m.val
			}
		}
		s.unfolded = append(s.unfolded, muts...)
	}
	s.idx.mu.Unlock()
}

func (s *Store) observeSync(what string) {
	if s.syncObserver != nil {
		s.syncObserver(what)
	}
}

// fold writes every journaled change into bbolt in one durable
// transaction, which also records the last folded sequence number and the
// generation later entries carry. The caller holds the lead.
func (s *Store) fold() error {
	gen, err := newGeneration()
	if err != nil {
		return fmt.Errorf("state file %s: checkpoint: %w", s.path, err)
	}
	last := s.next - 1
	err = s.db.Update(func(tx *bolt.Tx) error {
		vb, ib := tx.Bucket(bucketVolumes), tx.Bucket(bucketIntents)
		for _, m := range s.unfolded {
			b := vb
			if m.bucket == bktIntents {
				b = ib
			}
			if b == nil {
				return errors.New("a bucket is missing")
			}
			var err error
			if m.val == nil {
				err = b.Delete([]byte(m.key))
			} else {
				err = b.Put([]byte(m.key), m.val)
			}
			if err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyFolded, u64(last)); err != nil {
			return err
		}
		return meta.Put(keyGen, u64(gen))
	})
	if err != nil {
		return fmt.Errorf("state file %s: checkpoint of the journal failed (the journal keeps the changes): %w", s.path, err)
	}
	s.idx.mu.Lock()
	s.unfolded = nil
	s.idx.mu.Unlock()
	s.folded, s.gen = last, gen
	if s.afterFold != nil {
		return s.afterFold()
	}
	return nil
}

// reuse marks the journal empty. Until it is durable, replay finds entries
// whose sequence numbers are folded already and skips them.
func (s *Store) reuse() error {
	_, err := s.jf.WriteAt(make([]byte, journalHead), 0)
	if err == nil {
		err = fdatasync(s.jf)
	}
	s.observeSync("reuse")
	if err != nil {
		// Entries written now would carry the new generation over an
		// unknown head: refuse them.
		s.broken = fmt.Errorf("state journal %s: reuse after a checkpoint failed (%v); changes are refused: restart stowage", s.jf.Name(), err)
		return s.broken
	}
	s.tail = 0
	s.jtail.Store(0)
	return nil
}

// checkpoint is fold, then reuse; the caller holds the lead.
func (s *Store) checkpoint() error {
	if err := s.writable(); err != nil {
		return err
	}
	start := time.Now()
	if err := s.fold(); err != nil {
		s.log.WithError(err).Error("checkpoint")
		return err
	}
	if err := s.reuse(); err != nil {
		s.log.WithError(err).Error("checkpoint")
		return err
	}
	s.log.WithField("took", time.Since(start).Round(time.Microsecond)).Debug("journal folded into the state file")
	return nil
}

// checkpointer folds the journal once it is half full, or once writes
// paused for checkpointIdle.
func (s *Store) checkpointer() {
	defer s.wg.Done()
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	waiting := false
	for {
		select {
		case <-s.stop:
			idle.Stop()
			return
		case <-s.kick:
			if s.jtail.Load() < JournalSize/2 {
				if !waiting {
					idle.Reset(checkpointIdle)
					waiting = true
					s.armed.Store(true)
				}
				continue
			}
		case <-idle.C:
			if !waiting {
				continue
			}
			// Writes since the timer was set did not kick: wait until
			// the last of them is checkpointIdle old.
			if quiet := time.Since(time.Unix(0, s.lastWrite.Load())); quiet < checkpointIdle {
				idle.Reset(checkpointIdle - quiet)
				continue
			}
		}
		waiting = false
		s.armed.Store(false)
		idle.Stop()
		s.lockLeader()
		if s.tail > 0 && s.writable() == nil {
			s.checkpoint()
		}
		s.unlockLeader()
	}
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
	return b
}

func readU64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	var v uint64
	for i := 0; i < 8; i++ {
		v |= uint64(b[i]) << (8 * i)
	}
	return v, true
}
