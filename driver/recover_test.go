package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/all"
	"github.com/stowage/stowage/internal/store"
)

// realFixture is a driver over the real dir, tmpfs and bind backends in a
// temporary root, as serve builds it. reopen simulates a restart after a
// crash: a new driver over the same state file and root.
type realFixture struct {
	t     *testing.T
	root  string
	binds string
	st    *store.Store
	d     *Driver
}

func newRealFixture(t *testing.T) *realFixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("recovery tests mount tmpfs and need root: run go test as root")
	}
	f := &realFixture{t: t, root: t.TempDir(), binds: t.TempDir()}
	f.open()
	t.Cleanup(func() {
		f.st.Close()
		unmountUnder(f.root)
	})
	return f
}

func (f *realFixture) open() {
	f.t.Helper()
	f.st = openStore(f.t, filepath.Join(f.root, store.FileName))
	reg := backend.NewRegistry(all.Modules()...)
	insts, err := reg.Provision(f.root, []string{"dir", "tmpfs", "bind"}, map[string]map[string]string{"bind": {"roots": f.binds}}, quietLog())
	if err != nil {
		f.t.Fatal(err)
	}
	if f.d, err = New(Config{Store: f.st, Backends: insts, DefaultBackend: "dir", BootID: "boot-1", Log: quietLog()}); err != nil {
		f.t.Fatal(err)
	}
}

// restart closes and reopens everything, then runs start-up recovery.
func (f *realFixture) restart() Recovery {
	f.t.Helper()
	f.st.Close()
	f.open()
	rec, err := f.d.Recover(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

func (f *realFixture) inst(id string) backend.Instance { return f.d.cfg.Backends[id] }

func (f *realFixture) intents() []*store.Intent {
	f.t.Helper()
	ins, err := f.st.Intents()
	if err != nil {
		f.t.Fatal(err)
	}
	return ins
}

func unmountUnder(root string) {
	for i := 0; i < 3; i++ {
		filepath.Walk(root, func(p string, _ os.FileInfo, _ error) error {
			unix.Unmount(p, unix.MNT_DETACH)
			return nil
		})
	}
}

// cutCreate does what Create does up to the kill: the intent, then the
// backend's storage, and no record.
func (f *realFixture) cutCreate(id, name string, opts map[string]string, makeStorage bool) *store.Volume {
	f.t.Helper()
	inst := f.inst(id)
	o, err := inst.Parse(opts)
	if err != nil {
		f.t.Fatal(err)
	}
	vol := &store.Volume{Name: name, Backend: id, Options: o, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	undo, err := occupancy(inst, vol)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.BeginCreate(vol, undo, time.Now()); err != nil {
		f.t.Fatal(err)
	}
	if makeStorage {
		if err := inst.Create(context.Background(), vol, o); err != nil {
			f.t.Fatal(err)
		}
	}
	return vol
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func TestRecoverUndoesCutCreates(t *testing.T) {
	f := newRealFixture(t)
	outside := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(outside, []byte("keep"), 0o600)

	made := f.cutCreate("dir", "made", map[string]string{"uid": "1000", "mode": "0750"}, true)
	// A symlink planted in the half-made directory must not lead the undo
	// outside it.
	os.Symlink(filepath.Dir(outside), filepath.Join(f.inst("dir").Mountpoint(made), "link"))
	f.cutCreate("dir", "nothing", nil, false)
	tm := f.cutCreate("tmpfs", "scratch", map[string]string{"size": "1M"}, true)
	// A kill after Activate (a clone's copy, say): a tmpfs mounted there.
	if err := f.inst("tmpfs").Activate(context.Background(), tm); err != nil {
		t.Fatal(err)
	}
	hostPath := filepath.Join(f.binds, "app")
	os.Mkdir(hostPath, 0o755)
	os.WriteFile(filepath.Join(hostPath, "data"), []byte("host"), 0o600)
	f.cutCreate("bind", "adopt", map[string]string{"path": hostPath}, true)

	rec := f.restart()
	if len(rec.Undone) != 4 || len(rec.Failed) != 0 {
		t.Fatalf("recovery: %+v, want 4 creates undone", rec)
	}
	for _, p := range []string{filepath.Join(f.root, "dir", "made"), filepath.Join(f.root, "dir", "nothing"), filepath.Join(f.root, "tmpfs", "scratch"), filepath.Join(f.root, "bind", "adopt")} {
		if exists(p) {
			t.Errorf("%s is still there after its cut create was undone", p)
		}
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
		t.Errorf("a file outside the volume was touched: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(hostPath, "data")); err != nil || string(b) != "host" {
		t.Errorf("undoing a bind create touched the host path: %q, %v", b, err)
	}
	if ins := f.intents(); len(ins) != 0 {
		t.Errorf("intents left: %+v", ins)
	}
	for _, n := range []string{"made", "nothing", "scratch", "adopt"} {
		if _, err := f.st.Get(n); err == nil {
			t.Errorf("volume %s recorded after its create was undone", n)
		}
	}
	rep, _ := f.d.Reconcile(context.Background())
	if len(rep.Findings) != 0 {
		t.Errorf("reconcile after recovery: %+v", rep.Findings)
	}
	// And the names are free again.
	if err := f.d.Create(&volume.CreateRequest{Name: "made"}); err != nil {
		t.Errorf("create after recovery: %v", err)
	}
}

func TestRecoverFinishesCutRemoves(t *testing.T) {
	f := newRealFixture(t)
	for _, n := range []string{"gone", "keep"} {
		if err := f.d.Create(&volume.CreateRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(f.root, "dir", n, "file"), []byte(n), 0o600)
	}
	hostPath := filepath.Join(f.binds, "app")
	os.Mkdir(hostPath, 0o755)
	os.WriteFile(filepath.Join(hostPath, "data"), []byte("host"), 0o600)
	if err := f.d.Create(&volume.CreateRequest{Name: "adopt", Options: map[string]string{"backend": "bind", "path": hostPath}}); err != nil {
		t.Fatal(err)
	}
	// Killed after the intent, and (for "gone") halfway through deleting.
	for _, n := range []string{"gone", "adopt"} {
		if err := f.st.BeginRemove(n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(f.root, "dir", "gone", "file"))

	rec := f.restart()
	if len(rec.Finished) != 2 || len(rec.Failed) != 0 {
		t.Fatalf("recovery: %+v, want 2 removes finished", rec)
	}
	if exists(filepath.Join(f.root, "dir", "gone")) {
		t.Error("the cut remove's data directory is still there")
	}
	if _, err := f.st.Get("gone"); err == nil {
		t.Error("the cut remove's record is still there")
	}
	if b, err := os.ReadFile(filepath.Join(hostPath, "data")); err != nil || string(b) != "host" {
		t.Errorf("finishing a bind remove touched the host path: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.root, "dir", "keep", "file")); string(b) != "keep" {
		t.Error("another volume's data was touched")
	}
	if ins := f.intents(); len(ins) != 0 {
		t.Errorf("intents left: %+v", ins)
	}
}

// A cut Remove whose data now has something mounted inside is not
// finished: data, record and intent are kept, and reconcile says so.
func TestRecoverNeverRemovesThroughAMount(t *testing.T) {
	f := newRealFixture(t)
	if err := f.d.Create(&volume.CreateRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(f.root, "dir", "v")
	sub := filepath.Join(data, "sub")
	os.Mkdir(sub, 0o755)
	if err := unix.Mount("held", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sub, "live"), []byte("live"), 0o600)
	f.st.BeginRemove("v", time.Now())

	rec := f.restart()
	if len(rec.Failed) != 1 || len(rec.Finished) != 0 {
		t.Fatalf("recovery: %+v, want the remove kept as failed", rec)
	}
	if b, _ := os.ReadFile(filepath.Join(sub, "live")); string(b) != "live" {
		t.Error("data behind a live mount was deleted")
	}
	if _, err := f.st.Get("v"); err != nil {
		t.Errorf("the volume was lost: %v", err)
	}
	rep, _ := f.d.Reconcile(context.Background())
	if countKind(rep, FindUnfinished) != 1 {
		t.Errorf("reconcile does not report the unfinished remove: %+v", rep.Findings)
	}
	// Once the mount is gone, the next start finishes it.
	unix.Unmount(sub, 0)
	if rec := f.restart(); len(rec.Finished) != 1 {
		t.Errorf("second recovery: %+v", rec)
	}
}

// Create refuses a non-empty leftover before it records an intent, so a
// crash can never make recovery delete data Create did not make.
func TestCreateOverLeftoverRecordsNoIntent(t *testing.T) {
	f := newRealFixture(t)
	left := filepath.Join(f.root, "dir", "v")
	os.Mkdir(left, 0o700)
	os.WriteFile(filepath.Join(left, "someones"), []byte("data"), 0o600)
	if err := f.d.Create(&volume.CreateRequest{Name: "v"}); err == nil {
		t.Fatal("create over a non-empty leftover succeeded")
	}
	if ins := f.intents(); len(ins) != 0 {
		t.Fatalf("a refused create left an intent: %+v", ins)
	}
	f.restart()
	if b, _ := os.ReadFile(filepath.Join(left, "someones")); string(b) != "data" {
		t.Error("the leftover's data was touched")
	}
}

func TestRecoverBringsDownUnheldStorage(t *testing.T) {
	f := newRealFixture(t)
	for _, n := range []string{"orphan", "held"} {
		if err := f.d.Create(&volume.CreateRequest{Name: n, Options: map[string]string{"backend": "tmpfs", "size": "1M"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.d.Mount(&volume.MountRequest{Name: "held", ID: mountID(1)}); err != nil {
		t.Fatal(err)
	}
	// A kill between Activate and the ledger commit: up, not counted.
	orphan, _ := f.st.Get("orphan")
	if err := f.inst("tmpfs").Activate(context.Background(), orphan); err != nil {
		t.Fatal(err)
	}
	rec := f.restart()
	if len(rec.Downed) != 1 || rec.Downed[0] != "orphan" {
		t.Fatalf("recovery: %+v, want orphan brought down", rec)
	}
	tm := f.inst("tmpfs").Backend.(backend.Prober)
	held, _ := f.st.Get("held")
	if tm.Up(orphan) || !tm.Up(held) {
		t.Errorf("after recovery: orphan up=%v, held up=%v; want false, true", tm.Up(orphan), tm.Up(held))
	}
}

func TestRetriedCreateOfResizedVolumeSucceeds(t *testing.T) {
	d, _, _ := cloneFixture(t)
	opts := map[string]string{"uid": "1000"}
	if err := d.Create(&volume.CreateRequest{Name: "v", Options: opts}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Resize(&ResizeRequest{Name: "v", Size: "2G"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "v", Options: opts}); err != nil {
		t.Errorf("retried create with the original options after a resize: %v", err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "v", Options: map[string]string{"uid": "1001"}}); err == nil {
		t.Error("create with other options after a resize succeeded")
	}
}

// The periodic pass retries, while the daemon runs, what start-up could not
// resolve, and leaves alone an intent whose operation is in flight (it holds
// the volume's lock until its intent ends).
func TestPeriodicPassRetriesAndSparesOperationsInFlight(t *testing.T) {
	f := newRealFixture(t)
	if err := f.d.Create(&volume.CreateRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(f.root, "dir", "v", "sub")
	os.Mkdir(sub, 0o755)
	if err := unix.Mount("held", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	f.st.BeginRemove("v", time.Now())
	if rec := f.restart(); len(rec.Failed) != 1 {
		t.Fatalf("start-up recovery: %+v", rec)
	}
	unix.Unmount(sub, 0)
	rec, err := f.d.Recover(context.Background())
	if err != nil || len(rec.Finished) != 1 {
		t.Fatalf("periodic pass: %+v, %v; want the remove finished", rec, err)
	}

	// An operation in flight: its intent is open and it holds the lock.
	unlock := f.d.locks.Lock("busy")
	f.cutCreate("dir", "busy", nil, true)
	done := make(chan Recovery)
	go func() { r, _ := f.d.Recover(context.Background()); done <- r }()
	time.Sleep(50 * time.Millisecond)
	// The operation finishes: record committed, intent ended, lock released.
	vol := &store.Volume{Name: "busy", Backend: "dir", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if err := f.st.FinishCreate(vol); err != nil {
		t.Fatal(err)
	}
	unlock()
	if r := <-done; len(r.Undone)+len(r.Failed) != 0 {
		t.Fatalf("the pass acted on an operation in flight: %+v", r)
	}
	if !exists(filepath.Join(f.root, "dir", "busy")) {
		t.Fatal("the pass removed a volume whose create was in flight")
	}
}
