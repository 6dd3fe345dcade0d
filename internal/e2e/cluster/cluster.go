// Package cluster builds several machines on one for e2e tests: each host is
// a network namespace wired to a test-made bridge, and a node is a host with
// its own mount and UTS namespace, its own dockerd (internal/e2e/engine) and
// its own stowage (internal/e2e/daemon). Nodes can form a Docker Swarm.
//
// Everything lives in namespaces the test creates: the bridge sits in a hub
// namespace of its own, addresses come from Subnet, and nothing is added to
// the caller's network namespace. Cleanup kills every process left in those
// namespaces, then removes the namespaces, their veths and mounts, even when
// the test failed.
package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
	"github.com/stowage/stowage/internal/e2e/ns"
)

// Subnet holds every address of a cluster; it exists only inside the
// cluster's own namespaces, so clusters of parallel tests may reuse it.
const (
	Subnet     = "192.168.213.0/24"
	subnetBase = "192.168.213."
	prefixLen  = "/24"
	maxHosts   = 200
)

// Cluster is a bridge in a hub namespace plus the hosts wired to it.
type Cluster struct {
	label string // stwc-XXXXXX: directory and namespace names
	dir   string // /tmp/LABEL, a private bind mount of itself
	hub   string // hub netns name

	mu    sync.Mutex
	hosts []*Host

	cleanOnce sync.Once
	cleanErr  error
}

// Host is one network namespace on the cluster's bridge.
type Host struct {
	Name  string // short name given by the test
	Addr  string // IPv4 address on the bridge, no prefix length
	NS    ns.Set // Net only, for a plain host; Net+Mount+UTS for a node
	netns string // name under /run/netns
	hub   string // the hub's netns, where peer is
	peer  string // the hub's end of the host's veth: its "switch port"
}

// Node is a host with its own mounts, hostname, dockerd and (after Serve)
// stowage.
type Node struct {
	*Host
	Hostname   string // the node's hostname: Swarm's node.hostname
	PluginsDir string // bound over /run/docker/plugins inside the node
	Engine     *engine.Engine
	Stowage    *daemon.Daemon // nil until Serve
}

// New makes an empty cluster: a hub namespace with a bridge.
func New(t testing.TB) *Cluster {
	t.Helper()
	engine.RequireRoot(t)
	for _, tool := range []struct{ bin, pkg string }{{"ip", "iproute2"}, {"nsenter", "util-linux"}, {"unshare", "util-linux"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			t.Fatalf("cannot build a test cluster: %s not found; install it: apt-get install -y %s", tool.bin, tool.pkg)
		}
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{label: "stwc-" + hex.EncodeToString(b)}
	c.dir, c.hub = "/tmp/"+c.label, c.label+"-hub"
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.cleanup(); err != nil {
			t.Errorf("cluster %s cleanup: %v", c.label, err)
		}
	})
	// A namespace can be pinned to a file only on a private mount: on a
	// shared one the pin would propagate into the namespace itself.
	if err := unix.Mount(c.dir, c.dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", c.dir, err)
	}
	if err := unix.Mount("", c.dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make %s private: %v", c.dir, err)
	}
	c.must(t, "ip", "netns", "add", c.hub)
	c.must(t, "ip", "-n", c.hub, "link", "add", "br0", "type", "bridge")
	c.must(t, "ip", "-n", c.hub, "link", "set", "br0", "up")
	return c
}

// Dir is a directory of the cluster's own, removed at cleanup: a place for
// a test's keys and served files.
func (c *Cluster) Dir() string { return c.dir }

// Host adds a network namespace on the bridge with the next free address.
func (c *Cluster) Host(t testing.TB, name string) *Host {
	t.Helper()
	c.mu.Lock()
	n := len(c.hosts) + 1
	if n > maxHosts {
		c.mu.Unlock()
		t.Fatalf("cluster %s: too many hosts", c.label)
	}
	h := &Host{Name: name, Addr: fmt.Sprintf("%s%d", subnetBase, n+1), netns: fmt.Sprintf("%s-%d", c.label, n),
		hub: c.hub, peer: fmt.Sprintf("v%d", n)}
	h.NS.Net = "/run/netns/" + h.netns
	c.hosts = append(c.hosts, h)
	c.mu.Unlock()

	c.must(t, "ip", "netns", "add", h.netns)
	c.must(t, "ip", "-n", c.hub, "link", "add", h.peer, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
	c.must(t, "ip", "-n", c.hub, "link", "set", h.peer, "master", "br0", "up")
	c.must(t, "ip", "-n", h.netns, "link", "set", "lo", "up")
	c.must(t, "ip", "-n", h.netns, "addr", "add", h.Addr+prefixLen, "dev", "eth0")
	c.must(t, "ip", "-n", h.netns, "link", "set", "eth0", "up")
	return h
}

// Node adds a host with its own mount and UTS namespaces and starts a
// dockerd in it. Inside the node, /run/docker/plugins is a directory of
// its own, so each node's engine finds only its own stowage.
func (c *Cluster) Node(t testing.TB, name string) *Node {
	t.Helper()
	h := c.Host(t, name)
	n := &Node{Host: h, Hostname: c.label + "-" + name}
	base := filepath.Join(c.dir, h.netns)
	n.PluginsDir = base + "-plugins"
	h.NS.Mount, h.NS.UTS = base+"-mnt", base+"-uts"
	for _, f := range []string{h.NS.Mount, h.NS.UTS} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(n.PluginsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The mount point must exist before the namespace copies the tree.
	if err := os.MkdirAll("/run/docker/plugins", 0o755); err != nil {
		t.Fatal(err)
	}
	c.must(t, "unshare", "--uts="+h.NS.UTS, "--", "hostname", n.Hostname)
	c.must(t, "unshare", "--mount="+h.NS.Mount, "--propagation", "private", "--", "true")
	c.dropForeignMounts(t, h.NS.Mount)
	c.must(t, "nsenter", "--mount="+h.NS.Mount, "--", "mount", "--bind", n.PluginsDir, "/run/docker/plugins")
	// No registry is reachable from a node: a Swarm task must run the image
	// the node has instead of trying to pull (moby's own Swarm tests do this).
	n.Engine = engine.Start(t, engine.Options{Name: name, NS: h.NS, Env: []string{"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"}})
	return n
}

// foreignPrefixes hold mounts of other tests and engines on this machine.
var foreignPrefixes = []string{"/tmp/", "/run/netns/", "/run/docker/", "/var/lib/docker/", "/run/containerd/"}

// dropForeignMounts detaches, inside a new mount namespace, the copies of
// other tests' and engines' mounts it was born with. Left there, a copy
// would keep their filesystems (and loop devices) alive until this cluster
// is gone, and this node's checks would see their mounts as its own.
func (c *Cluster) dropForeignMounts(t testing.TB, mnt string) {
	t.Helper()
	foreign := func() []string {
		out, err := exec.Command("nsenter", "--mount="+mnt, "--", "cat", "/proc/self/mountinfo").Output()
		if err != nil {
			t.Fatalf("mount table of %s: %v", mnt, err)
		}
		ms, err := mountinfo.GetMountsFromReader(bytes.NewReader(out), func(m *mountinfo.Info) (skip, stop bool) {
			if m.Mountpoint == c.dir || strings.HasPrefix(m.Mountpoint, c.dir+"/") {
				return true, false
			}
			for _, p := range foreignPrefixes {
				if strings.HasPrefix(m.Mountpoint, p) {
					return false, false
				}
			}
			return true, false
		})
		if err != nil {
			t.Fatal(err)
		}
		var mps []string
		for _, m := range ms {
			mps = append(mps, m.Mountpoint)
		}
		sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
		return mps
	}
	for round := 0; round < 5; round++ {
		mps := foreign()
		if len(mps) == 0 {
			return
		}
		// Errors show up in the next round.
		_ = exec.Command("nsenter", append([]string{"--mount=" + mnt, "--", "umount", "--lazy"}, mps...)...).Run()
	}
	t.Logf("cluster %s: foreign mounts left in a node: %v", c.label, foreign())
}

// Serve starts stowage inside the node; o.NS and o.PluginsDir are the node's.
func (n *Node) Serve(t testing.TB, o daemon.Options) *daemon.Daemon {
	t.Helper()
	o.NS, o.PluginsDir = n.NS, n.PluginsDir
	// As on a real node: stowage tells its engine it is there.
	if o.AnnounceTo == "" {
		o.AnnounceTo = n.Engine.Host()
	}
	n.Stowage = daemon.Start(t, o)
	return n.Stowage
}

// Docker runs the docker CLI against the node's engine; it fails the test
// on error and returns trimmed stdout.
func (n *Node) Docker(t testing.TB, args ...string) string {
	t.Helper()
	return n.Engine.MustDocker(t, args...)
}

// Command runs argv inside the node's (or host's) namespaces.
func (h *Host) Command(argv ...string) *exec.Cmd {
	a := h.NS.Argv(argv...)
	return exec.Command(a[0], a[1:]...)
}

// Unplug cuts the host off the bridge, as a pulled cable: its processes
// keep running and nothing tells its peers; their packets are dropped.
func (h *Host) Unplug(t testing.TB) { h.link(t, "down") }

// Plug undoes Unplug.
func (h *Host) Plug(t testing.TB) { h.link(t, "up") }

func (h *Host) link(t testing.TB, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "-n", h.hub, "link", "set", h.peer, state).CombinedOutput(); err != nil {
		t.Fatalf("host %s: link %s: %v: %s", h.Name, state, err, bytes.TrimSpace(out))
	}
}

// Swarm makes the first node a Swarm manager and joins the others as
// workers, each advertising its own address.
func (c *Cluster) Swarm(t testing.TB, nodes ...*Node) {
	t.Helper()
	if len(nodes) == 0 {
		t.Fatal("Swarm: no nodes")
	}
	began := time.Now()
	m := nodes[0]
	m.Docker(t, "swarm", "init", "--advertise-addr", m.Addr, "--listen-addr", m.Addr+":2377")
	token := m.Docker(t, "swarm", "join-token", "-q", "worker")
	for _, w := range nodes[1:] {
		w.Docker(t, "swarm", "join", "--token", token, "--advertise-addr", w.Addr, "--listen-addr", w.Addr+":2377", m.Addr+":2377")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := m.Docker(t, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
		ready := 0
		for _, l := range strings.Split(out, "\n") {
			if strings.HasSuffix(l, " Ready") {
				ready++
			}
		}
		if ready == len(nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("swarm: %d of %d nodes ready after 60s:\n%s", ready, len(nodes), out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("swarm of %d nodes ready in %v", len(nodes), time.Since(began).Round(time.Millisecond))
}

func (c *Cluster) must(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("cluster %s: %s: %v: %s", c.label, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
}

func (c *Cluster) cleanup() error {
	c.cleanOnce.Do(func() { c.cleanErr = c.teardown() })
	return c.cleanErr
}

// teardown runs after the engines' and daemons' own cleanups (t.Cleanup is
// last in, first out) and removes whatever they left.
func (c *Cluster) teardown() error {
	var errs []error
	c.mu.Lock()
	hosts := append([]*Host(nil), c.hosts...)
	c.mu.Unlock()
	// FUSE helpers run in their own session and outlive stowage; sshd and
	// anything a test started there live only in the namespace.
	for _, h := range hosts {
		if err := killAll(h.NS); err != nil {
			errs = append(errs, fmt.Errorf("host %s: %w", h.Name, err))
		}
	}
	// Unpinning the mount namespaces drops every mount made inside them.
	for _, h := range hosts {
		for _, f := range []string{h.NS.Mount, h.NS.UTS} {
			if f != "" {
				if err := unmountAll(f); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	for _, h := range hosts {
		if err := delNetns(h.netns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := delNetns(c.hub); err != nil {
		errs = append(errs, err)
	}
	if err := unmountAll(c.dir); err != nil {
		// Never RemoveAll across a mount.
		errs = append(errs, fmt.Errorf("%v; leaving %s in place", err, c.dir))
	} else if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs every process inside s until none is left.
func killAll(s ns.Set) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := s.Pids()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes survive SIGKILL: %v", pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// delNetns removes a named network namespace if it exists; its veth ends
// go with it.
func delNetns(name string) error {
	if _, err := os.Stat("/run/netns/" + name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// unmountAll detaches every mount at or below path (stacked ones too),
// deepest first.
func unmountAll(path string) error {
	for round := 0; ; round++ {
		ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(path))
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			return nil
		}
		if round == 10 {
			var mps []string
			for _, m := range ms {
				mps = append(mps, m.Mountpoint)
			}
			return fmt.Errorf("still mounted: %s", strings.Join(mps, ", "))
		}
		sort.Slice(ms, func(i, j int) bool { return len(ms[i].Mountpoint) > len(ms[j].Mountpoint) })
		for _, m := range ms {
			_ = unix.Unmount(m.Mountpoint, unix.MNT_DETACH) // errors show up in the next round
		}
	}
}
