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

	"golang.org/x/sys/unix"
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

// Tree copies the contents of directory src into the existing, empty
// directory dst, then gives dst src's ownership, mode and xattrs. It never
// follows a symlink, and stops with an error at another mount.
func Tree(dst, src string) error {
	var rootSt unix.Stat_t
	if err := unix.Lstat(src, &rootSt); err != nil {
		return err
	}
	links := map[[2]uint64]string{} // (dev, ino) of multiply linked files → first copy
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		target := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Dev != rootSt.Dev && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%s is on another filesystem (a mount inside the volume?); not copying across it", p)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok {
				return os.Link(first, target)
			}
			links[key] = target
		}
		if err := copyEntry(target, p, &st); err != nil {
			return fmt.Errorf("copying %s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Directories' own attributes last: a read-only mode would stop the
	// copy into them, and writing entries changes their times.
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		return attrs(filepath.Join(dst, rel), p, &st)
	})
}

func copyEntry(target, p string, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.Mkdir(target, 0o700)
	case unix.S_IFLNK:
		link, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if err := os.Symlink(link, target); err != nil {
			return err
		}
		return attrs(target, p, st)
	case unix.S_IFREG:
		in, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		_, err = File(out, in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return attrs(target, p, st)
	default: // devices, fifos, sockets
		if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
		return attrs(target, p, st)
	}
}

// attrs gives target p's owner, mode, xattrs and times, without following
// symlinks.
func attrs(target, p string, st *unix.Stat_t) error {
	if err := unix.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := copyXattrs(target, p); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// After chown, which clears setuid/setgid bits.
		if err := unix.Chmod(target, st.Mode&0o7777); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func copyXattrs(target, p string) error {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing xattrs: %w", err)
	}
	val := make([]byte, 64<<10)
	for _, name := range splitNul(buf[:n]) {
		vn, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return fmt.Errorf("reading xattr %s: %w", name, err)
		}
		if err := unix.Lsetxattr(target, name, val[:vn], 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
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
