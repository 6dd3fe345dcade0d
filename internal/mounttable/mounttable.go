// Package mounttable answers questions about the kernel's mount table
// (/proc/self/mountinfo) for the paths stowage owns.
package mounttable

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Under returns the mount points at or below path, sorted, path cleaned.
func Under(path string) ([]string, error) {
	path = filepath.Clean(path)
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(path))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range infos {
		if !seen[m.Mountpoint] {
			seen[m.Mountpoint] = true
			out = append(out, m.Mountpoint)
		}
	}
	sort.Strings(out)
	return out, nil
}

// IsMountPoint reports whether something is mounted exactly at path. It
// asks statx (Crosses) rather than the mount table, which Mount, Unmount
// and Remove would otherwise parse whole on every call; only a path statx
// cannot look at (a FUSE mount whose daemon died answers ENOTCONN) is
// looked up in the table.
func IsMountPoint(path string) (bool, error) {
	m, err := Crosses(path)
	if err == nil {
		return m, nil
	}
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(filepath.Clean(path)))
	if err != nil {
		return false, fmt.Errorf("reading the mount table: %w", err)
	}
	return len(infos) > 0, nil
}

// Snapshot is one read of the mount table, for checking many paths at once
// (reconcile) without re-reading the table per volume.
type Snapshot struct{ points map[string]bool }

// Read takes a snapshot of the mount points under prefix.
func Read(prefix string) (*Snapshot, error) {
	pts, err := Under(prefix)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{points: make(map[string]bool, len(pts))}
	for _, p := range pts {
		s.points[p] = true
	}
	return s, nil
}

// IsMountPoint reports whether path was a mount point in the snapshot.
func (s *Snapshot) IsMountPoint(path string) bool { return s.points[filepath.Clean(path)] }

// MountID is the kernel's ID of the mount holding the file open at fd. Two
// directories on different mounts, bind mounts of one filesystem included,
// have different IDs: walks compare it to stay on one mount.
func MountID(fd int) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &st); err != nil {
		return 0, fmt.Errorf("statx: %w", err)
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("the kernel does not report mount IDs (statx STATX_MNT_ID, Linux 5.8+)")
	}
	return st.Mnt_id, nil
}

// Crosses reports whether path is the root of a mount other than its
// parent's, by comparing statx mount IDs: two syscalls, no table read, so
// it can be asked for every volume at start-up. A bind mount of the same
// filesystem counts (its mount ID differs). A path that does not exist is
// no mount point.
func Crosses(path string) (bool, error) {
	path = filepath.Clean(path)
	id := func(p string) (uint64, error) {
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
			return 0, err
		}
		if st.Mask&unix.STATX_MNT_ID == 0 {
			return 0, errors.New("the kernel does not report mount IDs (statx STATX_MNT_ID, Linux 5.8+)")
		}
		return st.Mnt_id, nil
	}
	own, err := id(path)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("statx %s: %w", path, err)
	}
	parent, err := id(filepath.Dir(path))
	if err != nil {
		return false, fmt.Errorf("statx %s: %w", filepath.Dir(path), err)
	}
	return own != parent, nil
}
