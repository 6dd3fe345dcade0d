// Package bind is the backend that adopts an existing host directory as a
// volume. The directory must lie inside one of the daemon's bind roots, and
// it stays the host's: removing the volume forgets it, never deletes it.
package bind

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/dir"
	"github.com/stowage/stowage/internal/safefs"
)

// ID is the backend's registered name.
const ID = "bind"

// SettingRoots is the daemon setting (--bind-roots) listing, comma
// separated, the host directories whose subdirectories may be adopted.
const SettingRoots = "roots"

// privPath is the resolved host path, recorded in vol.Private.
const privPath = "path"

// Module registers the bind backend. uid, gid and mode have no default
// here: the host directory keeps its ownership unless asked.
var Module = backend.Module{
	ID:      ID,
	Summary: "adopts an existing host directory inside --bind-roots; removing the volume never deletes the host data",
	Options: []backend.Option{
		{Name: "path", Type: backend.TypePath, Help: "host directory to adopt (required); it must resolve, symlinks followed, to a directory strictly inside one of the daemon's --bind-roots, and must not overlap another bind volume"},
		{Name: "uid", Type: backend.TypeID, Help: "if given, chown the host directory to this uid at create"},
		{Name: "gid", Type: backend.TypeID, Help: "if given, chgrp the host directory to this gid at create"},
		{Name: "mode", Type: backend.TypeMode, Help: "if given, chmod the host directory at create"},
	},
	DisabledUnless: SettingRoots,
	New:            newBind,
}

func newBind(env backend.Env) (backend.Backend, error) {
	b := &Bind{dir: env.Dir}
	for _, r := range strings.Split(env.Settings[SettingRoots], ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if !filepath.IsAbs(r) {
			return nil, fmt.Errorf("bind root %q is not an absolute path", r)
		}
		res, err := filepath.EvalSymlinks(r)
		if err != nil {
			return nil, fmt.Errorf("bind root %q: %w", r, err)
		}
		if res == "/" {
			return nil, fmt.Errorf("bind root %q is the host's root: name the directories volumes may adopt", r)
		}
		b.roots = append(b.roots, res)
	}
	if len(b.roots) == 0 {
		return nil, errors.New("no bind roots given: set --bind-roots to the host directories volumes may adopt")
	}
	return b, nil
}

// Bind is the provisioned backend. Its own directory holds one marker file
// per volume naming the adopted path, so overlaps can be refused without
// the driver's records.
type Bind struct {
	dir   string
	roots []string
	// mu makes check-for-overlap and write-marker one step.
	mu sync.Mutex
}

var (
	_ backend.Backend  = (*Bind)(nil)
	_ backend.Statuser = (*Bind)(nil)
	_ backend.Occupier = (*Bind)(nil)
)

// Validate only requires path: resolving it touches the disk, so that is
// Create's job.
func (b *Bind) Validate(opts backend.Options) error {
	if opts["path"] == "" {
		return fmt.Errorf("option path is required for backend %q (like -o path=%s/NAME)", ID, b.roots[0])
	}
	return nil
}

// Resolve follows symlinks in p, then checks the result is a directory
// strictly inside a bind root (the root itself is refused: adopting it
// would let one volume hold every other's data).
func (b *Bind) Resolve(p string) (string, error) {
	res, err := filepath.EvalSymlinks(filepath.Clean(p))
	if err != nil {
		return "", fmt.Errorf("path %s cannot be adopted: %w", p, err)
	}
	fi, err := os.Stat(res)
	if err != nil {
		return "", fmt.Errorf("path %s: %w", p, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("path %s (resolved %s) is not a directory", p, res)
	}
	for _, r := range b.roots {
		if within(res, r) {
			return res, nil
		}
	}
	return "", fmt.Errorf("path %s resolves to %s, which is not inside a bind root (%s) or is a root itself; nothing was changed", p, res, strings.Join(b.roots, ", "))
}

// within reports whether p is strictly below root, by path components:
// /srv/data2 is not below /srv/data.
func within(p, root string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

func overlaps(a, b string) bool { return a == b || within(a, b) || within(b, a) }

func (b *Bind) marker(name string) string { return filepath.Join(b.dir, name) }

// Create resolves and checks the path, refuses overlap with another bind
// volume, applies ownership only if asked, and records the resolved path.
func (b *Bind) Create(_ context.Context, vol *backend.Volume, opts backend.Options) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	res, err := b.admissible(vol.Name, opts["path"])
	if err != nil {
		return err
	}
	// No volume name starts with a dot, so the temporary file can never be
	// taken for, or overwrite, another volume's marker.
	tmp := filepath.Join(b.dir, "."+vol.Name+".tmp")
	if err := os.WriteFile(tmp, []byte(res), 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("recording the adopted path: %w", err)
	}
	if err := safefs.SyncFile(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("recording the adopted path: %w", err)
	}
	if err := os.Rename(tmp, b.marker(vol.Name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("recording the adopted path: %w", err)
	}
	if err := safefs.SyncDir(b.dir); err != nil {
		os.Remove(b.marker(vol.Name))
		return fmt.Errorf("recording the adopted path: %w", err)
	}
	if err := dir.ApplyOwnership(res, opts); err != nil {
		os.Remove(b.marker(vol.Name))
		return err
	}
	if vol.Private == nil {
		vol.Private = map[string]string{}
	}
	vol.Private[privPath] = res
	return nil
}

// Occupied refuses what Create would refuse: a leftover marker. Undoing a
// cut bind Create deletes only the marker, never the host path.
//
// It also refuses every path Create would, so that a refused Create records
// no intent and leaves the state file byte-identical.
func (b *Bind) Occupied(vol *backend.Volume) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.admissible(vol.Name, vol.Options["path"])
	return err
}

// admissible resolves path and checks that name may adopt it: inside a
// root, overlapping no other bind volume, no leftover marker. It only reads;
// the caller holds b.mu.
func (b *Bind) admissible(name, path string) (string, error) {
	res, err := b.Resolve(path)
	if err != nil {
		return "", err
	}
	adopted, err := b.adopted()
	if err != nil {
		return "", err
	}
	for other, p := range adopted {
		if overlaps(res, p) {
			return "", fmt.Errorf("path %s overlaps %s, adopted by volume %q; two volumes must not share host data", res, p, other)
		}
	}
	if _, err := os.Lstat(b.marker(name)); err == nil {
		return "", fmt.Errorf("a leftover marker %s exists; remove it, then create the volume again", b.marker(name))
	}
	return res, nil
}

// adopted reads the markers: volume name → adopted path.
func (b *Bind) adopted() (map[string]string, error) {
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // a temporary marker, never a volume
		}
		data, err := os.ReadFile(filepath.Join(b.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading bind marker %s: %w", e.Name(), err)
		}
		out[e.Name()] = string(data)
	}
	return out, nil
}

// Mountpoint is the adopted host directory.
func (b *Bind) Mountpoint(vol *backend.Volume) string { return vol.Private[privPath] }

// Activate checks the host directory still resolves to itself, inside a
// root: a path swapped for a symlink since create is refused.
func (b *Bind) Activate(_ context.Context, vol *backend.Volume) error {
	want := vol.Private[privPath]
	res, err := b.Resolve(want)
	if err != nil {
		return err
	}
	if res != want {
		return fmt.Errorf("its host path %s now resolves to %s (replaced by a symlink?); refusing to mount it", want, res)
	}
	return nil
}

// Deactivate has nothing to bring down.
func (b *Bind) Deactivate(context.Context, *backend.Volume) error { return nil }

// Remove forgets the volume: it deletes the marker, never the host data.
func (b *Bind) Remove(_ context.Context, vol *backend.Volume) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := os.Remove(b.marker(vol.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("forgetting the adopted path: %w", err)
	}
	return safefs.SyncRemoved(b.marker(vol.Name))
}

// Inventory reports markers without records and recorded host paths that
// are gone.
func (b *Bind) Inventory(context.Context) (backend.InventoryRun, error) {
	return backend.InventoryDir(b.dir, func(v *backend.Volume, _ bool) bool {
		fi, err := os.Stat(v.Private[privPath])
		return err == nil && fi.IsDir()
	})
}

// Status says where the data is and that it outlives the volume.
func (b *Bind) Status(vol *backend.Volume) map[string]interface{} {
	return map[string]interface{}{
		"host_path": vol.Private[privPath],
		"adopted":   "removing the volume forgets it; the host data is never deleted",
	}
}
