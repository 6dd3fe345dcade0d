package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// An Intent is recorded, durably, before a Create or Remove touches storage,
// and ends in the same transaction that records the outcome. One left open
// by a crash tells start-up exactly which operation was cut, so recovery can
// finish it (Remove) or undo it (Create) instead of leaving a leftover that
// a user later meets.
type Intent struct {
	Op string `json:"op"`
	// Volume is, for a Create, the record it was about to commit (no
	// backend facts yet); for a Remove, the record as it was.
	Volume *Volume   `json:"volume"`
	At     time.Time `json:"at"`
	// Undo says the backend can tell its own half-made storage from
	// anything else (backend.Occupier): only then may recovery remove it.
	Undo bool `json:"undo,omitempty"`
}

// The operations an Intent can stand for.
const (
	IntentCreate = "create"
	IntentRemove = "remove"
)

func decodeIntent(k, v []byte) (*Intent, error) {
	in := &Intent{}
	if err := json.Unmarshal(v, in); err != nil {
		return nil, fmt.Errorf("intent %q is unreadable: %v", k, err)
	}
	if in.Volume == nil || in.Volume.Name != string(k) || (in.Op != IntentCreate && in.Op != IntentRemove) {
		return nil, fmt.Errorf("intent %q is malformed (op %q)", k, in.Op)
	}
	return in, nil
}

func putIntent(t *txn, in *Intent) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return t.put(bktIntents, in.Volume.Name, data, nil)
}

// BeginCreate records the intent to create vol; ErrExists if a record or
// another intent holds the name.
func (s *Store) BeginCreate(vol *Volume, undo bool, at time.Time) error {
	in := &Intent{Op: IntentCreate, Volume: vol.Clone(), At: at, Undo: undo}
	return s.commit(func(t *txn) error {
		if t.get(bktVolumes, vol.Name) != nil || t.get(bktIntents, vol.Name) != nil {
			return ErrExists
		}
		return putIntent(t, in)
	})
}

// FinishCreate commits vol's record and ends its intent, in one change.
func (s *Store) FinishCreate(vol *Volume) error {
	data, err := encode(vol)
	if err != nil {
		return err
	}
	vol = vol.Clone()
	return s.commit(func(t *txn) error {
		if t.get(bktVolumes, vol.Name) != nil {
			return ErrExists
		}
		if err := t.put(bktVolumes, vol.Name, data, vol); err != nil {
			return err
		}
		t.del(bktIntents, vol.Name)
		return nil
	})
}

// BeginRemove records the intent to remove name's volume; ErrNotFound if
// there is no record.
func (s *Store) BeginRemove(name string, at time.Time) error {
	return s.commit(func(t *txn) error {
		raw := t.get(bktVolumes, name)
		if raw == nil {
			return ErrNotFound
		}
		vol, err := decode([]byte(name), raw)
		if err != nil {
			return err
		}
		return putIntent(t, &Intent{Op: IntentRemove, Volume: vol, At: at})
	})
}

// FinishRemove deletes name's record and ends its intent, in one change;
// a record already gone is not an error.
func (s *Store) FinishRemove(name string) error {
	return s.commit(func(t *txn) error {
		t.del(bktVolumes, name)
		t.del(bktIntents, name)
		return nil
	})
}

// EndIntent drops name's intent and nothing else: a Create that failed and
// undid its storage, or a Remove that failed and kept the volume.
func (s *Store) EndIntent(name string) error {
	return s.commit(func(t *txn) error {
		t.del(bktIntents, name)
		return nil
	})
}

// Intent returns name's open intent, or ErrNotFound.
func (s *Store) Intent(name string) (*Intent, error) {
	s.idx.mu.RLock()
	raw := s.intents[name]
	s.idx.mu.RUnlock()
	if raw == nil {
		return nil, ErrNotFound
	}
	return decodeIntent([]byte(name), raw)
}

// Intents lists the open intents, by name. There are only as many as
// operations were in flight, so a slice is fine.
func (s *Store) Intents() ([]*Intent, error) {
	s.idx.mu.RLock()
	names := make([]string, 0, len(s.intents))
	for k := range s.intents {
		names = append(names, k)
	}
	raws := make([][]byte, len(names))
	sort.Strings(names)
	for i, k := range names {
		raws[i] = s.intents[k]
	}
	s.idx.mu.RUnlock()
	var out []*Intent
	for i, k := range names {
		in, err := decodeIntent([]byte(k), raws[i])
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}
