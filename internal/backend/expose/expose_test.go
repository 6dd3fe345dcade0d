package expose

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/dir"
	"github.com/stowage/stowage/internal/mounttable"
)

func setup(t *testing.T) (*Exposer, string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("expose tests bind-mount for real: run as root")
	}
	tmp := t.TempDir()
	data, exp := filepath.Join(tmp, "root", "dir"), filepath.Join(tmp, "exp")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := dir.Module.New(backend.Env{Dir: data})
	if err != nil {
		t.Fatal(err)
	}
	insts, err := Wrap(map[string]backend.Instance{"dir": {Module: dir.Module, Backend: b}}, exp, logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pts, _ := mounttable.Under(tmp)
		for i := len(pts) - 1; i >= 0; i-- {
			unix.Unmount(pts[i], unix.MNT_DETACH)
		}
	})
	e := insts["dir"].Backend.(interface{ self() *Exposer }).self()
	return e, data, exp
}

func mounted(t *testing.T, p string) bool {
	t.Helper()
	m, err := mounttable.IsMountPoint(p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestActivateExposesDataAndDeactivateUndoes(t *testing.T) {
	e, data, exp := setup(t)
	ctx := context.Background()
	vol := &backend.Volume{Name: "v1"}
	if err := e.Create(ctx, vol, backend.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := e.Mountpoint(vol); got != filepath.Join(exp, "v1") {
		t.Fatalf("Mountpoint = %s", got)
	}
	if err := e.Activate(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(exp, "v1", "f"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "v1", "f")); err != nil || string(b) != "hi" {
		t.Fatalf("write through the exposure did not reach the data: %q %v", b, err)
	}
	// A restart finds the exposure in place: Activate accepts it.
	if err := e.Activate(ctx, vol); err != nil {
		t.Fatalf("second Activate: %v", err)
	}
	// Remove is refused while exposed, and deletes nothing.
	if err := e.Remove(ctx, vol); err == nil || !strings.Contains(err.Error(), "still exposed") {
		t.Fatalf("Remove while exposed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "v1", "f")); err != nil {
		t.Fatalf("data lost by a refused Remove: %v", err)
	}
	if err := e.Deactivate(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if mounted(t, filepath.Join(exp, "v1")) {
		t.Fatal("still mounted after Deactivate")
	}
	if _, err := os.Stat(filepath.Join(exp, "v1")); !os.IsNotExist(err) {
		t.Fatalf("exposure point left behind: %v", err)
	}
	if err := e.Deactivate(ctx, vol); err != nil {
		t.Fatalf("Deactivate is not idempotent: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "v1", "f")); err != nil || string(b) != "hi" {
		t.Fatalf("data lost by Deactivate: %q %v", b, err)
	}
	if err := e.Remove(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "v1")); !os.IsNotExist(err) {
		t.Fatalf("Remove left the data: %v", err)
	}
}

func TestActivateRefusesForeignMountAndNonEmptyPoint(t *testing.T) {
	e, _, exp := setup(t)
	ctx := context.Background()
	a, b := &backend.Volume{Name: "a"}, &backend.Volume{Name: "b"}
	for _, v := range []*backend.Volume{a, b} {
		if err := e.Create(ctx, v, backend.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	// Something else mounted at a's exposure point.
	if err := e.Activate(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(exp, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(filepath.Join(exp, "b"), filepath.Join(exp, "a"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(ctx, a); err == nil || !strings.Contains(err.Error(), "something other") {
		t.Fatalf("Activate over a foreign mount: %v", err)
	}
	if err := unix.Unmount(filepath.Join(exp, "a"), 0); err != nil {
		t.Fatal(err)
	}
	// A non-empty directory at the exposure point is never hidden.
	if err := os.WriteFile(filepath.Join(exp, "a", "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(ctx, a); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Activate over a non-empty dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(exp, "a", "keep")); err != nil {
		t.Fatalf("file at the exposure point lost: %v", err)
	}
}

func TestInventoryReportsLeftoverExposure(t *testing.T) {
	e, _, exp := setup(t)
	ctx := context.Background()
	v := &backend.Volume{Name: "gone"}
	if err := e.Create(ctx, v, backend.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := e.Activate(ctx, v); err != nil {
		t.Fatal(err)
	}
	// No record names it: its data shows as unrecorded, its mount as a problem.
	inv, err := backend.RunInventory(ctx, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Unrecorded) != 1 || len(inv.Problems) != 1 || !strings.Contains(inv.Problems[0], filepath.Join(exp, "gone")) {
		t.Fatalf("inventory = %+v", inv)
	}
}

type plain struct{ backend.Backend }
type withClone struct {
	backend.Backend
	backend.Cloner
}

func TestWrapKeepsOptionalAbilities(t *testing.T) {
	d, _ := dir.Module.New(backend.Env{Dir: t.TempDir()})
	insts, err := Wrap(map[string]backend.Instance{
		"p": {Backend: plain{d}},
		"c": {Backend: withClone{d, nil}},
	}, filepath.Join(t.TempDir(), "exp"), logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := insts["p"].Backend.(backend.Cloner); ok {
		t.Error("a backend without Clone gained one")
	}
	if _, ok := insts["c"].Backend.(backend.Cloner); !ok {
		t.Error("Clone hidden by the wrapper")
	}
	if _, ok := insts["c"].Backend.(backend.Resizer); ok {
		t.Error("a backend without Resize gained one")
	}
}

// counting records how often the inner storage is brought up and down.
type counting struct {
	backend.Backend
	up, down int
}

func (c *counting) Activate(ctx context.Context, v *backend.Volume) error {
	c.up++
	return c.Backend.Activate(ctx, v)
}

func (c *counting) Deactivate(ctx context.Context, v *backend.Volume) error {
	c.down++
	return c.Backend.Deactivate(ctx, v)
}

// An exposure that fails brings the inner storage down again: the driver
// records no mount, so nothing else ever would before the next Remove.
func TestFailedExposureBringsInnerStorageDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("expose tests bind-mount for real: run as root")
	}
	tmp := t.TempDir()
	data, exp := filepath.Join(tmp, "dir"), filepath.Join(tmp, "exp")
	os.MkdirAll(data, 0o700)
	b, err := dir.Module.New(backend.Env{Dir: data})
	if err != nil {
		t.Fatal(err)
	}
	inner := &counting{Backend: b}
	insts, err := Wrap(map[string]backend.Instance{"dir": {Module: dir.Module, Backend: inner}}, exp, logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	e := insts["dir"].Backend
	ctx := context.Background()
	vol := &backend.Volume{Name: "v"}
	if err := e.Create(ctx, vol, backend.Options{}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(exp, "v"), 0o755)
	os.WriteFile(filepath.Join(exp, "v", "keep"), nil, 0o644)
	if err := e.Activate(ctx, vol); err == nil {
		t.Fatal("Activate over a non-empty exposure point succeeded")
	}
	if inner.up != 1 || inner.down != 1 {
		t.Fatalf("inner storage brought up %d and down %d times; want once each", inner.up, inner.down)
	}
}
