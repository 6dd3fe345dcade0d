package main

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/config"
	"github.com/stowage/stowage/internal/metrics"
	"github.com/stowage/stowage/internal/store"
	"github.com/stowage/stowage/internal/ui"
	"github.com/stowage/stowage/plugin"
)

// startUI serves the web view on l, or on the metrics listener when
// shared; it returns the request observer that feeds it, and stop.
func startUI(cfg *config.Serve, drv *driver.Driver, st *store.Store, root string, l net.Listener, shared *lateHandler, log logrus.FieldLogger) (plugin.Observer, func()) {
	rec := ui.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	go rec.Run(ctx)
	view := ui.New(ui.Config{
		Volumes: st, BootID: drv.BootID(), Recorder: rec, Log: log,
		Get: func(name string) (*volume.Volume, error) {
			r, err := drv.Get(&volume.GetRequest{Name: name})
			if err != nil {
				return nil, err
			}
			return r.Volume, nil
		},
		Findings: func(ctx context.Context) ([]driver.Finding, error) { return uiFindings(ctx, drv, st, root) },
	})
	stop := cancel
	if shared != nil {
		shared.set(view.Handler(shared.hosts))
		l = shared.l
	} else {
		srv := metrics.ServeHandler(l, view.Handler(ui.Hosts(l)), "web view", log)
		stop = func() { srv.Close(); cancel() }
	}
	at := cfg.UIAddr
	if _, ok := l.Addr().(*net.TCPAddr); ok {
		at = l.Addr().String() // the real port when :0 was asked
	}
	log.WithFields(logrus.Fields{"addr": cfg.UIAddr, "listening": at}).Info("serving the web view")
	return rec.Observe, stop
}

// lateHandler is the web view on the metrics listener: that listener is up
// before reconcile (for /healthz), the view only once the driver is.
type lateHandler struct {
	hosts []string
	l     net.Listener
	h     atomic.Pointer[http.Handler]
}

func (l *lateHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, "stowage is starting: the web view answers once the state is checked", http.StatusServiceUnavailable)
}

// sharedMux serves the metrics paths as before and the web view at the rest.
func sharedMux(mets http.Handler, view http.Handler) http.Handler {
	mux := http.NewServeMux()
	for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
		mux.Handle(p, mets)
	}
	mux.Handle("/", view)
	return mux
}

// uiFindings are doctor's findings as the daemon sees them: the driver's
// quiet check plus mounts under the root that no volume records.
func uiFindings(ctx context.Context, drv *driver.Driver, st *store.Store, root string) ([]driver.Finding, error) {
	rep, err := drv.Check(ctx)
	if err != nil {
		return nil, err
	}
	var vols []VolumeInfo
	err = st.Scan(func(v *store.Volume) error {
		vols = append(vols, VolumeInfo{Volume: store.Volume{Name: v.Name, Backend: v.Backend}})
		return nil
	})
	if err != nil {
		return nil, err
	}
	d := &doctor{o: &opFlags{root: root}}
	return append(rep.Findings, d.mountFindings(vols)...), nil
}

// volumeUsage reads a volume's usage from its backend's cheap source, for
// --metrics-volume-usage.
func volumeUsage(insts map[string]backend.Instance) metrics.UsageFunc {
	return func(v *store.Volume) (uint64, uint64, bool) {
		inst, ok := insts[v.Backend]
		if !ok {
			return 0, 0, false
		}
		u, ok := inst.Backend.(backend.Usager)
		if !ok {
			return 0, 0, false
		}
		use, err := u.Usage(v)
		if err != nil {
			return 0, 0, false
		}
		return use.Limit, use.Used, true
	}
}
