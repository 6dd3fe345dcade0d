package store

import (
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestCreateIntentLifecycle(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	at := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	vol := &Volume{Name: "v", Backend: "dir", Options: map[string]string{"mode": "0755"}}
	if err := s.BeginCreate(vol, true, at); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginCreate(vol, true, at); !errors.Is(err, ErrExists) {
		t.Fatalf("a second BeginCreate of the same name: %v, want ErrExists", err)
	}
	// A Create in flight is no volume yet: Get must not show it.
	if _, err := s.Get("v"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get during a create intent: %v, want ErrNotFound", err)
	}
	// It survives a crash (close and reopen).
	s.Close()
	s = mustOpen(t, p)
	defer s.Close()
	ins, err := s.Intents()
	if err != nil || len(ins) != 1 || ins[0].Op != IntentCreate || ins[0].Volume.Name != "v" || !ins[0].Undo || !ins[0].At.Equal(at) {
		t.Fatalf("intents after reopen: %+v, %v", ins, err)
	}
	if err := s.FinishCreate(vol); err != nil {
		t.Fatal(err)
	}
	if ins, _ := s.Intents(); len(ins) != 0 {
		t.Fatalf("FinishCreate left intents %+v", ins)
	}
	if got, err := s.Get("v"); err != nil || got.Options["mode"] != "0755" {
		t.Fatalf("record after FinishCreate: %+v, %v", got, err)
	}
	if err := s.BeginCreate(vol, true, at); !errors.Is(err, ErrExists) {
		t.Fatalf("BeginCreate over a record: %v, want ErrExists", err)
	}
}

func TestRemoveIntentLifecycle(t *testing.T) {
	s := mustOpen(t, tempPath(t))
	defer s.Close()
	if err := s.BeginRemove("nope", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("BeginRemove of no volume: %v", err)
	}
	if err := s.Create(&Volume{Name: "v", Backend: "dir"}); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginRemove("v", time.Now()); err != nil {
		t.Fatal(err)
	}
	// Until it finishes the volume is still there: it was never said gone.
	if _, err := s.Get("v"); err != nil {
		t.Fatalf("Get during a remove intent: %v", err)
	}
	ins, _ := s.Intents()
	if len(ins) != 1 || ins[0].Op != IntentRemove || ins[0].Volume.Backend != "dir" {
		t.Fatalf("intents: %+v", ins)
	}
	if err := s.FinishRemove("v"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("v"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after FinishRemove: %v", err)
	}
	if ins, _ := s.Intents(); len(ins) != 0 {
		t.Fatalf("FinishRemove left intents %+v", ins)
	}
	// EndIntent drops only the intent.
	s.Create(&Volume{Name: "w", Backend: "dir"})
	s.BeginRemove("w", time.Now())
	if err := s.EndIntent("w"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("w"); err != nil {
		t.Fatalf("EndIntent deleted the record: %v", err)
	}
}

// A version 1 file (no intents bucket) is migrated on a read-write open and
// read as it is on a read-only one; its volumes are untouched either way.
func TestMigratesSchema1(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	s.Create(&Volume{Name: "old", Backend: "dir"})
	s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketIntents); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("1"))
	})
	s.Close()

	ro, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of a version 1 file: %v", err)
	}
	if ins, err := ro.Intents(); err != nil || len(ins) != 0 {
		t.Fatalf("intents of a version 1 file: %v, %v", ins, err)
	}
	ro.Close()

	s = mustOpen(t, p)
	defer s.Close()
	var schema string
	s.db.View(func(tx *bolt.Tx) error { schema = string(tx.Bucket(bucketMeta).Get(keySchema)); return nil })
	if schema != fmt.Sprint(SchemaVersion) {
		t.Fatalf("schema after migration %q", schema)
	}
	if _, err := s.Get("old"); err != nil {
		t.Fatalf("volume lost in migration: %v", err)
	}
	if err := s.BeginCreate(&Volume{Name: "new", Backend: "dir"}, false, time.Now()); err != nil {
		t.Fatalf("intent after migration: %v", err)
	}
}

func TestRefusesMalformedIntent(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIntents).Put([]byte("v"), []byte(`{"op":"explode","volume":{"name":"v"}}`))
	})
	s.Close()
	wantOpenError(t, p, Options{}, "intent", "malformed")
}
