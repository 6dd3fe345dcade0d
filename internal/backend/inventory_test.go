package backend

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// mapInventoryDir is InventoryDir as it was before it streamed: a map of
// every entry, every known volume at once.
func mapInventoryDir(dir string, known []*Volume, present func(v *Volume, entry bool) bool) (Inventory, error) {
	var inv Inventory
	entries, err := os.ReadDir(dir)
	if err != nil {
		return inv, err
	}
	onDisk := map[string]bool{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			onDisk[e.Name()] = true
		}
	}
	for _, v := range known {
		ok := onDisk[v.Name]
		if present != nil {
			ok = present(v, ok)
		}
		if !ok {
			inv.Missing = append(inv.Missing, v.Name)
		}
		delete(onDisk, v.Name)
	}
	for name := range onDisk {
		inv.Unrecorded = append(inv.Unrecorded, name)
	}
	sort.Strings(inv.Unrecorded)
	return inv, nil
}

type dirBackend struct {
	Backend
	dir     string
	present func(v *Volume, entry bool) bool
}

func (b dirBackend) Inventory(context.Context) (InventoryRun, error) {
	return InventoryDir(b.dir, b.present)
}

// The streaming InventoryDir, handed its volumes in chunks, reports what
// the map over the whole directory did: on directories larger than one
// read batch, with dot-names, names that sort between recorded ones, and a
// present check that overrules the entry.
func TestInventoryDirMatchesTheWholeDirectoryAlgorithm(t *testing.T) {
	rng := rand.New(rand.NewSource(14))
	for round, n := range []int{0, 1, 7, readDirBatch + 5, 3*InventoryChunk + 11} {
		dir := t.TempDir()
		var known []*Volume
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("v%05d", i)
			if i%5 == 0 {
				name += fmt.Sprintf("-%c", 'a'+rng.Intn(26))
			}
			switch r := rng.Intn(10); {
			case r < 6: // recorded with its entry
				os.Mkdir(filepath.Join(dir, name), 0o700)
				known = append(known, &Volume{Name: name})
			case r < 8: // recorded, entry gone
				known = append(known, &Volume{Name: name})
			case r < 9: // an entry no record names
				os.Mkdir(filepath.Join(dir, name), 0o700)
			default: // scratch, never reported
				os.WriteFile(filepath.Join(dir, "."+name), nil, 0o600)
			}
		}
		sort.Slice(known, func(i, j int) bool { return known[i].Name < known[j].Name })
		for _, present := range []func(*Volume, bool) bool{nil, func(v *Volume, entry bool) bool { return entry != strings.HasSuffix(v.Name, "7") }} {
			want, err := mapInventoryDir(dir, known, present)
			if err != nil {
				t.Fatal(err)
			}
			got, err := RunInventory(context.Background(), dirBackend{dir: dir, present: present}, known)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d (%d names, present %v): streaming\n%+v\nwhole directory\n%+v", round, n, present != nil, got, want)
			}
			if n > 100 && (len(got.Missing) == 0 || len(got.Unrecorded) == 0) {
				t.Fatalf("round %d: nothing to compare: %+v", round, got)
			}
		}
	}
}

func TestInventoryDirOfAMissingDirectoryFails(t *testing.T) {
	if _, err := InventoryDir(filepath.Join(t.TempDir(), "nope"), nil); !os.IsNotExist(err) {
		t.Fatalf("InventoryDir of a missing directory: %v; want not-exist", err)
	}
}
