// Package copyfs copies files and trees the way a volume clone needs:
// reflink first (instant, shares blocks), holes kept, and for trees
// ownership, modes, xattrs, symlinks (as symlinks) and hard links preserved,
// never following a link or crossing into another mount.
package copyfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/mounttable"
)

// File copies the contents of src into dst (both open, dst empty): a
// reflink if the filesystem shares blocks, else a copy of the data
// segments only, so a sparse file stays sparse.
func File(dst, src *os.File) (reflinked bool, err error) {
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err == nil {
		return true, nil
	}
	fi, err := src.Stat()
	if err != nil {
		return false, err
	}
	size := fi.Size()
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return false, plainCopy(dst, src, size)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return false, err
		}
		for pos := data; pos < hole; {
			roff, woff := pos, pos
			n, err := unix.CopyFileRange(sfd, &roff, dfd, &woff, int(min(hole-pos, 1<<30)), 0)
			if err != nil {
				return false, fmt.Errorf("copying data: %w", err)
			}
			if n == 0 {
				break
			}
			pos += int64(n)
		}
		off = hole
	}
	return false, dst.Truncate(size)
}

func plainCopy(dst, src *os.File, size int64) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	return dst.Truncate(size)
}

// ErrChanged means an entry of the source changed between being listed and
// being opened: a container writing to a mounted source (from_mounted=true).
var ErrChanged = errors.New("it changed while it was being copied")

// Tree copies the contents of directory src into the existing, empty
// directory dst, then gives dst src's ownership, mode and xattrs. It never
// follows a symlink and stops with an error at another mount.
//
// The source may be live (a clone with from_mounted=true) and so hostile: a
// container can swap a directory for a symlink mid-copy. So every entry is
// reached relative to its parent's descriptor, never through a path of more
// than one component, and what is opened must be what was listed; any
// mismatch stops the copy with ErrChanged rather than copying something else.
func Tree(dst, src string) error { return tree(dst, src, nil) }

// tree is Tree with a hook that runs after an entry is listed and before it
// is opened, so a test can change the source at the worst moment.
func tree(dst, src string, beforeOpen func(dir, name string)) error {
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", src, notDir(err))
	}
	defer unix.Close(sfd)
	dfd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dst, notDir(err))
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	mnt, err := mounttable.MountID(sfd)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	w := &walker{mnt: mnt, dstRoot: dfd, links: map[[2]uint64]string{}, beforeOpen: beforeOpen}
	if err := w.dir(sfd, dfd, src, "."); err != nil {
		return err
	}
	return attrs(unix.AT_FDCWD, dst, dfd, &st, fdXattrs(sfd))
}

type walker struct {
	mnt        uint64               // the source root's mount: never leave it
	dstRoot    int                  // hard links name their first copy from here
	links      map[[2]uint64]string // (dev, ino) of multiply linked files → first copy, relative to dstRoot
	beforeOpen func(dir, name string)
}

// dir copies the entries of the source directory open at sfd into the
// destination directory open at dfd; path and rel are for messages and links.
func (w *walker) dir(sfd, dfd int, path, rel string) error {
	dup, err := unix.Dup(sfd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), path)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("listing %s: %w", path, err)
	}
	for _, name := range names {
		if err := w.entry(sfd, dfd, path, rel, name); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) entry(sfd, dfd int, dir, rel, name string) error {
	p, r := filepath.Join(dir, name), filepath.Join(rel, name)
	var listed unix.Stat_t
	if err := unix.Fstatat(sfd, name, &listed, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("reading %s: %w", p, changed(err))
	}
	if w.beforeOpen != nil {
		w.beforeOpen(dir, name)
	}
	if listed.Mode&unix.S_IFMT == unix.S_IFDIR {
		return w.subdir(sfd, dfd, p, r, name, &listed)
	}
	// O_PATH opens without side effects, so a device node swapped in for a
	// listed file is never opened for real.
	fd, err := unix.Openat(sfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", p, changed(err))
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := w.check(fd, p, &listed, &st); err != nil {
		return err
	}
	if st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := w.links[key]; ok {
			if err := unix.Linkat(w.dstRoot, first, dfd, name, 0); err != nil {
				return fmt.Errorf("linking %s: %w", p, err)
			}
			return nil
		}
		w.links[key] = r
	}
	if err := copyEntry(fd, sfd, dfd, name, &st); err != nil {
		return fmt.Errorf("copying %s: %w", p, err)
	}
	return nil
}

// check fills st from fd and refuses it if it is not the listed entry or
// sits on another mount.
func (w *walker) check(fd int, p string, listed, st *unix.Stat_t) error {
	if err := unix.Fstat(fd, st); err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	if st.Dev != listed.Dev || st.Ino != listed.Ino || st.Mode&unix.S_IFMT != listed.Mode&unix.S_IFMT {
		return fmt.Errorf("%s: %w; nothing was copied from what is there now: stop the containers using the source and retry", p, ErrChanged)
	}
	mnt, err := mounttable.MountID(fd)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if mnt != w.mnt {
		return fmt.Errorf("%s is on another mount (a mount inside the volume?); not copying across it: unmount it and retry", p)
	}
	return nil
}

func (w *walker) subdir(sfd, dfd int, p, r, name string, listed *unix.Stat_t) error {
	child, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", p, changed(err))
	}
	defer unix.Close(child)
	var st unix.Stat_t
	if err := w.check(child, p, listed, &st); err != nil {
		return err
	}
	if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
		return fmt.Errorf("copying %s: %w", p, err)
	}
	dchild, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("copying %s: %w", p, err)
	}
	defer unix.Close(dchild)
	if err := w.dir(child, dchild, p, r); err != nil {
		return err
	}
	// A directory's own attributes after its entries: a read-only mode
	// would stop the copy into it, and writing entries changes its times.
	if err := attrs(dfd, name, dchild, &st, fdXattrs(child)); err != nil {
		return fmt.Errorf("copying %s: %w", p, err)
	}
	return nil
}

// copyEntry makes a copy of the non-directory open (O_PATH) at fd, named
// name in the source directory sfd, as name in the destination directory dfd.
func copyEntry(fd, sfd, dfd int, name string, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		link, err := readlink(fd)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(link, dfd, name); err != nil {
			return err
		}
		return attrs(dfd, name, -1, st, pathXattrs(procPath(sfd, name)))
	case unix.S_IFREG:
		// Reopening the checked O_PATH descriptor reads exactly that inode.
		rfd, err := unix.Open(procPath(fd, ""), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("reopening through /proc/self/fd: %w", err)
		}
		in := os.NewFile(uintptr(rfd), name)
		defer in.Close()
		ofd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		out := os.NewFile(uintptr(ofd), name)
		defer out.Close()
		if _, err := File(out, in); err != nil {
			return err
		}
		return attrs(dfd, name, ofd, st, fdXattrs(rfd))
	default: // devices, fifos, sockets: recreated, never opened
		if err := unix.Mknodat(dfd, name, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
		return attrs(dfd, name, -1, st, pathXattrs(procPath(sfd, name)))
	}
}

func readlink(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// procPath names name in the directory open at fd by one magic link and one
// component, so nothing in the path can be swapped; "" names fd itself.
func procPath(fd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	if name != "" {
		p += "/" + name
	}
	return p
}

func notDir(err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("not a directory (a symlink?): %w", err)
	}
	return err
}

// changed turns the errors of an entry that moved or changed type since it
// was listed into ErrChanged.
func changed(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%w (%v); stop the containers using the source and retry", ErrChanged, err)
	}
	return err
}

// attrs gives the destination entry name in dfd (dfd may be AT_FDCWD with
// an absolute name) st's owner, xattrs, mode and times, never following a
// symlink. fd is the entry open for writing attributes, or -1.
func attrs(dfd int, name string, fd int, st *unix.Stat_t, src xattrSource) error {
	if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	set := func(attr string, val []byte) error { return unix.Fsetxattr(fd, attr, val, 0) }
	if fd < 0 {
		p := procPath(dfd, name)
		set = func(attr string, val []byte) error { return unix.Lsetxattr(p, attr, val, 0) }
	}
	if err := copyXattrs(src, set); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// After chown, which clears setuid/setgid bits.
		if err := unix.Fchmodat(dfd, name, st.Mode&0o7777, 0); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// xattrSource reads the xattrs of one source entry.
type xattrSource struct {
	list func(buf []byte) (int, error)
	get  func(attr string, buf []byte) (int, error)
}

func fdXattrs(fd int) xattrSource {
	return xattrSource{
		list: func(buf []byte) (int, error) { return unix.Flistxattr(fd, buf) },
		get:  func(attr string, buf []byte) (int, error) { return unix.Fgetxattr(fd, attr, buf) },
	}
}

// pathXattrs is for symlinks and devices, which cannot be opened for
// reading: p must come from procPath.
func pathXattrs(p string) xattrSource {
	return xattrSource{
		list: func(buf []byte) (int, error) { return unix.Llistxattr(p, buf) },
		get:  func(attr string, buf []byte) (int, error) { return unix.Lgetxattr(p, attr, buf) },
	}
}

func copyXattrs(src xattrSource, set func(attr string, val []byte) error) error {
	buf := make([]byte, 64<<10)
	n, err := src.list(buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing xattrs: %w", err)
	}
	val := make([]byte, 64<<10)
	for _, name := range splitNul(buf[:n]) {
		vn, err := src.get(name, val)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return fmt.Errorf("reading xattr %s: %w", name, err)
		}
		if err := set(name, val[:vn]); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("setting xattr %s: %w", name, err)
		}
	}
	return nil
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
