package copyfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests set owners, setuid bits and mounts: run them as root")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, data string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(data), 0o644))
}

// dirs makes src and dst (empty) and, outside src, a directory holding a
// secret file the copy must never read.
func dirs(t *testing.T) (src, dst, outside string) {
	base := t.TempDir()
	src, dst, outside = filepath.Join(base, "src"), filepath.Join(base, "dst"), filepath.Join(base, "outside")
	must(t, os.Mkdir(src, 0o755))
	must(t, os.Mkdir(dst, 0o755))
	write(t, filepath.Join(outside, "secret"), "HOST SECRET")
	return src, dst, outside
}

// noSecret fails if any regular file under dst holds the secret.
func noSecret(t *testing.T, dst string) {
	t.Helper()
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walking the copy: %v", err)
			return nil
		}
		if d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "HOST SECRET") {
				t.Errorf("the copy holds a file outside the source: %s", p)
			}
		}
		return nil
	})
}

func TestTreeCopiesOwnersModesLinksXattrsTimes(t *testing.T) {
	needRoot(t)
	src, dst, _ := dirs(t)
	write(t, filepath.Join(src, "f"), "one")
	write(t, filepath.Join(src, "d", "e", "g"), "deep")
	must(t, os.Link(filepath.Join(src, "f"), filepath.Join(src, "d", "h")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(src, "d", "l")))
	must(t, os.Chown(filepath.Join(src, "d"), 42, 43))
	must(t, unix.Chmod(filepath.Join(src, "d"), 0o1777))
	write(t, filepath.Join(src, "suid"), "#!")
	must(t, os.Chown(filepath.Join(src, "suid"), 1000, 1000))
	must(t, unix.Chmod(filepath.Join(src, "suid"), 0o4755))
	must(t, unix.Mkfifo(filepath.Join(src, "fifo"), 0o640))
	must(t, unix.Setxattr(filepath.Join(src, "f"), "user.colour", []byte("red"), 0))
	must(t, unix.Setxattr(filepath.Join(src, "d"), "user.shape", []byte("round"), 0))
	sparse, err := os.Create(filepath.Join(src, "sparse"))
	must(t, err)
	must(t, sparse.Truncate(64<<20))
	_, err = sparse.WriteAt([]byte("end"), 64<<20-3)
	must(t, err)
	sparse.Close()
	must(t, os.Mkdir(filepath.Join(src, "ro"), 0o755))
	write(t, filepath.Join(src, "ro", "x"), "x")
	must(t, os.Chmod(filepath.Join(src, "ro"), 0o555))
	old := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	must(t, os.Chtimes(filepath.Join(src, "d", "e"), old, old))
	must(t, os.Chown(src, 7, 8))

	must(t, Tree(dst, src))

	st := func(p string) *unix.Stat_t {
		t.Helper()
		var s unix.Stat_t
		must(t, unix.Lstat(filepath.Join(dst, p), &s))
		return &s
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "d", "e", "g")); string(b) != "deep" {
		t.Errorf("d/e/g holds %q", b)
	}
	if a, b := st("f"), st("d/h"); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link not kept: f ino %d nlink %d, d/h ino %d", a.Ino, a.Nlink, b.Ino)
	}
	if l, err := os.Readlink(filepath.Join(dst, "d", "l")); err != nil || l != "/etc/passwd" {
		t.Errorf("symlink = %q, %v; want it copied as a link to /etc/passwd", l, err)
	}
	if s := st("d"); s.Uid != 42 || s.Gid != 43 || s.Mode&0o7777 != 0o1777 {
		t.Errorf("d: owner %d:%d mode %o; want 42:43 1777", s.Uid, s.Gid, s.Mode&0o7777)
	}
	if s := st("suid"); s.Uid != 1000 || s.Mode&0o7777 != 0o4755 {
		t.Errorf("suid: owner %d mode %o; want 1000 4755", s.Uid, s.Mode&0o7777)
	}
	if s := st("fifo"); s.Mode&unix.S_IFMT != unix.S_IFIFO || s.Mode&0o777 != 0o640 {
		t.Errorf("fifo: mode %o; want a fifo 640", s.Mode)
	}
	if s := st("ro"); s.Mode&0o777 != 0o555 {
		t.Errorf("ro: mode %o; want 555", s.Mode&0o777)
	}
	if s := st("."); s.Uid != 7 || s.Gid != 8 {
		t.Errorf("root owner %d:%d; want 7:8", s.Uid, s.Gid)
	}
	if s := st("d/e"); s.Mtim.Sec != old.Unix() || s.Mtim.Nsec != 7000 {
		t.Errorf("d/e mtime %v; want %v", time.Unix(s.Mtim.Sec, s.Mtim.Nsec).UTC(), old)
	}
	if s := st("sparse"); s.Size != 64<<20 || s.Blocks*512 >= 1<<20 {
		t.Errorf("sparse: size %d, %d bytes allocated; want 64 MiB with almost nothing allocated", s.Size, s.Blocks*512)
	}
	for p, want := range map[string]string{"f": "user.colour=red", "d": "user.shape=round"} {
		name, val, _ := strings.Cut(want, "=")
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(dst, p), name, buf)
		if err != nil || string(buf[:n]) != val {
			t.Errorf("%s xattr %s = %q, %v; want %q", p, name, buf[:max(n, 0)], err, val)
		}
	}
}

// swapDuring runs tree with a hook that, when entry name is reached, calls
// swap after it was listed and before it is opened.
func swapDuring(dst, src, name string, swap func()) error {
	return tree(dst, src, func(dir, n string) {
		if n == name {
			swap()
		}
	})
}

func TestTreeRefusesDirectorySwappedForSymlink(t *testing.T) {
	src, dst, outside := dirs(t)
	write(t, filepath.Join(src, "a", "secret"), "harmless")
	err := swapDuring(dst, src, "a", func() {
		must(t, os.RemoveAll(filepath.Join(src, "a")))
		must(t, os.Symlink(outside, filepath.Join(src, "a")))
	})
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("copy = %v; want ErrChanged", err)
	}
	noSecret(t, dst)
}

func TestTreeRefusesFileSwappedForSymlink(t *testing.T) {
	src, dst, outside := dirs(t)
	write(t, filepath.Join(src, "f"), "harmless")
	err := swapDuring(dst, src, "f", func() {
		must(t, os.Remove(filepath.Join(src, "f")))
		must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(src, "f")))
	})
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("copy = %v; want ErrChanged", err)
	}
	noSecret(t, dst)
}

// A directory renamed over the listed one is another directory: the walk
// must not take it for the one it listed.
func TestTreeRefusesDirectorySwappedForAnother(t *testing.T) {
	src, dst, _ := dirs(t)
	write(t, filepath.Join(src, "a", "x"), "x")
	other := filepath.Join(t.TempDir(), "other")
	write(t, filepath.Join(other, "y"), "y")
	err := swapDuring(dst, src, "a", func() {
		must(t, os.RemoveAll(filepath.Join(src, "a")))
		must(t, os.Rename(other, filepath.Join(src, "a")))
	})
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("copy = %v; want ErrChanged", err)
	}
}

func TestTreeRefusesSymlinkRoot(t *testing.T) {
	src, dst, outside := dirs(t)
	must(t, os.Remove(src))
	must(t, os.Symlink(outside, src))
	if err := Tree(dst, src); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("copy of a symlinked root = %v; want 'not a directory'", err)
	}
	noSecret(t, dst)
}

// A mount inside the source (a bind mount of host data, say) is not the
// volume's: the copy stops there with an error instead of copying it.
func TestTreeStopsAtAnotherMount(t *testing.T) {
	needRoot(t)
	src, dst, outside := dirs(t)
	for _, c := range []struct{ name, target string }{{"dir", "m"}, {"file", "mf"}} {
		t.Run(c.name, func(t *testing.T) {
			target := filepath.Join(src, c.target)
			from := outside
			if c.name == "dir" {
				must(t, os.Mkdir(target, 0o755))
			} else {
				write(t, target, "harmless")
				from = filepath.Join(outside, "secret")
			}
			must(t, unix.Mount(from, target, "", unix.MS_BIND, ""))
			defer unix.Unmount(target, unix.MNT_DETACH)
			d := filepath.Join(dst, c.name)
			must(t, os.Mkdir(d, 0o755))
			err := Tree(d, src)
			if err == nil || !strings.Contains(err.Error(), "another mount") {
				t.Fatalf("copy = %v; want a refusal to cross into another mount", err)
			}
			noSecret(t, d)
		})
	}
}
