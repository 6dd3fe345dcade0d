package store

import (
	"sort"
	"sync"
)

// index is the volumes bucket in memory, so Get and List never open a
// transaction or decode more than the one record they answer with. The file
// and its journal stay the truth: Open builds the index from the file in
// the integrity check's pass and replays the journal into it, and a change
// reaches the index only once its journal entry is durable, so a reader
// sees the state before or after a commit, never a change that could still
// be lost.
//
// Each entry is one allocation holding the name, the record's bytes as
// committed and its pre-rendered List element (see SetListRenderer): at
// 100 000 volumes that is ~20 MiB where decoded records would be several
// times more. Entries are kept sorted by name in chunks of at most
// chunkMax, so List walks them in order without sorting, and an insert moves
// at most one chunk.
type index struct {
	mu     sync.RWMutex
	chunks [][]entry
	n      int
}

const chunkMax = 512

// entry is b = name + record + List element; never changed once made.
type entry struct {
	b         []byte
	name, rec uint32 // ends of the name and of the record in b
}

func newEntry(name string, rec, list []byte) entry {
	b := make([]byte, 0, len(name)+len(rec)+len(list))
	b = append(append(append(b, name...), rec...), list...)
	return entry{b: b, name: uint32(len(name)), rec: uint32(len(name) + len(rec))}
}

// renderEntry is newEntry with the List element made by r, rendered into
// scratch first so the entry is allocated at its exact size (an append
// past a guessed capacity would double it). It returns scratch for reuse.
func renderEntry(name string, rec []byte, vol *Volume, r ListRenderer, scratch []byte) (entry, []byte) {
	scratch = r(scratch[:0], vol)
	return newEntry(name, rec, scratch), scratch
}

func (e entry) key() []byte     { return e.b[:e.name] }
func (e entry) record() []byte  { return e.b[e.name:e.rec] }
func (e entry) listing() []byte { return e.b[e.rec:] }

// find returns where name is, or would be inserted: chunk ci, position j.
func (x *index) find(name string) (ci, j int, ok bool) {
	ci = sort.Search(len(x.chunks), func(i int) bool {
		c := x.chunks[i]
		return string(c[len(c)-1].key()) >= name
	})
	if ci == len(x.chunks) {
		if ci == 0 {
			return 0, 0, false
		}
		ci--
		return ci, len(x.chunks[ci]), false
	}
	c := x.chunks[ci]
	j = sort.Search(len(c), func(k int) bool { return string(c[k].key()) >= name })
	return ci, j, j < len(c) && string(c[j].key()) == name
}

func (x *index) get(name string) (entry, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ci, j, ok := x.find(name)
	if !ok {
		return entry{}, false
	}
	return x.chunks[ci][j], true
}

// put adds or replaces an entry; the caller holds mu for writing.
func (x *index) put(e entry) {
	name := string(e.key())
	if len(x.chunks) == 0 {
		x.chunks = [][]entry{{e}}
		x.n = 1
		return
	}
	ci, j, ok := x.find(name)
	if ok {
		x.chunks[ci][j] = e
		return
	}
	x.n++
	c := x.chunks[ci]
	if len(c) < chunkMax {
		x.chunks[ci] = insertEntry(c, j, e)
		return
	}
	// A full chunk splits. Appending past the last name (names made in
	// order) starts a new chunk instead, so such chunks stay full.
	var left, right []entry
	if j == len(c) {
		left, right = c, []entry{e}
	} else {
		h := len(c) / 2
		right = append(make([]entry, 0, chunkMax), c[h:]...)
		left = c[:h]
		clear(c[h:]) // the old tail must not keep entries alive
		if j <= h {
			left = insertEntry(left, j, e)
		} else {
			right = insertEntry(right, j-h, e)
		}
	}
	x.chunks = append(x.chunks, nil)
	copy(x.chunks[ci+2:], x.chunks[ci+1:])
	x.chunks[ci], x.chunks[ci+1] = left, right
}

func insertEntry(c []entry, j int, e entry) []entry {
	c = append(c, entry{})
	copy(c[j+1:], c[j:])
	c[j] = e
	return c
}

// del removes name's entry if there is one; the caller holds mu for writing.
func (x *index) del(name string) {
	ci, j, ok := x.find(name)
	if !ok {
		return
	}
	x.n--
	c := x.chunks[ci]
	copy(c[j:], c[j+1:])
	c[len(c)-1] = entry{}
	c = c[:len(c)-1]
	if len(c) > 0 {
		x.chunks[ci] = c
		return
	}
	copy(x.chunks[ci:], x.chunks[ci+1:])
	x.chunks[len(x.chunks)-1] = nil
	x.chunks = x.chunks[:len(x.chunks)-1]
}

// appendSorted adds an entry known to sort after every other; for building
// the index at Open, where bbolt yields the records in key order.
func (x *index) appendSorted(e entry) {
	x.n++
	if l := len(x.chunks); l > 0 && len(x.chunks[l-1]) < chunkMax {
		x.chunks[l-1] = append(x.chunks[l-1], e)
		return
	}
	x.chunks = append(x.chunks, append(make([]entry, 0, chunkMax), e))
}

// after copies up to max entries whose names sort after name ("" is
// before every name) into dst, under one read lock.
func (x *index) after(name string, first bool, max int, dst []entry) []entry {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ci, j := 0, 0
	if !first {
		var ok bool
		ci, j, ok = x.find(name)
		if ok {
			j++
		}
	}
	for ; ci < len(x.chunks) && len(dst) < max; ci, j = ci+1, 0 {
		c := x.chunks[ci]
		for ; j < len(c) && len(dst) < max; j++ {
			dst = append(dst, c[j])
		}
	}
	return dst
}

func (x *index) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.n
}
