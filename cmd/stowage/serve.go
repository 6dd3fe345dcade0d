package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/all"
	"github.com/stowage/stowage/internal/backend/expose"
	"github.com/stowage/stowage/internal/config"
	"github.com/stowage/stowage/internal/metrics"
	"github.com/stowage/stowage/internal/store"
	"github.com/stowage/stowage/internal/ui"
	"github.com/stowage/stowage/plugin"
)

// serveFlags binds serve's flags; the error is a bad environment value,
// which a daemon must not shrug off (it would run with a default instead).
func serveFlags(stderr io.Writer) (*flag.FlagSet, *config.Serve, error) {
	fs := flag.NewFlagSet("stowage serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config.Serve{}
	b := config.NewBinder(fs)
	cfg.Bind(b)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: stowage serve [flags]\n\nRuns the volume plugin daemon. Flags (each also read from its environment variable):\n")
		fs.PrintDefaults()
	}
	return fs, cfg, b.Err()
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs, cfg, envErr := serveFlags(stderr)
	if envErr != nil {
		fmt.Fprintln(stderr, "stowage serve:", envErr)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "stowage serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := cfg.Logger()
	if err != nil {
		fmt.Fprintln(stderr, "stowage serve:", err)
		return 2
	}
	if err := serve(cfg, log); err != nil {
		log.WithError(err).Error("stowage stopped")
		return 1
	}
	return 0
}

// defaultBackends are the modules enabled when --backends is not given:
// those that need no daemon setting, or whose setting is given.
func defaultBackends(reg *backend.Registry, cfg *config.Serve) []string {
	var ids []string
	settings := cfg.BackendSettings()
	for _, m := range reg.Modules() {
		if m.DisabledUnless == "" || settings[m.ID][m.DisabledUnless] != "" {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

func serve(cfg *config.Serve, log *logrus.Logger) error {
	start := time.Now()
	// Start-up's passes over every record are the daemon's peak (~75 MiB
	// at 100 000 volumes with GOGC=100, ~53 with 25, for ~0.15 s more
	// start): the base setting from the start, the headroom once serving
	// (gc.go).
	if gcTuned() {
		debug.SetGCPercent(baseGCPercent)
	}
	// A bad value stops the start before anything is touched.
	var announceAPI string
	if cfg.AnnounceTo != "" {
		var err error
		if announceAPI, err = plugin.DockerSocket(cfg.AnnounceTo); err != nil {
			return fmt.Errorf("--announce-to: %w", err)
		}
	}
	if cfg.MetricsVolumeUsage && cfg.MetricsAddr == "" {
		return errors.New("--metrics-volume-usage needs --metrics-addr: the gauges are served with the other metrics")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return fmt.Errorf("--root %q: %w", cfg.Root, err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("--root %s: %w", root, err)
	}
	// Mount-table checks compare real paths.
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return fmt.Errorf("--root %s: %w", cfg.Root, err)
	}
	gid, err := cfg.GroupID()
	if err != nil {
		return err
	}
	sock, err := plugin.SocketPath(cfg.Socket)
	if err != nil {
		return fmt.Errorf("--socket: %w", err)
	}

	if err := refuseLostState(root); err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(root, store.FileName), store.Options{Log: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.WithError(err).Error("closing the state file")
		}
	}()

	var mets *metrics.Metrics
	// The web view, when it shares the metrics listener, answers there
	// once the driver is ready.
	var sharedUI *lateHandler
	if cfg.MetricsAddr != "" {
		mets = metrics.New(st)
		st.CommitObserver = mets.ObserveCommit
		ml, err := metrics.Listen(cfg.MetricsAddr)
		if err != nil {
			return err
		}
		h := mets.Handler()
		if cfg.UIAddr == cfg.MetricsAddr {
			sharedUI = &lateHandler{hosts: ui.Hosts(ml), l: ml}
			h = sharedMux(h, sharedUI)
		}
		// Up before reconcile, so /healthz answers and /readyz says "not yet".
		msrv := metrics.ServeHandler(ml, h, "metrics endpoint", log)
		defer msrv.Close()
	}
	var uiListener net.Listener
	if cfg.UIAddr != "" && sharedUI == nil {
		// Listen before the slow start-up steps: a taken port or a
		// non-loopback address fails at once.
		if uiListener, err = metrics.ListenFor("--ui-addr", cfg.UIAddr); err != nil {
			return err
		}
		defer uiListener.Close()
	}

	drv, insts, err := buildDriver(cfg, root, st, log)
	if err != nil {
		return err
	}
	// Finish or undo what a crash cut before anything is served or
	// reported: Docker must never see a half-made or half-removed volume.
	if _, err := drv.Recover(context.Background()); err != nil {
		return err
	}
	if _, err := drv.Reconcile(context.Background()); err != nil {
		return err
	}
	// Start-up decodes every record several times over (check, List
	// elements, recovery, reconcile): give the heap that garbage left
	// back now, before serving.
	debug.FreeOSMemory()

	// Under systemd socket activation the socket is systemd's: serve on it
	// and leave the file alone at exit.
	l, err := plugin.ActivationListener()
	if err != nil {
		return err
	}
	activated := l != nil
	if activated {
		sock = l.Addr().String()
	} else if l, err = plugin.ListenUnix(sock, gid); err != nil {
		return err
	}
	hopts := plugin.HandlerOptions{Log: log, Operator: operatorEndpoints(drv)}
	hopts.Operator["Volumes"] = volumesEndpoint(st, insts)
	var observers []plugin.Observer
	if mets != nil {
		observers = append(observers, mets.ObserveRequest)
		if cfg.MetricsVolumeUsage {
			mets.CollectVolumeUsage(volumeUsage(insts))
		}
	}
	if cfg.UIAddr != "" {
		obs, stop := startUI(cfg, drv, st, root, uiListener, sharedUI, log)
		defer stop()
		observers = append(observers, obs)
	}
	switch len(observers) {
	case 1:
		hopts.Observer = observers[0]
	case 2:
		hopts.Observer = func(op string, err error, d time.Duration) {
			observers[0](op, err, d)
			observers[1](op, err, d)
		}
	}
	srv := plugin.NewServer(plugin.NewHandler(drv, hopts), log)
	done := make(chan error, 2)
	go func() { done <- srv.Serve(l) }()
	if cfg.TCPAddr != "" {
		stop, err := serveTCP(cfg, srv, done, log)
		if err != nil {
			srv.Shutdown(time.Second)
			return err
		}
		defer stop()
	}
	if names := announcedDrivers(cfg, sock); announceAPI != "" && len(names) > 0 {
		a := plugin.NewAnnouncer(announceAPI, names, log)
		ctx, cancel := context.WithCancel(context.Background())
		announced := make(chan struct{})
		go func() { a.Run(ctx); close(announced) }()
		defer func() { cancel(); <-announced }()
	}
	if mets != nil {
		mets.SetReady(true)
	}
	if err := plugin.NotifyReady(); err != nil {
		log.WithError(err).Warn("telling systemd we are ready")
	}
	log.WithFields(logrus.Fields{"socket": sock, "activated": activated, "root": root, "version": version, "ready_in": time.Since(start)}).Info("stowage is serving")

	if gcTuned() {
		stopGC, gcDone := make(chan struct{}), make(chan struct{})
		go func() { keepGCHeadroom(stopGC); close(gcDone) }()
		defer func() { close(stopGC); <-gcDone }()
	}

	stopRecovery, recoveryDone := make(chan struct{}), make(chan struct{})
	go func() { drv.RecoverEvery(recoveryInterval, stopRecovery); close(recoveryDone) }()
	// Before the state closes (deferred above): no pass may outlive it.
	defer func() { close(stopRecovery); <-recoveryDone }()

	var serveErr error
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		log.WithField("signal", sig.String()).Info("shutting down: no new requests; waiting for those in flight")
		if mets != nil {
			mets.SetReady(false)
		}
		plugin.NotifyStopping()
		srv.Shutdown(cfg.ShutdownTimeout)
		<-done
	case serveErr = <-done:
		// One listener failed: stop the others too, so no request runs
		// while the state closes, and clean up the socket below.
		log.WithError(serveErr).Error("a listener failed; shutting down")
		srv.Shutdown(cfg.ShutdownTimeout)
	}
	// Closing the listener unlinks the socket; make sure of it, since a
	// stale socket makes every docker volume command wait for retries.
	// An activated socket is systemd's, which keeps listening for us.
	if !activated {
		if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
			log.WithError(err).Warn("removing the socket file")
		}
	}
	if serveErr != nil {
		return fmt.Errorf("serving: %w", serveErr)
	}
	log.Info("stowage stopped")
	return nil
}

// announcedDrivers are the driver names dockerd can find this daemon by:
// its socket's, if dockerd discovers sockets there, and the TCP spec's.
func announcedDrivers(cfg *config.Serve, sock string) []string {
	var names []string
	name := driverName(sock)
	dir := filepath.Dir(sock)
	if dir == plugin.PluginSocketDir || (dir == filepath.Join(plugin.PluginSocketDir, name)) {
		names = append(names, name)
	}
	if cfg.TCPAddr != "" {
		if n := driverName(cfg.Socket); len(names) == 0 || names[0] != n {
			names = append(names, n)
		}
	}
	return names
}

// driverName is the name dockerd knows a plugin socket's driver by.
func driverName(sock string) string {
	return strings.TrimSuffix(filepath.Base(sock), ".sock")
}

// recoveryInterval is how often the daemon retries what start-up recovery
// could not resolve; a pass that finds nothing costs a scan of the state.
const recoveryInterval = 5 * time.Minute

// refuseLostState stops a start that would create a new, empty state file
// in a root that already holds volumes' data: the state file was lost or
// moved, and Docker would forget every volume whose Get then fails.
func refuseLostState(root string) error {
	path := filepath.Join(root, store.FileName)
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, m := range all.Modules() {
		entries, _ := os.ReadDir(filepath.Join(root, m.ID))
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				return fmt.Errorf("state file %s is missing, but %s holds volume data (%s, …); stowage will not start empty over it: restore the state file from a backup, or move the data away", path, filepath.Join(root, m.ID), e.Name())
			}
		}
	}
	return nil
}

// buildDriver provisions the backends the settings enable (exposed under
// --expose-dir if set) and builds the driver over st, exactly as the daemon
// sees them: doctor, reading the state itself, must judge as serve would.
func buildDriver(cfg *config.Serve, root string, st *store.Store, log logrus.FieldLogger) (*driver.Driver, map[string]backend.Instance, error) {
	reg := backend.NewRegistry(all.Modules()...)
	insts, err := reg.Provision(root, cfg.EnabledBackends(defaultBackends(reg, cfg)), cfg.BackendSettings(), log)
	if err != nil {
		return nil, nil, err
	}
	if cfg.ExposeDir != "" {
		if insts, err = exposeInstances(insts, root, cfg.ExposeDir, log); err != nil {
			return nil, nil, err
		}
	}
	scope, err := resolveScope(cfg.Scope, insts)
	if err != nil {
		return nil, nil, err
	}
	bootID, err := driver.ReadBootID(cfg.BootIDFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--boot-id-file: %w", err)
	}
	drv, err := driver.New(driver.Config{
		Store: st, Backends: insts, DefaultBackend: defaultBackend(cfg.DefaultBackend, insts),
		Scope: scope, Log: log, BootID: bootID,
	})
	return drv, insts, err
}

// defaultBackend is --default-backend, else dir, else the only enabled
// backend: a shared instance with --backends sshfs needs no second flag.
func defaultBackend(flag string, insts map[string]backend.Instance) string {
	if flag != "" {
		return flag
	}
	if _, ok := insts["dir"]; !ok && len(insts) == 1 {
		for id := range insts {
			return id
		}
	}
	return "dir"
}

// resolveScope is the scope told to Docker. global promises Swarm that a
// volume is the same data on every node, so it is the default only when
// every enabled backend is shared storage, and refused when any is not.
func resolveScope(scope string, insts map[string]backend.Instance) (string, error) {
	var local, shared []string
	for id, inst := range insts {
		if inst.Shared {
			shared = append(shared, id)
		} else {
			local = append(local, id)
		}
	}
	sort.Strings(local)
	sort.Strings(shared)
	switch scope {
	case "":
		if len(local) == 0 && len(shared) > 0 {
			return "global", nil
		}
		return "local", nil
	case "local":
		return scope, nil
	case "global":
		if len(local) > 0 {
			return "", fmt.Errorf("--scope global: the enabled backends %s keep data on this node, so Docker Swarm would be told a volume is the same on every node when it is not. Enable only shared backends (--backends sshfs) in this instance, and serve node-local volumes from a second instance with another --socket name and --root", strings.Join(local, ", "))
		}
		return scope, nil
	}
	return "", fmt.Errorf("--scope %q is invalid: use local or global (or leave it empty: global when every enabled backend is shared)", scope)
}

// operatorEndpoints are the /Stowage.* calls the operator commands use.
func operatorEndpoints(drv *driver.Driver) map[string]plugin.Endpoint {
	return map[string]plugin.Endpoint{
		"Release": {
			NewRequest: func() interface{} { return &driver.ReleaseRequest{} },
			Call:       func(r interface{}) (interface{}, error) { return drv.Release(r.(*driver.ReleaseRequest)) },
		},
		"Resize": {
			NewRequest: func() interface{} { return &driver.ResizeRequest{} },
			Call:       func(r interface{}) (interface{}, error) { return drv.Resize(r.(*driver.ResizeRequest)) },
		},
		"Reconcile": {
			Call: func(interface{}) (interface{}, error) {
				rep, err := drv.Reconcile(context.Background())
				return &rep, err
			},
		},
	}
}

// exposeInstances wraps every backend so volumes are exposed under dir (a
// managed plugin's propagatedMount). dir must not overlap the root: the
// backends' inventories would see exposures as data.
func exposeInstances(insts map[string]backend.Instance, root, dir string, log logrus.FieldLogger) (map[string]backend.Instance, error) {
	dir = filepath.Clean(dir)
	if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("--expose-dir %s is inside --root %s; use a separate directory", dir, root)
	}
	if rel, err := filepath.Rel(dir, root); err == nil && !strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("--root %s is inside --expose-dir %s; use a separate directory", root, dir)
	}
	return expose.Wrap(insts, dir, log)
}

// serveTCP serves the plugin API over TLS too and writes the spec file that
// tells dockerd where; the returned stop removes the file.
func serveTCP(cfg *config.Serve, srv *plugin.Server, done chan<- error, log logrus.FieldLogger) (func(), error) {
	name := driverName(cfg.Socket)
	tl, err := plugin.ListenTLS(cfg.TCPAddr, plugin.TLSOptions{Cert: cfg.TLSCert, Key: cfg.TLSKey, CA: cfg.TLSCA})
	if err != nil {
		return nil, err
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	// dockerd presents --tls-cert as its client certificate, so it must
	// allow client auth too (extKeyUsage serverAuth,clientAuth).
	spec, err := plugin.WriteSpec(cfg.SpecDir, plugin.Spec{
		Name: name, Addr: "https://" + tl.Addr().String(),
		TLSConfig: &plugin.SpecTLS{CAFile: abs(cfg.TLSCA), CertFile: abs(cfg.TLSCert), KeyFile: abs(cfg.TLSKey)},
	})
	if err != nil {
		tl.Close()
		return nil, err
	}
	go func() { done <- srv.Serve(tl) }()
	log.WithFields(logrus.Fields{"addr": tl.Addr().String(), "spec": spec}).Info("serving the plugin API over TCP with TLS")
	return func() {
		if err := os.Remove(spec); err != nil && !os.IsNotExist(err) {
			log.WithError(err).Warn("removing the spec file")
		}
	}, nil
}
