package store

import (
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The chunked index against a map: random puts and deletes across many
// chunk splits keep it sorted, complete and exact.
func TestIndexAgreesWithAModelAcrossSplits(t *testing.T) {
	var x index
	model := map[string]string{}
	r := rand.New(rand.NewSource(1))
	check := func(step int) {
		var got []string
		for e := range x.chunks {
			if len(x.chunks[e]) == 0 || len(x.chunks[e]) > chunkMax {
				t.Fatalf("step %d: chunk %d has %d entries", step, e, len(x.chunks[e]))
			}
		}
		for _, e := range x.after("", true, 1<<30, nil) {
			got = append(got, string(e.key()))
			if want := model[string(e.key())]; string(e.record()) != want || string(e.listing()) != "L"+want {
				t.Fatalf("step %d: %s holds %q/%q, want %q", step, e.key(), e.record(), e.listing(), want)
			}
		}
		want := make([]string, 0, len(model))
		for k := range model {
			want = append(want, k)
		}
		sort.Strings(want)
		if !slices.Equal(got, want) || x.n != len(want) {
			t.Fatalf("step %d: index holds %d names (n=%d), model %d", step, len(got), x.n, len(want))
		}
	}
	for step := 0; step < 20000; step++ {
		// Mostly ascending names (as Docker users make them), some random.
		var name string
		if r.Intn(3) == 0 {
			name = fmt.Sprintf("v%05d", r.Intn(6000))
		} else {
			name = fmt.Sprintf("v%05d", step/3)
		}
		if r.Intn(4) == 0 {
			x.del(name)
			delete(model, name)
		} else {
			v := strconv.Itoa(step)
			x.put(newEntry(name, []byte(v), []byte("L"+v)))
			model[name] = v
		}
		if step%2500 == 0 {
			check(step)
		}
	}
	check(-1)
	for k := range model {
		x.del(k)
	}
	if len(x.chunks) != 0 || x.n != 0 {
		t.Fatalf("emptied index keeps %d chunks, n=%d", len(x.chunks), x.n)
	}
}

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// records reads the volumes bucket itself, once the journal is folded into
// it: what the index must equal.
func records(t *testing.T, s *Store) map[string]string {
	t.Helper()
	s.lockLeader()
	err := s.checkpoint()
	s.unlockLeader()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func indexed(s *Store) map[string]string {
	out := map[string]string{}
	for _, e := range s.idx.after("", true, 1<<30, nil) {
		out[string(e.key())] = string(e.record())
	}
	return out
}

// Whatever commits, fails or is refused, concurrently and in groups, the
// index ends equal to the file, and a reopened store rebuilds the same.
func TestIndexEqualsTheFileAfterConcurrentChangesAndFailures(t *testing.T) {
	s, path := openTemp(t)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < 60; i++ {
				name := fmt.Sprintf("v%03d", r.Intn(40))
				switch r.Intn(5) {
				case 0, 1:
					s.Create(&Volume{Name: name, Backend: "dir", CreatedAt: time.Unix(int64(i), 0).UTC()})
				case 2:
					s.Delete(name)
				case 3:
					s.Update(name, func(v *Volume) error {
						if v.Options == nil {
							v.Options = map[string]string{}
						}
						v.Options["w"] = strconv.Itoa(w)
						return nil
					})
				case 4:
					// A refused change in a group must leave the others'.
					s.Update(name, func(v *Volume) error {
						v.Options = map[string]string{"never": "committed"}
						return errors.New("refused")
					})
				}
			}
		}(w)
	}
	wg.Wait()
	want := records(t, s)
	if got := indexed(s); !mapsEqual(got, want) {
		t.Fatalf("index differs from the file:\nindex %v\nfile  %v", got, want)
	}
	for _, v := range want {
		if contains(v, "never") {
			t.Fatalf("a refused change reached the file: %s", v)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := indexed(s2); !mapsEqual(got, want) {
		t.Fatalf("rebuilt index differs from the file")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// A change the store refuses must not reach the index, nor the part of
// it that came before the refusal.
func TestIndexKeepsTheOldRecordWhenTheCommitFails(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	if err := s.Create(&Volume{Name: "a", Backend: "dir"}); err != nil {
		t.Fatal(err)
	}
	err := s.commit(func(t *txn) error {
		t.del(bktVolumes, "a")
		return t.put(bktVolumes, "", []byte("x"), nil)
	})
	if err == nil {
		t.Fatal("a Put with an empty key committed")
	}
	if _, err := s.Get("a"); err != nil {
		t.Fatalf("Get after a failed commit: %v", err)
	}
}

// Readers during commits see a record whole, as before or after a commit:
// the two options an Update sets together are always equal.
func TestGetDuringCommitsIsNeverTorn(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	if err := s.SetListRenderer(func(b []byte, v *Volume) []byte { return append(b, v.Options["a"]...) }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		if err := s.Create(&Volume{Name: fmt.Sprintf("v%d", i), Backend: "dir", Options: map[string]string{"a": "0", "b": "0"}}); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 1; i <= 50; i++ {
				if _, err := s.Update(fmt.Sprintf("v%d", w), func(v *Volume) error {
					v.Options["a"], v.Options["b"] = strconv.Itoa(i), strconv.Itoa(i)
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	var readers sync.WaitGroup
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			last := map[string]int{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := 0; i < 8; i++ {
					name := fmt.Sprintf("v%d", i)
					v, err := s.Get(name)
					if err != nil {
						t.Error(err)
						return
					}
					if v.Options["a"] != v.Options["b"] {
						t.Errorf("torn record %v", v.Options)
						return
					}
					n, _ := strconv.Atoi(v.Options["a"])
					if n < last[name] {
						t.Errorf("%s went back from %d to %d", name, last[name], n)
						return
					}
					last[name] = n
				}
				if err := s.ScanListings(func(b []byte) error { _ = len(b); return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	var got []string
	s.ScanListings(func(b []byte) error { got = append(got, string(b)); return nil })
	if len(got) != 8 || got[0] != "50" || got[7] != "50" {
		t.Fatalf("List elements after the updates: %v", got)
	}
}
