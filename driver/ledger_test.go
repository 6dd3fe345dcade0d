package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/store"
)

// fake is a backend that records what the driver asks of it and keeps an
// "up" flag, so tests can see storage is up exactly while a live mount holds it.
type fake struct {
	mu          sync.Mutex
	up          map[string]bool
	created     map[string]bool
	activations int   // times Activate brought storage up (not: found it up)
	held        []int // what each Activate call saw as held by running containers
	deacts      int
	removes     int
	failCreate  error
	failRemove  error
}

var _ backend.Backend = (*fake)(nil)

func newFake() *fake { return &fake{up: map[string]bool{}, created: map[string]bool{}} }

func (f *fake) Validate(backend.Options) error { return nil }
func (f *fake) Create(_ context.Context, v *backend.Volume, _ backend.Options) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCreate != nil {
		return f.failCreate
	}
	f.created[v.Name] = true
	return nil
}
func (f *fake) Mountpoint(v *backend.Volume) string { return "/fake/" + v.Name }
func (f *fake) Activate(_ context.Context, v *backend.Volume) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held = append(f.held, v.ActiveMounts())
	if !f.up[v.Name] {
		f.activations++
	}
	f.up[v.Name] = true
	return nil
}
func (f *fake) Deactivate(_ context.Context, v *backend.Volume) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deacts++
	f.up[v.Name] = false
	return nil
}
func (f *fake) Remove(_ context.Context, v *backend.Volume) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRemove != nil {
		return f.failRemove
	}
	if f.up[v.Name] {
		return errors.New("fake: removing storage that is up")
	}
	f.removes++
	delete(f.created, v.Name)
	return nil
}
func (f *fake) Inventory(context.Context) (backend.InventoryRun, error) { return noInventory{}, nil }

// noInventory finds nothing.
type noInventory struct{}

func (noInventory) Known([]*backend.Volume)            {}
func (noInventory) Result() (backend.Inventory, error) { return backend.Inventory{}, nil }

func (f *fake) isUp(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up[name]
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return l
}

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newFakeDriver(t *testing.T, st *store.Store, f *fake, boot string) *Driver {
	t.Helper()
	mod := backend.Module{ID: "fake", Options: backend.Ownership(), New: func(backend.Env) (backend.Backend, error) { return f, nil }}
	d, err := New(Config{Store: st, Backends: map[string]backend.Instance{"fake": {Module: mod, Backend: f}}, DefaultBackend: "fake", BootID: boot, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func fixture(t *testing.T) (*Driver, *fake, *store.Store) {
	t.Helper()
	st := openStore(t, filepath.Join(t.TempDir(), store.FileName))
	t.Cleanup(func() { st.Close() })
	f := newFake()
	return newFakeDriver(t, st, f, "boot-1"), f, st
}

func mountID(i int) string { return fmt.Sprintf("%064x", i) }

func mustCreate(t *testing.T, d *Driver, name string) {
	t.Helper()
	if err := d.Create(&volume.CreateRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
}

func ledger(t *testing.T, st *store.Store, name string) map[string]int {
	t.Helper()
	v, err := st.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for id, m := range v.Mounts {
		out[id] = m.Count
	}
	return out
}

func TestLedgerCountsRepeatedIDs(t *testing.T) {
	d, f, st := fixture(t)
	mustCreate(t, d, "v")
	a, b := mountID(1), mountID(2)
	for _, id := range []string{a, a, b} {
		res, err := d.Mount(&volume.MountRequest{Name: "v", ID: id})
		if err != nil {
			t.Fatal(err)
		}
		if res.Mountpoint != "/fake/v" {
			t.Fatalf("mountpoint %q", res.Mountpoint)
		}
	}
	if got := ledger(t, st, "v"); got[a] != 2 || got[b] != 1 || len(got) != 2 {
		t.Fatalf("ledger %v, want a:2 b:1", got)
	}
	if f.activations != 1 {
		t.Fatalf("storage brought up %d times for three mounts, want once", f.activations)
	}
	steps := []struct {
		id   string
		want map[string]int
		up   bool
	}{
		{a, map[string]int{a: 1, b: 1}, true},
		{b, map[string]int{a: 1}, true},
		{a, map[string]int{}, false},
	}
	for _, s := range steps {
		if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: s.id}); err != nil {
			t.Fatal(err)
		}
		if got := ledger(t, st, "v"); fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Fatalf("after unmount of %s: ledger %v, want %v", s.id[60:], got, s.want)
		}
		if f.isUp("v") != s.up {
			t.Fatalf("after unmount of %s: storage up=%v, want %v", s.id[60:], f.isUp("v"), s.up)
		}
	}
	if f.deacts != 1 {
		t.Fatalf("storage brought down %d times, want once", f.deacts)
	}
}

func TestUnmountOfUnknownIDOrVolumeIsAccepted(t *testing.T) {
	d, f, st := fixture(t)
	mustCreate(t, d, "v")
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	for _, req := range []*volume.UnmountRequest{
		{Name: "v", ID: mountID(99)},       // forgotten before a restart
		{Name: "nosuch", ID: mountID(1)},   // volume unknown
		{Name: "bad/name", ID: mountID(1)}, // not even a valid name
	} {
		if err := d.Unmount(req); err != nil {
			t.Errorf("Unmount(%s, %s…) = %v, want accepted", req.Name, req.ID[:8], err)
		}
	}
	if got := ledger(t, st, "v"); got[mountID(1)] != 1 || len(got) != 1 {
		t.Fatalf("stray unmounts changed the ledger: %v", got)
	}
	if !f.isUp("v") {
		t.Fatal("a stray unmount brought the storage down under a live mount")
	}
}

func TestRemoveRefusedWhileMountsAreHeld(t *testing.T) {
	d, f, st := fixture(t)
	mustCreate(t, d, "v")
	for _, id := range []string{mountID(1), mountID(1), mountID(2)} {
		if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	err := d.Remove(&volume.RemoveRequest{Name: "v"})
	if err == nil {
		t.Fatal("Remove of a mounted volume succeeded")
	}
	for _, want := range []string{`volume "v"`, "in use", "3 mounts hold it", "stop the containers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if f.removes != 0 {
		t.Fatal("backend Remove was called for a mounted volume")
	}
	if _, err := st.Get("v"); err != nil {
		t.Fatalf("record gone after a refused Remove: %v", err)
	}
	for _, id := range []string{mountID(1), mountID(1), mountID(2)} {
		if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatalf("Remove after the last unmount: %v", err)
	}
	if _, err := st.Get("v"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record still there after Remove: %v", err)
	}
}

func TestRemoveKeepsVolumeWhenBackendFails(t *testing.T) {
	d, f, st := fixture(t)
	mustCreate(t, d, "v")
	f.failRemove = errors.New("device busy")
	err := d.Remove(&volume.RemoveRequest{Name: "v"})
	if err == nil || !strings.Contains(err.Error(), "device busy") || !strings.Contains(err.Error(), "kept") {
		t.Fatalf("Remove error %v, want the backend's reason and that the volume is kept", err)
	}
	if _, err := st.Get("v"); err != nil {
		t.Fatalf("record lost after a failed Remove: %v", err)
	}
}

func TestCreateFailureLeavesNoRecord(t *testing.T) {
	d, f, st := fixture(t)
	f.failCreate = errors.New("mkfs exited 1: no space")
	err := d.Create(&volume.CreateRequest{Name: "v"})
	if err == nil || !strings.Contains(err.Error(), "no space") || !strings.Contains(err.Error(), `"v"`) {
		t.Fatalf("Create error %v, want the volume and the backend's reason", err)
	}
	if _, err := st.Get("v"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed Create left a record: %v", err)
	}
}

func TestCreateRefusesBadInputAndChangesNothing(t *testing.T) {
	d, f, st := fixture(t)
	cases := []struct {
		req  volume.CreateRequest
		want string
	}{
		{volume.CreateRequest{Name: "../etc"}, "invalid"},
		{volume.CreateRequest{Name: "a/b"}, "'/'"},
		{volume.CreateRequest{Name: ""}, "empty"},
		{volume.CreateRequest{Name: strings.Repeat("a", 10000)}, "limit is 200"},
		{volume.CreateRequest{Name: "v", Options: map[string]string{"sise": "1G"}}, `unknown option "sise"`},
		{volume.CreateRequest{Name: "v", Options: map[string]string{"uid": "-1"}}, "option uid"},
		{volume.CreateRequest{Name: "v", Options: map[string]string{"mode": "99999"}}, "option mode"},
		{volume.CreateRequest{Name: "v", Options: map[string]string{"backend": "nosuch"}}, `backend "nosuch" is not enabled`},
	}
	for _, c := range cases {
		err := d.Create(&c.req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create(%.20q, %v) = %v, want an error saying %q", c.req.Name, c.req.Options, err, c.want)
		}
	}
	vols, _ := st.List()
	if len(vols) != 0 || len(f.created) != 0 {
		t.Fatalf("refused creates left %d records and %d storages", len(vols), len(f.created))
	}
}

func TestCreateIsIdempotentButRefusesOtherOptions(t *testing.T) {
	d, _, _ := fixture(t)
	req := &volume.CreateRequest{Name: "v", Options: map[string]string{"mode": "0700"}}
	if err := d.Create(req); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(req); err != nil {
		t.Fatalf("a repeated identical Create failed: %v", err)
	}
	err := d.Create(&volume.CreateRequest{Name: "v", Options: map[string]string{"mode": "0755"}})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Create with other options = %v, want 'already exists'", err)
	}
}

func TestGetOfUnknownVolume(t *testing.T) {
	d, _, _ := fixture(t)
	_, err := d.Get(&volume.GetRequest{Name: "nosuch"})
	if err == nil || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("Get of an unknown volume = %v, want 'no such volume'", err)
	}
}

// After a reboot (another boot ID) the old entries are stale: not live, shown,
// replaced by a Mount of the same ID, released by Release, and Remove works
// once they are accounted for.
// TestMountAfterRestartBringsStorageBackUp: a managed plugin restarts in a
// new mount namespace, so storage that running containers hold is gone
// from its view while the ledger still counts them. The next Mount must
// bring it up again (not hand Docker an empty directory), and tell the
// backend how many mounts of this boot hold the volume, leaving out stale
// entries of an earlier boot.
func TestMountAfterRestartBringsStorageBackUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.FileName)
	st := openStore(t, path)
	d := newFakeDriver(t, st, newFake(), "boot-1")
	mustCreate(t, d, "v")
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = openStore(t, path)
	d = newFakeDriver(t, st, newFake(), "boot-2")
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(2)}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st = openStore(t, path)
	defer st.Close()
	f := newFake() // the restarted plugin: nothing is up in its namespace
	d = newFakeDriver(t, st, f, "boot-2")
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(3)}); err != nil {
		t.Fatal(err)
	}
	if !f.isUp("v") || f.activations != 1 {
		t.Fatalf("after the restart a Mount brought storage up %d times (up=%v), want once", f.activations, f.isUp("v"))
	}
	if fmt.Sprint(f.held) != "[1]" {
		t.Fatalf("Activate saw %v mounts held, want [1]: the boot-2 entry, not the stale boot-1 one", f.held)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(4)}); err != nil {
		t.Fatal(err)
	}
	if f.activations != 1 || fmt.Sprint(f.held) != "[1 2]" {
		t.Fatalf("a mount of storage that is up: activations %d, held %v; want 1, [1 2]", f.activations, f.held)
	}
}

func TestStaleEntriesAfterReboot(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.FileName)
	st := openStore(t, path)
	f := newFake()
	d := newFakeDriver(t, st, f, "boot-1")
	mustCreate(t, d, "v")
	for _, id := range []string{mountID(1), mountID(2), mountID(2)} {
		if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	st = openStore(t, path)
	defer st.Close()
	f2 := newFake() // nothing is up after a reboot
	d = newFakeDriver(t, st, f2, "boot-2")
	get, err := d.Get(&volume.GetRequest{Name: "v"})
	if err != nil {
		t.Fatal(err)
	}
	if get.Volume.Status["stale_mounts"] != 3 {
		t.Fatalf("Status %v, want stale_mounts 3", get.Volume.Status)
	}
	rep, err := d.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := countKind(rep, FindStaleMount); n != 2 {
		t.Fatalf("reconcile reports %d stale mounts, want 2 (one per ID): %+v", n, rep)
	}
	err = d.Remove(&volume.RemoveRequest{Name: "v"})
	if err == nil || !strings.Contains(err.Error(), "stowage release v") {
		t.Fatalf("Remove with stale entries = %v, want a refusal naming 'stowage release v'", err)
	}
	// Docker mounting ID 1 again replaces its stale entry and brings storage up.
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	if f2.activations != 1 {
		t.Fatalf("a mount after the reboot brought storage up %d times, want 1 (stale entries are not live)", f2.activations)
	}
	vol, _ := st.Get("v")
	if m := vol.Mounts[mountID(1)]; m.Count != 1 || m.Boot != "boot-2" {
		t.Fatalf("re-mounted entry %+v, want count 1 of boot-2", m)
	}
	res, err := d.Release(&ReleaseRequest{Name: "v"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Released) != fmt.Sprint([]string{mountID(2)}) {
		t.Fatalf("released %v, want only the earlier boot's %s", res.Released, mountID(2))
	}
	if !f2.isUp("v") {
		t.Fatal("release of stale entries brought down storage a live mount holds")
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatalf("Remove after the stale entries were released: %v", err)
	}
}

func countKind(r Report, kind string) int {
	n := 0
	for _, f := range r.Findings {
		if f.Kind == kind {
			n++
		}
	}
	return n
}

func TestReleaseOfUnknownIDIsAnErrorAndChangesNothing(t *testing.T) {
	d, _, st := fixture(t)
	mustCreate(t, d, "v")
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Release(&ReleaseRequest{Name: "v", IDs: []string{mountID(1), "nope"}}); err == nil {
		t.Fatal("Release of an unknown ID succeeded")
	}
	if got := ledger(t, st, "v"); got[mountID(1)] != 1 {
		t.Fatalf("a refused Release changed the ledger: %v", got)
	}
}

// Many goroutines mount and unmount one volume with repeated and distinct IDs;
// afterwards the ledger is exact and storage is up exactly while it is held.
func TestConcurrentMountUnmountKeepsLedgerExact(t *testing.T) {
	d, f, st := fixture(t)
	mustCreate(t, d, "v")
	const workers, rounds = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			shared, own := mountID(1000+w%4), mountID(w) // four IDs shared by four workers each
			for r := 0; r < rounds; r++ {
				for _, id := range []string{shared, own} {
					if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: id}); err != nil {
						errs <- err
						return
					}
					if !f.isUp("v") {
						errs <- errors.New("Mount returned while the storage was down")
						return
					}
				}
				for _, id := range []string{own, shared} {
					if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: id}); err != nil {
						errs <- err
						return
					}
				}
			}
			// Leave one mount of each behind, to check the counts.
			for _, id := range []string{shared, own} {
				if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: id}); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := ledger(t, st, "v")
	want := map[string]int{}
	for w := 0; w < workers; w++ {
		want[mountID(1000+w%4)]++
		want[mountID(w)]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ledger after the storm\n got %v\nwant %v", got, want)
	}
	for id, n := range want {
		for i := 0; i < n; i++ {
			if err := d.Unmount(&volume.UnmountRequest{Name: "v", ID: id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := ledger(t, st, "v"); len(got) != 0 {
		t.Fatalf("ledger not empty after every unmount: %v", got)
	}
	if f.isUp("v") {
		t.Fatal("storage still up with an empty ledger")
	}
	if f.activations != f.deacts {
		t.Fatalf("%d activations but %d deactivations", f.activations, f.deacts)
	}
}

// inventoryProbe reports a problem for every volume it is told is mounted,
// as the tmpfs backend does when its filesystem is not up.
type inventoryProbe struct{ *fake }

func (p inventoryProbe) Inventory(context.Context) (backend.InventoryRun, error) {
	return &probeRun{}, nil
}

type probeRun struct{ inv backend.Inventory }

func (r *probeRun) Known(vols []*backend.Volume) {
	for _, v := range vols {
		if v.ActiveMounts() > 0 {
			r.inv.Problems = append(r.inv.Problems, v.Name+" is held but not up")
		}
	}
}
func (r *probeRun) Result() (backend.Inventory, error) { return r.inv, nil }

// After a reboot backends must not be told that stale entries hold their
// storage: no container can, and they would report a live container writing
// into a plain directory.
func TestReconcileGivesBackendsOnlyThisBootsLedger(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.FileName)
	st := openStore(t, path)
	defer st.Close()
	probe := inventoryProbe{newFake()}
	mod := backend.Module{ID: "fake", New: func(backend.Env) (backend.Backend, error) { return probe, nil }}
	mk := func(boot string) *Driver {
		d, err := New(Config{Store: st, Backends: map[string]backend.Instance{"fake": {Module: mod, Backend: probe}}, DefaultBackend: "fake", BootID: boot, Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := mk("boot-1")
	mustCreate(t, d, "v")
	if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	rep, _ := d.Reconcile(context.Background())
	if countKind(rep, FindProblem) != 1 {
		t.Fatalf("a live mount must reach the backend: %+v", rep)
	}
	rep, _ = mk("boot-2").Reconcile(context.Background())
	if countKind(rep, FindProblem) != 0 || countKind(rep, FindStaleMount) != 1 {
		t.Fatalf("after a reboot: %+v, want one stale-mount finding and no backend problem", rep)
	}
	if got := ledger(t, st, "v"); got[mountID(1)] != 1 {
		t.Fatalf("reconcile changed the ledger: %v", got)
	}
}

// Remove's refusal shows 12-character ID prefixes; Release takes them, so an
// operator can clear an entry Docker will never unmount (a container whose
// mount dockerd could not restore) with what the error showed.
func TestReleaseByIDPrefix(t *testing.T) {
	d, _, st := fixture(t)
	mustCreate(t, d, "v")
	a, b := strings.Repeat("a", 64), strings.Repeat("a", 20)+strings.Repeat("b", 44)
	for _, id := range []string{a, b} {
		if _, err := d.Mount(&volume.MountRequest{Name: "v", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	err := d.Remove(&volume.RemoveRequest{Name: "v"})
	if err == nil || !strings.Contains(err.Error(), a[:12]) {
		t.Fatalf("Remove = %v, want the IDs' prefixes", err)
	}
	if _, err := d.Release(&ReleaseRequest{Name: "v", IDs: []string{a[:12]}}); err == nil || !strings.Contains(err.Error(), "matches 2 mounts") {
		t.Fatalf("ambiguous prefix: %v", err)
	}
	if _, err := d.Release(&ReleaseRequest{Name: "v", IDs: []string{"aaaa"}}); err == nil {
		t.Fatal("a 4-character prefix was accepted")
	}
	res, err := d.Release(&ReleaseRequest{Name: "v", IDs: []string{b[:24]}})
	if err != nil || len(res.Released) != 1 || res.Released[0] != b {
		t.Fatalf("Release by prefix = %v, %v", res, err)
	}
	if got := ledger(t, st, "v"); len(got) != 1 || got[a] != 1 {
		t.Fatalf("ledger %v, want only %s", got, a[:12])
	}
}

// A crash between bringing storage up and recording the Mount (or between
// recording the last Unmount and bringing it down) leaves storage up with an
// empty ledger. No container can hold it; Remove must not refuse forever.
func TestRemoveBringsDownStorageTheLedgerDoesNotHold(t *testing.T) {
	d, f, st := fixture(t)
	mustCreate(t, d, "v")
	vol, _ := st.Get("v")
	f.Activate(context.Background(), vol) // up, and then the crash: no ledger entry
	if err := d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatalf("Remove of a volume whose storage was left up by a crash: %v", err)
	}
	if f.isUp("v") || f.removes != 1 {
		t.Fatalf("storage up=%v, removes=%d", f.isUp("v"), f.removes)
	}
}

// Issue 12: a Mount and an Unmount are one durable commit each (a Create
// and a Remove two: the intent, then the outcome), and a Get none.
func TestDurableCommitsPerCall(t *testing.T) {
	d, _, st := fixture(t)
	var commits atomic.Int64
	st.CommitObserver = func(time.Duration) { commits.Add(1) }
	for _, c := range []struct {
		call string
		want int64
		do   func() error
	}{
		{"Create", 2, func() error { return d.Create(&volume.CreateRequest{Name: "v"}) }},
		{"Get", 0, func() error { _, err := d.Get(&volume.GetRequest{Name: "v"}); return err }},
		{"Mount", 1, func() error { _, err := d.Mount(&volume.MountRequest{Name: "v", ID: mountID(1)}); return err }},
		{"Unmount", 1, func() error { return d.Unmount(&volume.UnmountRequest{Name: "v", ID: mountID(1)}) }},
		{"Remove", 2, func() error { return d.Remove(&volume.RemoveRequest{Name: "v"}) }},
	} {
		before := commits.Load()
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.call, err)
		}
		if got := commits.Load() - before; got != c.want {
			t.Errorf("%s made %d durable commits, want %d", c.call, got, c.want)
		}
	}
}
