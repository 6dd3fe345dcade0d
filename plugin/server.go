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
}

// NewServer wraps h with timeouts that keep slow or stuck clients from
// holding the daemon, and write timeouts beyond dockerd's 2-minute limit.
func NewServer(h http.Handler, log logrus.FieldLogger) *Server {
	return &Server{log: log, http: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      150 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}}
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
	return err
}
