package safefs

import "sync"

// SharedSync is one directory's fsync shared among concurrent callers:
// 64 Creates in one parent need the parent's new entries durable, and one
// fsync that begins after all 64 mkdirs covers them all. A caller returns
// once a sync that began after its call has finished, with that sync's
// error.
type SharedSync struct {
	dir string
	mu  sync.Mutex // guards next
	// next is the round the next sync to begin will answer: callers join
	// it until a caller holding run takes it.
	next *syncRound
	run  sync.Mutex // one sync at a time: a round begins after the last
	sync func(dir string) error
}

type syncRound struct {
	done chan struct{}
	err  error
}

// NewSharedSync shares fsyncs of dir.
func NewSharedSync(dir string) *SharedSync { return &SharedSync{dir: dir, sync: SyncDir} }

// Sync returns once every change made to the directory's entries before
// the call is durable.
func (s *SharedSync) Sync() error {
	s.mu.Lock()
	r := s.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		s.next = r
	}
	s.mu.Unlock()

	s.run.Lock()
	s.mu.Lock()
	mine := s.next == r
	if mine {
		// Later callers start a round of their own: this sync may
		// begin before their change.
		s.next = nil
	}
	s.mu.Unlock()
	if mine {
		r.err = s.sync(s.dir)
		close(r.done)
	}
	s.run.Unlock()
	<-r.done
	return r.err
}

// SyncNewIn makes dir, just made in s's directory, durable: its own inode
// (owner, mode), then its entry, the entry's sync shared.
func (s *SharedSync) SyncNewIn(dir string) error {
	if err := SyncDir(dir); err != nil {
		return err
	}
	return s.Sync()
}
