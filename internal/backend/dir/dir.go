// Package dir is the default backend: each volume is a directory of its own
// under the backend's directory.
package dir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/safefs"
)

// ID is the backend's registered name.
const ID = "dir"

// Module registers the dir backend.
var Module = backend.Module{
	ID:      ID,
	Summary: "a directory under the root (like Docker's local driver, with ownership and mode at create)",
	Options: backend.Ownership(),
	New:     func(env backend.Env) (backend.Backend, error) { return &Dir{dir: env.Dir}, nil },
}

// Dir is the provisioned backend.
type Dir struct{ dir string }

var _ backend.Backend = (*Dir)(nil)

func (d *Dir) path(name string) string { return filepath.Join(d.dir, name) }

// Validate has nothing beyond the schema to check.
func (d *Dir) Validate(backend.Options) error { return nil }

// Create makes the directory and applies ownership and mode.
func (d *Dir) Create(_ context.Context, vol *backend.Volume, opts backend.Options) error {
	p := d.path(vol.Name)
	err := os.Mkdir(p, 0o700)
	if errors.Is(err, os.ErrExist) {
		// A crash between mkdir and the record's commit leaves an empty
		// directory; adopting it loses nothing. Anything else is kept.
		if aerr := adoptable(p); aerr != nil {
			return fmt.Errorf("its data directory %s already exists but no volume records it (%v); nothing was changed: inspect it and move it away, then create the volume again", p, aerr)
		}
	} else if err != nil {
		return fmt.Errorf("creating its data directory: %w", err)
	}
	if err := ApplyOwnership(p, opts); err != nil {
		unix.Rmdir(p) // empty: ours, just made or adopted empty
		return err
	}
	return nil
}

// ApplyOwnership applies the common uid, gid and mode options to path.
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
	mode := uint32(0o755)
	if v, ok := opts["mode"]; ok {
		mode, _ = backend.ParseMode(v)
	}
	// os.Chmod would drop setuid/setgid/sticky: use the raw bits.
	if err := unix.Chmod(path, mode); err != nil {
		return fmt.Errorf("setting mode of %s: %w", path, err)
	}
	return nil
}

func adoptable(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("it is not a directory")
	}
	if m, err := mounttable.IsMountPoint(p); err != nil || m {
		return errors.New("it is a mount point")
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

// Remove deletes the directory, never crossing a mount or a symlink.
func (d *Dir) Remove(_ context.Context, vol *backend.Volume) error {
	return safefs.RemoveTree(d.path(vol.Name))
}

// Inventory compares the backend's directory with the records.
func (d *Dir) Inventory(_ context.Context, known []*backend.Volume) (backend.Inventory, error) {
	var inv backend.Inventory
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return inv, err
	}
	onDisk := make(map[string]bool, len(entries))
	for _, e := range entries {
		onDisk[e.Name()] = true
	}
	for _, v := range known {
		if !onDisk[v.Name] {
			inv.Missing = append(inv.Missing, v.Name)
		}
		delete(onDisk, v.Name)
	}
	for name := range onDisk {
		inv.Unrecorded = append(inv.Unrecorded, name)
	}
	return inv, nil
}
