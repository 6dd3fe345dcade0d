package store

import "time"

// ScanBackends is Scan of only the records whose backend is in ids (ids
// is only read). A record's backend is read from its bytes without
// decoding it when the record has fastDecode's shape, so the records of
// other backends cost no allocation: recovery probes only the few
// backends that mount, beside 100 000 directories.
func (s *Store) ScanBackends(ids map[string]bool, fn func(*Volume) error) error {
	return s.scanEntries(scanChunk, func(e entry) error {
		if b, ok := fastBackend(e.record()); ok && !ids[string(b)] {
			return nil
		}
		vol, err := decode(e.key(), e.record())
		if err != nil {
			return err
		}
		if !ids[vol.Backend] {
			return nil
		}
		return fn(vol)
	})
}

// fastBackend is the backend fastDecode would read from v, if it would
// read v at all: it walks the same shape without building anything.
func fastBackend(v []byte) (backend []byte, ok bool) {
	p := parser{b: v}
	if !p.lit(`{"name":`) || !p.skipStr() || !p.lit(`,"backend":`) {
		return nil, false
	}
	if backend, ok = p.raw(); !ok {
		return nil, false
	}
	if p.lit(`,"options":`) && !p.skipStrMap() {
		return nil, false
	}
	if !p.lit(`,"created_at":`) {
		return nil, false
	}
	created, ok := p.raw()
	if !ok || len(created) != len("2006-01-02T15:04:05Z") || created[len(created)-1] != 'Z' {
		return nil, false
	}
	if _, err := time.Parse(time.RFC3339, string(created)); err != nil {
		return nil, false
	}
	// A ledger is rare (volumes in use) and small: read it as fastDecode
	// does, so both take exactly the same records.
	if p.lit(`,"mounts":`) {
		if _, ok := p.mounts(); !ok {
			return nil, false
		}
	}
	if p.lit(`,"private":`) && !p.skipStrMap() {
		return nil, false
	}
	if p.lit(`,"requested":`) && !p.skipStrMap() {
		return nil, false
	}
	if !p.lit("}") || p.i != len(p.b) {
		return nil, false
	}
	return backend, true
}

func (p *parser) skipStr() bool {
	_, ok := p.raw()
	return ok
}

// skipStrMap is strMap without the map.
func (p *parser) skipStrMap() bool {
	return p.object(func([]byte) bool { return p.skipStr() })
}
