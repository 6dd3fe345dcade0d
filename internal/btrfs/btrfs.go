// Package btrfs is the little of btrfs stowage needs: subvolumes and
// snapshots through the kernel's ioctls, qgroup limits through btrfs-progs
// (at create time only), and a qgroup's usage through a tree-search ioctl,
// cheap enough for every Get.
package btrfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/tool"
)

// ioctl numbers from linux/btrfs.h (_IOW/_IOWR(0x94, nr, 4096-byte args)).
const (
	iocSubvolCreate = 0x5000940e
	iocSnapDestroy  = 0x5000940f
	iocTreeSearch   = 0xd0009411
	iocInoLookup    = 0xd0009412
	iocSnapCreateV2 = 0x50009417

	firstFreeObjectID = 256 // a subvolume's root directory inode
	quotaTreeID       = 8
	qgroupInfoKey     = 242
)

type volArgs struct {
	fd   int64
	name [4088]byte
}

type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [4040]byte
}

// Is reports whether path is on btrfs.
func Is(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return st.Type == unix.BTRFS_SUPER_MAGIC, nil
}

// IsSubvolume reports whether path is the root of a btrfs subvolume.
func IsSubvolume(path string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Ino != firstFreeObjectID || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false
	}
	ok, _ := Is(path)
	return ok
}

func openDir(path string) (int, error) {
	return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func setName(dst []byte, name string) error {
	if name == "" || len(name) >= len(dst) || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("invalid subvolume name %q", name)
	}
	copy(dst, name)
	return nil
}

// CreateSubvolume makes parent/name a new, empty subvolume.
func CreateSubvolume(parent, name string) error {
	fd, err := openDir(parent)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var a volArgs
	if err := setName(a.name[:], name); err != nil {
		return err
	}
	if err := ioctl(fd, iocSubvolCreate, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("creating subvolume %s: %w", filepath.Join(parent, name), err)
	}
	return nil
}

// Snapshot makes parent/name a writable snapshot of the subvolume src.
func Snapshot(src, parent, name string) error {
	sfd, err := openDir(src)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	fd, err := openDir(parent)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	a := volArgsV2{fd: int64(sfd)}
	if err := setName(a.name[:], name); err != nil {
		return err
	}
	if err := ioctl(fd, iocSnapCreateV2, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("snapshotting %s to %s: %w", src, filepath.Join(parent, name), err)
	}
	return nil
}

// DeleteSubvolume destroys the subvolume parent/name with everything in
// it. The caller must have checked that nothing is mounted inside.
func DeleteSubvolume(parent, name string) error {
	fd, err := openDir(parent)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var a volArgs
	if err := setName(a.name[:], name); err != nil {
		return err
	}
	if err := ioctl(fd, iocSnapDestroy, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("deleting subvolume %s: %w", filepath.Join(parent, name), err)
	}
	return nil
}

// SubvolumeID returns the ID of the subvolume holding path.
func SubvolumeID(path string) (uint64, error) {
	fd, err := openDir(path)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var a struct {
		treeid   uint64
		objectid uint64
		name     [4080]byte
	}
	a.objectid = firstFreeObjectID
	if err := ioctl(fd, iocInoLookup, unsafe.Pointer(&a)); err != nil {
		return 0, fmt.Errorf("looking up the subvolume of %s: %w", path, err)
	}
	return a.treeid, nil
}

// EnableQuota turns quotas on for the filesystem holding path (a no-op if
// on already). Do it before creating a subvolume, so it is accounted from
// its first byte. It runs btrfs-progs: create-time work only.
func EnableQuota(ctx context.Context, path string) error {
	if _, err := tool.Run(ctx, "btrfs", "quota", "enable", path); err != nil {
		return fmt.Errorf("enabling btrfs quotas: %w", err)
	}
	return nil
}

// SetLimit limits the referenced bytes of the subvolume at path (quotas
// must be on). It runs btrfs-progs: create-time work only.
func SetLimit(ctx context.Context, path string, size uint64) error {
	if !IsSubvolume(path) {
		// A plain directory's qgroup is its parent subvolume's: never limit that.
		return fmt.Errorf("%s is not a subvolume; refusing to set a limit that would apply to its parent", path)
	}
	if _, err := tool.Run(ctx, "btrfs", "qgroup", "limit", strconv.FormatUint(size, 10), path); err != nil {
		return fmt.Errorf("setting the qgroup limit: %w", err)
	}
	return nil
}

// ErrNoQgroup means quotas are off or the subvolume has no qgroup yet.
var ErrNoQgroup = errors.New("no qgroup information")

// Referenced returns the bytes the subvolume at path references, from its
// level-0 qgroup, by one tree-search ioctl on the quota tree.
func Referenced(path string) (uint64, error) {
	id, err := SubvolumeID(path)
	if err != nil {
		return 0, err
	}
	fd, err := openDir(path)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var args [4096]byte
	le := binary.LittleEndian
	// struct btrfs_ioctl_search_key, host-endian (amd64/arm64: little).
	le.PutUint64(args[0:], quotaTreeID)
	le.PutUint64(args[8:], 0)              // min_objectid
	le.PutUint64(args[16:], 0)             // max_objectid
	le.PutUint64(args[24:], id)            // min_offset: qgroup 0/id
	le.PutUint64(args[32:], id)            // max_offset
	le.PutUint64(args[40:], 0)             // min_transid
	le.PutUint64(args[48:], ^uint64(0))    // max_transid
	le.PutUint32(args[56:], qgroupInfoKey) // min_type
	le.PutUint32(args[60:], qgroupInfoKey) // max_type
	le.PutUint32(args[64:], 1)             // nr_items
	if err := ioctl(fd, iocTreeSearch, unsafe.Pointer(&args[0])); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, ErrNoQgroup
		}
		return 0, fmt.Errorf("reading the qgroup of %s: %w", path, err)
	}
	if le.Uint32(args[64:]) == 0 {
		return 0, ErrNoQgroup
	}
	const keyLen = 104
	hdr := args[keyLen:]
	if le.Uint32(hdr[24:]) != qgroupInfoKey || le.Uint64(hdr[16:]) != id {
		return 0, ErrNoQgroup
	}
	item := hdr[32:]
	return le.Uint64(item[8:]), nil // generation, then rfer
}
