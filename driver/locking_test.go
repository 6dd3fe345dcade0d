package driver

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/store"
)

// gate is a backend whose Create and Activate block until released, to hold
// one volume busy in "filesystem work".
type gate struct {
	entered chan string
	release chan struct{}
}

var _ backend.Backend = (*gate)(nil)

func (g *gate) Validate(backend.Options) error { return nil }
func (g *gate) Create(_ context.Context, v *backend.Volume, _ backend.Options) error {
	g.entered <- v.Name
	<-g.release
	return nil
}
func (g *gate) Mountpoint(v *backend.Volume) string { return "/nonexistent/" + v.Name }
func (g *gate) Activate(_ context.Context, v *backend.Volume) error {
	g.entered <- v.Name
	<-g.release
	return nil
}
func (g *gate) Deactivate(context.Context, *backend.Volume) error       { return nil }
func (g *gate) Remove(context.Context, *backend.Volume) error           { return nil }
func (g *gate) Inventory(context.Context) (backend.InventoryRun, error) { return noInventory{}, nil }

func newGated(t *testing.T) (*Driver, *gate) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g := &gate{entered: make(chan string, 16), release: make(chan struct{})}
	mod := backend.Module{ID: "gate", Options: backend.Ownership(), New: func(backend.Env) (backend.Backend, error) { return g, nil }}
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	d, err := New(Config{Store: st, Backends: map[string]backend.Instance{"gate": {Module: mod, Backend: g}}, DefaultBackend: "gate", BootID: "boot-1", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return d, g
}

// While one volume's Create is stuck in backend work, calls on other volumes
// complete, and a second call on the same volume waits for the first.
func TestBusyVolumeBlocksOnlyItself(t *testing.T) {
	d, g := newGated(t)
	go func() { close(g.release) }() // let setup through
	if err := d.Create(&volume.CreateRequest{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	g.release = make(chan struct{})

	busyDone := make(chan error, 1)
	go func() { busyDone <- d.Create(&volume.CreateRequest{Name: "busy"}) }()
	if got := <-g.entered; got != "busy" {
		t.Fatalf("backend entered for %q", got)
	}

	// Other volumes: every call finishes while "busy" is held.
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		if _, err := d.Get(&volume.GetRequest{Name: "other"}); err != nil {
			t.Error(err)
		}
		if _, err := d.List(); err != nil {
			t.Error(err)
		}
		if err := d.Unmount(&volume.UnmountRequest{Name: "other", ID: "x"}); err != nil {
			t.Error(err)
		}
		if err := d.Remove(&volume.RemoveRequest{Name: "other"}); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("calls on another volume waited for the busy one")
	}

	// The same volume: a second call is serialised behind the first.
	sameDone := make(chan error, 1)
	go func() { sameDone <- d.Remove(&volume.RemoveRequest{Name: "busy"}) }()
	select {
	case err := <-sameDone:
		t.Fatalf("Remove of the busy volume ran while its Create was in progress (err=%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(g.release)
	if err := <-busyDone; err != nil {
		t.Fatal(err)
	}
	if err := <-sameDone; err != nil {
		t.Fatalf("Remove after Create: %v", err)
	}
	if _, err := d.Get(&volume.GetRequest{Name: "busy"}); err == nil {
		t.Fatal("busy volume still exists after its serialised Remove")
	}
}
