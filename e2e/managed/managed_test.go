// Package managed tests stowage as a managed (v2) Docker plugin on real,
// private engines, as users run it:
//
//   - TestReadmeInstallOnFreshHost: the README's install lines, parsed from
//     README.md and run in order on an engine whose /var/lib is empty (its
//     own mount namespace), from a real registry with default settings; the
//     image backend's hard limit inside a container and an online resize;
//     docker plugin upgrade with running containers; then the README's
//     make plugin && make enable on a fresh /var/lib again, and the message
//     make enable gives when the data directory cannot be made.
//   - TestManagedPluginLifecycle: containers on every backend (dir, image,
//     tmpfs, bind, sshfs against an sshd in the engine's network namespace)
//     through a kill -9 of the plugin, docker plugin set, and a reinstall
//     (disable -f, rm -f, make plugin, make enable) while they keep running;
//     data, ledger, and docker volume rm afterwards.
//
// Cost: the Debian base image is built once per machine with debootstrap
// (a few minutes, cached in build/cache); after that this package takes
// about three minutes (four plugin builds, two engines).
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
	"github.com/stowage/stowage/internal/e2e/sshd"
	"github.com/stowage/stowage/internal/mounttable"
)

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

func setup(t *testing.T, opts engine.Options) *env {
	engine.RequireRoot(t)
	for _, tool := range []string{"make", "tar", "debootstrap", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install -y %s", tool, tool)
		}
	}
	x := &env{t: t, e: engine.Start(t, opts), root: daemon.ModuleRoot(t)}
	x.make("base-image")
	return x
}

// hostDir is the engine's own directory (where docker.sock lives).
func (x *env) hostDir() string { return filepath.Dir(strings.TrimPrefix(x.e.Host(), "unix://")) }

func (x *env) enginePid() int {
	x.t.Helper()
	b, err := os.ReadFile(filepath.Join(x.hostDir(), "docker.pid"))
	if err != nil {
		x.t.Fatalf("engine pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		x.t.Fatalf("engine pid file: %v", err)
	}
	return pid
}

// pluginSocket is the plugin's socket on the host, where dockerd puts every
// plugin's whatever its --exec-root: /run/docker/plugins/ID/SOCKET, seen
// through the engine's root (it may have its own mount namespace) via a
// short symlink, since that path is too long for a unix socket address.
func (x *env) pluginSocket(id string) string {
	x.t.Helper()
	link := filepath.Join(os.TempDir(), daemon.RandomName("stws"))
	if err := os.Symlink(x.engineView(filepath.Join("/run/docker/plugins", id)), link); err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(func() { os.Remove(link) })
	return filepath.Join(link, "stowage.sock")
}

// inEngine runs argv in the engine's mount and network namespaces, as a
// user on that engine's host would, with DOCKER_HOST set.
func (x *env) inEngine(argv ...string) (string, error) {
	pid := strconv.Itoa(x.enginePid())
	// make runs from the repository, as the README assumes: -C, since a
	// working directory opened before nsenter's setns is unreachable after.
	if argv[0] == "make" {
		argv = append([]string{"make", "-C", x.root, "--no-print-directory"}, argv[1:]...)
	}
	cmd := exec.Command("nsenter", append([]string{"--mount=/proc/" + pid + "/ns/mnt", "--net=/proc/" + pid + "/ns/net", "--"}, argv...)...)
	cmd.Env = x.environ()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// readmeBlock returns the command lines of the first ```sh block after the
// line starting with marker in README.md: comments dropped, "a && b" split.
func readmeBlock(t *testing.T, root, marker string) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	at := -1
	for i, l := range lines {
		if strings.HasPrefix(l, marker) {
			at = i
			break
		}
	}
	if at < 0 {
		t.Fatalf("README.md has no line starting with %q", marker)
	}
	var cmds [][]string
	in := false
	for _, l := range lines[at+1:] {
		if !in {
			in = l == "```sh"
			continue
		}
		if l == "```" {
			return cmds
		}
		if c := strings.Index(l, "#"); c >= 0 {
			l = l[:c]
		}
		for _, part := range strings.Split(l, "&&") {
			if f := strings.Fields(part); len(f) > 0 {
				for _, w := range f {
					if strings.ContainsAny(w, "'\"\\$`|;<>") {
						t.Fatalf("README line %q needs a shell; keep the install lines to plain words", l)
					}
				}
				cmds = append(cmds, f)
			}
		}
	}
	t.Fatalf("no ```sh block after %q in README.md", marker)
	return nil
}

func subst(argv []string, from, to string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = strings.ReplaceAll(a, from, to)
	}
	return out
}

// freshVarLib gives the engine's mount namespace an empty /var/lib: a
// host that never had stowage (or anything else) installed.
func (x *env) freshVarLib() {
	x.t.Helper()
	x.inEngine("umount", "/var/lib") // a previous fresh one, if any
	if out, err := x.inEngine("mount", "-t", "tmpfs", "-o", "mode=0755,size=256m", "fresh-var-lib", "/var/lib"); err != nil {
		x.t.Fatalf("a fresh /var/lib for the engine: %v %s", err, out)
	}
	if _, err := os.Stat(x.engineView("/var/lib/docker-plugins")); !os.IsNotExist(err) {
		x.t.Fatalf("/var/lib/docker-plugins exists in the fresh engine's view: %v", err)
	}
}

// engineView is path as the engine's mount namespace sees it.
func (x *env) engineView(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", x.enginePid(), path)
}

// startRegistry runs Debian's docker-registry on the engine's loopback and
// returns its address.
func (x *env) startRegistry() (string, *bytes.Buffer) {
	t := x.t
	t.Helper()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		t.Fatal("docker-registry not found: apt-get install -y docker-registry")
	}
	netns := fmt.Sprintf("/proc/%d/ns/net", x.enginePid())
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
	waitFor(t, "the registry", 10*time.Second, func() bool {
		out, _ := exec.Command("nsenter", "--net="+netns, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+strconv.Itoa(port)).CombinedOutput()
		return len(out) == 0
	})
	return addr, &rlog
}

// TestReadmeInstallOnFreshHost runs README "Install" → "Managed plugin" as
// written, on an engine whose /var/lib is empty, with a plugin published to
// a registry; then the image backend's limit, resize and an upgrade with
// running containers; then README's make plugin && make enable, again on an
// empty /var/lib.
func TestReadmeInstallOnFreshHost(t *testing.T) {
	x := setup(t, engine.Options{Name: "fresh", OwnMountNS: true})
	x.freshVarLib()
	addr, rlog := x.startRegistry()

	// Publish two tags of the plugin, as a release would.
	repo := addr + "/stowage"
	plugDir := "build/plugin-" + daemon.RandomName("fresh")
	t.Cleanup(func() { os.RemoveAll(filepath.Join(x.root, plugDir)) })
	x.make("plugin", "PLUGIN_NAME="+repo, "PLUGIN_TAG=t1", "PLUGIN_DIR="+plugDir, "DOCKER_BUILD_FLAGS=--network none")
	x.make("push", "PLUGIN_NAME="+repo, "PLUGIN_TAG=t1")
	x.docker("plugin", "rm", repo+":t1")
	x.docker("plugin", "create", repo+":t2", filepath.Join(x.root, plugDir))
	x.make("push", "PLUGIN_NAME="+repo, "PLUGIN_TAG=t2")
	x.docker("plugin", "rm", repo+":t2")

	block := readmeBlock(t, x.root, "### Managed plugin")
	if len(block) < 3 || block[0][0] != "mkdir" || block[1][0] != "docker" || block[1][2] != "install" {
		t.Fatalf("README's managed-plugin block changed shape (mkdir, docker plugin install, ...): %q", block)
	}
	plug := repo + ":t1"
	run := func(argv []string) string {
		t.Helper()
		argv = subst(argv, "REGISTRY/stowage:TAG", plug)
		start := time.Now()
		out, err := x.inEngine(argv...)
		t.Logf("README %q: %v", strings.Join(argv, " "), time.Since(start).Round(time.Millisecond))
		if err != nil {
			t.Fatalf("README line %q: %v\n%s\nregistry log:\n%s\ndockerd log:\n%s", strings.Join(argv, " "), err, out, rlog, x.e.LogTail(30))
		}
		return out
	}

	// Without the mkdir, what the README says a user meets: runc's message,
	// and the plugin installed but disabled.
	if out, err := x.inEngine(subst(block[1], "REGISTRY/stowage:TAG", plug)...); err == nil || !strings.Contains(out, "/var/lib/docker-plugins/stowage") || !strings.Contains(out, "no such file or directory") {
		t.Fatalf("install without the data directory: err %v, output %s; README describes another failure", err, out)
	}
	if got := x.docker("plugin", "inspect", "-f", "{{.Enabled}}", plug); got != "false" {
		t.Fatalf("after the failed install the plugin's Enabled is %s; README says it is left installed but disabled", got)
	}
	x.docker("plugin", "rm", plug)

	// The README, line by line.
	for _, argv := range block {
		run(argv)
	}
	t.Cleanup(func() { x.e.Docker("plugin", "disable", "-f", plug); x.e.Docker("plugin", "rm", "-f", plug) })
	data := "/var/lib/docker-plugins/stowage"
	if fi, err := os.Stat(x.engineView(data)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory after the README's mkdir: %v %v", fi, err)
	}
	if out := x.docker("run", "--rm", "--network", "none", "-v", "appdata:/d", x.e.Image(), "sh", "-c", "stat -c %a /d; echo pasted > /d/f"); out != "750" {
		t.Errorf("appdata's mode in a container is %q, want 750 (-o mode=0750)", out)
	}
	if b, err := os.ReadFile(x.engineView(data + "/dir/appdata/f")); err != nil || string(b) != "pasted\n" {
		t.Fatalf("appdata's file in the default data.source: %q %v", b, err)
	}

	// image is on by default: a hard limit inside a container; a mounted
	// xfs grows online; a mounted ext4 does not (no CAP_SYS_RESOURCE), and
	// the error says what to do.
	id := x.pluginID(plug)
	lim, grow := daemon.RandomName("lim"), daemon.RandomName("grow")
	x.docker("volume", "create", "-d", plug, "-o", "backend=image", "-o", "size=16M", lim)
	x.docker("volume", "create", "-d", plug, "-o", "backend=image", "-o", "fs=xfs", "-o", "size=300M", grow)
	x.docker("run", "-d", "--name", "imgholder", "--network", "none", "-v", lim+":/d", "-v", grow+":/g", x.e.Image(), "sleep", "600")
	t.Cleanup(func() { x.e.Docker("rm", "-f", "imgholder") })
	if out, errOut, err := x.e.Docker("exec", "imgholder", "dd", "if=/dev/zero", "of=/d/big", "bs=1M", "count=24"); err == nil || !strings.Contains(out+errOut, "No space left on device") {
		t.Fatalf("writing 24M into a 16M image volume: err %v, output %s %s; want ENOSPC", err, out, errOut)
	}
	bin := os.Getenv("STOWAGE_BIN")
	if bin == "" {
		t.Fatal("STOWAGE_BIN is not set: run through make e2e, or set it to build/stowage")
	}
	sock := x.pluginSocket(id)
	resize := func(vol, size string) (string, error) {
		out, err := exec.Command(bin, "resize", "--socket", sock, vol, size).CombinedOutput()
		return string(out), err
	}
	if out, err := resize(lim, "48M"); err == nil || !strings.Contains(out, "stop the containers using the volume and resize again") {
		t.Errorf("resize of a mounted ext4 volume in the plugin: err %v, output %s; want a refusal naming the offline way", err, out)
	}
	kb := func() int {
		out := x.docker("exec", "imgholder", "df", "-k", "/g")
		f := strings.Fields(strings.Split(out, "\n")[len(strings.Split(out, "\n"))-1])
		n, _ := strconv.Atoi(f[1])
		return n
	}
	before := kb()
	if out, err := resize(grow, "400M"); err != nil {
		t.Fatalf("online resize of a mounted xfs volume in the plugin: %v\n%s", err, out)
	}
	if after := kb(); after < before+90*1024 {
		t.Errorf("the container sees /g at %d KiB after growing 300M to 400M (was %d)", after, before)
	}
	x.docker("exec", "imgholder", "sh", "-c", "rm /d/big; dd if=/dev/zero of=/d/big bs=1M count=8 2>/dev/null; echo kept > /d/f; sync")

	// README "Upgrade": disable -f, upgrade, enable, while containers run.
	x.docker("run", "-d", "--name", "dirholder", "--network", "none", "-v", "appdata:/d", x.e.Image(), "sleep", "600")
	t.Cleanup(func() { x.e.Docker("rm", "-f", "dirholder") })
	x.docker("plugin", "disable", "-f", plug)
	x.docker("plugin", "upgrade", "--grant-all-permissions", plug, repo+":t2")
	x.docker("plugin", "enable", plug)
	for c, want := range map[string]string{"imgholder": "kept", "dirholder": "pasted"} {
		if out := x.docker("exec", c, "cat", "/d/f"); out != want {
			t.Errorf("%s reads %q after the upgrade, want %q", c, out, want)
		}
	}
	// A new container gets the very filesystem the running one holds (its
	// loop device found again, not the image attached twice).
	if out := x.docker("run", "--rm", "--network", "none", "-v", lim+":/v", x.e.Image(), "sh", "-c", "cat /v/f; wc -c < /v/big"); out != "kept\n8388608" {
		t.Errorf("a new container on %s after the upgrade reads %q, want kept and the 8M file", lim, out)
	}
	if n := len(strings.Fields(loopsFor("/image/" + lim + "/disk.img"))); n != 1 {
		t.Errorf("%d loop devices back %s's image after the upgrade, want 1", n, lim)
	}
	for _, v := range []string{lim, grow, "appdata"} {
		if vi := x.volInspect(v); vi.Status["mounts"] != float64(1) {
			t.Errorf("after the upgrade %s's ledger counts %v mounts, want 1 (its running container)", v, vi.Status["mounts"])
		}
	}
	x.docker("rm", "-f", "imgholder", "dirholder")
	for _, v := range []string{lim, grow, "appdata"} {
		waitFor(t, v+"'s Unmount", 30*time.Second, func() bool { return x.volInspect(v).Status["mounts"] == float64(0) })
		x.docker("volume", "rm", v)
	}
	for _, p := range []string{data + "/image/" + lim, data + "/image/" + grow, data + "/dir/appdata"} {
		if _, err := os.Stat(x.engineView(p)); !os.IsNotExist(err) {
			t.Errorf("volume rm left %s: %v", p, err)
		}
	}
	if l := loopsFor("/image/" + lim + "/disk.img"); l != "" {
		t.Errorf("a loop device still backs the removed image: %s", l)
	}
	x.docker("plugin", "disable", plug)
	x.docker("plugin", "rm", plug)

	// README "Building it yourself": make plugin && make enable, with the
	// defaults, on a host without /var/lib/docker-plugins.
	x.freshVarLib()
	t.Cleanup(func() {
		x.e.Docker("plugin", "disable", "-f", "stowage:latest")
		x.e.Docker("plugin", "rm", "-f", "stowage:latest")
		os.RemoveAll(filepath.Join(x.root, "build", "plugin"))
	})
	var ran int
	for _, argv := range readmeBlock(t, x.root, "Building it yourself") {
		if argv[0] != "make" || (argv[1] != "plugin" && argv[1] != "enable") {
			continue
		}
		ran++
		// Documented for engines without a network, like this one.
		run(append(argv, "DOCKER_BUILD_FLAGS=--network none"))
	}
	if ran != 2 {
		t.Fatalf("README's build block has %d make plugin/enable lines, want 2", ran)
	}
	x.docker("volume", "create", "-d", "stowage:latest", "built")
	x.docker("run", "--rm", "--network", "none", "-v", "built:/d", x.e.Image(), "sh", "-c", "echo built > /d/f")
	if b, err := os.ReadFile(x.engineView(data + "/dir/built/f")); err != nil || string(b) != "built\n" {
		t.Fatalf("the built plugin's volume data in the default data.source: %q %v", b, err)
	}
	x.docker("volume", "rm", "built")

	// A data directory that cannot be made: make enable names the fix.
	x.docker("plugin", "disable", "stowage:latest")
	x.docker("plugin", "set", "stowage:latest", "data.source=/etc/hostname/stowage")
	out, err := x.inEngine("make", "enable")
	if err == nil || !strings.Contains(out, "mkdir -p -m 0700 /etc/hostname/stowage") || !strings.Contains(out, "docker plugin set stowage:latest data.source=") {
		t.Fatalf("make enable with an impossible data.source: err %v, output:\n%s\nwant the fix named", err, out)
	}
}

// loopsFor lists the loop devices whose backing file ends in suffix.
func loopsFor(suffix string) string {
	var out []string
	ents, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range ents {
		b, _ := os.ReadFile(p)
		if strings.HasSuffix(strings.TrimSpace(string(b)), suffix) {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	return strings.Join(out, " ")
}

// holder is a container that keeps a volume mounted, with the line it wrote.
type holder struct{ name, vol, backend, line string }

func TestManagedPluginLifecycle(t *testing.T) {
	x := setup(t, engine.Options{Name: "managed"})
	name := daemon.RandomName("stwp")
	plugDir := "build/plugin-" + name
	t.Cleanup(func() { os.RemoveAll(filepath.Join(x.root, plugDir)) })
	build := []string{"plugin", "PLUGIN_NAME=" + name, "PLUGIN_TAG=latest", "PLUGIN_DIR=" + plugDir, "DOCKER_BUILD_FLAGS=--network none"}
	x.make(build...)
	data := t.TempDir()
	// A host directory bind volumes adopt: it must lie under data.source,
	// the plugin's only host mount.
	shared := filepath.Join(data, "shared", "media")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(shared, "f"), []byte("host data\n"), 0o644)
	// An SSH server in the engine's network namespace, which the plugin
	// (network host) shares; its keys and known_hosts are the ssh mount.
	netns := fmt.Sprintf("/proc/%d/ns/net", x.enginePid())
	if out, err := exec.Command("nsenter", "--net="+netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in the engine's netns: %v %s", err, out)
	}
	srv := sshd.Start(t, sshd.Options{Prefix: []string{"nsenter", "--net=" + netns}, Port: 20000 + rand.Intn(20000)})
	settings := []string{"data.source=" + data, "BIND_ROOTS=/data/shared", "ssh.source=" + srv.Dir,
		"SSH_KEYS_DIR=/ssh/" + filepath.Base(srv.KeysDir), "SSH_KNOWN_HOSTS=/ssh/" + filepath.Base(srv.KnownHosts)}
	x.docker(append([]string{"plugin", "set", name}, settings...)...)
	x.make("enable", "PLUGIN_NAME="+name, "PLUGIN_TAG=latest")
	t.Cleanup(func() { x.e.Docker("plugin", "disable", "-f", name); x.e.Docker("plugin", "rm", "-f", name) })
	id := x.pluginID(name)

	// Create, two containers at once, inspect.
	x.docker("volume", "create", "-d", name, "-o", "mode=0777", "mv")
	x.docker("run", "-d", "--name", "holder", "--network", "none", "-v", "mv:/data", x.e.Image(),
		"sh", "-c", "echo from-holder > /data/f; sleep 600")
	t.Cleanup(func() { x.e.Docker("rm", "-f", "holder") })
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

	// kill -9: Docker restarts the plugin, the ledger survives, a new
	// container sees the holder's data (not an empty exposure directory),
	// and the holder's Unmount is accepted.
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
	if out := x.docker("run", "--rm", "--network", "none", "-v", "mv:/v", x.e.Image(), "cat", "/v/f"); out != "from-holder" {
		t.Errorf("a container started after the plugin restart reads %q, want the holder's data", out)
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

	// Every backend, each held by a running container from here on.
	img, tmp, bnd, ssh := daemon.RandomName("img"), daemon.RandomName("tmp"), daemon.RandomName("bnd"), daemon.RandomName("ssh")
	x.docker("volume", "create", "-d", name, "-o", "backend=image", "-o", "size=16M", img)
	x.docker("volume", "create", "-d", name, "-o", "backend=tmpfs", "-o", "size=8M", tmp)
	x.docker("volume", "create", "-d", name, "-o", "backend=bind", "-o", "path=/data/shared/media", bnd)
	remote := srv.Remote(t, "plug")
	x.docker("volume", "create", "-d", name, "-o", "backend=sshfs", "-o", "remote="+remote, "-o", "port="+strconv.Itoa(srv.Port), "-o", "identity="+srv.ClientKeyName, ssh)
	holders := []holder{{"h-dir", "mv", "dir", "dir-data"}, {"h-img", img, "image", "image-data"}, {"h-tmp", tmp, "tmpfs", "tmpfs-data"}, {"h-bnd", bnd, "bind", "bind-data"}, {"h-ssh", ssh, "sshfs", "sshfs-data"}}
	for _, h := range holders {
		x.docker("run", "-d", "--name", h.name, "--network", "none", "-v", h.vol+":/d", x.e.Image(), "sh", "-c", "echo "+h.line+" > /d/"+h.name+"; sleep 600")
		h := h
		t.Cleanup(func() { x.e.Docker("rm", "-f", h.name) })
	}
	for _, h := range holders {
		waitFor(t, h.name+"'s write", 10*time.Second, func() bool {
			out, _, _ := x.e.Docker("exec", h.name, "cat", "/d/"+h.name)
			return strings.TrimSpace(out) == h.line
		})
	}

	// docker plugin set (a disable -f and enable with all of them running):
	// LOG_LEVEL=debug makes the plugin log each Get.
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

	// Reinstall: disable -f, rm -f, make plugin, make enable, while every
	// holder keeps running.
	x.docker("plugin", "disable", "-f", name)
	x.docker("plugin", "rm", "-f", name) // -f: Docker refuses while volumes exist
	x.make(build...)
	x.docker(append([]string{"plugin", "set", name}, settings...)...)
	x.make("enable", "PLUGIN_NAME="+name, "PLUGIN_TAG=latest")
	if out := x.docker("volume", "ls", "-q"); !strings.Contains(out, "mv") || !strings.Contains(out, img) || !strings.Contains(out, tmp) || !strings.Contains(out, bnd) {
		t.Fatalf("after the reinstall docker volume ls shows %q", out)
	}
	for _, h := range holders {
		if h.backend == "sshfs" {
			// Its sshfs process died with the old plugin (a plugin's
			// processes share its fate): the running container gets
			// ENOTCONN, never another filesystem; the data is on the server.
			out, errOut, err := x.e.Docker("exec", h.name, "cat", "/d/"+h.name)
			if err == nil || !strings.Contains(out+errOut, "Transport endpoint is not connected") {
				t.Errorf("the sshfs holder after the reinstall: err %v, %q %q; want ENOTCONN", err, out, errOut)
			}
			os.WriteFile(filepath.Join(strings.SplitN(remote, ":", 2)[1], h.name), []byte(h.line+"\nmore\n"), 0o644)
		} else if out := x.docker("exec", h.name, "sh", "-c", "echo more >> /d/"+h.name+"; cat /d/"+h.name); out != h.line+"\nmore" {
			// The running container keeps its data and can still write.
			t.Errorf("%s (%s) reads %q after the reinstall", h.name, h.backend, out)
		}
		if vi := x.volInspect(h.vol); vi.Status["mounts"] != float64(1) {
			t.Errorf("after the reinstall %s's ledger counts %v mounts, want 1", h.vol, vi.Status["mounts"])
		}
		// A new container: the same data, except tmpfs, whose memory the
		// new plugin cannot reach: refused rather than an empty tmpfs.
		out, errOut, err := x.e.Docker("run", "--rm", "--name", "probe-"+h.name, "--network", "none", "-v", h.vol+":/v", x.e.Image(), "cat", "/v/"+h.name)
		x.e.Docker("rm", "-f", "probe-"+h.name) // a container whose start failed may be left
		if h.backend == "tmpfs" {
			if err == nil || !strings.Contains(errOut, "stop those containers first") {
				t.Errorf("a new container on the held tmpfs %s after the reinstall: err %v, %q %q; want a refusal", h.vol, err, out, errOut)
			}
			continue
		}
		if err != nil || strings.TrimSpace(out) != h.line+"\nmore" {
			t.Errorf("a new container on %s (%s) after the reinstall: %q %v %s", h.vol, h.backend, out, err, errOut)
		}
	}
	if n := len(strings.Fields(loopsFor("/image/" + img + "/disk.img"))); n != 1 {
		t.Errorf("%d loop devices back %s's image after the reinstall, want 1", n, img)
	}

	// The containers stop: the ledger empties, docker volume rm works.
	for _, h := range holders {
		x.docker("rm", "-f", h.name)
	}
	for _, h := range holders {
		waitFor(t, h.vol+"'s Unmount", 30*time.Second, func() bool { return x.volInspect(h.vol).Status["mounts"] == float64(0) })
	}
	// The tmpfs mounts again once its old holder is gone: fresh and empty.
	if out := x.docker("run", "--rm", "--network", "none", "-v", tmp+":/v", x.e.Image(), "ls", "-A", "/v"); out != "" {
		t.Errorf("the tmpfs after its holders stopped holds %q, want a fresh empty one", out)
	}
	for _, h := range holders {
		x.docker("volume", "rm", h.vol)
	}
	for _, p := range []string{"dir/mv", "image/" + img, "tmpfs/" + tmp, "sshfs/" + ssh} {
		if _, err := os.Stat(filepath.Join(data, p)); !os.IsNotExist(err) {
			t.Errorf("volume rm left %s: %v", p, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(shared, "h-bnd")); err != nil || string(b) != "bind-data\nmore\n" {
		t.Errorf("the bind volume's host data after volume rm: %q %v; it must be kept", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(strings.SplitN(remote, ":", 2)[1], "h-ssh")); err != nil || !strings.HasPrefix(string(b), "sshfs-data\n") {
		t.Errorf("the sshfs volume's remote data after volume rm: %q %v; it must be kept", b, err)
	}
	if l := loopsFor("/image/" + img + "/disk.img"); l != "" {
		t.Errorf("a loop device still backs the removed image: %s", l)
	}
	if ents, _ := os.ReadDir(filepath.Join(x.e.DataRoot(), "plugins", x.pluginID(name), "propagated-mount")); len(ents) != 0 {
		t.Errorf("exposure points left after every volume is gone: %v", ents)
	}
	if strings.Contains(x.e.LogTail(400), "VolumeDriver.Unmount") {
		t.Errorf("dockerd logged an Unmount failure:\n%s", x.e.LogTail(40))
	}
}
