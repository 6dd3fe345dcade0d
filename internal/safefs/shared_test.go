package safefs

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A caller that arrives while a sync runs must wait for the next one: the
// running sync may have begun before the caller's change.
func TestSharedSyncWaitsForASyncBegunAfterTheCall(t *testing.T) {
	s := NewSharedSync(t.TempDir())
	var rounds atomic.Int32
	release := make(chan struct{})
	started := make(chan int32, 4)
	s.sync = func(string) error {
		n := rounds.Add(1)
		started <- n
		<-release
		return nil
	}
	first := make(chan error, 1)
	go func() { first <- s.Sync() }()
	if n := <-started; n != 1 {
		t.Fatalf("round %d began first", n)
	}
	second := make(chan error, 1)
	go func() { second <- s.Sync() }()
	time.Sleep(20 * time.Millisecond) // let it join
	release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case <-second:
		t.Fatal("a caller that arrived during round 1 returned with round 1")
	case n := <-started:
		if n != 2 {
			t.Fatalf("round %d began second", n)
		}
	}
	release <- struct{}{}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// Many callers arriving while one sync runs share one more, and each gets
// the error of the round it waited for, not another's.
func TestSharedSyncSharesRoundsAndTheirErrors(t *testing.T) {
	s := NewSharedSync(t.TempDir())
	var rounds atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{}, 64)
	s.sync = func(string) error {
		n := rounds.Add(1)
		started <- struct{}{}
		<-release
		if n == 2 {
			return errors.New("round 2 failed")
		}
		return nil
	}
	first := make(chan error, 1)
	go func() { first <- s.Sync() }()
	<-started
	const callers = 50
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- s.Sync() }()
	}
	time.Sleep(50 * time.Millisecond) // let them all join round 2
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("round 1 answered %v", err)
	}
	close(errs)
	for err := range errs {
		if err == nil || err.Error() != "round 2 failed" {
			t.Fatalf("a round-2 caller got %v", err)
		}
	}
	if n := rounds.Load(); n != 2 {
		t.Fatalf("%d syncs for %d callers that arrived during one: want 2", n, callers)
	}
	// A later caller gets a round of its own, not round 2's failure.
	if err := s.Sync(); err != nil {
		t.Fatalf("round 3: %v", err)
	}
}

func TestSharedSyncSyncsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	s := NewSharedSync(dir)
	if err := os.Mkdir(filepath.Join(dir, "v"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncNewIn(filepath.Join(dir, "v")); err != nil {
		t.Fatal(err)
	}
	if err := NewSharedSync(filepath.Join(dir, "missing")).Sync(); err == nil {
		t.Fatal("a sync of a missing directory answered nil")
	}
}
