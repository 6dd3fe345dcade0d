package driver

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/store"
)

// cloneFake is a fake backend that can clone and resize.
type cloneFake struct {
	*fake
	clones   []string
	failNext error
}

func (c *cloneFake) Clone(_ context.Context, src, dst *backend.Volume, _ backend.Options) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failNext != nil {
		return c.failNext
	}
	c.clones = append(c.clones, src.Name+">"+dst.Name)
	c.created[dst.Name] = true
	// Like the real backends, a clone records what it inherits.
	if dst.Options == nil {
		dst.Options = map[string]string{}
	}
	for k, v := range src.Options {
		if _, ok := dst.Options[k]; !ok && k != backend.KeyFrom && k != backend.KeyFromMounted {
			dst.Options[k] = v
		}
	}
	return nil
}

func (c *cloneFake) Resize(_ context.Context, vol *backend.Volume, size uint64) (backend.Options, error) {
	return backend.Options{backend.KeySize: "grown"}, nil
}

func cloneFixture(t *testing.T) (*Driver, *cloneFake, *store.Store) {
	t.Helper()
	st := openStore(t, filepath.Join(t.TempDir(), store.FileName))
	t.Cleanup(func() { st.Close() })
	cf := &cloneFake{fake: newFake()}
	opts := append(backend.Ownership(), backend.OptFrom, backend.OptFromMounted)
	mk := func(id string, b backend.Backend) backend.Instance {
		return backend.Instance{Module: backend.Module{ID: id, Options: opts, New: func(backend.Env) (backend.Backend, error) { return b, nil }}, Backend: b}
	}
	d, err := New(Config{Store: st, Backends: map[string]backend.Instance{"fake": mk("fake", cf), "plain": mk("plain", newFake())}, DefaultBackend: "fake", BootID: "boot-1", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return d, cf, st
}

func TestCloneChecksSourceAndRecordsOnlyOnSuccess(t *testing.T) {
	d, cf, st := cloneFixture(t)
	mustCreate(t, d, "src")
	if err := d.Create(&volume.CreateRequest{Name: "other", Options: map[string]string{"backend": "plain"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"from": "nope"}, "no such volume"},
		{map[string]string{"from": "dst"}, "copy of itself"},
		{map[string]string{"from": "other"}, "must use its source's backend"},
		{map[string]string{"from": "../x"}, "option from"},
		{map[string]string{"backend": "plain", "from": "other"}, "cannot copy volumes"},
	} {
		err := d.Create(&volume.CreateRequest{Name: "dst", Options: c.opts})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.opts, err, c.want)
		}
		if _, err := st.Get("dst"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%v: a refused clone left a record", c.opts)
		}
	}
	// A live mount on the source needs from_mounted=true.
	if _, err := d.Mount(&volume.MountRequest{Name: "src", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "dst", Options: map[string]string{"from": "src"}}); err == nil || !strings.Contains(err.Error(), "from_mounted=true") {
		t.Fatalf("clone of a mounted source: %v", err)
	}
	cf.failNext = errors.New("boom")
	if err := d.Create(&volume.CreateRequest{Name: "dst", Options: map[string]string{"from": "src", "from_mounted": "true"}}); err == nil {
		t.Fatal("a failing Clone must fail the create")
	}
	if _, err := st.Get("dst"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a failed clone left a record")
	}
	cf.failNext = nil
	if err := d.Create(&volume.CreateRequest{Name: "dst", Options: map[string]string{"from": "src", "from_mounted": "true"}}); err != nil {
		t.Fatal(err)
	}
	if len(cf.clones) != 1 || cf.clones[0] != "src>dst" {
		t.Fatalf("clones: %v", cf.clones)
	}
}

// Two volumes cloned from each other at once must not deadlock: both
// locks are taken in name order.
func TestCrossClonesDoNotDeadlock(t *testing.T) {
	d, _, _ := cloneFixture(t)
	mustCreate(t, d, "a")
	mustCreate(t, d, "b")
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			d.Create(&volume.CreateRequest{Name: "c-" + string(rune('a'+i%26)), Options: map[string]string{"from": "a"}})
		}()
		go func() {
			defer wg.Done()
			d.Create(&volume.CreateRequest{Name: "a", Options: map[string]string{"from": "c-" + string(rune('a'+i%26))}})
		}()
	}
	wg.Wait()
}

func TestResizeRecordsBackendOptions(t *testing.T) {
	d, _, st := cloneFixture(t)
	mustCreate(t, d, "v")
	if _, err := d.Resize(&ResizeRequest{Name: "v", Size: "0"}); err == nil {
		t.Fatal("size 0 accepted")
	}
	if _, err := d.Resize(&ResizeRequest{Name: "v", Size: "2G"}); err != nil {
		t.Fatal(err)
	}
	v, _ := st.Get("v")
	if v.Options[backend.KeySize] != "grown" {
		t.Fatalf("recorded options %v", v.Options)
	}
}

// Docker may retry a Create (transport retries, crash recovery): the same
// clone request again must succeed and change nothing, although the clone's
// recorded options hold what it inherited; a different request must not.
func TestRetriedCloneCreateSucceeds(t *testing.T) {
	d, cf, st := cloneFixture(t)
	if err := d.Create(&volume.CreateRequest{Name: "src", Options: map[string]string{"uid": "7"}}); err != nil {
		t.Fatal(err)
	}
	req := map[string]string{"from": "src"}
	if err := d.Create(&volume.CreateRequest{Name: "dst", Options: req}); err != nil {
		t.Fatal(err)
	}
	before, err := st.Get("dst")
	if err != nil {
		t.Fatal(err)
	}
	if before.Options["uid"] != "7" {
		t.Fatalf("the clone should record the inherited uid: %v", before.Options)
	}
	if err := d.Create(&volume.CreateRequest{Name: "dst", Options: map[string]string{"from": "src"}}); err != nil {
		t.Fatalf("retried clone Create: %v", err)
	}
	after, err := st.Get("dst")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("a retried Create changed the record: %+v, was %+v", after, before)
	}
	if len(cf.clones) != 1 {
		t.Errorf("a retried Create copied again: %v", cf.clones)
	}
	for _, opts := range []map[string]string{
		{"from": "src", "uid": "8"},
		{"from": "src", "from_mounted": "true"},
		{"uid": "7"},
		{},
	} {
		err := d.Create(&volume.CreateRequest{Name: "dst", Options: opts})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("Create %v over the clone = %v; want 'already exists'", opts, err)
		}
	}
	if len(cf.clones) != 1 {
		t.Errorf("a refused Create copied: %v", cf.clones)
	}
}

// A clone recorded before records kept their request (no Requested): its
// options are the request merged with what it inherited. The same source
// and options as recorded is the retry; anything else is still refused.
func TestRetriedCreateOfAnOldCloneRecord(t *testing.T) {
	d, cf, st := cloneFixture(t)
	// What such a record holds: the parsed request (defaults included)
	// with the source's uid inherited.
	old := &store.Volume{Name: "dst", Backend: "fake", Options: map[string]string{"from": "src", "from_mounted": "false", "mode": "0700", "uid": "7"}}
	if err := st.Create(old); err != nil {
		t.Fatal(err)
	}
	cf.created["dst"] = true
	before, _ := st.Get("dst")
	for _, opts := range []map[string]string{
		{"from": "src", "mode": "0700"},
		{"from": "src", "uid": "7", "mode": "0700"},
		{"from": "src", "uid": "7", "mode": "0700", "from_mounted": "false"},
	} {
		if err := d.Create(&volume.CreateRequest{Name: "dst", Options: opts}); err != nil {
			t.Errorf("retried Create %v of an old clone record = %v, want success", opts, err)
		}
	}
	for _, opts := range []map[string]string{
		{"from": "other", "mode": "0700"},
		{"from": "src"}, // mode 0755 by default: not what was asked
		{"from": "src", "mode": "0700", "uid": "8"},
		{"from": "src", "mode": "0700", "from_mounted": "true"},
		{"uid": "7", "mode": "0700"},
		{},
	} {
		err := d.Create(&volume.CreateRequest{Name: "dst", Options: opts})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("Create %v over the old clone record = %v; want 'already exists'", opts, err)
		}
	}
	after, _ := st.Get("dst")
	if !reflect.DeepEqual(before, after) || len(cf.clones) != 0 {
		t.Errorf("the record changed (%+v, was %+v) or a copy ran (%v)", after, before, cf.clones)
	}
}
