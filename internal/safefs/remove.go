// Package safefs removes a volume's directory without ever leaving it:
// symlinks are unlinked, never followed, and the walk refuses to cross into
// another mount, whether a check of the tree's mount IDs finds it beforehand
// or the walk meets it (a mount made in between).
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
	case err == nil:
		unix.Close(fd)
		return syncRemoved(parent, dir)
	case errors.Is(err, unix.ENOENT):
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
	return syncRemoved(parent, dir)
}

// syncRemoved makes a removal durable before the caller records it: after
// a power cut a directory must not come back that no record claims (the
// next Create of its name would be refused over it).
func syncRemoved(parent int, dir string) error {
	if err := unix.Fsync(parent); err != nil {
		return fmt.Errorf("%s is removed, but syncing %s: %w", dir, filepath.Dir(dir), err)
	}
	return nil
}

// SyncRemoved makes the removal of path durable: its directory is synced.
func SyncRemoved(path string) error {
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("%s is removed, but %w", path, err)
	}
	return nil
}

// SyncNew makes a just-made directory durable: its own inode (owner,
// mode), then its entry in its parent.
func SyncNew(dir string) error {
	if err := SyncDir(dir); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(dir))
}

// SyncDir makes the names in dir durable (a rename into it, say).
func SyncDir(dir string) error {
	return syncAt(dir, unix.O_DIRECTORY, unix.Fsync, "syncing %s")
}

// SyncFile makes a just-written file's data durable; its name is the
// caller's to sync, with its directory.
func SyncFile(path string) error {
	return syncAt(path, unix.O_NOFOLLOW, unix.Fsync, "syncing %s")
}

// SyncFS flushes the whole filesystem holding path. A copied tree has as
// many files as its source; one syncfs costs less than an fsync of each.
func SyncFS(path string) error {
	return syncAt(path, unix.O_DIRECTORY, unix.Syncfs, "syncing the filesystem of %s")
}

func syncAt(path string, flags int, sync func(fd int) error, what string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
	if err == nil {
		err = sync(fd)
		unix.Close(fd)
	}
	if err != nil {
		return fmt.Errorf(what+": %w", path, err)
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
// p. It looks only at p's own subtree, comparing each entry's statx mount ID
// with p's parent's, so its cost is the volume's size and not the host's
// mount table (which, on a busy Docker host, is thousands of lines to parse
// for every Remove). A file bind-mounted over a file counts too. A missing p
// has nothing mounted in it.
func RefuseMounted(p string) error {
	p = filepath.Clean(p)
	parent, err := unix.Open(filepath.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", filepath.Dir(p), err)
	}
	defer unix.Close(parent)
	mnt, err := mounttable.MountID(parent)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Dir(p), err)
	}
	var found []string
	if err := findMounts(parent, filepath.Base(p), p, mnt, &found); err != nil {
		return err
	}
	if len(found) > 0 {
		return fmt.Errorf("refusing to remove %s: %w (%s); unmount it first", p, ErrMounted, strings.Join(found, ", "))
	}
	return nil
}

// maxReported bounds how many mount points one error names.
const maxReported = 8

// findMounts appends to found the entries at or below name (in the
// directory open at dirfd) that are on a mount other than mnt. It does not
// descend into such an entry: what is mounted there is not the volume's.
func findMounts(dirfd int, name, path string, mnt uint64, found *[]string) error {
	var st unix.Statx_t
	err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_MNT_ID|unix.STATX_TYPE, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("statx %s: %w", path, err)
	case st.Mask&unix.STATX_MNT_ID == 0:
		return errors.New("the kernel does not report mount IDs (statx STATX_MNT_ID, Linux 5.8+)")
	}
	if st.Mnt_id != mnt {
		if len(*found) < maxReported {
			*found = append(*found, path)
		}
		return nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer unix.Close(fd)
	// The directory open at fd must be the one statx saw: a swap for a
	// mount between the two calls shows here.
	if m, err := mounttable.MountID(fd); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	} else if m != mnt {
		if len(*found) < maxReported {
			*found = append(*found, path)
		}
		return nil
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), path)
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, n := range names {
			if err := findMounts(fd, n, filepath.Join(path, n), mnt, found); err != nil {
				return err
			}
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("listing %s: %w", path, err)
		}
	}
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
