package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/loop"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/safefs"
)

func newTest(t *testing.T) (*Image, *backend.Volume) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (loop devices, mounts)")
	}
	b, err := newImage(backend.Env{Dir: t.TempDir(), Log: logrus.New()})
	if err != nil {
		t.Fatal(err)
	}
	img := b.(*Image)
	opts, err := Module.Parse(map[string]string{"size": "16M"})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Validate(opts); err != nil {
		t.Fatal(err)
	}
	vol := &backend.Volume{Name: "v", Backend: ID, Options: opts}
	if err := img.Create(context.Background(), vol, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Deactivate(context.Background(), vol) })
	return img, vol
}

// The backend itself refuses to remove a mounted image, whatever the
// driver's ledger says, and Activate/Deactivate are idempotent.
func TestRemoveRefusesWhileMounted(t *testing.T) {
	b, vol := newTest(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := b.Activate(ctx, vol); err != nil {
			t.Fatalf("activate #%d: %v", i+1, err)
		}
	}
	if err := os.WriteFile(b.Mountpoint(vol)+"/data", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, vol); !errors.Is(err, safefs.ErrMounted) {
		t.Fatalf("Remove while mounted: %v; want a refusal", err)
	}
	if _, err := os.Stat(b.img(vol.Name)); err != nil {
		t.Fatalf("image gone after a refused remove: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := b.Deactivate(ctx, vol); err != nil {
			t.Fatalf("deactivate #%d: %v", i+1, err)
		}
	}
	if err := b.Remove(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.volDir(vol.Name)); !os.IsNotExist(err) {
		t.Fatalf("volume directory after remove: %v", err)
	}
}

// An image already attached (a crash between attach and mount) is reused,
// never attached to a second device.
func TestActivateReusesAttachedDevice(t *testing.T) {
	b, vol := newTest(t)
	dev, err := loop.Attach(b.img(vol.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := b.Activate(context.Background(), vol); err != nil {
		t.Fatal(err)
	}
	mounts, err := mounttable.Under(b.Mountpoint(vol))
	if err != nil || len(mounts) != 1 {
		t.Fatalf("mounts: %v %v", mounts, err)
	}
	again, err := loop.Find(b.img(vol.Name))
	if err != nil || again != dev.Path {
		t.Fatalf("image backed by %q after activate, want the pre-attached %s (%v)", again, dev.Path, err)
	}
}

// A size below the filesystem's minimum and an unknown fs are refused
// before anything is made.
func TestValidate(t *testing.T) {
	b := &Image{}
	for _, c := range []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"size": "100M", "fs": "xfs"}, "too small"},
		{map[string]string{"size": "1G", "fs": "zfs"}, "use ext4, xfs or btrfs"},
		{map[string]string{}, "size is required"},
	} {
		opts, err := Module.Parse(c.opts)
		if err == nil {
			err = b.Validate(opts)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.opts, err, c.want)
		}
	}
}

// The image's loop device mounted outside the volume's directory (by an
// admin, or inside a container's namespace) is not in the mount table under
// the volume, and LOOP_CLR_FD on it only arms autoclear: Remove must still
// refuse, and the image must stay.
func TestRemoveRefusesWhileDeviceMountedElsewhere(t *testing.T) {
	b, vol := newTest(t)
	ctx := context.Background()
	if err := b.Activate(ctx, vol); err != nil {
		t.Fatal(err)
	}
	dev, err := loop.Find(b.img(vol.Name))
	if err != nil || dev == "" {
		t.Fatalf("no loop device for the active image: %q %v", dev, err)
	}
	elsewhere := t.TempDir()
	if err := unix.Mount(dev, elsewhere, "ext4", 0, ""); err != nil {
		t.Fatalf("mounting %s elsewhere: %v", dev, err)
	}
	defer unix.Unmount(elsewhere, unix.MNT_DETACH)
	os.WriteFile(filepath.Join(elsewhere, "precious"), []byte("keep"), 0o644)
	if err := b.Deactivate(ctx, vol); err != nil {
		t.Fatal(err)
	}
	err = b.Remove(ctx, vol)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Remove while %s is mounted at %s = %v; want a refusal", dev, elsewhere, err)
	}
	if _, err := os.Stat(b.img(vol.Name)); err != nil {
		t.Fatalf("image deleted while its device was mounted elsewhere: %v", err)
	}

	// Once nothing holds the device, Remove proceeds.
	if err := unix.Unmount(elsewhere, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, vol); err != nil {
		t.Fatalf("Remove after the other mount ended: %v", err)
	}
	if _, err := os.Stat(b.volDir(vol.Name)); !os.IsNotExist(err) {
		t.Fatalf("volume directory after remove: %v", err)
	}
}
