package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/all"
	"github.com/stowage/stowage/internal/config"
	"github.com/stowage/stowage/internal/store"
	"github.com/stowage/stowage/plugin"
)

func serveFlags(stderr io.Writer) (*flag.FlagSet, *config.Serve) {
	fs := flag.NewFlagSet("stowage serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config.Serve{}
	b := config.NewBinder(fs)
	cfg.Bind(b)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: stowage serve [flags]\n\nRuns the volume plugin daemon. Flags (each also read from its environment variable):\n")
		fs.PrintDefaults()
	}
	if err := b.Err(); err != nil {
		fmt.Fprintln(stderr, "stowage serve:", err)
	}
	return fs, cfg
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs, cfg := serveFlags(stderr)
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
// those that need no daemon setting.
func defaultBackends(reg *backend.Registry) []string {
	var ids []string
	for _, m := range reg.Modules() {
		if m.DisabledUnless == "" {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

func serve(cfg *config.Serve, log *logrus.Logger) error {
	start := time.Now()
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

	st, err := store.Open(filepath.Join(root, store.FileName), store.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.WithError(err).Error("closing the state file")
		}
	}()

	reg := backend.NewRegistry(all.Modules()...)
	insts, err := reg.Provision(root, cfg.EnabledBackends(defaultBackends(reg)), nil, log)
	if err != nil {
		return err
	}
	drv, err := driver.New(driver.Config{
		Store: st, Backends: insts, DefaultBackend: cfg.DefaultBackend,
		Scope: cfg.Scope, Log: log,
	})
	if err != nil {
		return err
	}
	if _, err := drv.Reconcile(context.Background()); err != nil {
		return err
	}

	l, err := plugin.ListenUnix(sock, gid)
	if err != nil {
		return err
	}
	srv := plugin.NewServer(plugin.NewHandler(drv, plugin.HandlerOptions{Log: log, Operator: operatorEndpoints(drv)}), log)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	log.WithFields(logrus.Fields{"socket": sock, "root": root, "version": version, "ready_in": time.Since(start)}).Info("stowage is serving")

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		log.WithField("signal", sig.String()).Info("shutting down: no new requests; waiting for those in flight")
		srv.Shutdown(cfg.ShutdownTimeout)
		<-done
	case err := <-done:
		if err != nil {
			return fmt.Errorf("serving on %s: %w", sock, err)
		}
	}
	// Closing the listener unlinks the socket; make sure of it, since a
	// stale socket makes every docker volume command wait for retries.
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		log.WithError(err).Warn("removing the socket file")
	}
	log.Info("stowage stopped")
	return nil
}

// operatorEndpoints are the /Stowage.* calls the operator commands use.
func operatorEndpoints(drv *driver.Driver) map[string]plugin.Endpoint {
	return map[string]plugin.Endpoint{
		"Release": {
			NewRequest: func() interface{} { return &driver.ReleaseRequest{} },
			Call:       func(r interface{}) (interface{}, error) { return drv.Release(r.(*driver.ReleaseRequest)) },
		},
		"Reconcile": {
			Call: func(interface{}) (interface{}, error) {
				rep, err := drv.Reconcile(context.Background())
				return &rep, err
			},
		},
	}
}
