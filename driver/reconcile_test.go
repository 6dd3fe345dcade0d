package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/all"
	"github.com/stowage/stowage/internal/store"
)

// chunkWatch wraps a backend and checks what its inventory is handed: at
// most a chunk per Known, in name order, each volume once.
type chunkWatch struct {
	backend.Backend
	t       *testing.T
	mu      sync.Mutex
	largest int
	total   int
}

func (w *chunkWatch) Inventory(ctx context.Context) (backend.InventoryRun, error) {
	run, err := w.Backend.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	return &watchedRun{InventoryRun: run, w: w}, nil
}

type watchedRun struct {
	backend.InventoryRun
	w    *chunkWatch
	last string
}

func (r *watchedRun) Known(vols []*backend.Volume) {
	r.w.mu.Lock()
	if len(vols) > backend.InventoryChunk {
		r.w.t.Errorf("Known was handed %d volumes at once; at most %d", len(vols), backend.InventoryChunk)
	}
	for _, v := range vols {
		if v.Name <= r.last {
			r.w.t.Errorf("Known got %q after %q: not in name order", v.Name, r.last)
		}
		r.last = v.Name
	}
	r.w.largest, r.w.total = max(r.w.largest, len(vols)), r.w.total+len(vols)
	r.w.mu.Unlock()
	r.InventoryRun.Known(vols)
}

type brokenInventory struct{ backend.Backend }

func (brokenInventory) Inventory(context.Context) (backend.InventoryRun, error) {
	return nil, errors.New("the disk is on fire")
}

// wholeCheck is Check as it was before it streamed: every record at once
// (Store.List), each backend handed all of its volumes in one Known. The
// streaming Check must report exactly what it reports.
func wholeCheck(d *Driver, ctx context.Context) (Report, error) {
	vols, err := d.cfg.Store.List()
	if err != nil {
		return Report{}, err
	}
	rep := Report{Volumes: len(vols)}
	byBackend := map[string][]*store.Volume{}
	for _, v := range vols {
		if _, ok := d.cfg.Backends[v.Backend]; !ok {
			rep.Findings = append(rep.Findings, Finding{Kind: FindDisabledBackend, Volume: v.Name, Backend: v.Backend,
				Detail: fmt.Sprintf("backend %q is not enabled; the volume is kept and listed but cannot be mounted", v.Backend)})
		}
		byBackend[v.Backend] = append(byBackend[v.Backend], d.liveView(v))
		for id, m := range v.Mounts {
			if m.Boot != d.cfg.BootID {
				rep.Findings = append(rep.Findings, Finding{Kind: FindStaleMount, Volume: v.Name, Backend: v.Backend, MountID: id,
					Detail: fmt.Sprintf("mount counted %d time(s) since %s, before the last reboot; Docker will never unmount it: release it with 'stowage release %s'", m.Count, m.Since.Format(time.RFC3339), v.Name)})
			}
		}
	}
	intents, err := d.cfg.Store.Intents()
	if err != nil {
		return Report{}, err
	}
	for _, in := range intents {
		rep.Findings = append(rep.Findings, Finding{Kind: FindUnfinished, Volume: in.Volume.Name, Backend: in.Volume.Backend,
			Detail: fmt.Sprintf("a %s cut by a crash at %s could not be finished or undone at start (see the log); it is retried at the next start", in.Op, in.At.Format(time.RFC3339))})
	}
	for _, id := range enabledIDs(d.cfg.Backends) {
		var inv backend.Inventory
		b := d.cfg.Backends[id].Backend
		if w, ok := b.(*chunkWatch); ok {
			b = w.Backend
		}
		run, err := b.Inventory(ctx)
		if err == nil {
			run.Known(byBackend[id])
			inv, err = run.Result()
		}
		if err != nil {
			rep.Findings = append(rep.Findings, Finding{Kind: FindProblem, Backend: id, Detail: fmt.Sprintf("inventory failed: %v", err)})
			continue
		}
		for _, n := range inv.Missing {
			rep.Findings = append(rep.Findings, Finding{Kind: FindMissingData, Volume: n, Backend: id,
				Detail: "the volume is recorded but its data is missing; it is kept and listed, and mounting it fails until the data is restored or the volume removed"})
		}
		for _, n := range inv.Unrecorded {
			rep.Findings = append(rep.Findings, Finding{Kind: FindUnrecorded, Volume: n, Backend: id,
				Detail: "data on disk that no volume records (left by a crash during create or remove?); it is kept: inspect it and move it away or delete it yourself"})
		}
		for _, p := range inv.Problems {
			rep.Findings = append(rep.Findings, Finding{Kind: FindProblem, Backend: id, Detail: p})
		}
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool {
		a, b := rep.Findings[i], rep.Findings[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Volume != b.Volume {
			return a.Volume < b.Volume
		}
		return a.MountID < b.MountID
	})
	return rep, nil
}

// Check streams the records to the backends a chunk at a time and reports
// exactly what the whole-state algorithm did, on a state with every kind of
// finding: missing and unrecorded data (dir, bind), a disabled backend,
// stale and live ledger entries (tmpfs), an unfinished intent, a backend
// whose inventory fails.
func TestCheckStreamsAndFindsWhatTheWholeStateCheckFinds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test provisions the tmpfs backend and needs root: run go test as root")
	}
	root, binds := t.TempDir(), t.TempDir()
	st := openStore(t, filepath.Join(root, store.FileName))
	defer st.Close()
	reg := backend.NewRegistry(all.Modules()...)
	insts, err := reg.Provision(root, []string{"dir", "tmpfs", "bind"}, map[string]map[string]string{"bind": {"roots": binds}}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	watch := map[string]*chunkWatch{}
	for id, in := range insts {
		watch[id] = &chunkWatch{Backend: in.Backend, t: t}
		in.Backend = watch[id]
		insts[id] = in
	}
	insts["broken"] = backend.Instance{Module: backend.Module{ID: "broken"}, Backend: brokenInventory{insts["dir"].Backend}}
	d, err := New(Config{Store: st, Backends: insts, DefaultBackend: "dir", BootID: "boot-1", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}

	// More dir volumes than two chunks, created by 16 callers at once.
	const nDir = 2*backend.InventoryChunk + 77
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < nDir; i += 16 {
				if err := d.Create(&volume.CreateRequest{Name: fmt.Sprintf("d%04d", i)}); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	for _, i := range []int{0, 511, 512, 1000, nDir - 1} {
		os.Remove(filepath.Join(root, "dir", fmt.Sprintf("d%04d", i)))
	}
	for _, n := range []string{"a-stray", "d0600x", "zz-stray", ".scratch"} {
		os.Mkdir(filepath.Join(root, "dir", n), 0o700)
	}
	for _, n := range []string{"t1", "t2", "t3"} {
		if err := d.Create(&volume.CreateRequest{Name: n, Options: map[string]string{"backend": "tmpfs", "size": "1M"}}); err != nil {
			t.Fatal(err)
		}
	}
	// t1: a live entry but no tmpfs mounted (a problem); t2: only a stale
	// entry (reported as stale, never shown to the backend as held).
	now := time.Now().UTC().Truncate(time.Second)
	for name, m := range map[string]store.Mount{"t1": {Count: 1, Boot: "boot-1", Since: now}, "t2": {Count: 2, Boot: "boot-0", Since: now}} {
		if _, err := st.Update(name, func(v *store.Volume) error {
			v.Mounts = map[string]store.Mount{mountID(len(name)): m}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"keep", "lost"} {
		p := filepath.Join(binds, n)
		os.Mkdir(p, 0o755)
		if err := d.Create(&volume.CreateRequest{Name: "b-" + n, Options: map[string]string{"backend": "bind", "path": p}}); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(binds, "lost"))
	for _, v := range []*store.Volume{
		{Name: "gone1", Backend: "gone", CreatedAt: now},
		{Name: "gone2", Backend: "gone", CreatedAt: now, Mounts: map[string]store.Mount{mountID(9): {Count: 1, Boot: "boot-0", Since: now}}},
		{Name: "x-broken", Backend: "broken", CreatedAt: now},
	} {
		if err := st.Create(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.BeginCreate(&store.Volume{Name: "cut", Backend: "dir", CreatedAt: now}, true, now); err != nil {
		t.Fatal(err)
	}

	got, err := d.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if w := watch["dir"]; w.total != nDir || w.largest != backend.InventoryChunk {
		t.Errorf("the dir backend was handed %d volumes, at most %d at once; want %d, in chunks of %d", w.total, w.largest, nDir, backend.InventoryChunk)
	}
	want, err := wholeCheck(d, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("streaming Check\n%+v\nwhole-state Check\n%+v", got, want)
	}
	kinds := map[string][]string{}
	for _, f := range got.Findings {
		kinds[f.Kind] = append(kinds[f.Kind], f.Volume+f.Backend)
	}
	wantKinds := map[string][]string{
		FindDisabledBackend: {"gone1gone", "gone2gone"},
		FindMissingData:     {"b-lostbind", "d0000dir", "d0511dir", "d0512dir", "d1000dir", fmt.Sprintf("d%04ddir", nDir-1)},
		FindProblem:         {"broken", "tmpfs"},
		FindStaleMount:      {"gone2gone", "t2tmpfs"},
		FindUnfinished:      {"cutdir"},
		FindUnrecorded:      {"a-straydir", "d0600xdir", "zz-straydir"},
	}
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Fatalf("findings by kind\n got %v\nwant %v", kinds, wantKinds)
	}
	if got.Volumes != nDir+3+2+3 {
		t.Errorf("Volumes = %d", got.Volumes)
	}
}
