package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docker/go-connections/sockets"
	"github.com/sirupsen/logrus"
)

// PluginSocketDir is where dockerd discovers legacy plugins' sockets.
const PluginSocketDir = "/run/docker/plugins"

// SocketPath resolves --socket: a bare name means PluginSocketDir/NAME.sock,
// anything with a slash is a path used as is.
func SocketPath(nameOrPath string) (string, error) {
	if nameOrPath == "" {
		return "", errors.New("socket name is empty")
	}
	if strings.ContainsRune(nameOrPath, '/') {
		return filepath.Clean(nameOrPath), nil
	}
	if nameOrPath == "." || nameOrPath == ".." {
		return "", fmt.Errorf("socket name %q is invalid", nameOrPath)
	}
	return filepath.Join(PluginSocketDir, nameOrPath+".sock"), nil
}

// ListenUnix listens on the unix socket at path, mode 0660, owner root and
// group gid. A stale socket file is removed; a socket a live process answers
// on is an error, and so is any other file at path.
func ListenUnix(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the socket's directory: %w", err)
	}
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode()&os.ModeSocket == 0:
		return nil, fmt.Errorf("%s exists and is not a socket; stowage will not replace it", path)
	case err == nil:
		conn, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			conn.Close()
			return nil, fmt.Errorf("socket %s is in use by a live process (is stowage already running?)", path)
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) && !errors.Is(derr, syscall.ENOENT) {
			return nil, fmt.Errorf("socket %s exists and cannot be checked (%v); remove it if no stowage is running", path, derr)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("checking %s: %w", path, err)
	}
	// sockets removes the stale file, then listens with our mode and owner.
	l, err := sockets.NewUnixSocketWithOpts(path, sockets.WithChown(0, gid), sockets.WithChmod(0o660))
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return l, nil
}

// Server serves a handler on listeners and shuts down gracefully.
type Server struct {
	http *http.Server
	log  logrus.FieldLogger
	dog  *watchdog
}

// Limits on a connection's time in each state. They are enforced by a
// watchdog that checks every connection once a tick, not by net/http's
// ReadTimeout and WriteTimeout: those re-arm socket deadlines (five timer
// changes) on every request, a measurable part of a Get, the call dockerd
// makes before nearly every other.
type limits struct {
	// New: connected (TLS handshake included) with no request read yet.
	New time.Duration
	// Idle: between requests, the next one's headers included.
	Idle time.Duration
	// Active: one request from its headers to its answer written;
	// beyond dockerd's 2-minute limit and every backend deadline.
	Active time.Duration
	Tick   time.Duration
}

var defaultLimits = limits{New: 10 * time.Second, Idle: 120 * time.Second, Active: 150 * time.Second, Tick: time.Second}

// NewServer serves h, cutting connections of slow or stuck clients (see
// limits) so they cannot hold the daemon.
func NewServer(h http.Handler, log logrus.FieldLogger) *Server {
	return newServer(h, log, defaultLimits)
}

func newServer(h http.Handler, log logrus.FieldLogger, l limits) *Server {
	dog := newWatchdog(l)
	return &Server{log: log, dog: dog, http: &http.Server{
		Handler:        h,
		MaxHeaderBytes: 64 << 10,
		ConnState:      dog.track,
		ErrorLog:       nil,
	}}
}

// watchdog knows each connection's state and since which tick.
type watchdog struct {
	l     limits
	tick  atomic.Int64
	mu    sync.Mutex
	conns map[net.Conn]mark
	once  sync.Once
	stop  chan struct{}
}

type mark struct {
	state http.ConnState
	since int64
}

func newWatchdog(l limits) *watchdog {
	return &watchdog{l: l, conns: map[net.Conn]mark{}, stop: make(chan struct{})}
}

// track is http.Server's ConnState hook: a map write, no clock read.
func (w *watchdog) track(c net.Conn, s http.ConnState) {
	w.once.Do(func() { go w.run() })
	w.mu.Lock()
	defer w.mu.Unlock()
	switch s {
	case http.StateClosed, http.StateHijacked:
		delete(w.conns, c)
	default:
		w.conns[c] = mark{state: s, since: w.tick.Load()}
	}
}

func (w *watchdog) run() {
	t := time.NewTicker(w.l.Tick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		now := w.tick.Add(1)
		var cut []net.Conn
		w.mu.Lock()
		for c, m := range w.conns {
			limit := w.l.Active
			switch m.state {
			case http.StateNew:
				limit = w.l.New
			case http.StateIdle:
				limit = w.l.Idle
			}
			// Ticks counted from the one the state began in: at most one
			// tick more than the limit.
			if time.Duration(now-m.since)*w.l.Tick > limit {
				cut = append(cut, c)
				delete(w.conns, c)
			}
		}
		w.mu.Unlock()
		for _, c := range cut {
			c.Close()
		}
	}
}

func (w *watchdog) halt() {
	w.once.Do(func() {}) // a watchdog never started stays so
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
}

// Serve serves on l until Shutdown; it returns nil after a shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, waits up to timeout for requests in flight,
// then closes what is left. Listeners are closed, which removes unix
// socket files Go created.
func (s *Server) Shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.log.WithError(err).Warn("requests still running at the shutdown deadline were cut off")
		s.http.Close()
	}
	s.dog.halt()
	return err
}
