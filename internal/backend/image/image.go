// Package image is the backend whose volumes are sparse image files holding
// a filesystem of their own (ext4, xfs or btrfs), loop-mounted while
// containers use them: the size limit is the filesystem's, enforced by the
// kernel on any host filesystem.
package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/dir"
	"github.com/stowage/stowage/internal/loop"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/safefs"
	"github.com/stowage/stowage/internal/tool"
)

// ID is the backend's registered name.
const ID = "image"

// SettingDefaultSize is the daemon setting (--image-default-size) used when
// a volume gives no size.
const SettingDefaultSize = "default_size"

// Files inside a volume's own directory.
const (
	imageFile = "disk.img"
	mountDir  = "mnt"
)

// Filesystems the backend formats, with the minimum size mkfs accepts.
var filesystems = map[string]uint64{
	"ext4":  1 << 20,
	"xfs":   300 << 20,
	"btrfs": 128 << 20,
}

// Module registers the image backend.
var Module = backend.Module{
	ID:      ID,
	Summary: "a sparse image file with its own filesystem, loop-mounted while in use; size is a hard limit",
	Options: append(backend.Ownership(),
		backend.Option{Name: backend.KeySize, Type: backend.TypeSize, Help: "size of the filesystem, a hard limit (required unless the daemon has --image-default-size)"},
		backend.Option{Name: "fs", Type: backend.TypeString, Default: "ext4", Help: "filesystem to format: ext4, xfs (at least 300M) or btrfs (at least 128M)"},
		backend.OptFrom, backend.OptFromMounted,
	),
	New: newImage,
}

func newImage(env backend.Env) (backend.Backend, error) {
	b := &Image{dir: env.Dir, log: env.Log}
	if v := env.Settings[SettingDefaultSize]; v != "" {
		n, err := backend.ParseSize(v)
		if err != nil {
			return nil, fmt.Errorf("default size %q: %v", v, err)
		}
		b.defaultSize = n
	}
	return b, nil
}

// Image is the provisioned backend.
type Image struct {
	dir         string
	defaultSize uint64
	log         logrus.FieldLogger
}

var (
	_ backend.Backend  = (*Image)(nil)
	_ backend.Usager   = (*Image)(nil)
	_ backend.Statuser = (*Image)(nil)
	_ backend.Cloner   = (*Image)(nil)
	_ backend.Resizer  = (*Image)(nil)
	_ backend.Occupier = (*Image)(nil)
	_ backend.Prober   = (*Image)(nil)
)

func (b *Image) volDir(name string) string { return filepath.Join(b.dir, name) }
func (b *Image) img(name string) string    { return filepath.Join(b.dir, name, imageFile) }
func (b *Image) mnt(name string) string    { return filepath.Join(b.dir, name, mountDir) }

// Validate checks fs and size, filling in the daemon's default size so the
// record says what was made.
func (b *Image) Validate(opts backend.Options) error {
	fs := opts["fs"]
	min, ok := filesystems[fs]
	if !ok {
		return fmt.Errorf("option fs=%q: use ext4, xfs or btrfs", fs)
	}
	if opts[backend.KeyFrom] != "" {
		return nil // a clone takes its source's size and filesystem
	}
	if opts[backend.KeySize] == "" {
		if b.defaultSize == 0 {
			return errors.New("option size is required for backend \"image\" (like -o size=10G), since the daemon has no --image-default-size")
		}
		opts[backend.KeySize] = strconv.FormatUint(b.defaultSize, 10)
	}
	size, _ := strconv.ParseUint(opts[backend.KeySize], 10, 64)
	if size < min {
		return fmt.Errorf("option size=%d is too small for %s: it needs at least %s", size, fs, human(min))
	}
	return nil
}

// Create makes a sparse file, formats it and applies ownership to the
// filesystem's root. On any failure it removes exactly what it made.
func (b *Image) Create(ctx context.Context, vol *backend.Volume, opts backend.Options) (err error) {
	size, _ := strconv.ParseUint(opts[backend.KeySize], 10, 64)
	if err := b.makeDirs(vol.Name); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			b.undo(vol.Name)
		}
	}()
	f, err := os.OpenFile(b.img(vol.Name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating its image file: %w", err)
	}
	err = f.Truncate(int64(size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sizing its image file to %s: %w", human(size), err)
	}
	if err := mkfs(ctx, opts["fs"], b.img(vol.Name)); err != nil {
		return fmt.Errorf("formatting its image: %w", err)
	}
	if err := b.withMounted(ctx, vol.Name, opts["fs"], func(mnt string) error {
		return dir.ApplyOwnership(mnt, opts)
	}); err != nil {
		return err
	}
	return b.syncNew(vol.Name)
}

// syncNew makes a new image durable before its record: the image's blocks
// (mkfs wrote them through the page cache), its name, the volume's
// directory and the mount point in it.
func (b *Image) syncNew(name string) error {
	if err := safefs.SyncFile(b.img(name)); err != nil {
		return err
	}
	if err := safefs.SyncDir(b.mnt(name)); err != nil {
		return err
	}
	return safefs.SyncNew(b.volDir(name))
}

// Occupied refuses what makeDirs would refuse: any leftover directory.
func (b *Image) Occupied(vol *backend.Volume) error {
	if _, err := os.Lstat(b.volDir(vol.Name)); err == nil {
		return fmt.Errorf("its directory %s already exists but no volume records it; nothing was changed: inspect it and move it away, then create the volume again", b.volDir(vol.Name))
	}
	return nil
}

// Up reports whether the volume's filesystem is mounted.
func (b *Image) Up(vol *backend.Volume) bool { return b.mounted(vol.Name) }

// makeDirs creates the volume's directory, refusing a leftover one: it may
// hold data, and only an operator can say whose.
func (b *Image) makeDirs(name string) error {
	if err := os.Mkdir(b.volDir(name), 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("its directory %s already exists but no volume records it; nothing was changed: inspect it and move it away, then create the volume again", b.volDir(name))
		}
		return fmt.Errorf("creating its directory: %w", err)
	}
	if err := os.Mkdir(b.mnt(name), 0o700); err != nil {
		unix.Rmdir(b.volDir(name))
		return fmt.Errorf("creating its mount point: %w", err)
	}
	return nil
}

// undo removes a volume directory this call made, after unmounting it. The
// image never held user data.
func (b *Image) undo(name string) {
	log := b.log.WithFields(logrus.Fields{"op": "Create", "volume": name})
	if m, _ := mounttable.IsMountPoint(b.mnt(name)); m {
		if err := unix.Unmount(b.mnt(name), 0); err != nil {
			log.WithError(err).Error("unmounting a half-made volume failed; its directory is kept")
			return
		}
	}
	if err := safefs.RemoveTree(b.volDir(name)); err != nil {
		log.WithError(err).Error("removing a half-made volume failed; reconcile will report it")
	}
}

func mkfs(ctx context.Context, fs, file string) error {
	var err error
	switch fs {
	case "ext4":
		// No blocks reserved for root: the volume's size is all usable.
		_, err = tool.Run(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", file)
	case "xfs":
		_, err = tool.Run(ctx, "mkfs.xfs", "-q", "-f", file)
	case "btrfs":
		_, err = tool.Run(ctx, "mkfs.btrfs", "-q", "-f", file)
	default:
		err = fmt.Errorf("filesystem %q is not supported", fs)
	}
	return err
}

// mountData are the mount options per filesystem. xfs refuses a second
// filesystem with the same UUID (a clone) without nouuid.
func mountData(fs string) string {
	if fs == "xfs" {
		return "nouuid"
	}
	return ""
}

// mount attaches the image (reusing a loop device already backing it) and
// mounts it at the volume's mount point, unless it is mounted already.
func (b *Image) mount(name, fs string) error {
	mnt := b.mnt(name)
	if m, err := mounttable.IsMountPoint(mnt); err != nil || m {
		return err
	}
	if _, err := os.Stat(b.img(name)); err != nil {
		return fmt.Errorf("its image file is missing (%v): restore it or remove the volume", err)
	}
	dev, err := loop.Attach(b.img(name))
	if err != nil {
		return err
	}
	defer dev.Close() // autoclear: the mount now holds the device
	if err := unix.Mount(dev.Path, mnt, fs, unix.MS_NOSUID|unix.MS_NODEV, mountData(fs)); err != nil {
		return fmt.Errorf("mounting %s (%s on %s) at %s: %w", b.img(name), fs, dev.Path, mnt, err)
	}
	return nil
}

func (b *Image) unmount(name string) error {
	mnt := b.mnt(name)
	m, err := mounttable.IsMountPoint(mnt)
	if err != nil || !m {
		return err
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmounting %s: something on the host still uses it (a shell, a process with files open there)", mnt)
		}
		return fmt.Errorf("unmounting %s: %w", mnt, err)
	}
	return nil
}

// withMounted runs fn with the filesystem mounted, unmounting afterwards
// if it was not mounted before.
func (b *Image) withMounted(ctx context.Context, name, fs string, fn func(mnt string) error) error {
	was, err := mounttable.IsMountPoint(b.mnt(name))
	if err != nil {
		return err
	}
	if err := b.mount(name, fs); err != nil {
		return err
	}
	ferr := fn(b.mnt(name))
	if !was {
		if err := b.unmount(name); err != nil && ferr == nil {
			ferr = err
		}
	}
	return ferr
}

// Mountpoint is the mount point inside the volume's directory.
func (b *Image) Mountpoint(vol *backend.Volume) string { return b.mnt(vol.Name) }

// Activate mounts the filesystem; mounted already (after a crash) is fine.
func (b *Image) Activate(_ context.Context, vol *backend.Volume) error {
	return b.mount(vol.Name, fsOf(vol))
}

// Deactivate unmounts it; the loop device goes with it (autoclear).
func (b *Image) Deactivate(_ context.Context, vol *backend.Volume) error {
	return b.unmount(vol.Name)
}

// Remove deletes the volume's directory with its image, refusing while the
// filesystem is mounted there, or its loop device is held anywhere else (a
// mount of the device outside the volume's directory is not in our table).
func (b *Image) Remove(_ context.Context, vol *backend.Volume) error {
	if err := safefs.RefuseMounted(b.volDir(vol.Name)); err != nil {
		return fmt.Errorf("%w (or run 'stowage release' if its containers are gone)", err)
	}
	img := b.img(vol.Name)
	if _, err := os.Stat(img); err == nil {
		if err := detachImage(img); err != nil {
			return err
		}
	}
	return safefs.RemoveTree(b.volDir(vol.Name))
}

// detachImage makes sure no loop device backs img any more. A crash between
// attach and mount leaves an idle device, which is cleared; a device someone
// holds (mounted, in any namespace) is refused, and the image kept.
func detachImage(img string) error {
	dev, err := loop.Find(img)
	if err != nil {
		return fmt.Errorf("checking whether its image %s is attached to a loop device: %v; the volume is kept", img, err)
	}
	if dev == "" {
		return nil
	}
	// A container that just stopped may still hold the mount for a moment
	// while the kernel tears down its mount namespace: give it that.
	err = loop.Detach(dev)
	for i := 0; i < 20 && errors.Is(err, unix.EBUSY); i++ {
		time.Sleep(100 * time.Millisecond)
		if d, ferr := loop.Find(img); ferr == nil && d == "" {
			return nil // autoclear finished
		}
		err = loop.Detach(dev)
	}
	if err != nil {
		return fmt.Errorf("its image is attached to %s and cannot be detached: %v; the volume is kept", dev, err)
	}
	// The kernel may finish clearing after our close: wait briefly, then
	// refuse rather than delete an image a device still reads.
	for i := 0; i < 50; i++ {
		if dev, err = loop.Find(img); err == nil && dev == "" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("its image is still attached to %s after detaching; the volume is kept", dev)
}

// Inventory compares volume directories with the records.
func (b *Image) Inventory(context.Context) (backend.InventoryRun, error) {
	return backend.InventoryDir(b.dir, func(v *backend.Volume, _ bool) bool {
		_, err := os.Stat(b.img(v.Name))
		return err == nil
	})
}

func fsOf(vol *backend.Volume) string {
	if fs := vol.Options["fs"]; fs != "" {
		return fs
	}
	return "ext4"
}

func sizeOf(vol *backend.Volume) uint64 {
	n, _ := strconv.ParseUint(vol.Options[backend.KeySize], 10, 64)
	return n
}

// mounted compares device numbers: a cheap stat pair, no table read.
func (b *Image) mounted(name string) bool {
	var a, p unix.Stat_t
	if unix.Stat(b.mnt(name), &a) != nil || unix.Stat(b.volDir(name), &p) != nil {
		return false
	}
	return a.Dev != p.Dev
}

// Usage is the record's size and, while mounted, the filesystem's use
// (statfs); unmounted, the image's allocated bytes.
func (b *Image) Usage(vol *backend.Volume) (backend.Usage, error) {
	u := backend.Usage{Limit: sizeOf(vol)}
	if b.mounted(vol.Name) {
		var st unix.Statfs_t
		if err := unix.Statfs(b.mnt(vol.Name), &st); err != nil {
			return u, err
		}
		u.Used = (st.Blocks - st.Bfree) * uint64(st.Bsize)
		return u, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(b.img(vol.Name), &st); err != nil {
		return u, err
	}
	u.Used = uint64(st.Blocks) * 512
	return u, nil
}

// Status names the filesystem and image.
func (b *Image) Status(vol *backend.Volume) map[string]interface{} {
	return map[string]interface{}{
		"fs":      fsOf(vol),
		"image":   b.img(vol.Name),
		"mounted": b.mounted(vol.Name),
	}
}

func human(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
