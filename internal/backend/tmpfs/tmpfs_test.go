package tmpfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/safefs"
	"github.com/stowage/stowage/internal/store"
)

func TestMountDiscardAndRemoveRefusedWhileMounted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mounts)")
	}
	b := &Tmpfs{dir: t.TempDir()}
	opts, err := Module.Parse(map[string]string{"size": "1M", "uid": "12", "mode": "0700"})
	if err != nil {
		t.Fatal(err)
	}
	if got := MountData(opts); got != "size=1048576,mode=0700,uid=12" {
		t.Errorf("MountData = %q", got)
	}
	vol := &backend.Volume{Name: "t", Options: opts}
	ctx := context.Background()
	if err := b.Create(ctx, vol, opts); err != nil {
		t.Fatal(err)
	}
	if err := b.Activate(ctx, vol); err != nil {
		t.Fatal(err)
	}
	defer b.Deactivate(ctx, vol)
	if err := b.Activate(ctx, vol); err != nil {
		t.Fatalf("second activate: %v", err)
	}
	os.WriteFile(filepath.Join(b.Mountpoint(vol), "f"), []byte("x"), 0o644)
	if err := b.Remove(ctx, vol); !errors.Is(err, safefs.ErrMounted) {
		t.Fatalf("Remove while mounted: %v", err)
	}
	inv, _ := backend.RunInventory(ctx, b, []*backend.Volume{vol})
	if len(inv.Problems) != 0 || len(inv.Missing) != 0 {
		t.Errorf("inventory of a healthy mounted tmpfs: %+v", inv)
	}
	if err := b.Deactivate(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(b.Mountpoint(vol), "f")); !os.IsNotExist(err) {
		t.Errorf("data after unmount: %v; want it discarded", err)
	}
	if err := b.Remove(ctx, vol); err != nil {
		t.Fatal(err)
	}
}

// A crash between making the mount point and recording the volume leaves an
// empty directory: the next Create takes it over. Anything else is kept.
func TestCreateAdoptsOnlyAnEmptyLeftover(t *testing.T) {
	b := &Tmpfs{dir: t.TempDir()}
	ctx := context.Background()
	empty := &backend.Volume{Name: "empty"}
	os.Mkdir(b.path("empty"), 0o700)
	if err := b.Create(ctx, empty, backend.Options{}); err != nil {
		t.Fatalf("Create over an empty leftover: %v", err)
	}

	full := &backend.Volume{Name: "full"}
	os.Mkdir(b.path("full"), 0o700)
	keep := filepath.Join(b.path("full"), "someones-file")
	os.WriteFile(keep, []byte("keep me"), 0o600)
	err := b.Create(ctx, full, backend.Options{})
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("Create over a non-empty leftover = %v; want a refusal", err)
	}
	if data, err := os.ReadFile(keep); err != nil || string(data) != "keep me" {
		t.Fatalf("refused Create touched the leftover: %q %v", data, err)
	}
}

// After a managed plugin restarts in a new mount namespace, running
// containers hold a tmpfs stowage cannot see. Activate must refuse rather
// than mount a second, empty tmpfs under the same volume.
func TestActivateRefusesWhenHeldButNotMounted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mounts)")
	}
	b := &Tmpfs{dir: t.TempDir()}
	vol := &backend.Volume{Name: "t", Options: backend.Options{}}
	ctx := context.Background()
	if err := b.Create(ctx, vol, vol.Options); err != nil {
		t.Fatal(err)
	}
	vol.Mounts = map[string]store.Mount{"held": {Count: 1}}
	err := b.Activate(ctx, vol)
	if err == nil || !strings.Contains(err.Error(), "stop those containers first") {
		t.Fatalf("Activate of a held but unmounted tmpfs = %v, want a refusal naming the fix", err)
	}
	if m, _ := mounttable.IsMountPoint(b.Mountpoint(vol)); m {
		t.Fatal("a tmpfs was mounted despite the refusal")
	}
}
