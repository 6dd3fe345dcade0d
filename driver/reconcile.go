package driver

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/store"
)

// Finding is one inconsistency reconcile found. Nothing is changed for it.
type Finding struct {
	Kind    string `json:"kind"`
	Volume  string `json:"volume"`
	Backend string `json:"backend,omitempty"`
	MountID string `json:"mount_id,omitempty"`
	Detail  string `json:"detail"`
}

// The kinds of finding.
const (
	// FindMissingData: a recorded volume whose storage is gone.
	FindMissingData = "missing-data"
	// FindUnrecorded: storage on disk that no record names.
	FindUnrecorded = "unrecorded-data"
	// FindStaleMount: a ledger entry from an earlier boot.
	FindStaleMount = "stale-mount"
	// FindDisabledBackend: a volume whose backend this daemon lacks.
	FindDisabledBackend = "disabled-backend"
	// FindProblem: anything else a backend reports.
	FindProblem = "problem"
	// FindUnfinished: an operation a crash cut that recovery could not
	// resolve (it is retried at each start).
	FindUnfinished = "unfinished"
)

// Report is the outcome of one reconcile.
type Report struct {
	Volumes  int       `json:"volumes"`
	Findings []Finding `json:"findings"`
}

// Reconcile compares the records with the backends' storage and the ledger
// with this boot. It only reads and reports: data that looks orphaned may be
// a user's, and a record is a promise made to Docker. Running it twice gives
// the same report. Each finding is logged.
func (d *Driver) Reconcile(ctx context.Context) (Report, error) {
	start := time.Now()
	rep, err := d.Check(ctx)
	if err != nil {
		return rep, err
	}
	for _, f := range rep.Findings {
		d.log.WithFields(logrus.Fields{"op": "reconcile", "kind": f.Kind, "volume": f.Volume, "backend": f.Backend, "mount_id": f.MountID}).Warn(f.Detail)
	}
	d.log.WithFields(logrus.Fields{"op": "reconcile", "volumes": rep.Volumes, "findings": len(rep.Findings), "duration": time.Since(start)}).Info("state reconciled")
	return rep, nil
}

// Check is Reconcile without the log lines, for a view that asks again and
// again (the web view) and must not fill the log with the same findings.
//
// It streams: each backend first reads its side (a directory's names, the
// mount table), then one pass over the records hands each backend its
// volumes a chunk at a time. Nothing holds every record at once.
func (d *Driver) Check(ctx context.Context) (Report, error) {
	var rep Report
	ids := enabledIDs(d.cfg.Backends)
	runs := make(map[string]backend.InventoryRun, len(ids))
	failed := map[string]error{}
	for _, id := range ids {
		run, err := d.cfg.Backends[id].Inventory(ctx)
		if err != nil {
			failed[id] = err
			continue
		}
		runs[id] = run
	}
	chunks := make(map[string][]*store.Volume, len(runs))
	give := func(id string) {
		runs[id].Known(chunks[id])
		clear(chunks[id])
		chunks[id] = chunks[id][:0]
	}
	err := d.cfg.Store.Scan(func(v *store.Volume) error {
		rep.Volumes++
		if _, ok := d.cfg.Backends[v.Backend]; !ok {
			rep.Findings = append(rep.Findings, Finding{Kind: FindDisabledBackend, Volume: v.Name, Backend: v.Backend,
				Detail: fmt.Sprintf("backend %q is not enabled; the volume is kept and listed but cannot be mounted", v.Backend)})
		}
		for id, m := range v.Mounts {
			if m.Boot != d.cfg.BootID {
				rep.Findings = append(rep.Findings, Finding{Kind: FindStaleMount, Volume: v.Name, Backend: v.Backend, MountID: id,
					Detail: fmt.Sprintf("mount counted %d time(s) since %s, before the last reboot; Docker will never unmount it: release it with 'stowage release %s'", m.Count, m.Since.Format(time.RFC3339), v.Name)})
			}
		}
		if _, ok := runs[v.Backend]; ok {
			// Backends see only this boot's ledger: entries of an earlier
			// boot are reported above, and no container can hold them.
			chunks[v.Backend] = append(chunks[v.Backend], d.liveView(v))
			if len(chunks[v.Backend]) == backend.InventoryChunk {
				give(v.Backend)
			}
		}
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("reading the state: %w", err)
	}
	intents, err := d.cfg.Store.Intents()
	if err != nil {
		return Report{}, fmt.Errorf("reading open intents: %w", err)
	}
	for _, in := range intents {
		rep.Findings = append(rep.Findings, Finding{Kind: FindUnfinished, Volume: in.Volume.Name, Backend: in.Volume.Backend,
			Detail: fmt.Sprintf("a %s cut by a crash at %s could not be finished or undone at start (see the log); it is retried at the next start", in.Op, in.At.Format(time.RFC3339))})
	}
	for _, id := range ids {
		var inv backend.Inventory
		err := failed[id]
		if err == nil {
			if len(chunks[id]) > 0 {
				give(id)
			}
			inv, err = runs[id].Result()
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

// liveView is vol without the ledger entries of earlier boots; vol itself
// when it has none, so reconcile does not hold every record twice.
func (d *Driver) liveView(vol *store.Volume) *store.Volume {
	stale := false
	for _, m := range vol.Mounts {
		stale = stale || m.Boot != d.cfg.BootID
	}
	if !stale {
		return vol
	}
	c := vol.Clone()
	for id, m := range c.Mounts {
		if m.Boot != d.cfg.BootID {
			delete(c.Mounts, id)
		}
	}
	return c
}
