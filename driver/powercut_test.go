package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/all"
	"github.com/stowage/stowage/internal/loop"
	"github.com/stowage/stowage/internal/store"
	"github.com/stowage/stowage/internal/tool"
)

// The shutdown ioctl of ext4 and xfs (one number, one flag) without a log
// flush: every write not yet made durable by a sync is lost, as in a power
// cut (xfstests' "godown").
const (
	iocShutdown          = 0x8004587d // _IOR('X', 125, __u32)
	goingFlagsNoLogFlush = 2
)

// powerCutFS is a small filesystem on a loop device, mounted at Dir, that
// can be cut off as a power cut would and mounted again.
type powerCutFS struct {
	t    *testing.T
	dev  *loop.Device
	kind string
	Dir  string
}

func newPowerCutFS(t *testing.T, kind string) *powerCutFS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("power-cut tests mount a filesystem image and need root: run go test as root")
	}
	base := t.TempDir()
	img := filepath.Join(base, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 320<<20); err != nil { // xfs's least
		t.Fatal(err)
	}
	mkfs := map[string][]string{"ext4": {"mkfs.ext4", "-q", "-F"}, "xfs": {"mkfs.xfs", "-q", "-f"}}[kind]
	if out, err := tool.Run(context.Background(), mkfs[0], append(mkfs[1:], img)...); err != nil {
		t.Fatalf("%s: %v %s", mkfs[0], err, out)
	}
	dev, err := loop.Attach(img)
	if err != nil {
		t.Fatal(err)
	}
	f := &powerCutFS{t: t, dev: dev, kind: kind, Dir: filepath.Join(base, "mnt")}
	if err := os.Mkdir(f.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f.mount()
	t.Cleanup(func() {
		unix.Unmount(f.Dir, unix.MNT_DETACH)
		dev.Close() // autoclear: the device goes with its last user
	})
	return f
}

func (f *powerCutFS) mount() {
	f.t.Helper()
	if err := unix.Mount(f.dev.Path, f.Dir, f.kind, 0, ""); err != nil {
		f.t.Fatalf("mounting %s: %v", f.dev.Path, err)
	}
}

// cut loses everything not yet synced, runs release (which must close
// what is open there; its writes fail), then mounts the filesystem again
// (its journal replays what was committed).
func (f *powerCutFS) cut(release func()) {
	f.t.Helper()
	fd, err := unix.Open(f.Dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	flags := uint32(goingFlagsNoLogFlush)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocShutdown, uintptr(unsafe.Pointer(&flags)))
	unix.Close(fd)
	if errno != 0 {
		f.t.Fatalf("%s shutdown ioctl: %v", f.kind, errno)
	}
	release()
	if err := unix.Unmount(f.Dir, 0); err != nil {
		f.t.Fatalf("unmounting the cut filesystem: %v", err)
	}
	f.mount()
}

// Whatever a Create or Remove answered survives a power cut: an answered
// Create (a directory with its mode, an image clone, a dir clone, a tmpfs
// mount point, a bind marker) has its record and its storage, an answered
// Remove has neither. Without its sync each case fails: record and storage
// part ways. Each runs alone on its own filesystem, ext4 and xfs: on ext4
// one fsync commits every change made before it, so a later sync would
// hide a missing one.
func TestAnsweredChangesSurviveAPowerCut(t *testing.T) {
	for _, kind := range []string{"ext4", "xfs"} {
		t.Run(kind, func(t *testing.T) { powerCutCases(t, kind) })
	}
}

func powerCutCases(t *testing.T, kind string) {
	t.Run("Create", func(t *testing.T) {
		st, d, cut := powerCutDriver(t, kind)
		path := createThenCut(t, st, d, cut, &volume.CreateRequest{Name: "new", Options: map[string]string{"mode": "0750"}})
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatalf("the created volume's directory is lost: %v", err)
		}
		if fi.Mode().Perm() != 0o750 {
			t.Errorf("the created volume's mode is %v, want 0750", fi.Mode().Perm())
		}
	})
	t.Run("image clone", func(t *testing.T) {
		st, d, cut := powerCutDriver(t, kind, &volume.CreateRequest{Name: "src", Options: map[string]string{"backend": "image", "size": "16M"}})
		mnt := createThenCut(t, st, d, cut, &volume.CreateRequest{Name: "copy", Options: map[string]string{"backend": "image", "from": "src"}})
		img := filepath.Join(filepath.Dir(mnt), "disk.img")
		// The copy went through the page cache: without a sync the record
		// would outlive the filesystem in it.
		if out, err := tool.Run(context.Background(), "e2fsck", "-n", "-f", img); err != nil {
			t.Errorf("the clone's filesystem did not survive: %v\n%s", err, out)
		}
	})
	t.Run("dir clone", func(t *testing.T) {
		st, d, cut := powerCutDriver(t, kind, &volume.CreateRequest{Name: "src"})
		if err := os.WriteFile(filepath.Join(mountpointOf(t, d, "src"), "data"), []byte("kept"), 0o644); err != nil {
			t.Fatal(err)
		}
		syncFS(t, mountpointOf(t, d, "src"))
		path := filepath.Join(createThenCut(t, st, d, cut, &volume.CreateRequest{Name: "copy", Options: map[string]string{"from": "src"}}), "data")
		if b, err := os.ReadFile(path); err != nil || string(b) != "kept" {
			t.Errorf("the clone's data did not survive: %q, %v", b, err)
		}
	})
	t.Run("first Create in a new root", func(t *testing.T) {
		// Nothing synced beforehand: the state file and its journal are
		// made by this start, and must be there after the cut with the
		// volume in them.
		open, cut := powerCutRoot(t, kind)
		st, d := open()
		path := createThenCut(t, st, d, cut, &volume.CreateRequest{Name: "first"})
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("the first volume's directory is lost: %v", err)
		}
	})
	t.Run("tmpfs", func(t *testing.T) {
		st, d, cut := powerCutDriver(t, kind)
		// The memory is gone after a power cut; its mount point must not be.
		path := createThenCut(t, st, d, cut, &volume.CreateRequest{Name: "scratch", Options: map[string]string{"backend": "tmpfs", "size": "1M"}})
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("the tmpfs volume's mount point is lost: %v", err)
		}
	})
	t.Run("bind", func(t *testing.T) {
		st, d, cut := powerCutDriver(t, kind)
		root := rootOf(d)
		marker := filepath.Join(root, "bind", "adopt")
		createThenCut(t, st, d, cut, &volume.CreateRequest{Name: "adopt", Options: map[string]string{"backend": "bind", "path": filepath.Join(filepath.Dir(root), "host", "adopted")}})
		if _, err := os.Lstat(marker); err != nil {
			t.Errorf("the adopted path's marker is lost: %v", err)
		}
	})
	t.Run("Remove", func(t *testing.T) {
		st, d, cut := powerCutDriver(t, kind, &volume.CreateRequest{Name: "old"})
		path := mountpointOf(t, d, "old")
		if err := d.Remove(&volume.RemoveRequest{Name: "old"}); err != nil {
			t.Fatal(err)
		}
		st = cut(st)
		defer st.Close()
		if _, err := st.Get("old"); err == nil {
			t.Error("the removed volume's record came back")
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("the removed volume's directory came back (%v): the next Create of its name would be refused", err)
		}
	})
}

// powerCutDriver is a driver with dir, image, tmpfs and bind backends on a
// powerCutFS, with the volumes asked for made and everything so far on
// disk. cut cuts the power under st and returns the state file opened
// again.
func powerCutDriver(t *testing.T, kind string, creates ...*volume.CreateRequest) (*store.Store, *Driver, func(*store.Store) *store.Store) {
	open, cut := powerCutRoot(t, kind)
	st, d := open()
	for _, c := range creates {
		if err := d.Create(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, d = open()
	syncFS(t, rootOf(d))
	return st, d, cut
}

// powerCutRoot is a fresh root on a powerCutFS: open opens its state and
// driver; cut cuts the power under st and returns the state opened again.
func powerCutRoot(t *testing.T, kind string) (open func() (*store.Store, *Driver), cut func(*store.Store) *store.Store) {
	fs := newPowerCutFS(t, kind)
	root := filepath.Join(fs.Dir, "root")
	host := filepath.Join(fs.Dir, "host")
	for _, dir := range []string{root, host, filepath.Join(host, "adopted")} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	syncFS(t, fs.Dir)
	open = func() (*store.Store, *Driver) {
		st, err := store.Open(filepath.Join(root, store.FileName), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		insts, err := backend.NewRegistry(all.Modules()...).Provision(root, []string{"dir", "image", "tmpfs", "bind"}, map[string]map[string]string{"bind": {"roots": host}}, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(Config{Store: st, Backends: insts, DefaultBackend: "dir", BootID: "boot-1", Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		return st, d
	}
	cut = func(st *store.Store) *store.Store {
		// What it answered must be on disk already: its writes fail now.
		fs.cut(func() { st.Close() })
		st, _ = open()
		return st
	}
	return open, cut
}

// createThenCut creates req's volume, cuts the power and checks its record
// is there; it returns the volume's mount point.
func createThenCut(t *testing.T, st *store.Store, d *Driver, cut func(*store.Store) *store.Store, req *volume.CreateRequest) string {
	t.Helper()
	if err := d.Create(req); err != nil {
		t.Fatal(err)
	}
	path := mountpointOf(t, d, req.Name)
	st = cut(st)
	t.Cleanup(func() { st.Close() })
	if _, err := st.Get(req.Name); err != nil {
		t.Errorf("the record of %s is lost: %v", req.Name, err)
	}
	return path
}

// rootOf is the root d's backends live under.
func rootOf(d *Driver) string {
	return filepath.Dir(filepath.Dir(d.cfg.Backends["dir"].Mountpoint(&backend.Volume{Name: "x"})))
}

func mountpointOf(t *testing.T, d *Driver, name string) string {
	t.Helper()
	r, err := d.Path(&volume.PathRequest{Name: name})
	if err != nil || r.Mountpoint == "" {
		t.Fatalf("Path %s = %+v, %v", name, r, err)
	}
	return r.Mountpoint
}

func syncFS(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatal(err)
	}
}
