// Package expose makes volumes reachable under one directory — a managed
// plugin's propagatedMount, the only place whose mounts Docker can hand to
// containers — by bind-mounting each active volume's data at DIR/NAME.
// It decorates any backend; neither the driver nor the backend knows.
package expose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/safefs"
)

// Exposer is a backend whose volumes are exposed under Dir.
type Exposer struct {
	inner backend.Backend
	dir   string
	log   logrus.FieldLogger
}

var (
	_ backend.Backend  = (*Exposer)(nil)
	_ backend.Usager   = (*Exposer)(nil)
	_ backend.Statuser = (*Exposer)(nil)
	_ backend.Occupier = (*Exposer)(nil)
	_ backend.Prober   = (*Exposer)(nil)
)

// Wrap decorates every instance so its volumes are exposed under dir
// (absolute, clean, created 0755 if missing).
func Wrap(insts map[string]backend.Instance, dir string, log logrus.FieldLogger) (map[string]backend.Instance, error) {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/" {
		return nil, fmt.Errorf("--expose-dir %q: must be a clean absolute path other than /", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--expose-dir %s: %w", dir, err)
	}
	out := make(map[string]backend.Instance, len(insts))
	for id, inst := range insts {
		inst.Backend = decorate(&Exposer{inner: inst.Backend, dir: dir, log: log.WithFields(logrus.Fields{"backend": id, "expose_dir": dir})})
		out[id] = inst
	}
	return out, nil
}

func (e *Exposer) path(vol *backend.Volume) string { return filepath.Join(e.dir, vol.Name) }

// Validate passes through.
func (e *Exposer) Validate(o backend.Options) error { return e.inner.Validate(o) }

// Create passes through: nothing is exposed until the first mount.
func (e *Exposer) Create(ctx context.Context, vol *backend.Volume, o backend.Options) error {
	return e.inner.Create(ctx, vol, o)
}

// Mountpoint is DIR/NAME, where Docker finds the volume.
func (e *Exposer) Mountpoint(vol *backend.Volume) string { return e.path(vol) }

// Activate brings the inner storage up, then bind-mounts it at DIR/NAME. An
// existing bind of the same data (a later mount, or one left by a crash) is
// accepted as is; after a plugin restart there is none, and a new one is
// made over the inner storage, which the inner Activate found again.
func (e *Exposer) Activate(ctx context.Context, vol *backend.Volume) (err error) {
	if err := e.inner.Activate(ctx, vol); err != nil {
		return err
	}
	// Only when no container holds the volume is the inner storage ours
	// to bring down again if exposing fails.
	defer func() {
		if err != nil && vol.ActiveMounts() == 0 {
			if derr := e.inner.Deactivate(ctx, vol); derr != nil {
				e.log.WithFields(logrus.Fields{"op": "Activate", "volume": vol.Name, "error": derr}).Warn("bringing storage down after a failed exposure failed")
			}
		}
	}()
	src, dst := e.inner.Mountpoint(vol), e.path(vol)
	mounted, err := mounttable.IsMountPoint(dst)
	if err != nil {
		return err
	}
	if mounted {
		if same, err := sameDir(src, dst); err != nil {
			return fmt.Errorf("checking its exposure %s: %w", dst, err)
		} else if !same {
			return fmt.Errorf("%s is already a mount point of something other than its data %s; nothing was changed: unmount it by hand", dst, src)
		}
		if vol.ActiveMounts() == 0 {
			e.log.WithFields(logrus.Fields{"op": "Activate", "volume": vol.Name}).Info("exposure mount already in place (kept across a restart)")
		}
		return nil
	}
	if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating its exposure point %s: %w", dst, err)
	}
	// A bind over a non-empty directory would hide what is in it.
	if err := safefs.EmptyDir(dst); err != nil {
		return fmt.Errorf("its exposure point %s: %v; nothing was mounted: move it away", dst, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		unix.Rmdir(dst)
		return fmt.Errorf("bind-mounting its data %s at %s: %w", src, dst, err)
	}
	return nil
}

// Deactivate unmounts DIR/NAME, removes the then-empty directory and brings
// the inner storage down. Idempotent.
func (e *Exposer) Deactivate(ctx context.Context, vol *backend.Volume) error {
	if err := e.unexpose(vol); err != nil {
		return err
	}
	return e.inner.Deactivate(ctx, vol)
}

func (e *Exposer) unexpose(vol *backend.Volume) error {
	dst := e.path(vol)
	mounted, err := mounttable.IsMountPoint(dst)
	if err != nil {
		return err
	}
	if mounted {
		// No MNT_DETACH: a lazy unmount would hide a mount still in use.
		if err := unix.Unmount(dst, 0); err != nil {
			return fmt.Errorf("unmounting its exposure %s: %w", dst, err)
		}
	}
	// Rmdir removes only an empty directory: it cannot delete data.
	if err := unix.Rmdir(dst); err != nil && !errors.Is(err, unix.ENOENT) {
		e.log.WithFields(logrus.Fields{"op": "Deactivate", "volume": vol.Name, "error": err}).Warn("exposure point left in place")
	}
	return nil
}

// Remove refuses while DIR/NAME is mounted, then removes the inner storage.
func (e *Exposer) Remove(ctx context.Context, vol *backend.Volume) error {
	dst := e.path(vol)
	mounted, err := mounttable.IsMountPoint(dst)
	if err != nil {
		return err
	}
	if mounted {
		return fmt.Errorf("its data is still exposed at %s (mounted); nothing was deleted: stop the containers using it", dst)
	}
	if err := e.inner.Remove(ctx, vol); err != nil {
		return err
	}
	if err := unix.Rmdir(dst); err != nil && !errors.Is(err, unix.ENOENT) {
		e.log.WithFields(logrus.Fields{"op": "Remove", "volume": vol.Name, "error": err}).Warn("exposure point left in place")
	}
	return nil
}

// Inventory is the inner one, plus a problem for every exposure mount of a
// volume that no record names.
func (e *Exposer) Inventory(ctx context.Context) (backend.InventoryRun, error) {
	inner, err := e.inner.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	snap, err := mounttable.Read(e.dir)
	if err != nil {
		return nil, err
	}
	// Only the entries that are mount points are kept: a handful, where
	// the entries are one per volume.
	mounted := map[string]bool{}
	if err := backend.ReadNames(e.dir, func(name string) {
		if snap.IsMountPoint(filepath.Join(e.dir, name)) {
			mounted[name] = true
		}
	}); err != nil {
		return nil, err
	}
	return &exposeInventory{inner: inner, dir: e.dir, mounted: mounted}, nil
}

type exposeInventory struct {
	inner backend.InventoryRun
	dir   string
	// mounted are exposure mounts no Known volume named yet.
	mounted map[string]bool
}

func (r *exposeInventory) Known(vols []*backend.Volume) {
	r.inner.Known(vols)
	for _, v := range vols {
		delete(r.mounted, v.Name)
	}
}

func (r *exposeInventory) Result() (backend.Inventory, error) {
	inv, err := r.inner.Result()
	if err != nil {
		return inv, err
	}
	var extra []string
	for name := range r.mounted {
		extra = append(extra, fmt.Sprintf("exposure mount %s belongs to no recorded volume; it is kept: unmount it by hand once no container uses it", filepath.Join(r.dir, name)))
	}
	sort.Strings(extra)
	inv.Problems = append(inv.Problems, extra...)
	return inv, nil
}

// Usage passes through when the inner backend can tell.
func (e *Exposer) Usage(vol *backend.Volume) (backend.Usage, error) {
	if u, ok := e.inner.(backend.Usager); ok {
		return u.Usage(vol)
	}
	return backend.Usage{}, errors.New("usage not supported by this backend")
}

// Status passes through, plus where the data really lives.
func (e *Exposer) Status(vol *backend.Volume) map[string]interface{} {
	st := map[string]interface{}{}
	if s, ok := e.inner.(backend.Statuser); ok {
		for k, v := range s.Status(vol) {
			st[k] = v
		}
	}
	st["data_path"] = e.inner.Mountpoint(vol)
	return st
}

// Occupied passes through when the inner backend can tell.
func (e *Exposer) Occupied(vol *backend.Volume) error {
	if o, ok := e.inner.(backend.Occupier); ok {
		return o.Occupied(vol)
	}
	return backend.ErrCannotTell
}

// Up is true while the volume is exposed, or its inner storage is up.
func (e *Exposer) Up(vol *backend.Volume) bool {
	if m, err := mounttable.Crosses(e.path(vol)); err == nil && m {
		return true
	}
	p, ok := e.inner.(backend.Prober)
	return ok && p.Up(vol)
}

func (e *Exposer) self() *Exposer { return e }

func sameDir(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// decorate keeps the inner backend's optional abilities visible: the driver
// asks for them by type assertion, so the wrapper must have exactly these.
func decorate(e *Exposer) backend.Backend {
	c, isC := e.inner.(backend.Cloner)
	r, isR := e.inner.(backend.Resizer)
	switch {
	case isC && isR:
		return &cloneResizer{e, c, r}
	case isC:
		return &cloner{e, c}
	case isR:
		return &resizer{e, r}
	}
	return e
}

type cloner struct {
	*Exposer
	backend.Cloner
}

type resizer struct {
	*Exposer
	backend.Resizer
}

type cloneResizer struct {
	*Exposer
	backend.Cloner
	backend.Resizer
}
