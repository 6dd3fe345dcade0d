package tmpfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/backend"
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
	if err := b.Remove(ctx, vol); err == nil || !strings.Contains(err.Error(), "still mounted") {
		t.Fatalf("Remove while mounted: %v", err)
	}
	inv, _ := b.Inventory(ctx, []*backend.Volume{vol})
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
