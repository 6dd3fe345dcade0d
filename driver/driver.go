// Package driver implements Docker's volume.Driver for stowage: it validates
// requests, serialises calls per volume, keeps the durable mount ledger and
// orchestrates the backends. It never asks which backend a volume uses; it
// asks the backend.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/jsonenc"
	"github.com/stowage/stowage/internal/store"
)

var _ volume.Driver = (*Driver)(nil)

// Deadlines for backend work, inside dockerd's own (2 min for Create and
// Mount, 1 min for the rest), so we answer before Docker gives up.
const (
	createTimeout = 100 * time.Second
	mountTimeout  = 100 * time.Second
	otherTimeout  = 50 * time.Second
)

// Config is what a Driver is built from.
type Config struct {
	Store *store.Store
	// Backends are the enabled, provisioned backends by ID.
	Backends       map[string]backend.Instance
	DefaultBackend string
	// Scope is what Capabilities reports: "local" or "global".
	Scope string
	// BootID identifies this kernel boot; ledger entries of another boot
	// cannot be backed by a live mount.
	BootID string
	Log    logrus.FieldLogger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// Driver is stowage's volume driver.
type Driver struct {
	cfg   Config
	locks *keyedMutex
	log   logrus.FieldLogger
}

// New checks cfg and returns a Driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Store == nil {
		return nil, errors.New("driver: no store")
	}
	if _, ok := cfg.Backends[cfg.DefaultBackend]; !ok {
		return nil, fmt.Errorf("default backend %q is not enabled; enabled: %s", cfg.DefaultBackend, strings.Join(enabledIDs(cfg.Backends), ", "))
	}
	if cfg.Scope == "" {
		cfg.Scope = "local"
	}
	if cfg.Scope != "local" && cfg.Scope != "global" {
		return nil, fmt.Errorf("scope %q is invalid: use local or global", cfg.Scope)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.Out = os.Stderr
		cfg.Log = l
	}
	if cfg.BootID == "" {
		// Without it every ledger entry would look stale (or live) at
		// random: a caller must say which boot this is.
		return nil, errors.New("driver: no boot ID")
	}
	d := &Driver{cfg: cfg, locks: newKeyedMutex(), log: cfg.Log}
	// List is answered with elements the store keeps rendered.
	if err := cfg.Store.SetListRenderer(d.listElement); err != nil {
		return nil, fmt.Errorf("reading the volumes' records: %v", err)
	}
	return d, nil
}

// BootID is the boot this driver dates ledger entries with: an entry of
// another boot is stale.
func (d *Driver) BootID() string { return d.cfg.BootID }

// DefaultBootIDFile is where the kernel publishes its boot ID.
const DefaultBootIDFile = "/proc/sys/kernel/random/boot_id"

// ReadBootID reads a boot ID from path (DefaultBootIDFile but in tests).
func ReadBootID(path string) (string, error) {
	b, err := os.ReadFile(path)
	id := strings.TrimSpace(string(b))
	if err == nil && id == "" {
		err = errors.New("it is empty")
	}
	if err != nil {
		return "", fmt.Errorf("reading the boot ID from %s: %w", path, err)
	}
	return id, nil
}

func enabledIDs(m map[string]backend.Instance) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// volErr prefixes an error with the volume it concerns: the error text is
// all a Docker user sees.
func volErr(name string, format string, a ...interface{}) error {
	return fmt.Errorf("volume %q: "+format, append([]interface{}{name}, a...)...)
}

func (d *Driver) instance(vol *store.Volume) (backend.Instance, error) {
	inst, ok := d.cfg.Backends[vol.Backend]
	if !ok {
		return inst, volErr(vol.Name, "its backend %q is not enabled in this daemon (enabled: %s); restart stowage with it enabled", vol.Backend, strings.Join(enabledIDs(d.cfg.Backends), ", "))
	}
	return inst, nil
}

func (d *Driver) load(name string) (*store.Volume, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	vol, err := d.cfg.Store.Get(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, volErr(name, "no such volume")
	}
	if err != nil {
		return nil, volErr(name, "reading its record: %v", err)
	}
	return vol, nil
}

// held locks name and loads its record and backend. On success the caller
// owns the lock and must call unlock.
func (d *Driver) held(name string) (*store.Volume, backend.Instance, func(), error) {
	unlock := d.locks.Lock(name)
	vol, err := d.load(name)
	if err == nil {
		var inst backend.Instance
		if inst, err = d.instance(vol); err == nil {
			return vol, inst, unlock, nil
		}
	}
	unlock()
	return nil, backend.Instance{}, nil, err
}

// mountpoint is where vol's data is reachable, or "" if its backend is not
// enabled here: List must still list such a volume.
func (d *Driver) mountpoint(vol *store.Volume) string {
	if inst, ok := d.cfg.Backends[vol.Backend]; ok {
		return inst.Mountpoint(vol)
	}
	return ""
}

// Create validates everything, makes the storage, then commits the record.
// A failure at any step leaves neither record nor storage behind.
func (d *Driver) Create(req *volume.CreateRequest) error {
	name := req.Name
	if err := ValidateName(name); err != nil {
		return err
	}
	id := req.Options[backend.KeyBackend]
	if id == "" {
		id = d.cfg.DefaultBackend
	}
	inst, ok := d.cfg.Backends[id]
	if !ok {
		return volErr(name, "backend %q is not enabled; enabled backends: %s", id, strings.Join(enabledIDs(d.cfg.Backends), ", "))
	}
	opts, err := inst.Parse(req.Options)
	if err != nil {
		return volErr(name, "%v; nothing was created", err)
	}
	if err := inst.Validate(opts); err != nil {
		return volErr(name, "%v; nothing was created", err)
	}

	// A clone locks its source too, both in name order so two clones of
	// each other cannot deadlock.
	from := opts[backend.KeyFrom]
	if from != "" {
		if err := ValidateName(from); err != nil {
			return volErr(name, "option from: %v; nothing was created", err)
		}
		if from == name {
			return volErr(name, "cannot be a copy of itself; nothing was created")
		}
		first, second := name, from
		if second < first {
			first, second = second, first
		}
		unlockFirst := d.locks.Lock(first)
		defer unlockFirst()
		unlockSecond := d.locks.Lock(second)
		defer unlockSecond()
	} else {
		unlock := d.locks.Lock(name)
		defer unlock()
	}
	existing, err := d.cfg.Store.Get(name)
	switch {
	case err == nil:
		// Docker only creates after Get said no, but a retried or raced
		// Create with the same request must not fail. A clone's Options
		// hold what it inherited, so compare with what was asked.
		if existing.Backend == id && sameRequest(existing, opts) {
			return nil
		}
		return volErr(name, "already exists with backend %q and options %s; remove it first or choose another name", existing.Backend, formatOptions(existing.Options))
	case !errors.Is(err, store.ErrNotFound):
		return volErr(name, "reading its record: %v", err)
	}

	var src *store.Volume
	var cloner backend.Cloner
	if from != "" {
		if src, err = d.load(from); err != nil {
			return volErr(name, "option from: %v; nothing was created", err)
		}
		if src.Backend != id {
			return volErr(name, "option from: volume %q uses backend %q, not %q: a copy must use its source's backend; nothing was created", from, src.Backend, id)
		}
		if n := d.liveMounts(src); n > 0 && opts[backend.KeyFromMounted] != "true" {
			return volErr(name, "option from: volume %q is mounted by %d container mount(s), so a copy may be inconsistent; stop them, or pass -o %s=true to copy anyway; nothing was created", from, n, backend.KeyFromMounted)
		}
		var ok bool
		if cloner, ok = inst.Backend.(backend.Cloner); !ok {
			return volErr(name, "backend %q cannot copy volumes; nothing was created", id)
		}
	}

	// The backend may add to vol.Options (a clone inherits its source's);
	// keep the request's own options to recognise a retry.
	requested := maps.Clone(opts)
	vol := &store.Volume{Name: name, Backend: id, Options: opts, CreatedAt: d.cfg.Now().UTC().Truncate(time.Second)}
	// Refuse a place Create would refuse before the intent, so that what
	// recovery may undo after a crash is only ever this Create's own work.
	undo, err := occupancy(inst, vol)
	if err != nil {
		return volErr(name, "%v", err)
	}
	if err := d.cfg.Store.BeginCreate(vol, undo, d.cfg.Now().UTC()); err != nil {
		return volErr(name, "recording the intent to create it failed: %v; nothing was created", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	var err2 error
	if cloner != nil {
		start := time.Now()
		if err2 = cloner.Clone(ctx, src, vol, opts); err2 != nil {
			err2 = volErr(name, "copying volume %q failed: %v; nothing was created", from, err2)
		} else {
			d.log.WithFields(logrus.Fields{"op": "Create", "volume": name, "from": from, "duration": time.Since(start)}).Info("volume cloned")
		}
	} else if err2 = inst.Create(ctx, vol, opts); err2 != nil {
		err2 = volErr(name, "%v", err2)
	}
	if err2 != nil {
		// The backend undid its own work; a crash before this commit
		// leaves the intent, and recovery undoes the same (idempotently).
		d.endIntent("Create", name)
		return err2
	}
	if !equalOptions(requested, vol.Options) {
		vol.Requested = requested
	}
	if err := d.cfg.Store.FinishCreate(vol); err != nil {
		// Storage exists but no record: undo it, or leave the intent for
		// recovery to undo at the next start.
		if rerr := d.undoCreate(ctx, inst, vol); rerr != nil {
			d.log.WithFields(logrus.Fields{"op": "Create", "volume": name, "error": rerr}).Error("rollback failed; its storage is kept and the next start retries the rollback")
			return volErr(name, "recording it failed (%v) and removing its new storage failed too (%v); nothing is recorded", err, rerr)
		}
		d.endIntent("Create", name)
		return volErr(name, "recording it failed: %v; nothing was created", err)
	}
	return nil
}

// occupancy asks the backend whether vol's place is free (undo: recovery
// may remove what a cut Create leaves there), or holds something Create
// must refuse (err).
func occupancy(inst backend.Instance, vol *store.Volume) (undo bool, err error) {
	occ, ok := inst.Backend.(backend.Occupier)
	if !ok {
		return false, nil
	}
	switch err := occ.Occupied(vol); {
	case err == nil:
		return true, nil
	case errors.Is(err, backend.ErrCannotTell):
		return false, nil
	default:
		return false, err
	}
}

// undoCreate takes down and removes what a Create made.
func (d *Driver) undoCreate(ctx context.Context, inst backend.Instance, vol *store.Volume) error {
	if err := inst.Deactivate(ctx, vol); err != nil {
		return err
	}
	return inst.Remove(ctx, vol)
}

// endIntent drops an intent whose operation ended without changing the
// record. If that commit fails the intent stays and the next start resolves
// it the same way, so a warning is all it needs.
func (d *Driver) endIntent(op, name string) {
	if err := d.cfg.Store.EndIntent(name); err != nil {
		d.log.WithFields(logrus.Fields{"op": op, "volume": name, "error": err}).Warn("ending the operation's intent failed; the next start resolves it")
	}
}

// Remove deletes a volume that no mount holds: its storage first, then the
// record, so a failure keeps the volume visible.
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	vol, inst, unlock, err := d.held(req.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if n := vol.ActiveMounts(); n > 0 {
		return volErr(vol.Name, "is in use: %s; stop the containers using it first%s", d.describeMounts(vol), d.staleHint(vol))
	}
	ctx, cancel := context.WithTimeout(context.Background(), otherTimeout)
	defer cancel()
	// From here the user asked for a removal and has not been told no: if
	// a crash cuts it, the next start finishes it.
	if err := d.cfg.Store.BeginRemove(vol.Name, d.cfg.Now().UTC()); err != nil {
		return volErr(vol.Name, "recording the intent to remove it failed: %v; the volume is kept", err)
	}
	if err := d.removeStorage(ctx, inst, vol); err != nil {
		if eerr := d.cfg.Store.EndIntent(vol.Name); eerr != nil {
			return fmt.Errorf("%w; recording that it is kept failed too (%v), so the next start will try the removal again", err, eerr)
		}
		return err
	}
	if err := d.cfg.Store.FinishRemove(vol.Name); err != nil {
		return volErr(vol.Name, "its data was removed but deleting its record failed: %v; remove it again (the next start finishes it too)", err)
	}
	return nil
}

// removeStorage brings a volume's storage down and removes it.
func (d *Driver) removeStorage(ctx context.Context, inst backend.Instance, vol *store.Volume) error {
	// The ledger is empty, so no container holds the storage; it may still
	// be up if stowage died between bringing it up and recording a Mount,
	// or between recording the last Unmount and bringing it down. Bring it
	// down (idempotent) rather than refuse forever.
	if err := inst.Deactivate(ctx, vol); err != nil {
		return volErr(vol.Name, "bringing its storage down before removing it failed: %v; the volume is kept", err)
	}
	if err := inst.Remove(ctx, vol); err != nil {
		return volErr(vol.Name, "removing its data failed: %v; the volume is kept", err)
	}
	return nil
}

// Mount counts one more mount under req.ID, bringing the storage up first if
// no live mount holds it.
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	if err := ValidateMountID(req.ID); err != nil {
		return nil, volErr(req.Name, "%v", err)
	}
	vol, inst, unlock, err := d.held(req.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), mountTimeout)
	defer cancel()
	first := d.liveMounts(vol) == 0
	// Activate on every Mount, not only the first: after a plugin restart
	// the ledger still counts running containers, but the storage they
	// hold is gone from the new process's mount namespace, and Docker
	// would bind a new container to an empty directory. The backend sees
	// only this boot's entries, so it can tell "held" from "stale".
	if err := inst.Activate(ctx, d.liveView(vol)); err != nil {
		return nil, volErr(vol.Name, "cannot mount: %v", err)
	}
	now := d.cfg.Now().UTC()
	_, err = d.cfg.Store.Update(vol.Name, func(v *store.Volume) error {
		if v.Mounts == nil {
			v.Mounts = map[string]store.Mount{}
		}
		m := v.Mounts[req.ID]
		if m.Boot != d.cfg.BootID {
			// An entry of an earlier boot is dead: Docker is mounting
			// this ID afresh.
			m = store.Mount{Boot: d.cfg.BootID, Since: now}
		}
		m.Count++
		v.Mounts[req.ID] = m
		return nil
	})
	if err != nil {
		if first {
			if derr := inst.Deactivate(ctx, vol); derr != nil {
				d.log.WithFields(logrus.Fields{"op": "Mount", "volume": vol.Name, "error": derr}).Warn("bringing storage down after a failed ledger commit failed")
			}
		}
		return nil, volErr(vol.Name, "recording the mount failed: %v", err)
	}
	return &volume.MountResponse{Mountpoint: inst.Mountpoint(vol)}, nil
}

// Unmount counts one mount under req.ID less and brings the storage down
// when no live mount is left. Docker never replays mounts after a plugin
// restart, so an unknown ID or volume is accepted with a warning.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	log := d.log.WithFields(logrus.Fields{"op": "Unmount", "volume": req.Name, "mount_id": req.ID})
	unlock := d.locks.Lock(req.Name)
	defer unlock()
	vol, err := d.load(req.Name)
	if err != nil {
		log.WithError(err).Warn("unmount of a volume stowage does not know; accepted")
		return nil
	}
	if _, ok := vol.Mounts[req.ID]; !ok {
		log.Warn("unmount of a mount ID the ledger does not hold (mounted before a restart that lost it?); accepted")
		return nil
	}
	updated, err := d.cfg.Store.Update(vol.Name, func(v *store.Volume) error {
		m, ok := v.Mounts[req.ID]
		if !ok {
			return nil
		}
		m.Count--
		if m.Count <= 0 {
			delete(v.Mounts, req.ID)
		} else {
			v.Mounts[req.ID] = m
		}
		return nil
	})
	if err != nil {
		return volErr(vol.Name, "recording the unmount failed: %v", err)
	}
	if d.liveMounts(updated) > 0 {
		return nil
	}
	inst, err := d.instance(updated)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), otherTimeout)
	defer cancel()
	if err := inst.Deactivate(ctx, updated); err != nil {
		return volErr(vol.Name, "the unmount is recorded but bringing its storage down failed: %v", err)
	}
	return nil
}

// Path answers from the record alone.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	vol, err := d.load(req.Name)
	if err != nil {
		return nil, err
	}
	inst, err := d.instance(vol)
	if err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: inst.Mountpoint(vol)}, nil
}

// Get answers from the record alone. It must not fail for a volume that
// exists: Docker forgets a volume whose Get fails.
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	vol, err := d.load(req.Name)
	if err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: d.describe(vol)}, nil
}

// List answers from the records alone.
func (d *Driver) List() (*volume.ListResponse, error) {
	vols, err := d.cfg.Store.List()
	if err != nil {
		return nil, fmt.Errorf("listing volumes: %v", err)
	}
	out := make([]*volume.Volume, 0, len(vols))
	for _, v := range vols {
		out = append(out, &volume.Volume{Name: v.Name, Mountpoint: d.mountpoint(v), CreatedAt: v.CreatedAt.Format(time.RFC3339)})
	}
	return &volume.ListResponse{Volumes: out}, nil
}

// WriteList writes List's answer to w from the elements the store keeps
// rendered: the same JSON as List, in memory that does not grow with the
// number of volumes (100 000 volumes are over 10 MB of answer).
func (d *Driver) WriteList(w io.Writer) error {
	if _, err := io.WriteString(w, `{"Volumes":[`); err != nil {
		return err
	}
	sep := false
	err := d.cfg.Store.ScanListings(func(el []byte) error {
		if sep {
			if _, err := w.Write([]byte{','}); err != nil {
				return err
			}
		}
		sep = true
		_, err := w.Write(el)
		return err
	})
	if err != nil {
		return fmt.Errorf("listing volumes: %v", err)
	}
	_, err = io.WriteString(w, "]}\n")
	return err
}

// listElement is vol's element of List's answer, exactly as encoding/json
// writes a volume.Volume with Name, Mountpoint and CreatedAt.
func (d *Driver) listElement(buf []byte, v *store.Volume) []byte {
	buf = jsonenc.String(append(buf, `{"Name":`...), v.Name)
	if mp := d.mountpoint(v); mp != "" {
		buf = jsonenc.String(append(buf, `,"Mountpoint":`...), mp)
	}
	return append(v.CreatedAt.AppendFormat(append(buf, `,"CreatedAt":"`...), time.RFC3339), '"', '}')
}

// Capabilities is trivial: a managed plugin gets it before nearly every call.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: d.cfg.Scope}}
}

// describe builds Get's answer. A disabled backend must not make Get fail,
// so the volume is still described, with the problem in its Status.
func (d *Driver) describe(vol *store.Volume) *volume.Volume {
	var st statusList
	out := &volume.Volume{Name: vol.Name, CreatedAt: vol.CreatedAt.Format(time.RFC3339), Mountpoint: d.status(vol, &st)}
	e := st.sorted()
	out.Status = make(map[string]interface{}, len(e))
	for _, e := range e {
		out.Status[e.k] = e.v
	}
	return out
}

// AppendGet appends Get's answer for req to dst: the bytes plugin writes
// for Get's *volume.GetResponse (TestAppendGetWritesWhatGetAnswers), made
// without the response, its Status map or reflection, since Get is the call
// dockerd sends before nearly every other. ok is false if a Status value is
// one encoding/json would refuse: answer through Get then, as before.
func (d *Driver) AppendGet(dst []byte, req *volume.GetRequest) (b []byte, ok bool, err error) {
	vol, err := d.load(req.Name)
	if err != nil {
		return nil, true, err
	}
	var st statusList
	mp := d.status(vol, &st)
	b = jsonenc.String(append(dst, `{"Volume":{"Name":`...), vol.Name)
	if mp != "" {
		b = jsonenc.String(append(b, `,"Mountpoint":`...), mp)
	}
	// RFC 3339 is plain ASCII: no escaping needed.
	b = append(vol.CreatedAt.AppendFormat(append(b, `,"CreatedAt":"`...), time.RFC3339), `","Status":{`...)
	for i, e := range st.sorted() {
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = jsonenc.Value(append(jsonenc.String(b, e.k), ':'), e.v); !ok {
			return nil, false, nil
		}
	}
	return append(b, "}}}\n"...), true, nil
}

type statusEntry struct {
	k string
	v interface{}
}

// statusList is Get's Status as set in order, a later value replacing an
// earlier one's, as in a map; on the caller's stack for Status's own keys
// and a backend's few.
type statusList struct {
	n    int
	fix  [12]statusEntry
	more []statusEntry
}

func (l *statusList) set(k string, v interface{}) {
	for i := 0; i < l.n; i++ {
		if l.fix[i].k == k {
			l.fix[i].v = v
			return
		}
	}
	for i := range l.more {
		if l.more[i].k == k {
			l.more[i].v = v
			return
		}
	}
	if l.n < len(l.fix) {
		l.fix[l.n] = statusEntry{k, v}
		l.n++
		return
	}
	l.more = append(l.more, statusEntry{k, v})
}

// sorted returns the entries in key order, as encoding/json writes a
// map's: a handful, so by insertion.
func (l *statusList) sorted() []statusEntry {
	e := l.fix[:l.n]
	if len(l.more) > 0 {
		e = append(e[:l.n:l.n], l.more...)
	}
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j].k < e[j-1].k; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
	return e
}

// status collects vol's Status into st and returns its mountpoint: the one
// description both Get and AppendGet write.
func (d *Driver) status(vol *store.Volume, st *statusList) (mountpoint string) {
	active := vol.ActiveMounts()
	st.set("backend", vol.Backend)
	st.set("options", vol.Options)
	st.set("mounts", active)
	if stale := active - d.liveMounts(vol); stale > 0 {
		st.set("stale_mounts", stale)
	}
	inst, ok := d.cfg.Backends[vol.Backend]
	if !ok {
		st.set("problem", fmt.Sprintf("backend %q is not enabled in this daemon", vol.Backend))
		return ""
	}
	mountpoint = inst.Mountpoint(vol)
	if s, ok := inst.Backend.(backend.Statuser); ok {
		for k, v := range s.Status(vol) {
			st.set(k, v)
		}
	}
	if u, ok := inst.Backend.(backend.Usager); ok {
		if use, err := u.Usage(vol); err == nil {
			if use.Limit > 0 {
				st.set("size_bytes", use.Limit)
			}
			st.set("used_bytes", use.Used)
		}
	}
	return mountpoint
}

// liveMounts counts ledger entries of this boot.
func (d *Driver) liveMounts(vol *store.Volume) int {
	n := 0
	for _, m := range vol.Mounts {
		if m.Boot == d.cfg.BootID {
			n += m.Count
		}
	}
	return n
}

func (d *Driver) describeMounts(vol *store.Volume) string {
	ids := make([]string, 0, len(vol.Mounts))
	for id := range vol.Mounts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	short := make([]string, len(ids))
	for i, id := range ids {
		if len(id) > 12 {
			id = id[:12]
		}
		short[i] = id
	}
	n := vol.ActiveMounts()
	noun := "mounts hold it"
	if n == 1 {
		noun = "mount holds it"
	}
	return fmt.Sprintf("%d %s (mount IDs %s)", n, noun, strings.Join(short, ", "))
}

func (d *Driver) staleHint(vol *store.Volume) string {
	stale := vol.ActiveMounts() - d.liveMounts(vol)
	if stale == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d of them date from before the last reboot and no container can still hold them; release them with 'stowage release %s')", stale, vol.Name)
}

// sameRequest reports whether opts is the request that made vol. A record
// keeps its request apart (Requested) when its options have changed since
// (a clone's inherited ones, a resize). A clone recorded before records
// kept it holds only the merged options: there, the same source and every
// asked option as recorded is the same request, as the rest was inherited.
func sameRequest(vol *store.Volume, opts map[string]string) bool {
	if vol.Requested != nil {
		return equalOptions(vol.Requested, opts)
	}
	if equalOptions(vol.Options, opts) {
		return true
	}
	from := vol.Options[backend.KeyFrom]
	if from == "" || opts[backend.KeyFrom] != from {
		return false
	}
	for k, v := range opts {
		if got, ok := vol.Options[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func equalOptions(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func formatOptions(o map[string]string) string {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + o[k]
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// minIDPrefix is the shortest mount-ID prefix Release accepts: the length
// Remove's "in use" error shows.
const minIDPrefix = 12

// resolveMountID finds the ledger entry id names: the full ID, or a unique
// prefix of at least minIDPrefix characters as Remove's error shows it.
func resolveMountID(vol *store.Volume, id string) (string, error) {
	if _, ok := vol.Mounts[id]; ok {
		return id, nil
	}
	var found []string
	if len(id) >= minIDPrefix {
		for full := range vol.Mounts {
			if strings.HasPrefix(full, id) {
				found = append(found, full)
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", volErr(vol.Name, "holds no mount with ID %q (give the full ID or at least %d of its first characters); nothing was released", id, minIDPrefix)
	}
	return "", volErr(vol.Name, "mount ID prefix %q matches %d mounts; give more of it; nothing was released", id, len(found))
}

// ReleaseRequest asks to drop ledger entries of a volume.
type ReleaseRequest struct {
	Name string
	// IDs to release; empty means every entry from an earlier boot.
	IDs []string
}

// ReleaseResponse says what was dropped.
type ReleaseResponse struct {
	Released []string
}

// Release drops ledger entries Docker will never unmount: by default those
// of earlier boots, which no live container can hold. Named IDs of this boot
// may be released too, for a container that is provably gone; that is the
// operator's call. Storage is brought down when no live mount is left.
func (d *Driver) Release(req *ReleaseRequest) (*ReleaseResponse, error) {
	unlock := d.locks.Lock(req.Name)
	defer unlock()
	vol, err := d.load(req.Name)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, id := range req.IDs {
		full, err := resolveMountID(vol, id)
		if err != nil {
			return nil, err
		}
		want[full] = true
	}
	var released []string
	updated, err := d.cfg.Store.Update(vol.Name, func(v *store.Volume) error {
		released = released[:0]
		for id, m := range v.Mounts {
			if want[id] || (len(want) == 0 && m.Boot != d.cfg.BootID) {
				delete(v.Mounts, id)
				released = append(released, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, volErr(vol.Name, "recording the release failed: %v", err)
	}
	sort.Strings(released)
	d.log.WithFields(logrus.Fields{"op": "Release", "volume": vol.Name, "released": released}).Warn("ledger entries released by an operator")
	if d.liveMounts(vol) > 0 && d.liveMounts(updated) == 0 {
		inst, err := d.instance(updated)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), otherTimeout)
		defer cancel()
		if err := inst.Deactivate(ctx, updated); err != nil {
			return nil, volErr(vol.Name, "released, but bringing its storage down failed: %v", err)
		}
	}
	return &ReleaseResponse{Released: released}, nil
}

// ResizeRequest asks to grow a volume to Size (like "20G").
type ResizeRequest struct {
	Name string
	Size string
}

// ResizeResponse gives the size now recorded, in bytes.
type ResizeResponse struct {
	Size uint64
}

// Resize grows a volume whose backend can (backend.Resizer) and records the
// options the backend returns, under the volume's lock.
func (d *Driver) Resize(req *ResizeRequest) (*ResizeResponse, error) {
	size, err := backend.ParseSize(req.Size)
	if err != nil {
		return nil, volErr(req.Name, "size %q: %v", req.Size, err)
	}
	vol, inst, unlock, err := d.held(req.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r, ok := inst.Backend.(backend.Resizer)
	if !ok {
		return nil, volErr(vol.Name, "its backend %q cannot resize volumes", vol.Backend)
	}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	start := time.Now()
	opts, err := r.Resize(ctx, vol, size)
	if err != nil {
		return nil, volErr(vol.Name, "resize failed: %v", err)
	}
	if _, err := d.cfg.Store.Update(vol.Name, func(v *store.Volume) error {
		// A retried Create with the original options must still be
		// recognised as the same volume.
		if v.Requested == nil && !equalOptions(v.Options, opts) {
			v.Requested = maps.Clone(v.Options)
		}
		v.Options = opts
		return nil
	}); err != nil {
		return nil, volErr(vol.Name, "it was resized but recording the new size failed: %v; run the resize again to record it", err)
	}
	d.log.WithFields(logrus.Fields{"op": "Resize", "volume": vol.Name, "size": size, "duration": time.Since(start)}).Info("volume resized")
	return &ResizeResponse{Size: size}, nil
}
