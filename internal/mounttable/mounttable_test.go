package mounttable

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Crosses must agree with the mount table for a tmpfs, a bind mount of the
// same filesystem (same device number, so only mount IDs tell), a plain
// directory, a symlink to a mount point and a missing path.
func TestCrossesAgreesWithTheTable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount")
	}
	dir := t.TempDir()
	mk := func(n string) string { p := filepath.Join(dir, n); os.Mkdir(p, 0o755); return p }
	tm, bind, src, plain := mk("tmpfs"), mk("bind"), mk("src"), mk("plain")
	if err := unix.Mount("t", tm, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(tm, unix.MNT_DETACH)
	if err := unix.Mount(src, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(bind, unix.MNT_DETACH)
	link := filepath.Join(dir, "link")
	os.Symlink(tm, link)
	for _, c := range []struct {
		path string
		want bool
	}{{tm, true}, {bind, true}, {src, false}, {plain, false}, {link, false}, {filepath.Join(dir, "missing"), false}} {
		got, err := Crosses(c.path)
		if err != nil || got != c.want {
			t.Errorf("Crosses(%s) = %v, %v; want %v", filepath.Base(c.path), got, err, c.want)
		}
		infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(c.path))
		if table := len(infos) > 0; err != nil || (c.path != link && table != got) {
			t.Errorf("%s: Crosses says %v, the mount table %v (%v)", filepath.Base(c.path), got, table, err)
		}
		if m, err := IsMountPoint(c.path); err != nil || m != got {
			t.Errorf("IsMountPoint(%s) = %v, %v; want %v", filepath.Base(c.path), m, err, got)
		}
	}
}
