package image

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/dir"
	"github.com/stowage/stowage/internal/copyfs"
	"github.com/stowage/stowage/internal/loop"
	"github.com/stowage/stowage/internal/tool"
)

// Clone copies src's image file (a reflink where the host filesystem
// allows, else a sparse copy). The clone takes the source's size and
// filesystem, and a btrfs clone a fresh filesystem ID, so the kernel never
// takes the two for one filesystem.
func (b *Image) Clone(ctx context.Context, src, dst *backend.Volume, opts backend.Options) (err error) {
	fs := fsOf(src)
	if dst.Options == nil {
		dst.Options = map[string]string{}
	}
	dst.Options["fs"] = fs
	dir.InheritOwnership(src, dst)
	dst.Options[backend.KeySize] = strconv.FormatUint(sizeOf(src), 10)
	if b.mounted(src.Name) {
		// Copy what containers wrote so far, not what sits in caches.
		if fd, err := unix.Open(b.mnt(src.Name), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			unix.Syncfs(fd)
			unix.Close(fd)
		}
	}
	in, err := os.Open(b.img(src.Name))
	if err != nil {
		return fmt.Errorf("opening the image of %q: %w", src.Name, err)
	}
	defer in.Close()
	if err := b.makeDirs(dst.Name); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			b.undo(dst.Name)
		}
	}()
	out, err := os.OpenFile(b.img(dst.Name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating its image file: %w", err)
	}
	reflinked, err := copyfs.File(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying the image of %q: %w", src.Name, err)
	}
	b.log.WithField("op", "Clone").WithField("volume", dst.Name).WithField("from", src.Name).WithField("reflink", reflinked).Info("image copied")
	if fs == "btrfs" {
		// Two btrfs filesystems with one fsid confuse the kernel's device
		// registry; a new metadata UUID is quick (no rewrite of all blocks).
		if _, err := tool.Run(ctx, "btrfstune", "-f", "-m", b.img(dst.Name)); err != nil {
			return fmt.Errorf("giving the copy a new filesystem ID: %w", err)
		}
	}
	return b.syncNew(dst.Name)
}

// Resize grows the image file, then the filesystem in it: online when it is
// mounted, else offline (ext4: e2fsck then resize2fs) or through a
// temporary mount (xfs and btrfs grow only mounted).
func (b *Image) Resize(ctx context.Context, vol *backend.Volume, size uint64) (backend.Options, error) {
	cur := sizeOf(vol)
	if size <= cur {
		return nil, fmt.Errorf("the new size %d bytes is not larger than its size %d bytes: volumes only grow (shrinking could cut off data)", size, cur)
	}
	fs := fsOf(vol)
	img := b.img(vol.Name)
	if err := os.Truncate(img, int64(size)); err != nil {
		return nil, fmt.Errorf("growing its image file: %w", err)
	}
	var err error
	if b.mounted(vol.Name) {
		err = b.growMounted(ctx, vol.Name, fs)
	} else if fs == "ext4" {
		if _, err = tool.Run(ctx, "e2fsck", "-f", "-p", img); err == nil {
			_, err = tool.Run(ctx, "resize2fs", img)
		}
	} else {
		err = b.withMounted(ctx, vol.Name, fs, func(string) error { return b.growMounted(ctx, vol.Name, fs) })
	}
	if err != nil {
		// The file is larger but the filesystem is not: harmless, and a
		// retry grows it. The record keeps the old size.
		return nil, fmt.Errorf("the image file grew but its filesystem did not: %w; the volume keeps its old size, try again", err)
	}
	out := backend.Options{}
	for k, v := range vol.Options {
		out[k] = v
	}
	out[backend.KeySize] = strconv.FormatUint(size, 10)
	return out, nil
}

// growMounted tells the loop device its file grew, then grows the
// mounted filesystem to fill it.
func (b *Image) growMounted(ctx context.Context, name, fs string) error {
	dev, err := loop.Find(b.img(name))
	if err != nil || dev == "" {
		return fmt.Errorf("finding its loop device: %v", err)
	}
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("updating the capacity of %s: %w", dev, err)
	}
	mnt := b.mnt(name)
	switch fs {
	case "ext4":
		_, err = tool.Run(ctx, "resize2fs", dev)
		if err != nil && strings.Contains(err.Error(), "Permission denied") {
			// The kernel wants CAP_SYS_RESOURCE for online ext4 growth.
			err = fmt.Errorf("%v (growing a mounted ext4 needs CAP_SYS_RESOURCE, which stowage lacks here: stop the containers using the volume and resize again, which grows it offline)", err)
		}
	case "xfs":
		_, err = tool.Run(ctx, "xfs_growfs", mnt)
	case "btrfs":
		_, err = tool.Run(ctx, "btrfs", "filesystem", "resize", "max", mnt)
	}
	return err
}
