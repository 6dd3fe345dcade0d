// Package systemd tests stowage as a legacy daemon under systemd: socket
// activation through systemd-socket-activate (Debian's systemd package)
// serving a real Docker engine, sd_notify READY only once it serves, and the
// shipped unit files. Failing, never skipping, when a tool is missing.
package systemd

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

type buf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *buf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func TestSocketActivatedDaemonServesDocker(t *testing.T) {
	engine.RequireRoot(t)
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Fatal("systemd-socket-activate not found: apt-get install -y systemd")
	}
	e := engine.Start(t, engine.Options{Name: "sysd"})
	name := daemon.RandomName("stwsd")
	sock := "/run/docker/plugins/" + name + ".sock"
	root := t.TempDir()
	os.MkdirAll("/run/docker/plugins", 0o755)

	// Our own notify socket stands in for systemd's.
	notifyPath := filepath.Join(t.TempDir(), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	notes := make(chan string, 8)
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := nc.Read(b)
			if err != nil {
				return
			}
			notes <- string(b[:n])
		}
	}()

	logs := &buf{}
	cmd := exec.Command("systemd-socket-activate", "-l", sock, "-E", "NOTIFY_SOCKET="+notifyPath,
		daemon.Bin(t), "serve", "--root", root, "--socket", name, "--log-level", "debug", "--announce-to", "")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		os.Remove(sock)
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate did not create %s\n%s", sock, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing has started stowage yet: the first connection does.
	if strings.Contains(logs.String(), "stowage is serving") {
		t.Fatal("stowage started before anyone connected")
	}

	e.MustDocker(t, "volume", "create", "-d", name, "sav")
	select {
	case n := <-notes:
		if !strings.Contains(n, "READY=1") {
			t.Fatalf("first notification %q is not READY=1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no READY=1 from stowage\n%s", logs)
	}
	if !strings.Contains(logs.String(), "activated=true") {
		t.Fatalf("stowage did not serve on the activated socket:\n%s", logs)
	}
	if i, j := strings.Index(logs.String(), "state reconciled"), strings.Index(logs.String(), "stowage is serving"); i < 0 || j < i {
		t.Fatalf("served before reconciling:\n%s", logs)
	}
	out := e.MustDocker(t, "run", "--rm", "--network", "none", "-v", "sav:/data", e.Image(), "sh", "-c", "echo hello > /data/f && cat /data/f")
	if out != "hello" {
		t.Fatalf("container output %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(root, "dir", "sav", "f")); err != nil || string(b) != "hello\n" {
		t.Fatalf("data on disk: %q %v", b, err)
	}
	if ls := e.MustDocker(t, "volume", "ls", "-q", "--filter", "driver="+name); ls != "sav" {
		t.Fatalf("volume ls = %q", ls)
	}
	e.MustDocker(t, "volume", "rm", "sav")

	// On SIGTERM: STOPPING=1, and the socket file, systemd's, is left alone.
	syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		t.Fatalf("stowage did not stop on SIGTERM\n%s", logs)
	}
	select {
	case n := <-notes:
		if !strings.Contains(n, "STOPPING=1") {
			t.Errorf("notification at shutdown %q is not STOPPING=1", n)
		}
	case <-time.After(time.Second):
		t.Error("no STOPPING=1 at shutdown")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("stowage removed the activated socket file: %v", err)
	}
}

// The shipped units are valid, ordered before Docker, wait for the root and
// leave sshfs processes alone.
func TestUnitFilesVerify(t *testing.T) {
	engine.RequireRoot(t)
	dir := t.TempDir()
	for _, u := range []string{"stowage.service", "stowage.socket", "stowage-shared.service", "stowage-shared.socket"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "contrib", "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, want := range []string{"Before=docker.service"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %s", u, want)
			}
		}
		if u == "stowage-shared.service" {
			for _, want := range []string{"Type=notify", "RequiresMountsFor=/var/lib/stowage-shared", "--socket stowage-shared", "--backends sshfs", "KillMode=process"} {
				if !strings.Contains(s, want) {
					t.Errorf("%s lacks %s", u, want)
				}
			}
			s = strings.ReplaceAll(s, "/usr/local/bin/stowage", daemon.Bin(t))
		}
		if u == "stowage.service" {
			// KillMode=process: a stop or restart must not kill the sshfs
			// processes serving running containers' sshfs volumes.
			for _, want := range []string{"Type=notify", "RequiresMountsFor=/var/lib/stowage", "--root /var/lib/stowage", "KillMode=process"} {
				if !strings.Contains(s, want) {
					t.Errorf("%s lacks %s", u, want)
				}
			}
			// Verify against the binary under test.
			s = strings.ReplaceAll(s, "/usr/local/bin/stowage", daemon.Bin(t))
		}
		if err := os.WriteFile(filepath.Join(dir, u), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, "stowage.socket"), filepath.Join(dir, "stowage.service"),
		filepath.Join(dir, "stowage-shared.socket"), filepath.Join(dir, "stowage-shared.service")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
