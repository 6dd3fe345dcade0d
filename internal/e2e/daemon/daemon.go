// Package daemon runs a real `stowage serve` process for end-to-end tests:
// start it on a private root and socket, kill it with SIGKILL, restart it.
package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"

	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/e2e/ns"
)

// Options say how to run the daemon.
type Options struct {
	// Root is --root; default a fresh directory under /tmp.
	Root string
	// Name is the driver name Docker uses (socket /run/docker/plugins/NAME.sock);
	// default a random "stw-xxxxxxxx".
	Name string
	// Args are extra flags for `stowage serve`.
	Args []string
	// Env is extra environment (KEY=VALUE).
	Env []string
	// NS runs the daemon inside these namespaces (a node of
	// internal/e2e/cluster), so its mounts are the node's engine's.
	NS ns.Set
	// PluginsDir is where the daemon's /run/docker/plugins is seen from
	// the test (a node binds its own dir there); default /run/docker/plugins.
	PluginsDir string
	// AnnounceTo is --announce-to: the engine told about the driver. By
	// default none: a test daemon must not register itself with the
	// machine's dockerd, which would call it long after the test.
	AnnounceTo string
}

// Daemon is one stowage serve process (and its restarts).
type Daemon struct {
	opts   Options
	bin    string
	Root   string
	Name   string
	Socket string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// Bin is the stowage binary under test: $STOWAGE_BIN (make sets it), else
// build/stowage relative to the module root.
func Bin(t testing.TB) string {
	if b := os.Getenv("STOWAGE_BIN"); b != "" {
		return b
	}
	b := filepath.Join(ModuleRoot(t), "build", "stowage")
	if _, err := os.Stat(b); err != nil {
		t.Fatalf("no stowage binary at %s: run 'make build' (or set STOWAGE_BIN)", b)
	}
	return b
}

// ModuleRoot is the directory of stowage's go.mod, above the test's working
// directory.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	t.Fatal("cannot find the module root (go.mod) above the working directory")
	return ""
}

// RandomName returns prefix-xxxxxxxx.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Start runs stowage serve and waits until its socket answers. Cleanup stops
// it and removes its root (after unmounting nothing: tests unmount their own).
func Start(t testing.TB, o Options) *Daemon {
	t.Helper()
	if o.Name == "" {
		o.Name = RandomName("stw")
	}
	if o.Root == "" {
		dir, err := os.MkdirTemp("", "stwroot-")
		if err != nil {
			t.Fatal(err)
		}
		o.Root = dir
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	if o.PluginsDir == "" {
		o.PluginsDir = "/run/docker/plugins"
	}
	d := &Daemon{opts: o, bin: Bin(t), Root: o.Root, Name: o.Name, Socket: filepath.Join(o.PluginsDir, o.Name+".sock"), log: &syncBuffer{}}
	d.start(t)
	t.Cleanup(func() {
		d.Stop(t)
		// A Kill leaves the socket behind, as a crash would; left there it
		// makes every engine on the machine retry it for ~15 s per listing.
		os.Remove(d.Socket)
	})
	return d
}

func (d *Daemon) start(t testing.TB) {
	t.Helper()
	args := append([]string{d.bin, "serve", "--root", d.Root, "--socket", d.Name, "--log-level", "debug", "--announce-to", d.opts.AnnounceTo}, d.opts.Args...)
	if !d.opts.NS.Empty() {
		args = d.opts.NS.Argv(args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), d.opts.Env...)
	cmd.Stdout = d.log
	cmd.Stderr = d.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting stowage: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("stowage exited at start: %v\n%s", cmd.ProcessState, d.Log())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := d.Client().Call(ctx, "/Plugin.Activate", nil, nil)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("stowage did not answer on %s within 30s\n%s", d.Socket, d.Log())
}

// Client returns a client for the daemon's socket.
func (d *Daemon) Client() *client.Client { return client.New(d.Socket) }

// Running reports whether the process is alive.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL, as a crash would, and waits for the process to end.
// The socket file is left behind, as after a real crash.
func (d *Daemon) Kill(t testing.TB) {
	t.Helper()
	d.signal(t, syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM and waits for a clean exit; idempotent.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	d.signal(t, syscall.SIGTERM, 40*time.Second)
}

func (d *Daemon) signal(t testing.TB, sig syscall.Signal, wait time.Duration) {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-done
		t.Errorf("stowage did not exit within %s of %s\n%s", wait, sig, d.Log())
	}
}

// ExitCode is the last process's exit code (-1 if killed or running).
func (d *Daemon) ExitCode() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.ProcessState == nil {
		return -1
	}
	return d.cmd.ProcessState.ExitCode()
}

// Restart starts the daemon again on the same root and socket; the previous
// process must have ended (Kill or Stop).
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	if d.Running() {
		t.Fatal("Restart: stowage is still running; Kill or Stop it first")
	}
	d.start(t)
}

// Log is everything the daemon has written so far, restarts included.
func (d *Daemon) Log() string { return d.log.String() }

// LogContains reports whether the log holds every one of the substrings on
// a single line.
func (d *Daemon) LogContains(subs ...string) bool {
	for _, line := range strings.Split(d.Log(), "\n") {
		ok := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
