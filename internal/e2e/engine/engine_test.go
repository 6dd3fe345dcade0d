package engine

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// assertGone checks that nothing of e is left: processes, mounts, cgroups.
func assertGone(t *testing.T, e *Engine) {
	t.Helper()
	ps, err := e.procs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		t.Errorf("process left: %d %s", p.pid, strings.Join(p.argv, " "))
	}
	mps, err := e.mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		t.Errorf("mount left: %s", mp)
	}
}

// systemEngineUntouched records the system engine's docker0 and checks at the
// end that it still exists: --bridge=none outside our netns would delete it.
func systemEngineUntouched(t *testing.T) {
	if _, err := os.Stat("/sys/class/net/docker0"); err != nil {
		return
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/sys/class/net/docker0"); err != nil {
			t.Errorf("system engine's docker0 is gone: %v", err)
		}
	})
}

func TestEngineRestartKeepsData(t *testing.T) {
	t.Parallel()
	systemEngineUntouched(t)
	e := Start(t, Options{Name: "basic"})
	if !strings.HasPrefix(e.Host(), "unix:///tmp/stwe-basic-") {
		t.Errorf("Host() = %q", e.Host())
	}

	e.MustDocker(t, "run", "--rm", "--network", "none", e.Image(), "true")
	script := "for a in " + strings.Join(applets, " ") + "; do command -v $a >/dev/null || echo missing $a; done; id -un"
	if out := e.MustDocker(t, "run", "--rm", "--network", "none", e.Image(), "sh", "-c", script); out != "root" {
		t.Errorf("applet check: %q", out)
	}
	e.MustDocker(t, "create", "--name", "keep", "--network", "none", e.Image(), "true")
	e.MustDocker(t, "volume", "create", "keepvol")

	e.Restart(t, Options{})
	if out := e.MustDocker(t, "ps", "-a", "--filter", "name=keep", "--format", "{{.Names}}"); out != "keep" {
		t.Errorf("container after restart: %q", out)
	}
	// Only the local driver's volumes: dockerd also lists every legacy
	// plugin socket in the shared /run/docker/plugins.
	if out := e.MustDocker(t, "volume", "ls", "-q", "--filter", "driver=local"); out != "keepvol" {
		t.Errorf("volumes after restart: %q", out)
	}
	e.MustDocker(t, "start", "-a", "keep")

	e.Stop(t)
	e.Stop(t) // idempotent
	assertGone(t, e)
	if _, _, err := e.Docker("version"); err == nil {
		t.Error("docker still answers after Stop")
	}

	if err := e.cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.dir); !os.IsNotExist(err) {
		t.Errorf("engine dir left: %v", err)
	}
	if _, err := os.Stat("/sys/fs/cgroup/pids/" + e.label); !os.IsNotExist(err) {
		t.Errorf("cgroup left: %v", err)
	}
}

func TestLiveRestoreKeepsContainerRunning(t *testing.T) {
	t.Parallel()
	systemEngineUntouched(t)
	e := Start(t, Options{LiveRestore: true})
	id := e.MustDocker(t, "run", "-d", "--network", "none", e.Image(), "sleep", "300")
	pid := e.MustDocker(t, "inspect", "-f", "{{.State.Pid}}", id)

	began := time.Now()
	e.Restart(t, Options{LiveRestore: true})
	t.Logf("live-restore Restart with one running container: %v", time.Since(began))
	if out := e.MustDocker(t, "inspect", "-f", "{{.State.Running}} {{.State.Pid}}", id); out != "true "+pid {
		t.Errorf("after restart: %q, want running with pid %s", out, pid)
	}
	if out := e.MustDocker(t, "exec", id, "echo", "hi"); out != "hi" {
		t.Errorf("exec after restart: %q", out)
	}

	// Teardown with a running container: nothing may survive.
	if err := e.cleanup(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, e)
	if _, err := os.Stat(e.dir); !os.IsNotExist(err) {
		t.Errorf("engine dir left: %v", err)
	}
}

func TestCleanupAfterLiveRestoreStop(t *testing.T) {
	t.Parallel()
	e := Start(t, Options{LiveRestore: true, Name: "orphan"})
	id := e.MustDocker(t, "run", "-d", "--network", "none", e.Image(), "sleep", "300")
	pid := e.MustDocker(t, "inspect", "-f", "{{.State.Pid}}", id)

	// Stop with live-restore leaves the container (and its shim) running.
	e.Stop(t)
	ps, err := e.procs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.daemon {
			t.Errorf("daemon left after Stop: %d %s", p.pid, strings.Join(p.argv, " "))
		}
	}
	if err := syscall.Kill(mustAtoi(t, pid), 0); err != nil {
		t.Fatalf("container process %s gone after live-restore Stop: %v", pid, err)
	}

	// Cleanup with dockerd down must still kill the orphans and unmount.
	if err := e.cleanup(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, e)
	if _, err := os.Stat(e.dir); !os.IsNotExist(err) {
		t.Errorf("engine dir left: %v", err)
	}
}

func TestMissingToolsFail(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	_, err := checkTools()
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y util-linux") {
		t.Fatalf("checkTools() = %v", err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEngineUsesItsOwnBinaries: with STOWAGE_ENGINE set, dockerd must start
// the containerd and shim of that engine, not the system's that come later
// in PATH; a mix would test neither engine.
func TestEngineUsesItsOwnBinaries(t *testing.T) {
	t.Parallel()
	e := Start(t, Options{Name: "bins"})
	id := e.MustDocker(t, "run", "-d", "--network", "none", e.Image(), "sleep", "300")
	ps, err := e.procs()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range ps {
		if !p.daemon && !p.shim {
			continue
		}
		name := filepath.Base(p.argv[0])
		if name == "unshare" {
			continue
		}
		want, err := lookPath(name, e.bin.path)
		if err != nil {
			t.Errorf("%s runs but is not in the engine's PATH %s", name, e.bin.path)
			continue
		}
		exe, err := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/exe")
		if err != nil {
			t.Fatal(err)
		}
		if exe != want {
			t.Errorf("%s runs from %s, want %s", name, exe, want)
		}
		seen[name] = true
	}
	for _, name := range []string{"dockerd", "containerd", "containerd-shim-runc-v2"} {
		if !seen[name] {
			t.Errorf("no %s of this engine is running (container %s)", name, id)
		}
	}
	// The containerd dockerd started for itself (containerd 2.x too) keeps
	// the container in the namespace the harness named.
	ctr, err := lookPath("ctr", e.bin.path)
	if err != nil {
		t.Fatal("ctr not found: apt-get install -y containerd")
	}
	out, err := exec.Command(ctr, "--address", e.path("exec/containerd/containerd.sock"), "--namespace", e.label,
		"containers", "ls", "-q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), id) {
		t.Errorf("ctr containers ls in namespace %s: %v %s; want container %s", e.label, err, out, id)
	}
	if e.Version().Major == 0 || e.Version().API == "" {
		t.Errorf("Version() = %+v", e.Version())
	}
}

func TestParseVersion(t *testing.T) {
	for raw, want := range map[string][3]int{"20.10.24+dfsg1": {20, 10, 24}, "28.5.2": {28, 5, 2}, "29.0.0-rc.1": {29, 0, 0}, "1.13": {1, 13, 0}} {
		v, err := parseVersion(raw)
		if err != nil || [3]int{v.Major, v.Minor, v.Patch} != want {
			t.Errorf("parseVersion(%q) = %+v, %v", raw, v, err)
		}
	}
	if _, err := parseVersion("dev"); err == nil {
		t.Error("parseVersion(dev) accepted")
	}
	if !(Version{Major: 23}).AtLeast(23, 0) || (Version{Major: 20, Minor: 10}).AtLeast(23, 0) {
		t.Error("AtLeast")
	}
}
