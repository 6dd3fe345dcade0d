// Package managed tests stowage as a managed (v2) Docker plugin on a real,
// private engine: `make plugin` and `make enable` as a user runs them,
// containers using its volumes, `docker plugin set`, a kill -9 of the plugin
// while a container holds a volume, an upgrade (disable -f, rm, create,
// enable) that keeps data, and `docker plugin install` from a real registry.
//
// Cost: the Debian base image is built once per machine with debootstrap
// (a few minutes, cached in build/cache); after that this package takes
// about a minute (two plugin builds, one engine).
package managed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
	"github.com/stowage/stowage/internal/mounttable"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	t.Fatal("no module root")
	return ""
}

type env struct {
	t    *testing.T
	e    *engine.Engine
	root string
}

func (x *env) environ() []string {
	// DOCKER: the Makefile uses the CLI of the engine under test.
	out := []string{"DOCKER_HOST=" + x.e.Host(), "DOCKER=" + x.e.CLI()}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_") && !strings.HasPrefix(kv, "DOCKER=") {
			out = append(out, kv)
		}
	}
	return out
}

// make runs a Makefile target against the private engine, as a user would
// with DOCKER_HOST set.
func (x *env) make(args ...string) {
	x.t.Helper()
	start := time.Now()
	cmd := exec.Command("make", append([]string{"-C", x.root, "--no-print-directory"}, args...)...)
	cmd.Env = x.environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		x.t.Fatalf("make %s: %v\n%s\ndockerd log:\n%s", strings.Join(args, " "), err, out, x.e.LogTail(30))
	}
	x.t.Logf("make %s: %v", args[0], time.Since(start).Round(time.Millisecond))
}

func (x *env) docker(args ...string) string {
	x.t.Helper()
	return x.e.MustDocker(x.t, args...)
}

func (x *env) pluginID(name string) string {
	return x.docker("plugin", "inspect", "-f", "{{.Id}}", name)
}

// pluginPid finds the plugin's process: its cgroup path names the plugin ID.
func pluginPid(id string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !bytes.HasPrefix(cmdline, []byte("/usr/bin/stowage\x00serve")) {
			continue
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if bytes.Contains(cg, []byte(id)) {
			return pid
		}
	}
	return 0
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type volInspect struct {
	Name, Driver, Mountpoint string
	Status                   map[string]interface{}
}

func (x *env) volInspect(name string) volInspect {
	x.t.Helper()
	var v []volInspect
	if err := json.Unmarshal([]byte(x.docker("volume", "inspect", name)), &v); err != nil || len(v) != 1 {
		x.t.Fatalf("volume inspect %s: %v", name, err)
	}
	return v[0]
}

func setup(t *testing.T) *env {
	engine.RequireRoot(t)
	for _, tool := range []string{"make", "tar", "debootstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install -y %s", tool, tool)
		}
	}
	x := &env{t: t, e: engine.Start(t, engine.Options{Name: "managed"}), root: repoRoot(t)}
	x.make("base-image")
	return x
}

func TestManagedPluginLifecycle(t *testing.T) {
	x := setup(t)
	name := daemon.RandomName("stwp")
	plugDir := "build/plugin-" + name
	t.Cleanup(func() { os.RemoveAll(filepath.Join(x.root, plugDir)) })
	build := []string{"plugin", "PLUGIN_NAME=" + name, "PLUGIN_TAG=latest", "PLUGIN_DIR=" + plugDir, "DOCKER_BUILD_FLAGS=--network none"}
	x.make(build...)
	data := t.TempDir()
	x.docker("plugin", "set", name, "data.source="+data)
	x.make("enable", "PLUGIN_NAME="+name, "PLUGIN_TAG=latest")
	t.Cleanup(func() { x.e.Docker("plugin", "disable", "-f", name); x.e.Docker("plugin", "rm", "-f", name) })
	id := x.pluginID(name)

	// Create, two containers at once, inspect.
	x.docker("volume", "create", "-d", name, "-o", "mode=0777", "mv")
	x.docker("run", "-d", "--name", "holder", "--network", "none", "-v", "mv:/data", x.e.Image(),
		"sh", "-c", "echo from-holder > /data/f; sleep 600")
	waitFor(t, "holder's write", 10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(data, "dir", "mv", "f"))
		return string(b) == "from-holder\n"
	})
	if out := x.docker("run", "--rm", "--network", "none", "-v", "mv:/v", x.e.Image(), "cat", "/v/f"); out != "from-holder" {
		t.Fatalf("second container read %q", out)
	}
	vi := x.volInspect("mv")
	if vi.Driver != name+":latest" && vi.Driver != name {
		t.Errorf("volume driver %q", vi.Driver)
	}
	if vi.Status["backend"] != "dir" || vi.Status["mounts"] != float64(1) {
		t.Errorf("volume status %v", vi.Status)
	}
	// The data lives on the settable mount, the exposure under the propagated mount.
	exposed := filepath.Join(x.e.DataRoot(), "plugins", id, "propagated-mount", "mv")
	if m, _ := mounttable.IsMountPoint(exposed); !m {
		t.Errorf("%s is not a mount point while a container holds mv", exposed)
	}

	// kill -9: Docker restarts the plugin, the ledger survives, and the
	// holder's Unmount is accepted.
	pid := pluginPid(id)
	if pid == 0 {
		t.Fatal("cannot find the plugin's process")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "the plugin to be restarted", 60*time.Second, func() bool {
		p := pluginPid(id)
		return p != 0 && p != pid
	})
	waitFor(t, "the restarted plugin to answer", 30*time.Second, func() bool {
		_, _, err := x.e.Docker("volume", "inspect", "mv")
		return err == nil
	})
	if vi := x.volInspect("mv"); vi.Status["mounts"] != float64(1) {
		t.Errorf("after kill -9 the ledger says %v mounts, want 1", vi.Status["mounts"])
	}
	if out := x.docker("exec", "holder", "cat", "/data/f"); out != "from-holder" {
		t.Errorf("holder reads %q after the plugin restart", out)
	}
	x.docker("rm", "-f", "holder")
	waitFor(t, "the Unmount after the restart", 30*time.Second, func() bool {
		return x.volInspect("mv").Status["mounts"] == float64(0)
	})
	if m, _ := mounttable.IsMountPoint(exposed); m {
		t.Errorf("%s still mounted after the last unmount", exposed)
	}
	if strings.Contains(x.e.LogTail(200), "VolumeDriver.Unmount") {
		t.Errorf("dockerd logged an Unmount failure:\n%s", x.e.LogTail(40))
	}

	// docker plugin set: LOG_LEVEL=debug makes the plugin log each Get.
	x.docker("plugin", "disable", "-f", name)
	x.docker("plugin", "set", name, "LOG_LEVEL=debug")
	x.docker("plugin", "enable", name)
	x.docker("volume", "inspect", "mv")
	waitFor(t, "debug lines of the plugin in dockerd's log", 10*time.Second, func() bool {
		for _, l := range strings.Split(x.e.LogTail(300), "\n") {
			if strings.Contains(l, "plugin="+id) && strings.Contains(l, "level=debug") && strings.Contains(l, "op=Get") {
				return true
			}
		}
		return false
	})

	// Upgrade: disable -f, rm, create, enable. The volume and its data stay.
	x.docker("plugin", "disable", "-f", name)
	x.docker("plugin", "rm", "-f", name) // -f: Docker refuses while volumes exist
	x.make(build...)
	x.docker("plugin", "set", name, "data.source="+data)
	x.make("enable", "PLUGIN_NAME="+name, "PLUGIN_TAG=latest")
	if out := x.docker("volume", "ls", "-q"); !strings.Contains(out, "mv") {
		t.Fatalf("after the upgrade docker volume ls shows %q", out)
	}
	if out := x.docker("run", "--rm", "--network", "none", "-v", "mv:/v", x.e.Image(), "cat", "/v/f"); out != "from-holder" {
		t.Fatalf("after the upgrade the volume holds %q", out)
	}
	x.docker("volume", "rm", "mv")
	if _, err := os.Stat(filepath.Join(data, "dir", "mv")); !os.IsNotExist(err) {
		t.Errorf("volume rm left its data: %v", err)
	}
}

// TestInstallFromRegistry: make push to Debian's docker-registry on the
// engine's loopback, then docker plugin install, as users get it.
func TestInstallFromRegistry(t *testing.T) {
	if _, err := exec.LookPath("docker-registry"); err != nil {
		t.Fatal("docker-registry not found: apt-get install -y docker-registry")
	}
	x := setup(t)
	netns := engineNetns(t, x.e)
	// unshare --net leaves lo down; the registry and dockerd talk over it.
	if out, err := exec.Command("nsenter", "--net="+netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in the engine's netns: %v %s", err, out)
	}
	port := 20000 + rand.Intn(20000)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "store"), addr)), 0o644)
	reg := exec.Command("nsenter", "--net="+netns, "docker-registry", "serve", cfg)
	var rlog bytes.Buffer
	reg.Stdout, reg.Stderr = &rlog, &rlog
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })

	img := addr + "/stowage"
	plugDir := "build/plugin-" + daemon.RandomName("reg")
	t.Cleanup(func() { os.RemoveAll(filepath.Join(x.root, plugDir)) })
	x.make("plugin", "PLUGIN_NAME="+img, "PLUGIN_TAG=t1", "PLUGIN_DIR="+plugDir, "DOCKER_BUILD_FLAGS=--network none")
	waitFor(t, "the registry", 10*time.Second, func() bool {
		out, _ := exec.Command("nsenter", "--net="+netns, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+strconv.Itoa(port)).CombinedOutput()
		return len(out) == 0
	})
	x.make("push", "PLUGIN_NAME="+img, "PLUGIN_TAG=t1")
	x.docker("plugin", "rm", img+":t1")

	data := t.TempDir()
	x.docker("plugin", "install", "--grant-all-permissions", "--alias", "stwreg", img+":t1", "data.source="+data)
	t.Cleanup(func() { x.e.Docker("plugin", "disable", "-f", "stwreg"); x.e.Docker("plugin", "rm", "-f", "stwreg") })
	x.docker("volume", "create", "-d", "stwreg", "rv")
	x.docker("run", "--rm", "--network", "none", "-v", "rv:/d", x.e.Image(), "sh", "-c", "echo installed > /d/f")
	if b, err := os.ReadFile(filepath.Join(data, "dir", "rv", "f")); err != nil || string(b) != "installed\n" {
		t.Fatalf("data of the installed plugin's volume: %q %v\nregistry log:\n%s", b, err, rlog.String())
	}
	x.docker("volume", "rm", "rv")
}

func engineNetns(t *testing.T, e *engine.Engine) string {
	t.Helper()
	dir := filepath.Dir(strings.TrimPrefix(e.Host(), "unix://"))
	b, err := os.ReadFile(filepath.Join(dir, "docker.pid"))
	if err != nil {
		t.Fatalf("engine pid file: %v", err)
	}
	return "/proc/" + strings.TrimSpace(string(b)) + "/ns/net"
}
