package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	bolt "go.etcd.io/bbolt"
)

// crash stops s as a SIGKILL would: no checkpoint, files closed as they are.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	s.stopped = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	s.lockLeader()
	s.closed = true
	s.unlockLeader()
	if s.jf != nil {
		s.jf.Close()
	}
	s.db.Close()
}

// dump is the whole state in memory, volumes and intents, as one string.
func dump(s *Store) string {
	var b strings.Builder
	for _, e := range s.idx.after("", true, 1<<30, nil) {
		fmt.Fprintf(&b, "v %s=%s\n", e.key(), e.record())
	}
	s.idx.mu.RLock()
	var names []string
	for k := range s.intents {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&b, "i %s=%s\n", k, s.intents[k])
	}
	s.idx.mu.RUnlock()
	return b.String()
}

func openRO(t *testing.T, p string) *Store {
	t.Helper()
	s, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ops runs a mix of every kind of change, one at a time, and returns the
// state and the journal's tail after each (index 0: before any).
func ops(t *testing.T, s *Store, n int) (states []string, tails []int64) {
	t.Helper()
	states, tails = append(states, dump(s)), append(tails, s.tail)
	at := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("v%d", i/5)
		var err error
		switch i % 5 {
		case 0:
			err = s.BeginCreate(&Volume{Name: name, Backend: "dir"}, true, at)
		case 1:
			err = s.FinishCreate(&Volume{Name: name, Backend: "dir", Options: map[string]string{"i": fmt.Sprint(i)}})
		case 2:
			_, err = s.Update(name, func(v *Volume) error { v.Mounts = map[string]Mount{"m": {Count: i}}; return nil })
		case 3:
			err = s.BeginRemove(name, at)
		case 4:
			if i%10 == 4 {
				err = s.FinishRemove(name)
			} else {
				err = s.EndIntent(name)
			}
		}
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		states, tails = append(states, dump(s)), append(tails, s.tail)
	}
	return states, tails
}

// A journal cut at any byte (a write torn by a crash, then zeros or stale
// garbage after it) replays to exactly the state after the last whole
// entry: a prefix of the acknowledged changes, never part of one.
func TestReplayAfterACutAtEveryOffset(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	states, tails := ops(t, s, 12)
	crash(t, s)
	jp := JournalPath(p)
	orig, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	end := tails[len(tails)-1]
	if s := openRO(t, p); dump(s) != states[len(states)-1] {
		t.Fatalf("replay of the whole journal:\n%s\nwant\n%s", dump(s), states[len(states)-1])
	} else {
		s.Close()
	}
	r := rand.New(rand.NewSource(1))
	// Every byte of the last three entries; a sample before them.
	for cut := int64(0); cut < end; cut++ {
		if cut < tails[len(tails)-4] && cut%13 != 0 {
			continue
		}
		for _, tail := range []string{"zeros", "garbage", "truncated"} {
			// Past end the file is zeros throughout: only what is
			// before it is rewritten.
			b := append([]byte(nil), orig[:end]...)
			switch tail {
			case "zeros":
				clear(b[cut:end])
			case "garbage":
				r.Read(b[cut:end])
			}
			if err := os.Truncate(jp, cut); err != nil {
				t.Fatal(err)
			}
			if tail != "truncated" {
				f, err := os.OpenFile(jp, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				_, err = f.WriteAt(b, 0)
				f.Truncate(JournalSize)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			whole := 0
			for whole+1 < len(tails) && tails[whole+1] <= cut {
				whole++
			}
			ro := openRO(t, p)
			got := dump(ro)
			ro.Close()
			if got != states[whole] {
				t.Fatalf("cut at byte %d (%s after it): state is not the one after entry %d:\n%s\nwant\n%s", cut, tail, whole, got, states[whole])
			}
		}
	}
	// And a read-write open of a cut journal folds that prefix, then
	// appends after it, with no trace of the cut entry.
	b := append([]byte(nil), orig...)
	cut := (tails[5] + tails[6]) / 2
	os.Remove(jp)
	clear(b[cut:])
	os.WriteFile(jp, b, 0o600)
	s = mustOpen(t, p)
	if dump(s) != states[5] {
		t.Fatalf("read-write open of a cut journal:\n%s\nwant\n%s", dump(s), states[5])
	}
	if err := s.Create(&Volume{Name: "after", Backend: "dir"}); err != nil {
		t.Fatal(err)
	}
	want := dump(s)
	crash(t, s)
	s = openRO(t, p)
	defer s.Close()
	if dump(s) != want {
		t.Fatalf("after a cut, a reopen and a change:\n%s\nwant\n%s", dump(s), want)
	}
}

var errCrash = errors.New("simulated crash")

// A crash after a checkpoint's bbolt commit but before the journal's reuse
// is durable: replay skips what was folded. A crash before the commit:
// replay applies it all.
func TestCheckpointCrashes(t *testing.T) {
	t.Run("after the fold", func(t *testing.T) {
		p := tempPath(t)
		s := mustOpen(t, p)
		states, _ := ops(t, s, 10)
		s.afterFold = func() error { return errCrash }
		s.lockLeader()
		err := s.checkpoint()
		s.unlockLeader()
		if !errors.Is(err, errCrash) {
			t.Fatalf("checkpoint: %v", err)
		}
		crash(t, s)
		if pending, _ := JournalPending(p); !pending {
			t.Fatal("the journal was reused: the test does not test the crash it means to")
		}
		ro := openRO(t, p)
		if dump(ro) != states[10] || len(ro.unfolded) != 0 {
			t.Fatalf("replay after a fold: %d mutations applied again; state\n%s\nwant\n%s", len(ro.unfolded), dump(ro), states[10])
		}
		ro.Close()
		// The journal's head is stale, not reused: a new run writes over
		// it and a crash again leaves exactly the new state.
		s = mustOpen(t, p)
		if err := s.Delete("v1"); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(&Volume{Name: "v9", Backend: "dir"}); err != nil {
			t.Fatal(err)
		}
		want := dump(s)
		crash(t, s)
		ro = openRO(t, p)
		defer ro.Close()
		if dump(ro) != want || len(ro.unfolded) != 2 {
			t.Fatalf("after the second crash: %d mutations replayed, state\n%s\nwant\n%s", len(ro.unfolded), dump(ro), want)
		}
	})
	t.Run("before the fold", func(t *testing.T) {
		p := tempPath(t)
		s := mustOpen(t, p)
		states, _ := ops(t, s, 10)
		muts := len(s.unfolded)
		crash(t, s)
		ro := openRO(t, p)
		if dump(ro) != states[10] || len(ro.unfolded) != muts {
			t.Fatalf("replay without a fold: %d of %d mutations, state\n%s\nwant\n%s", len(ro.unfolded), muts, dump(ro), states[10])
		}
		ro.Close()
		s = mustOpen(t, p)
		defer s.Close()
		if dump(s) != states[10] {
			t.Fatal("read-write open lost the replayed state")
		}
		if pending, _ := JournalPending(p); pending {
			t.Fatal("Open did not leave the journal empty")
		}
		if got, want := records(t, s), indexed(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("bbolt after the fold %v, memory %v", got, want)
		}
	})
}

// More than the journal holds: writers wait for checkpoints (their own or
// the checkpointer's) and nothing is lost.
func TestFullJournalLosesNothing(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	var mu sync.Mutex
	reuses := 0
	s.syncObserver = func(what string) {
		if what == "reuse" {
			mu.Lock()
			reuses++
			mu.Unlock()
		}
	}
	// The checkpointer is slow: writers must wait for the leader's own.
	s.afterFold = func() error { time.Sleep(time.Millisecond); return nil }
	pad := strings.Repeat("x", 20<<10)
	const n = 8 * 40 // 320 × 20 KiB is three journals
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < n/8; i++ {
				if err := s.Create(&Volume{Name: fmt.Sprintf("w%d-%03d", w, i), Backend: "dir", Options: map[string]string{"pad": pad}}); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	mu.Lock()
	if reuses < 2 {
		t.Errorf("%d checkpoints for %d MiB of changes in a %d MiB journal", reuses, n*20>>10, JournalSize>>20)
	}
	mu.Unlock()
	want := dump(s)
	crash(t, s)
	ro := openRO(t, p)
	defer ro.Close()
	if got := dump(ro); got != want || ro.idx.len() != n {
		t.Fatalf("after a crash %d volumes, want %d (state equal: %v)", ro.idx.len(), n, got == want)
	}
}

// Writers behind a slow sync share the next one: one fdatasync for all.
func TestConcurrentWritersShareOneFdatasync(t *testing.T) {
	s := mustOpen(t, tempPath(t))
	defer s.Close()
	hold := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	syncs := 0
	s.syncObserver = func(what string) {
		once.Do(func() { <-hold })
		mu.Lock()
		if what == "journal" {
			syncs++
		}
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
			if err := s.BeginCreate(&Volume{Name: fmt.Sprintf("g%02d", i)}, false, time.Now()); err != nil {
				t.Error(err)
			}
		}(i)
	}
	time.Sleep(100 * time.Millisecond)
	close(hold)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if syncs != 2 {
		t.Errorf("%d journal fdatasyncs for %d writers, want 2", syncs, n+1)
	}
	if ins, _ := s.Intents(); len(ins) != n {
		t.Errorf("%d intents, want %d", len(ins), n)
	}
}

// A journal of another copy of the state file (this one restored from a
// backup) is never applied, and never deleted: moved aside, with a warning.
func TestForeignJournalIsMovedAside(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	s.Create(&Volume{Name: "a", Backend: "dir"})
	s.Close()
	backup, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, p)
	s.Create(&Volume{Name: "b", Backend: "dir"})
	crash(t, s)
	jp := JournalPath(p)
	journal, _ := os.ReadFile(jp)
	if err := os.WriteFile(p, backup, 0o600); err != nil {
		t.Fatal(err)
	}

	log, hook := logtest.NewNullLogger()
	ro, err := Open(p, Options{ReadOnly: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Get("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a read-only open applied a foreign journal")
	}
	ro.Close()
	if b, _ := os.ReadFile(jp); !bytes.Equal(b, journal) {
		t.Error("a read-only open changed the journal")
	}
	if e := hook.LastEntry(); e == nil || e.Level != logrus.WarnLevel || e.Data["journal"] != jp {
		t.Errorf("read-only open: no warning naming the journal (%v)", hook.AllEntries())
	}

	hook.Reset()
	s, err = Open(p, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get("a"); err != nil {
		t.Errorf("the backup's volume: %v", err)
	}
	if _, err := s.Get("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a foreign journal was applied")
	}
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.WarnLevel || e.Data["journal"] != jp {
		t.Fatalf("no warning naming the journal (%v)", hook.AllEntries())
	}
	moved, _ := e.Data["moved_to"].(string)
	if b, err := os.ReadFile(moved); err != nil || !bytes.Equal(b, journal) || !strings.HasPrefix(filepath.Base(moved), filepath.Base(jp)+".foreign-") {
		t.Fatalf("the foreign journal is not kept as it was at %q: %v", moved, err)
	}
	if pending, _ := JournalPending(p); pending {
		t.Fatal("the new journal is not empty")
	}
}

// A version 2 file (bbolt alone, no journal) converts, keeping its volumes.
func TestMigratesSchema2(t *testing.T) {
	p := tempPath(t)
	s := mustOpen(t, p)
	s.Create(&Volume{Name: "old", Backend: "dir"})
	s.Close()
	os.Remove(JournalPath(p))
	setSchemaTo(t, p, "2")
	ro := openRO(t, p)
	if _, err := ro.Get("old"); err != nil {
		t.Fatalf("read-only open of a version 2 file: %v", err)
	}
	ro.Close()
	if _, err := os.Stat(JournalPath(p)); !os.IsNotExist(err) {
		t.Fatal("a read-only open created a journal")
	}
	s = mustOpen(t, p)
	defer s.Close()
	if _, err := s.Get("old"); err != nil {
		t.Fatalf("volume lost converting version 2: %v", err)
	}
	if fi, err := os.Stat(JournalPath(p)); err != nil || fi.Size() != JournalSize || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal after conversion: %v, %v", fi, err)
	}
}

func setSchemaTo(t *testing.T, p, version string) {
	t.Helper()
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte(version)) }); err != nil {
		t.Fatal(err)
	}
}

// The checkpointer folds the journal once writes pause for checkpointIdle,
// also when the writes after the first did not wake it (it reads when the
// last one was), and not while they go on.
func TestJournalIsFoldedOnceWritesPause(t *testing.T) {
	s := mustOpen(t, tempPath(t))
	defer s.Close()
	var reuses atomic.Int64
	s.syncObserver = func(what string) {
		if what == "reuse" {
			reuses.Add(1)
		}
	}
	stream := time.Now()
	for i := 0; time.Since(stream) < 2*checkpointIdle; i++ {
		if err := s.Create(&Volume{Name: fmt.Sprintf("v%04d", i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(checkpointIdle / 25)
	}
	if n := reuses.Load(); n != 0 {
		t.Errorf("%d checkpoints while writes went on every %v, want none before they pause %v", n, checkpointIdle/25, checkpointIdle)
	}
	last := time.Now()
	for s.jtail.Load() != 0 {
		if time.Since(last) > 10*checkpointIdle {
			t.Fatalf("the journal (%d bytes) was not folded %v after the last write", s.jtail.Load(), time.Since(last))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if waited := time.Since(last); waited < checkpointIdle*9/10 {
		t.Errorf("folded %v after the last write, before the journal was idle %v", waited, checkpointIdle)
	}
}
