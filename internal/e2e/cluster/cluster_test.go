package cluster

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// TestNodesAreSeparateAndCleanedUp builds two nodes and a plain host, checks
// that each node has its own network, hostname and /run/docker/plugins, and
// that after cleanup nothing of them is left and the caller's network
// namespace never changed.
func TestNodesAreSeparateAndCleanedUp(t *testing.T) {
	linksBefore := links(t)
	var c *Cluster
	var a, b *Node
	var sleeper *exec.Cmd
	// Another test's mount, made before the nodes: they must not keep a copy.
	foreign, err := os.MkdirTemp("", "stwc-foreign-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(foreign, 0); err != nil {
			t.Errorf("unmount %s: %v", foreign, err)
		}
		os.Remove(foreign)
	})
	t.Run("build", func(t *testing.T) {
		c = New(t)
		a, b = c.Node(t, "a"), c.Node(t, "b")
		h := c.Host(t, "srv")
		if a.Addr == b.Addr || a.Addr == h.Addr {
			t.Fatalf("addresses not distinct: %s %s %s", a.Addr, b.Addr, h.Addr)
		}
		for _, n := range []*Node{a, b} {
			if got := n.Docker(t, "info", "--format", "{{.Name}}"); got != n.Hostname {
				t.Errorf("node %s: engine hostname %q, want %q", n.Name, got, n.Hostname)
			}
			// The engine runs inside the node: it sees the node's address.
			out, err := n.Command("ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
			if err != nil || !strings.Contains(string(out), " "+n.Addr+"/") {
				t.Errorf("node %s eth0: %v %s", n.Name, err, out)
			}
			// Each node's plugin directory is its own.
			marker := filepath.Join(n.PluginsDir, "marker-"+n.Name)
			if err := os.WriteFile(marker, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := n.Command("grep", "-c", " "+foreign+" ", "/proc/self/mountinfo").CombinedOutput(); strings.TrimSpace(string(out)) != "0" {
				t.Errorf("node %s holds a copy of another test's mount %s: %v %s", n.Name, foreign, err, out)
			}
			out, err = n.Command("ls", "/run/docker/plugins").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "marker-"+n.Name {
				t.Errorf("node %s /run/docker/plugins: %v %q", n.Name, err, out)
			}
		}
		// Left running on purpose: cleanup must kill what a test started.
		sleeper = h.Command("sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		// Joining needs the bridge to carry traffic between the nodes.
		c.Swarm(t, a, b)
		if out := a.Docker(t, "node", "ls", "--format", "{{.Hostname}}"); !strings.Contains(out, b.Hostname) {
			t.Errorf("node ls on a: %q", out)
		}
	})
	if c == nil {
		t.Fatal("no cluster")
	}
	if ns, _ := filepath.Glob("/run/netns/" + c.label + "*"); len(ns) > 0 {
		t.Errorf("network namespaces left: %v", ns)
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(c.dir)); len(ms) > 0 {
		t.Errorf("mounts left below %s: %d", c.dir, len(ms))
	}
	if _, err := os.Stat(c.dir); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", c.dir, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Errorf("a process started in a host outlived cleanup: pid %d", sleeper.Process.Pid)
		_ = sleeper.Process.Kill()
	}
	if after := links(t); after != linksBefore {
		t.Errorf("the caller's network namespace changed:\nbefore %s\nafter  %s", linksBefore, after)
	}
}

// links names the interfaces of the caller's network namespace.
func links(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return strings.Join(names, " ")
}
