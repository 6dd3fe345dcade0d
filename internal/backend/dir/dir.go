// Package dir is the default backend: each volume is a directory of its own
// under the backend's directory.
package dir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/btrfs"
	"github.com/stowage/stowage/internal/copyfs"
	"github.com/stowage/stowage/internal/safefs"
)

// ID is the backend's registered name.
const ID = "dir"

// Module registers the dir backend.
var Module = backend.Module{
	ID:      ID,
	Summary: "a directory under the root (like Docker's local driver, with ownership and mode at create); on a btrfs root each volume is a subvolume, size-limited by a qgroup",
	Options: append(backend.Ownership(),
		backend.Option{Name: backend.KeySize, Type: backend.TypeSize, Help: "hard limit, enforced by a btrfs qgroup: only when stowage's root is on btrfs (elsewhere use backend=image)"},
		backend.OptFrom, backend.OptFromMounted,
	),
	New: newDir,
}

func newDir(env backend.Env) (backend.Backend, error) {
	isBtrfs, err := btrfs.Is(env.Dir)
	if err != nil {
		return nil, err
	}
	log := env.Log
	if log == nil {
		log = logrus.New()
	}
	return &Dir{dir: env.Dir, btrfs: isBtrfs, log: log, parent: safefs.NewSharedSync(env.Dir)}, nil
}

// Dir is the provisioned backend.
type Dir struct {
	dir string
	// btrfs: volumes are subvolumes; size is a qgroup limit, clones are
	// snapshots.
	btrfs bool
	log   logrus.FieldLogger
	// parent shares the fsync of the volumes' directory among concurrent
	// Creates: one sync after many mkdirs makes all their entries durable.
	parent *safefs.SharedSync
}

var (
	_ backend.Backend  = (*Dir)(nil)
	_ backend.Cloner   = (*Dir)(nil)
	_ backend.Usager   = (*Dir)(nil)
	_ backend.Statuser = (*Dir)(nil)
	_ backend.Occupier = (*Dir)(nil)
)

func (d *Dir) path(name string) string { return filepath.Join(d.dir, name) }

// Validate refuses size where it cannot be enforced.
func (d *Dir) Validate(opts backend.Options) error {
	if opts[backend.KeySize] != "" && !d.btrfs {
		return fmt.Errorf("option size needs stowage's root (%s) on btrfs, where a qgroup enforces it; this filesystem has no usable quota here. Use -o backend=image for a size-limited volume", d.dir)
	}
	return nil
}

// Create makes the directory (a subvolume on btrfs, with its limit) and
// applies ownership and mode.
func (d *Dir) Create(ctx context.Context, vol *backend.Volume, opts backend.Options) (err error) {
	p := d.path(vol.Name)
	if err := d.makeEmpty(ctx, vol.Name, opts[backend.KeySize] != ""); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			d.undo(vol.Name)
		}
	}()
	if err := d.limit(ctx, vol.Name, opts[backend.KeySize]); err != nil {
		return err
	}
	if err := ApplyOwnership(p, opts); err != nil {
		return err
	}
	// Before the record says the volume exists: after a power cut the
	// directory must be there too, with its owner and mode. The state
	// file's own fdatasync does not carry the mkdir (an overwrite of its
	// pages commits no ext4 journal).
	return d.parent.SyncNewIn(p)
}

// Occupied refuses what makeEmpty would refuse: anything at the volume's
// path but an empty directory.
func (d *Dir) Occupied(vol *backend.Volume) error {
	return backend.RefuseLeftover(d.path(vol.Name), "data directory")
}

// makeEmpty creates the volume's empty directory or subvolume. A crash
// between mkdir and the record's commit leaves an empty directory; adopting
// it loses nothing. Anything else is kept and reported.
func (d *Dir) makeEmpty(ctx context.Context, name string, sized bool) error {
	p := d.path(name)
	if !d.btrfs {
		// mkdir first: the driver's occupancy check has just seen the
		// place free, so a second look before it would only cost a stat.
		err := os.Mkdir(p, 0o700)
		if errors.Is(err, os.ErrExist) {
			return backend.RefuseLeftover(p, "data directory")
		}
		if err != nil {
			return fmt.Errorf("creating its data directory: %w", err)
		}
		return nil
	}
	if _, err := os.Lstat(p); err == nil {
		if err := backend.RefuseLeftover(p, "data directory"); err != nil {
			return err
		}
		if btrfs.IsSubvolume(p) {
			return nil
		}
		// An empty plain directory on btrfs: make it a subvolume instead.
		if err := unix.Rmdir(p); err != nil {
			return fmt.Errorf("replacing the empty leftover %s: %w", p, err)
		}
	}
	if sized {
		// Before the subvolume exists, so it is accounted from the start.
		if err := btrfs.EnableQuota(ctx, d.dir); err != nil {
			return err
		}
	}
	return btrfs.CreateSubvolume(d.dir, name)
}

func (d *Dir) limit(ctx context.Context, name, size string) error {
	if size == "" {
		return nil
	}
	n, err := strconv.ParseUint(size, 10, 64)
	if err != nil {
		return fmt.Errorf("size %q: %v", size, err)
	}
	return btrfs.SetLimit(ctx, d.path(name), n)
}

// undo removes what a failed Create or Clone made: nothing there held user
// data yet.
func (d *Dir) undo(name string) {
	if err := d.remove(name); err != nil {
		d.log.WithFields(logrus.Fields{"op": "Create", "volume": name, "error": err}).Error("removing a half-made volume failed; reconcile will report it")
	}
}

// InheritOwnership records src's uid, gid and mode options in dst: a copy's
// root is its source's, whatever defaults dst was parsed with.
func InheritOwnership(src, dst *backend.Volume) {
	if dst.Options == nil {
		dst.Options = map[string]string{}
	}
	for _, k := range []string{"uid", "gid", "mode"} {
		if v, ok := src.Options[k]; ok {
			dst.Options[k] = v
		} else {
			delete(dst.Options, k)
		}
	}
}

// ApplyOwnership applies the common uid, gid and mode options to path; an
// absent option leaves that attribute as it is (bind keeps a host
// directory's own; the others always carry mode's default).
func ApplyOwnership(path string, opts backend.Options) error {
	uid, gid := -1, -1
	if v, ok := opts["uid"]; ok {
		n, _ := backend.ParseID(v)
		uid = int(n)
	}
	if v, ok := opts["gid"]; ok {
		n, _ := backend.ParseID(v)
		gid = int(n)
	}
	if uid != -1 || gid != -1 {
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("setting owner of %s: %w", path, err)
		}
	}
	if v, ok := opts["mode"]; ok {
		mode, _ := backend.ParseMode(v)
		// os.Chmod would drop setuid/setgid/sticky: use the raw bits.
		if err := unix.Chmod(path, mode); err != nil {
			return fmt.Errorf("setting mode of %s: %w", path, err)
		}
	}
	return nil
}

// Mountpoint is the directory itself.
func (d *Dir) Mountpoint(vol *backend.Volume) string { return d.path(vol.Name) }

// Activate checks the directory is there, so a container never gets an
// empty stand-in for data that went missing.
func (d *Dir) Activate(_ context.Context, vol *backend.Volume) error {
	fi, err := os.Lstat(d.path(vol.Name))
	if err != nil {
		return fmt.Errorf("its data directory is missing (%v): restore it or remove the volume", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("its data path %s is not a directory", d.path(vol.Name))
	}
	return nil
}

// Deactivate has nothing to bring down.
func (d *Dir) Deactivate(context.Context, *backend.Volume) error { return nil }

// Remove deletes the directory, never crossing a mount or a symlink; a
// subvolume is destroyed whole, after the same mount check.
func (d *Dir) Remove(_ context.Context, vol *backend.Volume) error {
	return d.remove(vol.Name)
}

func (d *Dir) remove(name string) error {
	p := d.path(name)
	if d.btrfs && btrfs.IsSubvolume(p) {
		if err := safefs.RefuseMounted(p); err != nil {
			return err
		}
		return btrfs.DeleteSubvolume(d.dir, name)
	}
	return safefs.RemoveTree(p)
}

// Clone snapshots the source subvolume on btrfs (instant, atomic); else it
// copies the tree preserving ownership, modes, xattrs, symlinks and hard
// links, reflinking file data where the filesystem can.
func (d *Dir) Clone(ctx context.Context, src, dst *backend.Volume, opts backend.Options) (err error) {
	sp, dp := d.path(src.Name), d.path(dst.Name)
	if _, err := os.Lstat(dp); err == nil {
		return fmt.Errorf("its data directory %s already exists but no volume records it; nothing was changed: inspect it and move it away", dp)
	}
	InheritOwnership(src, dst)
	size := opts[backend.KeySize]
	if size == "" {
		size = src.Options[backend.KeySize]
	}
	if size != "" {
		if dst.Options == nil {
			dst.Options = map[string]string{}
		}
		dst.Options[backend.KeySize] = size
	}
	// Undo only what this call made: a directory that appeared meanwhile
	// is someone else's, and a failed snapshot or mkdir made nothing.
	made := false
	defer func() {
		if err != nil && made {
			d.undo(dst.Name)
		}
	}()
	if d.btrfs && btrfs.IsSubvolume(sp) {
		if size != "" {
			if err := btrfs.EnableQuota(ctx, d.dir); err != nil {
				return err
			}
		}
		if err := btrfs.Snapshot(sp, d.dir, dst.Name); err != nil {
			return err
		}
		made = true
		return d.limit(ctx, dst.Name, size)
	}
	if err := d.makeEmpty(ctx, dst.Name, size != ""); err != nil {
		return err
	}
	made = true
	if err := d.limit(ctx, dst.Name, size); err != nil {
		return err
	}
	if err := copyfs.Tree(dp, sp); err != nil {
		return err
	}
	// The clone is answered as made: its data and names must survive a
	// power cut before the record does.
	return safefs.SyncFS(dp)
}

// errNoCheapUsage is returned on every Get of a plain directory: made once.
var errNoCheapUsage = errors.New("no cheap usage for a plain directory")

// Usage reports the qgroup's referenced bytes on btrfs (one ioctl) and the
// recorded limit; elsewhere a directory has no cheap usage.
func (d *Dir) Usage(vol *backend.Volume) (backend.Usage, error) {
	if !d.btrfs {
		return backend.Usage{}, errNoCheapUsage
	}
	var u backend.Usage
	u.Limit, _ = strconv.ParseUint(vol.Options[backend.KeySize], 10, 64)
	used, err := btrfs.Referenced(d.path(vol.Name))
	if err != nil {
		return u, err
	}
	u.Used = used
	return u, nil
}

// Status says whether the volume is a subvolume, and its limit.
func (d *Dir) Status(vol *backend.Volume) map[string]interface{} {
	if !d.btrfs {
		return nil
	}
	// size_bytes comes from Usage, as for every backend.
	return map[string]interface{}{"btrfs_subvolume": btrfs.IsSubvolume(d.path(vol.Name))}
}

// Inventory compares the backend's directory with the records.
func (d *Dir) Inventory(context.Context) (backend.InventoryRun, error) {
	return backend.InventoryDir(d.dir, nil)
}
