package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
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

func putIntent(tx *bolt.Tx, in *Intent) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketIntents).Put([]byte(in.Volume.Name), data)
}

// BeginCreate records the intent to create vol; ErrExists if a record or
// another intent holds the name.
func (s *Store) BeginCreate(vol *Volume, undo bool, at time.Time) error {
	in := &Intent{Op: IntentCreate, Volume: vol.Clone(), At: at, Undo: undo}
	return s.commit(func(tx *bolt.Tx) error {
		k := []byte(vol.Name)
		if tx.Bucket(bucketVolumes).Get(k) != nil || tx.Bucket(bucketIntents).Get(k) != nil {
			return ErrExists
		}
		return putIntent(tx, in)
	})
}

// FinishCreate commits vol's record and ends its intent, in one transaction.
func (s *Store) FinishCreate(vol *Volume) error {
	data, err := json.Marshal(vol)
	if err != nil {
		return err
	}
	e := s.entryFor(vol, data)
	return s.commitApply(func(tx *bolt.Tx) error {
		k := []byte(vol.Name)
		b := tx.Bucket(bucketVolumes)
		if b.Get(k) != nil {
			return ErrExists
		}
		if err := b.Put(k, data); err != nil {
			return err
		}
		return tx.Bucket(bucketIntents).Delete(k)
	}, func(x *index) { x.put(e) })
}

// BeginRemove records the intent to remove name's volume; ErrNotFound if
// there is no record.
func (s *Store) BeginRemove(name string, at time.Time) error {
	return s.commit(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketVolumes).Get([]byte(name))
		if raw == nil {
			return ErrNotFound
		}
		vol, err := decode([]byte(name), raw)
		if err != nil {
			return err
		}
		return putIntent(tx, &Intent{Op: IntentRemove, Volume: vol, At: at})
	})
}

// FinishRemove deletes name's record and ends its intent, in one
// transaction; a record already gone is not an error.
func (s *Store) FinishRemove(name string) error {
	return s.commitApply(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketVolumes).Delete([]byte(name)); err != nil {
			return err
		}
		return tx.Bucket(bucketIntents).Delete([]byte(name))
	}, func(x *index) { x.del(name) })
}

// EndIntent drops name's intent and nothing else: a Create that failed and
// undid its storage, or a Remove that failed and kept the volume.
func (s *Store) EndIntent(name string) error {
	return s.commit(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIntents).Delete([]byte(name))
	})
}

// Intent returns name's open intent, or ErrNotFound.
func (s *Store) Intent(name string) (*Intent, error) {
	var in *Intent
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIntents)
		var raw []byte
		if b != nil {
			raw = b.Get([]byte(name))
		}
		if raw == nil {
			return ErrNotFound
		}
		var err error
		in, err = decodeIntent([]byte(name), raw)
		return err
	})
	return in, err
}

// Intents lists the open intents, by name. There are only as many as
// operations were in flight, so a slice is fine.
func (s *Store) Intents() ([]*Intent, error) {
	var out []*Intent
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIntents)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			in, err := decodeIntent(k, v)
			if err != nil {
				return err
			}
			out = append(out, in)
			return nil
		})
	})
	return out, err
}
