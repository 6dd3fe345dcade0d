package driver

import "sync"

// keyedMutex serialises calls per volume name. The map's own lock is held
// only to find or drop an entry, never across work, so operations on
// different volumes never wait for each other.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func newKeyedMutex() *keyedMutex { return &keyedMutex{locks: map[string]*keyedEntry{}} }

// Lock locks name and returns its unlock.
func (k *keyedMutex) Lock(name string) (unlock func()) {
	k.mu.Lock()
	e := k.locks[name]
	if e == nil {
		e = &keyedEntry{}
		k.locks[name] = e
	}
	e.refs++
	k.mu.Unlock()

	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, name)
		}
		k.mu.Unlock()
	}
}
