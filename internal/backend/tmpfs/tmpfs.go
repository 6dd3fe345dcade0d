// Package tmpfs is the backend whose volumes live in memory: a tmpfs
// mounted on first Mount and unmounted on last Unmount. Its data is gone
// when unmounted, by design.
package tmpfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/safefs"
)

// ID is the backend's registered name.
const ID = "tmpfs"

// Ephemeral is what Status says about the data's lifetime.
const Ephemeral = "data is in memory and discarded when the last container unmounts the volume"

// Module registers the tmpfs backend.
var Module = backend.Module{
	ID:      ID,
	Summary: "memory-backed scratch space, mounted while in use; its data is discarded when the last container unmounts it",
	Options: append(backend.Ownership(),
		backend.Option{Name: backend.KeySize, Type: backend.TypeSize, Help: "maximum size in memory, a hard limit (default: the kernel's, half of RAM)"},
	),
	New: func(env backend.Env) (backend.Backend, error) { return &Tmpfs{dir: env.Dir}, nil },
}

// Tmpfs is the provisioned backend.
type Tmpfs struct{ dir string }

var (
	_ backend.Backend  = (*Tmpfs)(nil)
	_ backend.Usager   = (*Tmpfs)(nil)
	_ backend.Statuser = (*Tmpfs)(nil)
	_ backend.Occupier = (*Tmpfs)(nil)
	_ backend.Prober   = (*Tmpfs)(nil)
)

func (t *Tmpfs) path(name string) string { return filepath.Join(t.dir, name) }

// Validate has nothing beyond the schema to check.
func (t *Tmpfs) Validate(backend.Options) error { return nil }

// Create makes the empty mount point; nothing is mounted until first use.
func (t *Tmpfs) Create(_ context.Context, vol *backend.Volume, _ backend.Options) error {
	return backend.MakeMountPoint(t.path(vol.Name))
}

// Occupied refuses what Create would refuse: anything at the mount point
// but an empty directory.
func (t *Tmpfs) Occupied(vol *backend.Volume) error {
	return backend.RefuseLeftover(t.path(vol.Name), "mount point")
}

// Up reports whether something is mounted at the volume's mount point,
// without reading the mount table: recovery asks it of every volume.
func (t *Tmpfs) Up(vol *backend.Volume) bool {
	m, err := mounttable.Crosses(t.path(vol.Name))
	return err == nil && m
}

// MountData is the tmpfs option string for vol: size, mode, uid, gid.
func MountData(opts map[string]string) string {
	parts := []string{}
	if v := opts[backend.KeySize]; v != "" {
		parts = append(parts, "size="+v)
	}
	if v := opts["mode"]; v != "" {
		parts = append(parts, "mode="+v)
	}
	if v := opts["uid"]; v != "" {
		parts = append(parts, "uid="+v)
	}
	if v := opts["gid"]; v != "" {
		parts = append(parts, "gid="+v)
	}
	return strings.Join(parts, ",")
}

// Mountpoint is the volume's directory, where the tmpfs is mounted.
func (t *Tmpfs) Mountpoint(vol *backend.Volume) string { return t.path(vol.Name) }

// Activate mounts a fresh tmpfs unless one is mounted already. It refuses
// when running containers hold the volume but its tmpfs is not mounted
// here (a managed plugin restarted in a new mount namespace): their memory
// cannot be reached, and a fresh tmpfs would give this container other,
// empty data under the same volume name.
func (t *Tmpfs) Activate(_ context.Context, vol *backend.Volume) error {
	p := t.path(vol.Name)
	if m, err := mounttable.IsMountPoint(p); err != nil || m {
		return err
	}
	if n := vol.ActiveMounts(); n > 0 {
		return fmt.Errorf("%d running container mount(s) hold its tmpfs, but stowage restarted since and cannot reach that memory; a new tmpfs would show this container different, empty data: stop those containers first (their tmpfs data goes with them), then mount it again", n)
	}
	if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
		return fmt.Errorf("its mount point %s is missing or not a directory: remove the volume and create it again", p)
	}
	if err := unix.Mount("stowage-"+vol.Name, p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, MountData(vol.Options)); err != nil {
		return fmt.Errorf("mounting a tmpfs at %s: %w", p, err)
	}
	return nil
}

// Deactivate unmounts the tmpfs, discarding its data.
func (t *Tmpfs) Deactivate(_ context.Context, vol *backend.Volume) error {
	p := t.path(vol.Name)
	m, err := mounttable.IsMountPoint(p)
	if err != nil || !m {
		return err
	}
	if err := unix.Unmount(p, 0); err != nil {
		return fmt.Errorf("unmounting the tmpfs at %s: %w", p, err)
	}
	return nil
}

// Remove deletes the mount point; safefs refuses while a tmpfs is mounted there.
func (t *Tmpfs) Remove(_ context.Context, vol *backend.Volume) error {
	return safefs.RemoveTree(t.path(vol.Name))
}

// Inventory compares mount points with the records, and reports volumes
// whose ledger counts mounts but whose tmpfs is gone (after a reboot, or
// an unmount behind stowage's back): their containers lost the data.
func (t *Tmpfs) Inventory(context.Context) (backend.InventoryRun, error) {
	d, err := backend.InventoryDir(t.dir, nil)
	if err != nil {
		return nil, err
	}
	snap, err := mounttable.Read(t.dir)
	if err != nil {
		return nil, err
	}
	return &tmpfsInventory{DirInventory: d, t: t, snap: snap}, nil
}

type tmpfsInventory struct {
	*backend.DirInventory
	t    *Tmpfs
	snap *mounttable.Snapshot
}

func (r *tmpfsInventory) Known(vols []*backend.Volume) {
	r.DirInventory.Known(vols)
	for _, v := range vols {
		if n := v.ActiveMounts(); n > 0 && !r.snap.IsMountPoint(r.t.path(v.Name)) {
			r.Problem(fmt.Sprintf("volume %q: its ledger holds %d mount(s) but its tmpfs is not mounted here: after a reboot its data is gone; after a managed plugin restart the running containers keep their tmpfs until they stop, and new mounts are refused until then", v.Name, n))
		}
	}
}

// Usage is statfs of the mounted tmpfs; unmounted it holds nothing.
func (t *Tmpfs) Usage(vol *backend.Volume) (backend.Usage, error) {
	var u backend.Usage
	var a, p unix.Stat_t
	if unix.Stat(t.path(vol.Name), &a) != nil || unix.Stat(t.dir, &p) != nil || a.Dev == p.Dev {
		var n uint64
		fmt.Sscan(vol.Options[backend.KeySize], &n)
		u.Limit = n
		return u, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(t.path(vol.Name), &st); err != nil {
		return u, err
	}
	u.Limit = st.Blocks * uint64(st.Bsize)
	u.Used = (st.Blocks - st.Bfree) * uint64(st.Bsize)
	return u, nil
}

// Status warns that the data does not outlive the mount.
func (t *Tmpfs) Status(*backend.Volume) map[string]interface{} {
	return map[string]interface{}{"ephemeral": Ephemeral}
}
