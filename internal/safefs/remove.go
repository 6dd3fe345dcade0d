// Package safefs removes a volume's directory without ever leaving it:
// symlinks are unlinked, never followed, and the walk refuses to cross into
// another mount, whether the kernel's mount table says so beforehand or the
// directory's mount ID says so during the walk.
package safefs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/mounttable"
)

// ErrMounted means something is mounted at or below the tree.
var ErrMounted = errors.New("something is mounted in it")

// RemoveTree deletes dir and everything below it. dir must be absolute and
// clean. It refuses, deleting nothing, when dir is a symlink or anything is
// mounted at or below it; during the walk it stops at the first directory on
// another mount. A missing dir is not an error.
func RemoveTree(dir string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("refusing to remove %q: not a clean absolute path", dir)
	}
	if err := RefuseMounted(dir); err != nil {
		return err
	}
	parent, err := unix.Open(filepath.Dir(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", filepath.Dir(dir), err)
	}
	defer unix.Close(parent)
	base := filepath.Base(dir)
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("refusing to remove %s: it is not a directory (a symlink?); it was left as it is", dir)
	case err != nil:
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	mnt, err := mounttable.MountID(fd)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s: %w", dir, err)
	}
	parentMnt, err := mounttable.MountID(parent)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s: %w", filepath.Dir(dir), err)
	}
	if mnt != parentMnt {
		unix.Close(fd)
		return fmt.Errorf("refusing to remove %s: %w (it is a mount point); unmount it first", dir, ErrMounted)
	}
	// An empty directory (a volume never written to) goes at once, without
	// listing it; rmdir refuses anything else, and a mount point.
	switch err := unix.Unlinkat(parent, base, unix.AT_REMOVEDIR); {
	case err == nil || errors.Is(err, unix.ENOENT):
		unix.Close(fd)
		return nil
	case !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST):
		unix.Close(fd)
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	err = removeContents(fd, dir, mnt)
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(parent, base, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

// SyncNew makes a just-made directory durable: its own inode (owner,
// mode), then its entry in its parent.
func SyncNew(dir string) error {
	for _, p := range []string{dir, filepath.Dir(dir)} {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("syncing %s: %w", p, err)
		}
		err = unix.Fsync(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("syncing %s: %w", p, err)
		}
	}
	return nil
}

// removeContents empties the directory open at fd (path is for messages).
func removeContents(fd int, path string, mnt uint64) error {
	dup, err := unix.Dup(fd)
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
		err := unix.Unlinkat(fd, name, 0)
		if err == nil || errors.Is(err, unix.ENOENT) {
			continue
		}
		if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("removing %s: %w", filepath.Join(path, name), err)
		}
		// A directory: descend without following links, on this mount only.
		child, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", filepath.Join(path, name), err)
		}
		cm, err := mounttable.MountID(child)
		if err == nil && cm != mnt {
			err = fmt.Errorf("refusing to descend into %s: %w (another filesystem is mounted there)", filepath.Join(path, name), ErrMounted)
		}
		if err == nil {
			err = removeContents(child, filepath.Join(path, name), mnt)
		}
		unix.Close(child)
		if err != nil {
			return err
		}
		if err := unix.Unlinkat(fd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing %s: %w", filepath.Join(path, name), err)
		}
	}
	return nil
}

// RefuseMounted returns an ErrMounted error naming the mounts at or below
// p, if the kernel's mount table has any.
func RefuseMounted(p string) error {
	mounts, err := mounttable.Under(p)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("refusing to remove %s: %w (%s); unmount it first", p, ErrMounted, strings.Join(mounts, ", "))
	}
	return nil
}

// EmptyDir returns nil if p is a directory, not a symlink, with no entries:
// something stowage may take over or drop without losing anything.
func EmptyDir(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("it is not a directory")
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != io.EOF {
		return errors.New("it is not empty")
	}
	return nil
}

// Adoptable returns nil if p is an empty directory that is not a mount
// point: what a crash between making a volume's directory and recording the
// volume leaves behind, safe to take over since it holds nothing.
func Adoptable(p string) error {
	if err := EmptyDir(p); err != nil {
		return err
	}
	if m, err := mounttable.IsMountPoint(p); err != nil || m {
		return errors.New("it is a mount point")
	}
	return nil
}
