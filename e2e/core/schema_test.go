package core

import (
	"testing"

	bolt "go.etcd.io/bbolt"
)

// setSchema overwrites the state file's schema version, as a future release
// would have written it.
func setSchema(t *testing.T, path, version string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte(version)) }); err != nil {
		t.Fatal(err)
	}
}
