package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestScanVisitsEveryRecordOnceInOrderAcrossChunks(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 23
	for i := 0; i < n; i++ {
		if err := s.Create(&Volume{Name: fmt.Sprintf("v%02d", i), Backend: "dir", CreatedAt: time.Unix(int64(i), 0).UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, chunk := range []int{1, 3, 23, 24, 512} {
		var got []string
		if err := s.scan(chunk, func(v *Volume) error { got = append(got, v.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("chunk %d: saw %d records, want %d: %v", chunk, len(got), n, got)
		}
		for i, name := range got {
			if want := fmt.Sprintf("v%02d", i); name != want {
				t.Fatalf("chunk %d: record %d is %s, want %s", chunk, i, name, want)
			}
		}
	}
}

func TestScanSeesRecordsThatLiveThroughoutWhileOthersChange(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 20; i++ {
		if err := s.Create(&Volume{Name: fmt.Sprintf("v%02d", i), Backend: "dir"}); err != nil {
			t.Fatal(err)
		}
	}
	// Between chunks, delete odd records already passed and not yet
	// reached, and add new ones: every even record must still be seen once.
	seen := map[string]int{}
	err = s.scan(4, func(v *Volume) error {
		seen[v.Name]++
		if v.Name == "v05" {
			for _, d := range []string{"v03", "v07", "v13"} {
				if err := s.Delete(d); err != nil {
					return err
				}
			}
			return s.Create(&Volume{Name: "v05a", Backend: "dir"})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i += 2 {
		if n := seen[fmt.Sprintf("v%02d", i)]; n != 1 {
			t.Errorf("v%02d seen %d times, want once", i, n)
		}
	}
	if seen["v13"] != 0 {
		t.Errorf("v13 was deleted before its chunk was read but was seen")
	}
}

func TestScanStopsAtTheCallersError(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), FileName), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 5; i++ {
		s.Create(&Volume{Name: fmt.Sprintf("v%d", i), Backend: "dir"})
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.scan(2, func(*Volume) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("scan returned %v after %d calls; want the caller's error after 1", err, calls)
	}
}

// ScanBackends gives exactly the records of the backends asked for, in
// name order, whether or not a record has the fast shape.
func TestScanBackendsGivesOnlyThoseBackends(t *testing.T) {
	s, _ := openTemp(t)
	defer s.Close()
	created := time.Date(2026, 12, 3, 1, 2, 3, 0, time.UTC)
	want := map[string][]string{}
	for i := 0; i < 2*scanChunk+9; i++ {
		b := []string{"dir", "tmpfs", "image", "dir\u00e9"}[i%4]
		v := &Volume{Name: fmt.Sprintf("v%04d", i), Backend: b, CreatedAt: created}
		if i%7 == 0 { // a ledger entry: no fast shape, decoded in full
			v.Mounts = map[string]Mount{"m": {Count: 1, Boot: "b", Since: created}}
		}
		if err := s.Create(v); err != nil {
			t.Fatal(err)
		}
		want[b] = append(want[b], v.Name)
	}
	for _, ids := range []map[string]bool{{"tmpfs": true}, {"tmpfs": true, "image": true}, {"dir\u00e9": true}, {}, {"nope": true}} {
		var got, exp []string
		if err := s.ScanBackends(ids, func(v *Volume) error {
			if !ids[v.Backend] {
				t.Errorf("ScanBackends(%v) gave %s of backend %q", ids, v.Name, v.Backend)
			}
			got = append(got, v.Name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for id := range ids {
			exp = append(exp, want[id]...)
		}
		sort.Strings(exp)
		if strings.Join(got, ",") != strings.Join(exp, ",") {
			t.Errorf("ScanBackends(%v) gave %d records, want %d:\n got %v\nwant %v", ids, len(got), len(exp), got, exp)
		}
	}
}
