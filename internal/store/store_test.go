package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func tempPath(t *testing.T) string { return filepath.Join(t.TempDir(), FileName) }

func mustOpen(t *testing.T, p string) *Store {
	t.Helper()
	s, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantOpenError(t *testing.T, p string, o Options, words ...string) {
	t.Helper()
	before, _ := os.ReadFile(p)
	s, err := Open(p, o)
	if err == nil {
		s.Close()
		t.Fatalf("Open succeeded, want an error saying %q", words)
	}
	for _, w := range append(words, p) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Error("a refused Open changed the file")
	}
}

func TestRoundTripAndSchemaVersion(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	now := time.Now().UTC().Truncate(time.Second)
	v := &Volume{Name: "v", Backend: "dir", Options: map[string]string{"mode": "0755"}, CreatedAt: now,
		Mounts: map[string]Mount{"id": {Count: 2, Boot: "b", Since: now}}, Private: map[string]string{"k": "x"}}
	if err := s.Create(v); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(v); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	s.Close()
	s = mustOpen(t, p)
	defer s.Close()
	got, err := s.Get("v")
	if err != nil {
		t.Fatal(err)
	}
	if got.Mounts["id"].Count != 2 || got.Private["k"] != "x" || !got.CreatedAt.Equal(now) || got.ActiveMounts() != 2 {
		t.Fatalf("record after reopen: %+v", got)
	}
	var schema string
	s.db.View(func(tx *bolt.Tx) error { schema = string(tx.Bucket(bucketMeta).Get(keySchema)); return nil })
	if schema != fmt.Sprint(SchemaVersion) {
		t.Fatalf("schema %q, want %d", schema, SchemaVersion)
	}
	if _, err := s.Get("nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of unknown = %v", err)
	}
	if err := s.Delete("nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Delete of unknown = %v", err)
	}
}

func TestRefusesCorruptFile(t *testing.T) {
	p := tempPath(t)
	if err := os.WriteFile(p, []byte(strings.Repeat("not a bolt file ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, p, Options{}, "corrupt", "will not start")
}

func TestRefusesTruncatedFile(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	for i := 0; i < 200; i++ {
		s.Create(&Volume{Name: fmt.Sprintf("v%03d", i), Backend: "dir", Options: map[string]string{"pad": strings.Repeat("x", 200)}})
	}
	s.Close()
	fi, _ := os.Stat(p)
	if err := os.Truncate(p, fi.Size()/3); err != nil {
		t.Fatal(err)
	}
	wantOpenError(t, p, Options{}, "will not start")
}

func TestRefusesUnknownSchemaVersion(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("99")) })
	s.Close()
	wantOpenError(t, p, Options{}, `schema version "99"`, fmt.Sprintf("reads version %d", SchemaVersion))
}

func TestRefusesLockedFile(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	defer s.Close()
	wantOpenError(t, p, Options{LockTimeout: 100 * time.Millisecond}, "locked by another process")
}

// Never start empty over something that may hold volumes.
func TestNeverStartsEmptyOverForeignData(t *testing.T) {
	t.Run("volumes without schema", func(t *testing.T) {
		p := tempPath(t)
		db, _ := bolt.Open(p, 0o600, nil)
		db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucket(bucketVolumes)
			return b.Put([]byte("v"), []byte(`{"name":"v"}`))
		})
		db.Close()
		wantOpenError(t, p, Options{}, "no schema version")
	})
	t.Run("foreign buckets", func(t *testing.T) {
		p := tempPath(t)
		db, _ := bolt.Open(p, 0o600, nil)
		db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err })
		db.Close()
		wantOpenError(t, p, Options{}, "not a stowage state file")
	})
	t.Run("unreadable record", func(t *testing.T) {
		p := tempPath(t)
		s := mustOpen(t, p)
		s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketVolumes).Put([]byte("v"), []byte("{broken")) })
		s.Close()
		wantOpenError(t, p, Options{}, `record "v" is unreadable`)
	})
	t.Run("record under another name", func(t *testing.T) {
		p := tempPath(t)
		s := mustOpen(t, p)
		s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketVolumes).Put([]byte("v"), []byte(`{"name":"w"}`)) })
		s.Close()
		wantOpenError(t, p, Options{}, `names volume "w"`)
	})
	t.Run("read-only of a missing file", func(t *testing.T) {
		p := tempPath(t)
		if _, err := Open(p, Options{ReadOnly: true}); err == nil {
			t.Fatal("read-only Open of a missing file succeeded")
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatal("read-only Open created the file")
		}
	})
}

// Group commit: writers that pile up behind a slow commit share the next
// one, and a member that fails does not take the others with it.
func TestGroupCommitIsolatesFailingMember(t *testing.T) {
	s := mustOpen(t, tempPath(t))
	defer s.Close()
	if err := s.Create(&Volume{Name: "taken"}); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	var once sync.Once
	s.CommitObserver = func(time.Duration) {
		once.Do(func() { <-hold }) // the first commit "syncs" slowly
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Create(&Volume{Name: "first"}) }()
	time.Sleep(50 * time.Millisecond) // the leader is inside its commit now
	const n = 30
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			switch {
			case i == 7:
				errs[i] = s.Create(&Volume{Name: "taken"}) // fails: exists
			case i == 8:
				_, errs[i] = s.Update("taken", func(v *Volume) error { return errors.New("member refuses") })
			case i == 9:
				_, errs[i] = s.Update("nosuch", func(v *Volume) error { return nil })
			default:
				errs[i] = s.Create(&Volume{Name: fmt.Sprintf("g%02d", i)})
			}
		}(i)
	}
	time.Sleep(100 * time.Millisecond) // let them queue behind the leader
	close(hold)
	wg.Wait()
	for i, err := range errs {
		switch i {
		case 7:
			if !errors.Is(err, ErrExists) {
				t.Errorf("duplicate create = %v, want ErrExists", err)
			}
		case 8:
			if err == nil || err.Error() != "member refuses" {
				t.Errorf("refusing update = %v, want its own error", err)
			}
		case 9:
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("update of unknown = %v, want ErrNotFound", err)
			}
		default:
			if err != nil {
				t.Errorf("member %d failed with %v because another member failed", i, err)
			}
		}
	}
	vols, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != n-3+2 {
		t.Fatalf("%d records, want %d", len(vols), n-3+2)
	}
}

func TestGroupCommitGroupsWritersBehindASlowCommit(t *testing.T) {
	s := mustOpen(t, tempPath(t))
	defer s.Close()
	hold := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	commits := 0
	s.CommitObserver = func(time.Duration) {
		once.Do(func() { <-hold })
		mu.Lock()
		commits++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Create(&Volume{Name: "first"}) }()
	time.Sleep(50 * time.Millisecond)
	const n = 30
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := s.Create(&Volume{Name: fmt.Sprintf("g%02d", i)}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	time.Sleep(100 * time.Millisecond)
	close(hold)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if commits != 2 {
		t.Errorf("%d commits for %d writers, want 2 (the slow one and one group)", commits, n+1)
	}
	if vols, _ := s.List(); len(vols) != n+1 {
		t.Errorf("%d records, want %d", len(vols), n+1)
	}
}

func TestUpdateMayNotRename(t *testing.T) {
	s := mustOpen(t, tempPath(t))
	defer s.Close()
	s.Create(&Volume{Name: "a"})
	if _, err := s.Update("a", func(v *Volume) error { v.Name = "b"; return nil }); err == nil {
		t.Fatal("Update renamed a record")
	}
	if _, err := s.Get("b"); !errors.Is(err, ErrNotFound) {
		t.Fatal("rename leaked")
	}
}

func TestCloneIsDeep(t *testing.T) {
	v := &Volume{Name: "a", Options: map[string]string{"k": "1"}, Mounts: map[string]Mount{"m": {Count: 1}}}
	c := v.Clone()
	c.Options["k"] = "2"
	c.Mounts["m"] = Mount{Count: 5}
	if v.Options["k"] != "1" || v.Mounts["m"].Count != 1 {
		t.Fatal("Clone shares maps")
	}
}
