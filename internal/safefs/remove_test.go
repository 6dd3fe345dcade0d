package safefs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/mounttable"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests mount tmpfs and bind mounts: run them as root")
	}
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err != nil {
		t.Fatalf("%s was deleted: %v", p, err)
	}
}

func mount(t *testing.T, src, target, fstype string, flags uintptr) {
	t.Helper()
	if err := unix.Mount(src, target, fstype, flags, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", src, target, err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
}

func TestRemovesTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	write(t, filepath.Join(dir, "a", "b", "c.txt"), "x")
	write(t, filepath.Join(dir, "top"), "y")
	os.Symlink("/etc/passwd", filepath.Join(dir, "a", "link"))
	os.Chmod(filepath.Join(dir, "a", "b"), 0o000) // root removes it anyway
	if err := RemoveTree(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", dir, err)
	}
	mustExist(t, "/etc/passwd")
}

func TestMissingDirIsFine(t *testing.T) {
	if err := RemoveTree(filepath.Join(t.TempDir(), "never")); err != nil {
		t.Fatalf("missing dir: %v", err)
	}
}

func TestRefusesUncleanPaths(t *testing.T) {
	for _, p := range []string{"", "/", "rel/dir", "/tmp/../etc", "/tmp/x/"} {
		if err := RemoveTree(p); err == nil {
			t.Errorf("RemoveTree(%q) accepted", p)
		}
	}
}

// A symlink inside the volume pointing outside is unlinked, never followed.
func TestNeverFollowsSymlinkOut(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	write(t, filepath.Join(outside, "precious"), "keep")
	dir := filepath.Join(base, "vol")
	write(t, filepath.Join(dir, "f"), "x")
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape-dir-slash")); err != nil {
		t.Fatal(err)
	}
	if err := RemoveTree(dir); err != nil {
		t.Fatal(err)
	}
	mustExist(t, filepath.Join(outside, "precious"))
}

// The volume's directory itself being a symlink is refused.
func TestRefusesWhenDirIsSymlink(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	write(t, filepath.Join(outside, "precious"), "keep")
	dir := filepath.Join(base, "vol")
	os.Symlink(outside, dir)
	err := RemoveTree(dir)
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("RemoveTree of a symlink = %v, want a refusal", err)
	}
	mustExist(t, filepath.Join(outside, "precious"))
	mustExist(t, dir)
}

// A tmpfs mounted below the volume: refused, nothing at all deleted.
func TestRefusesThroughLiveMountBelow(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "vol")
	write(t, filepath.Join(dir, "mine"), "x")
	sub := filepath.Join(dir, "sub", "mnt")
	os.MkdirAll(sub, 0o755)
	mount(t, "tmpfs", sub, "tmpfs", 0)
	write(t, filepath.Join(sub, "theirs"), "y")
	err := RemoveTree(dir)
	if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), sub) {
		t.Fatalf("RemoveTree with a mount below = %v, want ErrMounted naming %s", err, sub)
	}
	mustExist(t, filepath.Join(sub, "theirs"))
	mustExist(t, filepath.Join(dir, "mine"))
}

// A bind mount of data from elsewhere on the volume directory itself.
func TestRefusesWhenDirIsABindMount(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	src := filepath.Join(base, "elsewhere")
	write(t, filepath.Join(src, "precious"), "keep")
	dir := filepath.Join(base, "vol")
	os.MkdirAll(dir, 0o755)
	mount(t, src, dir, "", unix.MS_BIND)
	if err := RemoveTree(dir); !errors.Is(err, ErrMounted) {
		t.Fatalf("RemoveTree of a bind mount = %v, want ErrMounted", err)
	}
	mustExist(t, filepath.Join(src, "precious"))
}

// A mount the table check cannot see (made in another mount namespace, or
// appearing after the check) is still caught by the walk's mount-ID test.
// Simulated by calling the walk directly on a tree with a mount in it.
func TestWalkStopsAtAnotherFilesystem(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "vol")
	sub := filepath.Join(dir, "m")
	os.MkdirAll(sub, 0o755)
	mount(t, "tmpfs", sub, "tmpfs", 0)
	write(t, filepath.Join(sub, "theirs"), "y")
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mnt, err := mounttable.MountID(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := removeContents(fd, dir, mnt); !errors.Is(err, ErrMounted) {
		t.Fatalf("walk into another mount = %v, want ErrMounted", err)
	}
	mustExist(t, filepath.Join(sub, "theirs"))
}

// A file bind-mounted over a file deep in the volume: found by the subtree
// check (the table was never read), nothing deleted on either side.
func TestRefusesThroughFileBindMount(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	src := filepath.Join(base, "host-secret")
	write(t, src, "keep")
	dir := filepath.Join(base, "vol")
	target := filepath.Join(dir, "a", "b", "c", "file")
	write(t, target, "under")
	write(t, filepath.Join(dir, "mine"), "x")
	mount(t, src, target, "", unix.MS_BIND)
	err := RemoveTree(dir)
	if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), target) {
		t.Fatalf("RemoveTree with a file bind mount = %v, want ErrMounted naming %s", err, target)
	}
	mustExist(t, src)
	mustExist(t, filepath.Join(dir, "mine"))
	if b, _ := os.ReadFile(src); string(b) != "keep" {
		t.Fatalf("the mounted file changed: %q", b)
	}
}

// Mounts beside the volume, not in it, are none of its business; a missing
// volume directory has nothing mounted in it.
func TestRefuseMountedLooksOnlyAtTheSubtree(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	beside := filepath.Join(base, "vol2")
	os.MkdirAll(beside, 0o755)
	mount(t, "tmpfs", beside, "tmpfs", 0)
	dir := filepath.Join(base, "vol")
	write(t, filepath.Join(dir, "x", "y"), "z")
	if err := RefuseMounted(dir); err != nil {
		t.Fatalf("RefuseMounted with a mount beside it = %v, want nil", err)
	}
	if err := RefuseMounted(filepath.Join(base, "missing")); err != nil {
		t.Fatalf("RefuseMounted of a missing dir = %v, want nil", err)
	}
	if err := RemoveTree(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("vol still there: %v", err)
	}
}

// Many mounts below: the error names a bounded number of them.
func TestRefuseMountedNamesABoundedList(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "vol")
	for i := 0; i < maxReported+3; i++ {
		p := filepath.Join(dir, "m", string(rune('a'+i)))
		os.MkdirAll(p, 0o755)
		mount(t, "tmpfs", p, "tmpfs", 0)
	}
	err := RefuseMounted(dir)
	if !errors.Is(err, ErrMounted) || strings.Count(err.Error(), dir+"/m/") != maxReported {
		t.Fatalf("RefuseMounted = %v, want ErrMounted naming %d mounts", err, maxReported)
	}
}

// A volume never written to goes without a listing; one that is not empty
// any more is still emptied and removed.
func TestRemovesEmptyAndNonEmptyDirs(t *testing.T) {
	base := t.TempDir()
	empty, full := filepath.Join(base, "empty"), filepath.Join(base, "full")
	os.Mkdir(empty, 0o755)
	write(t, filepath.Join(full, "d", "f"), "x")
	for _, dir := range []string{empty, full} {
		if err := RemoveTree(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			t.Fatalf("%s still there: %v", dir, err)
		}
	}
}

// An empty directory that is a mount point is refused, not rmdir'ed.
func TestRefusesEmptyMountPoint(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "vol")
	os.Mkdir(dir, 0o755)
	mount(t, "tmpfs", dir, "tmpfs", 0)
	if err := RemoveTree(dir); !errors.Is(err, ErrMounted) {
		t.Fatalf("RemoveTree of an empty mount point = %v, want ErrMounted", err)
	}
	if m, _ := mounttable.IsMountPoint(dir); !m {
		t.Fatal("the mount is gone")
	}
}

func TestSyncNew(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	if err := SyncNew(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("SyncNew of a missing dir: %v", err)
	}
	os.Mkdir(dir, 0o700)
	if err := SyncNew(dir); err != nil {
		t.Fatal(err)
	}
}

// The sync helpers name what they could not sync, and refuse to follow a
// symlink to a file somewhere else.
func TestSyncHelpers(t *testing.T) {
	base := t.TempDir()
	f := filepath.Join(base, "img")
	write(t, f, "blocks")
	if err := SyncFile(f); err != nil {
		t.Fatalf("SyncFile = %v", err)
	}
	if err := SyncFS(base); err != nil {
		t.Fatalf("SyncFS = %v", err)
	}
	missing := filepath.Join(base, "missing")
	for name, err := range map[string]error{"SyncFile": SyncFile(missing), "SyncFS": SyncFS(missing), "SyncNew": SyncNew(missing)} {
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("%s of a missing path = %v, want an error naming it", name, err)
		}
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(f, link); err != nil {
		t.Fatal(err)
	}
	if err := SyncFile(link); err == nil {
		t.Error("SyncFile followed a symlink")
	}
}
