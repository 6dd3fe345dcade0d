package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/store"
)

// Recovery is what Recover did.
type Recovery struct {
	// Finished are removals a crash cut, now done.
	Finished []string `json:"finished,omitempty"`
	// Undone are creations a crash cut, now rolled back.
	Undone []string `json:"undone,omitempty"`
	// Forgotten are cut creations whose backend cannot tell its own work
	// from anything else: the intent is dropped, the storage kept.
	Forgotten []string `json:"forgotten,omitempty"`
	// Downed are volumes whose storage was up with no live mount (a crash
	// cut a Mount or an Unmount), now brought down.
	Downed []string `json:"downed,omitempty"`
	// Failed are intents or mounts that could not be resolved; they are
	// kept as they are and retried at the next start.
	Failed []string `json:"failed,omitempty"`
}

// Recover resolves what a crash cut short, before the daemon serves: each
// open intent is finished (a Remove the user asked for and was not told no)
// or undone (a Create nobody was told succeeded), and storage that is up
// with no live mount in the ledger is brought down. It works under each
// volume's lock and, when in doubt, keeps data and reports.
func (d *Driver) Recover(ctx context.Context) (Recovery, error) {
	start := time.Now()
	var rec Recovery
	intents, err := d.cfg.Store.Intents()
	if err != nil {
		return rec, fmt.Errorf("reading open intents: %w", err)
	}
	for _, in := range intents {
		d.recoverIntent(ctx, in, &rec)
	}
	if err := d.recoverMounts(ctx, &rec); err != nil {
		return rec, err
	}
	log := d.log.WithFields(logrus.Fields{"op": "recover", "intents": len(intents), "finished": len(rec.Finished), "undone": len(rec.Undone),
		"forgotten": len(rec.Forgotten), "downed": len(rec.Downed), "failed": len(rec.Failed), "duration": time.Since(start)})
	if len(intents)+len(rec.Downed)+len(rec.Failed) > 0 {
		log.Info("recovery done")
	} else {
		log.Debug("recovery found nothing to do")
	}
	return rec, nil
}

// RecoverEvery runs Recover every interval until stop is closed, so what
// start-up could not resolve (and storage a failed Deactivate left up) is
// retried while the daemon runs. It returns when stop is closed and any pass
// under way has ended.
func (d *Driver) RecoverEvery(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), otherTimeout)
			if _, err := d.Recover(ctx); err != nil {
				d.log.WithFields(logrus.Fields{"op": "recover", "error": err}).Warn("periodic recovery failed; retried at the next pass")
			}
			cancel()
		}
	}
}

func (d *Driver) recoverIntent(ctx context.Context, listed *store.Intent, rec *Recovery) {
	name := listed.Volume.Name
	unlock := d.locks.Lock(name)
	defer unlock()
	// Every operation holds the volume's lock from its intent to its end:
	// an intent still there now, under the lock, belongs to no operation
	// in flight (the periodic pass runs beside live requests).
	in, err := d.cfg.Store.Intent(name)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	log := d.log.WithFields(logrus.Fields{"op": "recover", "volume": name, "intent": listed.Op, "since": listed.At})
	if err != nil {
		log.WithError(err).Error("reading an open intent failed; retried at the next pass")
		rec.Failed = append(rec.Failed, name)
		return
	}
	log = log.WithFields(logrus.Fields{"intent": in.Op, "since": in.At})
	fail := func(err error) {
		log.WithError(err).Error("could not resolve an operation a crash cut; it is kept as it is and retried at the next start")
		rec.Failed = append(rec.Failed, name)
	}
	inst, ok := d.cfg.Backends[in.Volume.Backend]
	if !ok {
		fail(fmt.Errorf("its backend %q is not enabled", in.Volume.Backend))
		return
	}
	switch in.Op {
	case store.IntentCreate:
		if _, err := d.cfg.Store.Get(name); err == nil {
			// FinishCreate commits the record and ends the intent together,
			// so this cannot happen; never undo a recorded volume.
			fail(errors.New("a record exists beside its create intent"))
			return
		}
		if !in.Undo {
			if err := d.cfg.Store.EndIntent(name); err != nil {
				fail(err)
				return
			}
			log.Warn("a cut create of a backend that cannot tell its own storage: forgotten; reconcile reports any storage it left")
			rec.Forgotten = append(rec.Forgotten, name)
			return
		}
		if err := d.undoCreate(ctx, inst, in.Volume); err != nil {
			fail(err)
			return
		}
		if err := d.cfg.Store.EndIntent(name); err != nil {
			fail(err)
			return
		}
		log.Info("a cut create was rolled back")
		rec.Undone = append(rec.Undone, name)
	case store.IntentRemove:
		vol, err := d.cfg.Store.Get(name)
		if errors.Is(err, store.ErrNotFound) {
			if err := d.cfg.Store.EndIntent(name); err != nil {
				fail(err)
			}
			return
		}
		if err != nil {
			fail(err)
			return
		}
		// Remove checked the ledger before recording its intent, and
		// nothing can mount the volume while it holds the lock.
		if n := vol.ActiveMounts(); n > 0 {
			fail(fmt.Errorf("its ledger holds %d mount(s)", n))
			return
		}
		if err := d.removeStorage(ctx, inst, vol); err != nil {
			fail(err)
			return
		}
		if err := d.cfg.Store.FinishRemove(name); err != nil {
			fail(err)
			return
		}
		log.Info("a cut remove was finished")
		rec.Finished = append(rec.Finished, name)
	}
}

// recoverMounts brings down storage that is up while the ledger holds no
// live mount. It streams the records of the backends that can be up
// (Prober) and keeps only the names it acts on.
func (d *Driver) recoverMounts(ctx context.Context, rec *Recovery) error {
	probers := map[string]bool{}
	for id, inst := range d.cfg.Backends {
		if _, ok := inst.Backend.(backend.Prober); ok {
			probers[id] = true
		}
	}
	if len(probers) == 0 {
		return nil
	}
	var names []string
	err := d.cfg.Store.ScanBackends(probers, func(v *store.Volume) error {
		if d.liveMounts(v) == 0 && d.cfg.Backends[v.Backend].Backend.(backend.Prober).Up(v) {
			names = append(names, v.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the state: %w", err)
	}
	for _, name := range names {
		d.downUnheld(ctx, name, rec)
	}
	return nil
}

func (d *Driver) downUnheld(ctx context.Context, name string, rec *Recovery) {
	log := d.log.WithFields(logrus.Fields{"op": "recover", "volume": name})
	vol, inst, unlock, err := d.held(name)
	if err != nil {
		return // removed meanwhile
	}
	defer unlock()
	if d.liveMounts(vol) > 0 {
		return
	}
	if err := inst.Deactivate(ctx, vol); err != nil {
		log.WithError(err).Error("its storage is up with no live mount, and bringing it down failed; it is kept and retried at the next start")
		rec.Failed = append(rec.Failed, name)
		return
	}
	log.Info("storage up with no live mount (a crash cut a mount or unmount) was brought down")
	rec.Downed = append(rec.Downed, name)
}
