// Package backend defines what a storage backend is to stowage: a module,
// registered under a unique ID with its option schema, that creates, brings
// up, brings down and removes a volume's storage. The driver counts mounts
// and orchestrates; a backend acts, and the driver never asks which one it is.
package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/store"
)

// Volume is what a backend is given about one volume: its record (read-only
// to the backend except through Private in Create) and the options already
// validated against the backend's schema.
type Volume = store.Volume

// Backend is one provisioned storage module.
type Backend interface {
	// Validate checks options beyond their schema types (combinations,
	// daemon limits). It must not touch the disk.
	Validate(opts Options) error
	// Create makes the volume's storage. On error it must leave nothing
	// behind. It may record facts in vol.Private.
	Create(ctx context.Context, vol *Volume, opts Options) error
	// Mountpoint is where the volume's data is reachable while active.
	// It is computed from the record alone: Get and List call it.
	Mountpoint(vol *Volume) string
	// Activate brings the storage up (mount a filesystem, check a
	// directory). It is called for every Mount and must be idempotent: the
	// storage may be up already, or, after a restart in a fresh mount
	// namespace, be held by containers while gone from stowage's view.
	// vol.Mounts holds only this boot's ledger entries, not yet counting
	// this Mount: non-empty means containers hold the volume, so a
	// failing Activate must not bring their storage down.
	Activate(ctx context.Context, vol *Volume) error
	// Deactivate brings it down after the last unmount; idempotent.
	Deactivate(ctx context.Context, vol *Volume) error
	// Remove destroys (or, for adopted storage, forgets) the volume's data.
	// It must refuse while anything is mounted at or below the data, and
	// must never delete outside the volume's own place.
	Remove(ctx context.Context, vol *Volume) error
	// Inventory starts a look at what the backend holds on disk, for
	// reconcile: the names it holds storage for, and for each recorded
	// volume whether its storage is present. The backend reads its side
	// here; the caller then hands it the recorded volumes (InventoryRun), so
	// no one holds every record at once. It must not change anything.
	Inventory(ctx context.Context) (InventoryRun, error)
}

// InventoryRun is one Inventory under way.
type InventoryRun interface {
	// Known is given the next volumes recorded for the backend, in name
	// order, at most InventoryChunk at a time. It must not keep vols or
	// the volumes after it returns (strings taken from them may be kept).
	Known(vols []*Volume)
	// Result is what the backend found; called once, after the last Known.
	Result() (Inventory, error)
}

// InventoryChunk is the most volumes one InventoryRun.Known is given.
const InventoryChunk = 512

// RunInventory is a whole Inventory of b against known, in chunks.
func RunInventory(ctx context.Context, b Backend, known []*Volume) (Inventory, error) {
	run, err := b.Inventory(ctx)
	if err != nil {
		return Inventory{}, err
	}
	for len(known) > 0 {
		n := min(len(known), InventoryChunk)
		run.Known(known[:n])
		known = known[n:]
	}
	return run.Result()
}

// Inventory is a backend's read-only view of its storage.
type Inventory struct {
	// Unrecorded are names with storage on disk but no record.
	Unrecorded []string
	// Missing are recorded volumes whose storage is gone.
	Missing []string
	// Problems are anything else worth a warning, one line each.
	Problems []string
}

// Usager is implemented by backends that can report size and use cheaply
// (statfs, a quota query): never by walking the tree.
type Usager interface {
	Usage(vol *Volume) (Usage, error)
}

// Usage of one volume, in bytes; zero Limit means none.
type Usage struct {
	Limit uint64
	Used  uint64
}

// Cloner is implemented by backends that can make a new volume as a copy of
// another of theirs (-o from=NAME). The driver has checked that src uses the
// same backend and holds no live mount (unless from_mounted=true) and has
// locked both. Like Create, a failed Clone leaves nothing behind; it may set
// dst.Options (a clone takes its source's size, say) and dst.Private.
type Cloner interface {
	Clone(ctx context.Context, src, dst *Volume, opts Options) error
}

// Resizer is implemented by backends whose size limit can grow. It returns
// the volume's options as they must now be recorded. The driver holds the
// volume's lock.
type Resizer interface {
	Resize(ctx context.Context, vol *Volume, size uint64) (Options, error)
}

// Options the driver itself acts on, declared by backends that support them.
const (
	KeyFrom        = "from"
	KeyFromMounted = "from_mounted"
	KeySize        = "size"
)

// Clone options, for backends implementing Cloner.
var (
	OptFrom        = Option{Name: KeyFrom, Type: TypeName, Help: "create the volume as a copy of this volume (same backend)"}
	OptFromMounted = Option{Name: KeyFromMounted, Type: TypeBool, Default: "false", Help: "allow copying a volume that containers have mounted (the copy may be inconsistent)"}
)

// Occupier is implemented by backends that can tell, before Create touches
// anything, whether a volume's place already holds something Create would
// refuse (a non-empty leftover, a mount). It is also the backend's promise
// that, once Occupied said the place was free, whatever is there after a
// crash cut the Create was made by that Create (or is an empty leftover it
// adopted): start-up recovery may then undo it with Deactivate and Remove.
// Without it recovery only forgets the cut Create and reports its storage.
// A decorator whose inner backend lacks it answers ErrCannotTell.
type Occupier interface {
	Occupied(vol *Volume) error
}

// ErrCannotTell is Occupied's answer from a backend that cannot tell its
// own half-made storage from anything else.
var ErrCannotTell = errors.New("this backend cannot tell its own storage from leftovers")

// Prober is implemented by backends whose storage is brought up (mounted)
// on first use: Up says, cheaply, whether it is up now. Recovery brings down
// storage that is up while no live mount holds it (a crash cut a Mount or
// an Unmount).
type Prober interface {
	Up(vol *Volume) bool
}

// Statuser is implemented by backends that add facts to Get's Status.
type Statuser interface {
	Status(vol *Volume) map[string]interface{}
}

// Env is what the daemon gives a module to provision a backend.
type Env struct {
	// Dir is the backend's own directory under the root, created 0700.
	// Nothing else writes there.
	Dir string
	// Root is the daemon's root.
	Root string
	Log  logrus.FieldLogger
	// Settings are daemon-level settings addressed to this backend
	// (e.g. bind roots), as KEY=VALUE strings from flags.
	Settings map[string]string
}

// Module is a backend's registration: its ID, its options and how to
// provision it.
type Module struct {
	ID      string
	Summary string
	// Options every volume of this backend accepts, besides "backend".
	Options []Option
	// DisabledUnless, if set, names the daemon setting without which the
	// backend is not enabled (bind needs bind roots).
	DisabledUnless string
	// Shared says the backend's storage is the same from every node
	// (a network filesystem): a daemon whose backends are all shared
	// may tell Docker its scope is global.
	Shared bool
	// Refused are option names the backend turns down on purpose, each
	// with the reason the user is told (sshfs refuses password).
	Refused []Refused
	New     func(env Env) (Backend, error)
}

// Refused is an option a backend turns down on purpose, and why.
type Refused struct {
	Name string `json:"name"`
	Why  string `json:"why"`
}

// Registry holds the modules this binary was built with.
type Registry struct {
	modules map[string]Module
	order   []string
}

// NewRegistry registers modules; a duplicate or malformed one is a
// programming error and panics at start, not at a user's request.
func NewRegistry(mods ...Module) *Registry {
	r := &Registry{modules: map[string]Module{}}
	for _, m := range mods {
		if m.ID == "" || m.New == nil {
			panic(fmt.Sprintf("backend: module %q lacks an ID or constructor", m.ID))
		}
		if _, dup := r.modules[m.ID]; dup {
			panic(fmt.Sprintf("backend: module %q registered twice", m.ID))
		}
		seen := map[string]bool{KeyBackend: true}
		for _, r := range m.Refused {
			seen[r.Name] = true
		}
		for _, o := range m.Options {
			if seen[o.Name] {
				panic(fmt.Sprintf("backend: module %q declares option %q twice (or reuses a reserved name)", m.ID, o.Name))
			}
			seen[o.Name] = true
		}
		r.modules[m.ID] = m
		r.order = append(r.order, m.ID)
	}
	sort.Strings(r.order)
	return r
}

// Modules lists registered modules by ID.
func (r *Registry) Modules() []Module {
	out := make([]Module, 0, len(r.order))
	for _, id := range r.order {
		out = append(out, r.modules[id])
	}
	return out
}

// IDs lists module IDs, sorted.
func (r *Registry) IDs() []string { return append([]string(nil), r.order...) }

// maxNamedUnknown bounds how many unknown options an error names.
const maxNamedUnknown = 5

// KeyBackend is the option that selects a backend at create.
const KeyBackend = "backend"

// Options are validated, normalised option values keyed by option name. Only
// options the user gave, or that have a default, are present.
type Options map[string]string

// Parse validates user options against m's schema: every key must be
// declared, every value must parse as its type. It returns the options
// normalised (defaults filled in) for recording with the volume.
func (m Module) Parse(raw map[string]string) (Options, error) {
	out := Options{}
	// A refused option gets its reason, not the unknown-option list: the
	// user meant it and must learn what to do instead.
	for _, r := range m.Refused {
		if _, given := raw[r.Name]; given {
			return nil, fmt.Errorf("option %q is refused by backend %q: %s", r.Name, m.ID, r.Why)
		}
	}
	var unknown []string
	for k := range raw {
		if k == KeyBackend {
			continue
		}
		if m.option(k) == nil {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		// Name a few: a hostile request with thousands of keys must not
		// get an error as large as itself.
		more := ""
		if len(unknown) > maxNamedUnknown {
			more = fmt.Sprintf(" and %d more", len(unknown)-maxNamedUnknown)
			unknown = unknown[:maxNamedUnknown]
		}
		return nil, fmt.Errorf("unknown option %s%s for backend %q; valid options are: %s",
			quoteList(unknown), more, m.ID, strings.Join(m.OptionNames(), ", "))
	}
	for _, o := range m.Options {
		v, given := raw[o.Name]
		if !given {
			if o.Default == "" {
				continue
			}
			v = o.Default
		}
		norm, err := o.Type.normalize(v)
		if err == nil && o.Normalize != nil {
			norm, err = o.Normalize(norm)
		}
		if err != nil {
			return nil, fmt.Errorf("option %s=%q: %v", o.Name, v, err)
		}
		out[o.Name] = norm
	}
	return out, nil
}

// OptionNames lists the options a volume of m accepts, "backend" included.
func (m Module) OptionNames() []string {
	names := []string{KeyBackend}
	for _, o := range m.Options {
		names = append(names, o.Name)
	}
	sort.Strings(names)
	return names
}

func (m Module) option(name string) *Option {
	for i := range m.Options {
		if m.Options[i].Name == name {
			return &m.Options[i]
		}
	}
	return nil
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// Instance is an enabled, provisioned backend with its module.
type Instance struct {
	Module
	Backend
}

// Provision creates each enabled backend, giving it root/<id> as its own
// directory. settings holds daemon settings per backend ID.
func (r *Registry) Provision(root string, enabled []string, settings map[string]map[string]string, log logrus.FieldLogger) (map[string]Instance, error) {
	out := map[string]Instance{}
	for _, id := range enabled {
		m, ok := r.modules[id]
		if !ok {
			return nil, fmt.Errorf("backend %q is not built into stowage; built in: %s", id, strings.Join(r.order, ", "))
		}
		if m.DisabledUnless != "" && settings[id][m.DisabledUnless] == "" {
			return nil, fmt.Errorf("backend %q needs the daemon setting %s", id, m.DisabledUnless)
		}
		dir := filepath.Join(root, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("backend %q: creating %s: %w", id, dir, err)
		}
		b, err := m.New(Env{Dir: dir, Root: root, Log: log.WithField("backend", id), Settings: settings[id]})
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", id, err)
		}
		out[id] = Instance{Module: m, Backend: b}
	}
	return out, nil
}

// InventoryDir starts the Inventory of a backend that keeps one entry per
// volume, named after it, in dir: entries no record names are Unrecorded,
// and records for which present says no are Missing (present gets whether
// the entry exists; nil means that alone decides). It holds the entries'
// names, not the records: about len(name)+8 bytes and one bit per entry.
func InventoryDir(dir string, present func(v *Volume, entry bool) bool) (*DirInventory, error) {
	names, err := readNames(dir, func(name string) bool {
		// No volume name starts with a dot: such entries are a backend's
		// own scratch (temporary files), not a volume's storage.
		return !strings.HasPrefix(name, ".")
	})
	if err != nil {
		return nil, err
	}
	return &DirInventory{names: names, present: present}, nil
}

// DirInventory is InventoryDir's run.
type DirInventory struct {
	names   nameSet
	present func(v *Volume, entry bool) bool
	inv     Inventory
	key     []byte
}

// Known marks the volumes' entries as recorded and notes the missing ones.
func (d *DirInventory) Known(vols []*Volume) {
	for _, v := range vols {
		d.key = append(d.key[:0], v.Name...)
		ok := d.names.mark(d.key)
		if d.present != nil {
			ok = d.present(v, ok)
		}
		if !ok {
			d.inv.Missing = append(d.inv.Missing, v.Name)
		}
	}
}

// Problem adds a finding to the Result, for a backend that checks more
// than its entries as Known goes.
func (d *DirInventory) Problem(msg string) {
	d.inv.Problems = append(d.inv.Problems, msg)
}

// Result adds the entries no Known volume named, sorted.
func (d *DirInventory) Result() (Inventory, error) {
	d.inv.Unrecorded = d.names.unmarked(d.inv.Unrecorded)
	return d.inv, nil
}

// readDirBatch is how many names one getdents round gives readNames.
const readDirBatch = 1024

// nameSet is a directory's names, sorted, in one arena: no string or map
// entry per name.
type nameSet struct {
	arena []byte
	// refs are offset<<16 | length into arena, sorted by name (a Linux
	// name is at most 255 bytes).
	refs []uint64
	// marked has bit i set once refs[i] was named by a record.
	marked []uint64
}

// readNames reads the names in dir that keep accepts.
func readNames(dir string, keep func(string) bool) (nameSet, error) {
	var s nameSet
	err := ReadNames(dir, func(n string) {
		if len(n) <= 0xffff && keep(n) {
			s.refs = append(s.refs, uint64(len(s.arena))<<16|uint64(len(n)))
			s.arena = append(s.arena, n...)
		}
	})
	if err != nil {
		return s, err
	}
	slices.SortFunc(s.refs, func(a, b uint64) int { return bytes.Compare(s.name(a), s.name(b)) })
	s.marked = make([]uint64, (len(s.refs)+63)/64)
	return s, nil
}

func (s *nameSet) name(ref uint64) []byte {
	off := ref >> 16
	return s.arena[off : off+ref&0xffff]
}

// mark says whether name is in the set and marks it.
func (s *nameSet) mark(name []byte) bool {
	i, ok := slices.BinarySearchFunc(s.refs, name, func(ref uint64, n []byte) int { return bytes.Compare(s.name(ref), n) })
	if ok {
		s.marked[i/64] |= 1 << (i % 64)
	}
	return ok
}

// unmarked appends the names never marked to dst, in order.
func (s *nameSet) unmarked(dst []string) []string {
	for i, ref := range s.refs {
		if s.marked[i/64]&(1<<(i%64)) == 0 {
			dst = append(dst, string(s.name(ref)))
		}
	}
	return dst
}

// ReadNames calls fn with every name in dir, a batch at a time, without
// holding them all.
func ReadNames(dir string, fn func(name string)) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		batch, err := f.Readdirnames(readDirBatch)
		for _, n := range batch {
			fn(n)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err // a *PathError: it names dir
		}
	}
}
