// Package storm is the crash-storm harness: it drives a real `stowage serve`
// over its socket as dockerd would, kills it with SIGKILL at random moments,
// restarts it and checks after every restart that nothing promised was lost
// and nothing refused or removed came back.
//
// The model it checks against: an operation answered 200 before the kill
// happened; one answered with an error did not; one whose answer was cut by
// the kill is "in doubt" and may have happened or not, but nothing else. The
// harness serialises operations per volume name (as dockerd does for one
// container's mount point) so at most one operation per volume is in doubt
// at a kill; operations on different volumes run concurrently, so commits
// are grouped and interleave.
package storm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/sshd"
	"github.com/stowage/stowage/internal/loop"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/store"
)

// Config says how hard to storm.
type Config struct {
	Seed int64
	// Kills is the number of SIGKILLs; the run ends after the last one has
	// been verified, or at Duration if that is set and comes first.
	Kills    int
	Duration time.Duration
	Workers  int
	// Names is the size of the volume-name pool: small, so operations collide.
	Names int
	// MaxRun bounds the random time the workers run between kills.
	MaxRun time.Duration
	// LogLevel for the daemon (its log is kept in memory: keep it quiet).
	LogLevel string
	// Progress, if set, is called after every verified restart.
	Progress func(Stats)
}

// Stats are the run's figures.
type Stats struct {
	Seed       int64
	Ops        int64 // operations sent
	OK         int64 // answered with success
	Refused    int64 // answered with an error the model expected
	InDoubt    int64 // answers cut by a kill
	Kills      int64
	Invariants int64 // individual invariant checks evaluated
	Violations int64
	// Undone counts in-doubt Creates that left storage without a record
	// at the kill, which start-up recovery removed.
	Undone int64
	// Finished counts in-doubt Removes that recovery finished.
	Finished int64
	// Downed counts volumes found mounted with an empty ledger at the kill
	// (a cut Mount or Unmount), which recovery brought down.
	Downed int64
	// SSHFSMounts counts successful Mounts of sshfs volumes (each a real
	// sshfs against a local sshd unless the volume was already up).
	SSHFSMounts int64
	Elapsed     time.Duration
}

func (s Stats) String() string {
	return fmt.Sprintf("seed=%d elapsed=%s kills=%d ops=%d ok=%d refused=%d in_doubt=%d invariants=%d violations=%d creates_undone=%d removes_finished=%d mounts_downed=%d sshfs_mounts=%d",
		s.Seed, s.Elapsed.Round(time.Second), s.Kills, s.Ops, s.OK, s.Refused, s.InDoubt, s.Invariants, s.Violations, s.Undone, s.Finished, s.Downed, s.SSHFSMounts)
}

type tri int

const (
	no tri = iota
	yes
)

type opKind string

const (
	opCreate  opKind = "Create"
	opRemove  opKind = "Remove"
	opMount   opKind = "Mount"
	opUnmount opKind = "Unmount"
	opGet     opKind = "Get"
	opList    opKind = "List"
)

// doubt is the one operation on a volume whose answer a kill cut.
type doubt struct {
	kind   opKind
	id     string
	choice int // option set of an in-doubt Create (index into optionChoices)
}

// vol is the model of one volume name. Only the worker holding mu touches it.
type vol struct {
	mu      sync.Mutex
	name    string
	exists  tri
	choice  int // option set it was created with (index into optionChoices)
	mounts  map[string]int
	markers map[string][]byte // file name → content, written while mounted
	// backend: dir; tmpfs (its data goes with its last unmount); image (a
	// loop-mounted filesystem, its data readable only while mounted); sshfs
	// (its data is on the server).
	backend string
	options []map[string]string // the option sets it may be created with
	// undo: an in-doubt Create left storage without a record at the kill;
	// recovery must remove it. down: storage was up with an empty ledger
	// at the kill; recovery must bring it down.
	undo, down bool
	doubt      *doubt
	ids        []string // this volume's pool of mount IDs (repeats happen)
}

func (v *vol) total() int {
	n := 0
	for _, c := range v.mounts {
		n += c
	}
	return n
}

// heldIDs are the IDs the model's ledger holds, sorted (reproducible picks).
func (v *vol) heldIDs() []string {
	ids := make([]string, 0, len(v.mounts))
	for id := range v.mounts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Harness is one storm.
type Harness struct {
	t    testing.TB
	cfg  Config
	d    *daemon.Daemon
	srv  *sshd.Server
	vols []*vol
	cli  atomic.Pointer[client.Client]

	killing atomic.Bool
	stats   Stats
	seq     atomic.Int64
	mu      sync.Mutex // guards violations
	viols   []string
	// learned is what the daemon records for each option set, learned from
	// the first record seen: normalisation (defaults) is the daemon's
	// business, sameness across volumes and restarts is the harness's.
	learned map[string]map[string]string
}

var optionChoices = map[string][]map[string]string{
	"dir": {
		nil,
		{"mode": "0700"},
		{"uid": "1000", "gid": "1000", "mode": "0750"},
		{"mode": "1777"},
	},
	"tmpfs": {
		{"backend": "tmpfs"},
		{"backend": "tmpfs", "size": "4M"},
		{"backend": "tmpfs", "mode": "0700", "uid": "1000"},
	},
	"image": {
		{"backend": "image", "size": "16M"},
		{"backend": "image", "size": "16M", "uid": "1000", "mode": "0750"},
		{"backend": "image", "size": "300M", "fs": "xfs"},
	},
}

func (v *vol) choices() []map[string]string { return v.options }

// sshfsChoices are sshfs option sets against srv; every sshfs volume shares
// one remote directory, as volumes of one server may.
func sshfsChoices(t testing.TB, srv *sshd.Server) []map[string]string {
	base := map[string]string{"backend": "sshfs", "remote": srv.Remote(t, "storm"), "port": strconv.Itoa(srv.Port), "identity": srv.ClientKeyName}
	with := map[string]string{"mode": "0750", "uid": "1000"}
	for k, v := range base {
		with[k] = v
	}
	return []map[string]string{base, with}
}

// dataPath is where its markers are kept: the mountpoint, or for sshfs the
// directory on the server.
func (h *Harness) dataPath(v *vol) string {
	if v.backend == "sshfs" {
		return filepath.Join(h.srv.Data, "storm")
	}
	return v.path(h.d.Root)
}

// place is the volume's own entry under root/BACKEND: it exists exactly
// while the volume does.
func (v *vol) place(root string) string { return filepath.Join(root, v.backend, v.name) }

// path is the volume's mountpoint.
func (v *vol) path(root string) string {
	if v.backend == "image" {
		return filepath.Join(v.place(root), "mnt")
	}
	return v.place(root)
}

// readable says whether markers can be read now (at dataPath).
func (v *vol) readable() bool { return v.backend == "dir" || v.backend == "sshfs" || v.total() > 0 }

// Run storms a fresh daemon and returns the figures. Violations are
// reported with t.Errorf (the first 20) as they are found.
func Run(t testing.TB, cfg Config) Stats {
	t.Helper()
	if cfg.Workers == 0 {
		cfg.Workers = 6
	}
	if cfg.Names == 0 {
		cfg.Names = 24
	}
	if cfg.MaxRun == 0 {
		cfg.MaxRun = 250 * time.Millisecond
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "warn"
	}
	h := &Harness{t: t, cfg: cfg, learned: map[string]map[string]string{}}
	h.stats.Seed = cfg.Seed
	rng := rand.New(rand.NewSource(cfg.Seed))
	prefix := fmt.Sprintf("st%x", rng.Uint32())
	h.srv = sshd.Start(t, sshd.Options{})
	for i := 0; i < cfg.Names; i++ {
		v := &vol{name: fmt.Sprintf("%s-%02d", prefix, i), mounts: map[string]int{}, markers: map[string][]byte{}, backend: "dir"}
		switch i % 6 {
		case 1:
			v.backend = "sshfs"
		case 2, 4:
			v.backend = "tmpfs"
		case 5:
			v.backend = "image"
		}
		v.options = optionChoices[v.backend]
		if v.backend == "sshfs" {
			v.options = sshfsChoices(t, h.srv)
		}
		for j := 0; j < 3; j++ {
			b := make([]byte, 32)
			rng.Read(b)
			v.ids = append(v.ids, hex.EncodeToString(b))
		}
		h.vols = append(h.vols, v)
	}
	h.d = daemon.Start(t, daemon.Options{Args: []string{"--log-level", cfg.LogLevel, "--backends", "dir,tmpfs,image,sshfs",
		"--ssh-keys-dir", h.srv.KeysDir, "--ssh-known-hosts", h.srv.KnownHosts}})
	h.cli.Store(h.d.Client())
	t.Cleanup(func() {
		// A kill can leave volumes mounted: stop, then unmount them before
		// the fixture removes the root.
		h.d.Stop(t)
		mts, _ := mounttable.Under(h.d.Root)
		for i := len(mts) - 1; i >= 0; i-- {
			unix.Unmount(mts[i], unix.MNT_DETACH)
		}
	})
	start := time.Now()
	for {
		if cfg.Kills > 0 && h.stats.Kills >= int64(cfg.Kills) {
			break
		}
		if cfg.Duration > 0 && time.Since(start) >= cfg.Duration {
			break
		}
		if h.stats.Violations > 0 {
			break
		}
		h.round(rng)
		h.stats.Elapsed = time.Since(start)
		if cfg.Progress != nil {
			cfg.Progress(h.snapshot())
		}
	}
	h.stats.Elapsed = time.Since(start)
	return h.snapshot()
}

func (h *Harness) snapshot() Stats {
	s := h.stats
	s.Ops = atomic.LoadInt64(&h.stats.Ops)
	s.OK = atomic.LoadInt64(&h.stats.OK)
	s.Refused = atomic.LoadInt64(&h.stats.Refused)
	s.InDoubt = atomic.LoadInt64(&h.stats.InDoubt)
	s.SSHFSMounts = atomic.LoadInt64(&h.stats.SSHFSMounts)
	s.Invariants = atomic.LoadInt64(&h.stats.Invariants)
	h.mu.Lock()
	s.Violations = int64(len(h.viols))
	h.mu.Unlock()
	return s
}

// violate records a broken invariant.
func (h *Harness) violate(format string, a ...interface{}) {
	msg := fmt.Sprintf(format, a...)
	h.mu.Lock()
	h.viols = append(h.viols, msg)
	n := len(h.viols)
	h.mu.Unlock()
	if n <= 20 {
		h.t.Errorf("storm seed %d: VIOLATION: %s", h.cfg.Seed, msg)
	}
}

// check counts one invariant and records it broken when !ok.
func (h *Harness) check(ok bool, format string, a ...interface{}) bool {
	atomic.AddInt64(&h.stats.Invariants, 1)
	if !ok {
		h.violate(format, a...)
	}
	return ok
}

// round runs the workers for a random while, kills the daemon in the middle
// of their work, restarts it and verifies.
func (h *Harness) round(rng *rand.Rand) {
	runFor := time.Duration(rng.Int63n(int64(h.cfg.MaxRun))) + 5*time.Millisecond
	if rng.Intn(4) == 0 {
		// Some rounds run long enough for slow operations (an sshfs
		// connecting, since recovery brings unheld ones down) to finish.
		runFor += time.Duration(rng.Int63n(int64(2 * time.Second)))
	}
	seeds := make([]int64, h.cfg.Workers)
	for i := range seeds {
		seeds[i] = rng.Int63()
	}
	h.killing.Store(false)
	var wg sync.WaitGroup
	for i := 0; i < h.cfg.Workers; i++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			h.worker(rand.New(rand.NewSource(seed)))
		}(seeds[i])
	}
	time.Sleep(runFor)
	h.killing.Store(true)
	h.d.Kill(h.t)
	h.stats.Kills++
	wg.Wait()
	h.verifyDown()
	h.d.Restart(h.t)
	h.cli.Store(h.d.Client())
	h.verifyUp()
}

func (h *Harness) worker(rng *rand.Rand) {
	for !h.killing.Load() {
		v := h.vols[rng.Intn(len(h.vols))]
		if !v.mu.TryLock() {
			continue
		}
		if v.doubt == nil { // a volume in doubt waits for the verification
			h.op(rng, v)
		}
		v.mu.Unlock()
	}
}

// call sends one request. done is false when the answer was cut (in doubt).
func (h *Harness) call(path string, req, resp interface{}) (err error, done bool) {
	atomic.AddInt64(&h.stats.Ops, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	err = h.cli.Load().Call(ctx, path, req, resp)
	// dockerd gives up after 2 minutes for Create and Mount, 1 for the rest.
	limit := time.Minute
	if strings.HasSuffix(path, ".Create") || strings.HasSuffix(path, ".Mount") {
		limit = 2 * time.Minute
	}
	h.check(time.Since(start) < limit, "%s took %v, beyond dockerd's %v", path, time.Since(start), limit)
	var ce *client.Error
	if err != nil && !errors.As(err, &ce) {
		atomic.AddInt64(&h.stats.InDoubt, 1)
		if !h.killing.Load() {
			h.violate("%s: transport error while the daemon should be up: %v", path, err)
		}
		return err, false
	}
	return err, true
}

func (h *Harness) ok() { atomic.AddInt64(&h.stats.OK, 1) }

// refused checks an expected refusal carries the expected words.
func (h *Harness) refused(err error, v *vol, op opKind, want string) {
	if !h.check(err != nil, "volume %s: %s succeeded, the model expected a refusal (%s)", v.name, op, want) {
		return
	}
	atomic.AddInt64(&h.stats.Refused, 1)
	h.check(strings.Contains(err.Error(), want), "volume %s: %s refused with %q, want it to say %q", v.name, op, err, want)
	h.check(strings.Contains(err.Error(), v.name), "volume %s: %s error %q does not name the volume", v.name, op, err)
}

func (h *Harness) op(rng *rand.Rand, v *vol) {
	mp := v.path(h.d.Root)
	switch p := rng.Intn(100); {
	case p < 20: // Create
		choice := rng.Intn(len(v.choices()))
		raw := v.choices()[choice]
		bad := rng.Intn(20) == 0
		req := map[string]interface{}{"Name": v.name, "Opts": raw}
		if bad {
			req["Opts"] = map[string]string{"sise": "1G"}
		}
		err, done := h.call("/VolumeDriver.Create", req, nil)
		if !done {
			if !bad {
				v.doubt = &doubt{kind: opCreate, choice: choice}
			}
			return
		}
		switch {
		case bad:
			h.refused(err, v, opCreate, "unknown option")
		case v.exists == yes && v.choice != choice:
			h.refused(err, v, opCreate, "already exists")
		default:
			if h.check(err == nil, "volume %s: Create failed: %v", v.name, err) {
				h.ok()
				v.exists, v.choice = yes, choice
			}
		}
	case p < 36: // Remove
		err, done := h.call("/VolumeDriver.Remove", map[string]string{"Name": v.name}, nil)
		if !done {
			v.doubt = &doubt{kind: opRemove}
			return
		}
		switch {
		case v.exists == no:
			h.refused(err, v, opRemove, "no such volume")
		case v.total() > 0:
			h.refused(err, v, opRemove, "in use")
		default:
			if h.check(err == nil, "volume %s: Remove failed: %v", v.name, err) {
				h.ok()
				v.exists = no
				v.markers = map[string][]byte{}
				h.check(!entryExists(v.place(h.d.Root)), "volume %s: Remove answered success but %s is still there", v.name, v.place(h.d.Root))
			}
		}
	case p < 56: // Mount, then write a marker like a container would
		id := v.ids[rng.Intn(len(v.ids))]
		var resp volume.MountResponse
		err, done := h.call("/VolumeDriver.Mount", map[string]string{"Name": v.name, "ID": id}, &resp)
		if !done {
			v.doubt = &doubt{kind: opMount, id: id}
			return
		}
		if v.exists == no {
			h.refused(err, v, opMount, "no such volume")
			return
		}
		if !h.check(err == nil, "volume %s: Mount %s failed: %v", v.name, id[:12], err) {
			return
		}
		h.ok()
		if v.backend == "sshfs" {
			atomic.AddInt64(&h.stats.SSHFSMounts, 1)
		}
		v.mounts[id]++
		if !h.check(resp.Mountpoint == mp, "volume %s: Mount returned %q, want %q", v.name, resp.Mountpoint, mp) {
			return
		}
		// What earlier mounts wrote is there again (an image keeps it
		// across unmounts; a tmpfs model forgets it at the last one).
		h.markersIntact(v, h.dataPath(v), true)
		name := fmt.Sprintf("marker-%d", h.seq.Add(1))
		data := []byte(fmt.Sprintf("%s %s %d\n", v.name, id, rng.Int63()))
		if err := writeSync(filepath.Join(mp, name), data); err != nil {
			h.violate("volume %s: writing a marker into its mountpoint: %v", v.name, err)
			return
		}
		v.markers[name] = data
	case p < 84: // Unmount: mostly IDs the ledger holds, sometimes strangers
		id := v.ids[rng.Intn(len(v.ids))]
		if held := v.heldIDs(); len(held) > 0 && rng.Intn(10) > 0 {
			id = held[rng.Intn(len(held))]
		}
		if rng.Intn(10) == 0 {
			id = fmt.Sprintf("%064x", rng.Int63())
		}
		err, done := h.call("/VolumeDriver.Unmount", map[string]string{"Name": v.name, "ID": id}, nil)
		if !done {
			v.doubt = &doubt{kind: opUnmount, id: id}
			return
		}
		if h.check(err == nil, "volume %s: Unmount %s failed: %v (an Unmount must always be accepted)", v.name, id[:12], err) {
			h.ok()
			if v.exists == yes && v.mounts[id] > 0 {
				v.mounts[id]--
				if v.mounts[id] == 0 {
					delete(v.mounts, id)
				}
				if v.total() == 0 {
					if v.backend == "tmpfs" {
						v.markers = map[string][]byte{} // discarded with the tmpfs, by design
					}
				}
			}
		}
	case p < 94: // Get
		var resp volume.GetResponse
		err, done := h.call("/VolumeDriver.Get", map[string]string{"Name": v.name}, &resp)
		if !done {
			return
		}
		if v.exists == no {
			h.refused(err, v, opGet, "no such volume")
			return
		}
		if h.check(err == nil && resp.Volume != nil, "volume %s: Get failed for a volume that exists: %v", v.name, err) {
			h.ok()
			h.check(fmt.Sprint(resp.Volume.Status["mounts"]) == fmt.Sprint(v.total()), "volume %s: Get says %v mounts, the model %d", v.name, resp.Volume.Status["mounts"], v.total())
			_, perr := time.Parse(time.RFC3339, resp.Volume.CreatedAt)
			h.check(perr == nil, "volume %s: CreatedAt %q is not RFC 3339", v.name, resp.Volume.CreatedAt)
		}
	default: // List: this volume must be in it exactly when it exists
		var resp volume.ListResponse
		err, done := h.call("/VolumeDriver.List", struct{}{}, &resp)
		if !done {
			return
		}
		if h.check(err == nil, "List failed: %v", err) {
			h.ok()
			found := false
			for _, lv := range resp.Volumes {
				found = found || lv.Name == v.name
			}
			h.check(found == (v.exists == yes), "volume %s: List shows it=%v, the model says exists=%v", v.name, found, v.exists == yes)
		}
	}
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// entryExists reports whether p's parent lists it, without a stat of p
// itself: on an sshfs mount that would be a round trip to the server.
func entryExists(p string) bool {
	entries, err := os.ReadDir(filepath.Dir(p))
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Name() == filepath.Base(p) {
			return true
		}
	}
	return false
}

// verifyDown runs while the daemon is dead: it reads the state file itself
// and resolves every doubt it can against it. What is on disk is checked
// after the restart, once recovery has finished or undone what the kill cut.
func (h *Harness) verifyDown() {
	st, err := store.Open(filepath.Join(h.d.Root, store.FileName), store.Options{ReadOnly: true, LockTimeout: 10 * time.Second})
	if !h.check(err == nil, "after kill %d the state file does not open: %v", h.stats.Kills, err) {
		return
	}
	recs, err := st.List()
	st.Close()
	if !h.check(err == nil, "after kill %d the state file does not list: %v", h.stats.Kills, err) {
		return
	}
	byName := map[string]*store.Volume{}
	for _, r := range recs {
		byName[r.Name] = r
	}
	bootID, _ := driver.ReadBootID(driver.DefaultBootIDFile)
	h.settleSSHFS()
	known := map[string]bool{}
	for _, v := range h.vols {
		known[v.backend+"/"+v.name] = true
		h.resolve(v, byName[v.name], bootID)
	}
	for name, r := range byName {
		h.check(known[r.Backend+"/"+name], "the state holds volume %q (%s) that the harness never created", name, r.Backend)
	}
	// Storage up with no live mount in the ledger (a kill cut a Mount or an
	// Unmount, or a Create or Remove mid-way): recovery must bring it down.
	mounted := h.mountedUnder()
	for _, v := range h.vols {
		if mounted[v.path(h.d.Root)] && (v.exists != yes || v.total() == 0) {
			v.down = true
		}
	}
}

// mountedUnder is the set of mount points below the daemon's root.
func (h *Harness) mountedUnder() map[string]bool {
	mts, err := mounttable.Under(h.d.Root)
	h.check(err == nil, "reading the mount table: %v", err)
	mounted := map[string]bool{}
	for _, m := range mts {
		mounted[m] = true
	}
	return mounted
}

// resolve settles v's in-doubt operation against its record (rec, nil if
// none) and checks the record against the model. A Remove cut after its
// intent is settled only after the restart, by asking the daemon.
func (h *Harness) resolve(v *vol, rec *store.Volume, bootID string) {
	d := v.doubt
	v.doubt = nil
	found := rec != nil
	place := v.place(h.d.Root)
	switch {
	case v.exists == no && d != nil && d.kind == opCreate:
		if found {
			v.exists, v.choice = yes, d.choice
		} else if entryExists(place) {
			v.undo = true
			return
		}
	case v.exists == yes && d != nil && d.kind == opRemove:
		if !found {
			// The record goes last: its data must be gone already.
			h.check(!entryExists(place), "volume %s: its record is gone after an in-doubt Remove but its storage %s is still there", v.name, place)
			v.exists = no
			v.markers = map[string][]byte{}
			v.mounts = map[string]int{}
			return
		}
		// Happened or not (refused while the ledger holds mounts): the
		// restarted daemon says which; the ledger is checked below.
		v.doubt = d
	}
	if v.exists == no {
		h.check(!found, "volume %s: recorded in the state although it was never created or was removed with success", v.name)
		h.check(!entryExists(place), "volume %s: storage %s exists although the volume does not (and no Create was in doubt)", v.name, place)
		return
	}
	if !h.check(found, "volume %s: LOST: Create was answered with success but the state has no record", v.name) {
		v.exists = no
		return
	}
	h.check(rec.Backend == v.backend, "volume %s: backend %q, want %q", v.name, rec.Backend, v.backend)
	key := fmt.Sprintf("%s/%d", v.backend, v.choice)
	if want, ok := h.learned[key]; ok {
		h.check(reflect.DeepEqual(map[string]string(rec.Options), want) || (len(rec.Options) == 0 && len(want) == 0),
			"volume %s: recorded options %v, created with %v which other volumes record as %v", v.name, rec.Options, v.choices()[v.choice], want)
	} else {
		h.learned[key] = rec.Options
	}
	for k, val := range v.choices()[v.choice] {
		if k == "backend" {
			continue
		}
		if k == backend.KeySize {
			n, err := backend.ParseSize(val)
			h.check(err == nil, "harness size %q: %v", val, err)
			val = strconv.FormatUint(n, 10)
		}
		h.check(rec.Options[k] == val, "volume %s: created with %s=%s, recorded %v", v.name, k, val, rec.Options)
	}
	// The ledger: exact, except the one in-doubt Mount or Unmount.
	got := map[string]int{}
	for id, m := range rec.Mounts {
		got[id] = m.Count
		h.check(m.Boot == bootID, "volume %s: ledger entry %s has boot %q, want this boot %q", v.name, id[:12], m.Boot, bootID)
		h.check(m.Count > 0, "volume %s: ledger entry %s has count %d", v.name, id[:12], m.Count)
	}
	if d != nil && (d.kind == opMount || d.kind == opUnmount) {
		want := v.mounts[d.id]
		alt := want + 1
		if d.kind == opUnmount {
			alt = want - 1
			if alt < 0 {
				alt = 0
			}
		}
		if h.check(got[d.id] == want || got[d.id] == alt, "volume %s: ledger count of in-doubt %s %s is %d, want %d or %d", v.name, d.kind, d.id[:12], got[d.id], want, alt) {
			if got[d.id] == 0 {
				delete(v.mounts, d.id)
			} else {
				v.mounts[d.id] = got[d.id]
			}
		}
	}
	h.check(reflect.DeepEqual(got, v.mounts) || (len(got) == 0 && len(v.mounts) == 0), "volume %s: ledger %v, the model %v", v.name, got, v.mounts)
	if v.backend == "tmpfs" && v.total() == 0 {
		v.markers = map[string][]byte{} // an in-doubt last Unmount may have discarded them
	}
	if v.doubt != nil {
		return // a Remove may be half-way: recovery finishes it
	}
	h.check(entryExists(place), "volume %s: record without its storage %s", v.name, place)
	if v.readable() {
		h.markersIntact(v, h.dataPath(v), true)
	}
}

func (h *Harness) markersIntact(v *vol, path string, report bool) bool {
	all := true
	for name, want := range v.markers {
		got, err := os.ReadFile(filepath.Join(path, name))
		ok := err == nil && bytes.Equal(got, want)
		if report {
			h.check(ok, "volume %s: marker %s written while mounted is lost or changed (%v)", v.name, name, err)
		}
		all = all && ok
	}
	return all
}

// verifyUp runs after the restart, once recovery has run: the daemon's
// answers agree with the model, and the disk is exact — every volume has
// its storage and nothing else is there, the mount table holds exactly what
// the ledgers imply, no loop device outlives its mount, and reconcile finds
// nothing (twice the same, changing nothing).
func (h *Harness) verifyUp() {
	cli := h.cli.Load()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A Remove cut after its intent was finished by recovery, or never
	// began: either way completely.
	for _, v := range h.vols {
		if v.doubt == nil || v.doubt.kind != opRemove {
			continue
		}
		v.doubt = nil
		var get volume.GetResponse
		if err := cli.Call(ctx, "/VolumeDriver.Get", map[string]string{"Name": v.name}, &get); err != nil {
			h.check(strings.Contains(err.Error(), "no such volume"), "volume %s: Get after an in-doubt Remove: %v", v.name, err)
			atomic.AddInt64(&h.stats.Finished, 1)
			v.exists = no
			v.markers, v.mounts = map[string][]byte{}, map[string]int{}
			continue
		}
		if v.readable() {
			h.markersIntact(v, h.dataPath(v), true)
		}
	}
	var list volume.ListResponse
	if err := cli.Call(ctx, "/VolumeDriver.List", struct{}{}, &list); !h.check(err == nil, "List after restart: %v", err) {
		return
	}
	listed := map[string]bool{}
	for _, lv := range list.Volumes {
		listed[lv.Name] = true
	}
	for _, v := range h.vols {
		h.check(listed[v.name] == (v.exists == yes), "volume %s: listed=%v after restart, the model says exists=%v", v.name, listed[v.name], v.exists == yes)
		var get volume.GetResponse
		err := cli.Call(ctx, "/VolumeDriver.Get", map[string]string{"Name": v.name}, &get)
		if v.exists == yes {
			h.check(err == nil && get.Volume != nil, "volume %s: Get after restart failed: %v (Docker would forget it)", v.name, err)
		} else {
			h.check(err != nil && strings.Contains(err.Error(), "no such volume"), "volume %s: Get after restart of a volume that does not exist: %v", v.name, err)
		}
		place := v.place(h.d.Root)
		h.check(entryExists(place) == (v.exists == yes), "volume %s: after recovery its storage %s exists=%v, the volume exists=%v", v.name, place, entryExists(place), v.exists == yes)
		if v.undo && !entryExists(place) {
			atomic.AddInt64(&h.stats.Undone, 1)
		}
		v.undo = false
	}
	known := map[string]bool{}
	for _, v := range h.vols {
		known[v.backend+"/"+v.name] = true
	}
	for _, b := range []string{"dir", "tmpfs", "image", "sshfs"} {
		entries, _ := os.ReadDir(filepath.Join(h.d.Root, b))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue // no volume name starts with a dot: a backend's scratch (sshfs logs)
			}
			h.check(known[b+"/"+e.Name()], "%s/%s exists under the root; the harness never created it", b, e.Name())
		}
	}
	mounted := h.mountedUnder()
	for _, v := range h.vols {
		p := v.path(h.d.Root)
		live := v.exists == yes && v.total() > 0 && v.backend != "dir"
		h.check(mounted[p] == live, "volume %s (%s): mounted=%v after recovery, its ledger holds %d mounts", v.name, v.backend, mounted[p], v.total())
		if v.down && !mounted[p] {
			atomic.AddInt64(&h.stats.Downed, 1)
		}
		v.down = false
		delete(mounted, p)
		if v.backend == "image" && v.exists == yes && !live {
			dev, err := loop.Find(filepath.Join(v.place(h.d.Root), "disk.img"))
			h.check(err == nil && dev == "", "volume %s: its image is attached to loop device %q with no mount (%v)", v.name, dev, err)
		}
	}
	for m := range mounted {
		h.violate("a mount below the root that no volume explains: %s", m)
	}
	dbPath := filepath.Join(h.d.Root, store.FileName)
	// Recovery's own changes sit in the journal until the daemon's idle
	// checkpoint folds them: wait for that, so what is compared below is
	// what reconciling alone does to the state file and its journal.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if pending, err := store.JournalPending(dbPath); err == nil && !pending {
			break
		}
	}
	before := hashFile(dbPath) + hashFile(store.JournalPath(dbPath))
	var rep1, rep2 driver.Report
	err1 := cli.Call(ctx, "/Stowage.Reconcile", nil, &rep1)
	err2 := cli.Call(ctx, "/Stowage.Reconcile", nil, &rep2)
	if h.check(err1 == nil && err2 == nil, "reconcile after restart: %v / %v", err1, err2) {
		h.check(reflect.DeepEqual(rep1, rep2), "reconciling twice gave different reports:\n%+v\n%+v", rep1, rep2)
		h.check(hashFile(dbPath)+hashFile(store.JournalPath(dbPath)) == before, "reconciling changed the state file or its journal")
		for _, f := range rep1.Findings {
			h.violate("reconcile found something after recovery: %+v", f)
		}
	}
}

// settleSSHFS waits for sshfs processes a kill cut off mid-Mount: they
// finish (mount, or give up) on their own, since they outlive stowage.
func (h *Harness) settleSSHFS() {
	deadline := time.Now().Add(40 * time.Second)
	for _, v := range h.vols {
		if v.backend != "sshfs" {
			continue
		}
		p := v.path(h.d.Root)
		for time.Now().Before(deadline) {
			m, _ := mounttable.IsMountPoint(p)
			if m || sshd.SSHFSPid(p) == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func hashFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The harness only issues options the dir backend declares.
var _ = backend.KeyBackend

// MarshalStats renders the figures as JSON, for the soak log.
func MarshalStats(s Stats) string {
	b, _ := json.Marshal(s)
	return string(b)
}
