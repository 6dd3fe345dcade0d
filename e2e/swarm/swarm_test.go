// Package swarm proves stowage's shared volumes on a real two-node Docker
// Swarm: two engines in namespaces of their own (internal/e2e/cluster), each
// with its own stowage serving only the sshfs backend, and an sshd in a third
// namespace as the storage server. A service's task moves between the nodes
// and finds the same bytes; a dead server fails writes quickly without
// stalling the daemon; a killed stowage does not take a running
// container's data away.
package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/cluster"
	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

// driver is the plugin name on every node: each node has its own
// /run/docker/plugins, so the name a user would pick is free.
const driver = "stowage"

type env struct {
	c    *cluster.Cluster
	a, b *cluster.Node
	srv  *server
}

// TestSwarm runs every scenario on one cluster: building it is most of the
// suite's time.
func TestSwarm(t *testing.T) {
	began := time.Now()
	x := &env{c: cluster.New(t)}
	x.srv = startServer(t, x.c)
	x.a, x.b = x.c.Node(t, "a"), x.c.Node(t, "b")
	for _, n := range []*cluster.Node{x.a, x.b} {
		// Nothing lists volumes on the nodes: dockerd finds a legacy plugin
		// only when something names it, and Swarm schedules a task only on
		// nodes whose engine has, so every task below depends on stowage
		// announcing itself (--announce-to, the node's engine).
		n.Serve(t, daemon.Options{Name: driver, Args: x.srv.serveArgs()})
	}
	x.c.Swarm(t, x.a, x.b)
	t.Logf("cluster, sshd and swarm ready in %v", time.Since(began).Round(time.Millisecond))

	t.Run("TaskMovesBetweenNodes", x.taskMoves)
	t.Run("GlobalServiceSharesOneVolume", x.globalService)
	t.Run("NodeEngineRestartKeepsTheTaskData", x.engineRestart)
	t.Run("ServerKilledFailsWritesNotTheDaemon", func(t *testing.T) {
		x.serverFault(t, x.a, "killed", x.srv.kill, x.srv.restart, 10*time.Second)
	})
	// No FIN, no RST: only ssh's keep-alives notice.
	t.Run("ServerUnreachableFailsWritesNotTheDaemon", func(t *testing.T) {
		x.serverFault(t, x.b, "unplugged", x.srv.host.Unplug, x.srv.host.Plug, 30*time.Second)
	})
	t.Run("StowageKilledUnderRunningContainer", x.stowageKilled)
}

// taskMoves: a service writes on node A, its task moves to B and reads the
// same bytes, then back to A; removing the volume on both nodes leaves the
// remote data.
func (x *env) taskMoves(t *testing.T) {
	remote := x.srv.mkdir(t, "shared")
	// The first task writes the payload; every task records where it ran
	// and the checksum of what it found. As PID 1 it must handle SIGTERM
	// itself, or every move waits out the stop grace period.
	script := `h=$(hostname)
if [ ! -f /data/payload ]; then head -c 65536 /dev/urandom > /data/payload.tmp && mv /data/payload.tmp /data/payload || exit 3; fi
sha256sum /data/payload > /data/sum.$h.tmp && mv /data/sum.$h.tmp /data/sum.$h || exit 4
echo $h >> /data/visits || exit 5
trap "exit 0" TERM
sleep 3600 & wait`
	x.a.Docker(t, "service", "create", "--detach", "--name", "s", "--no-resolve-image",
		"--hostname", "{{.Node.Hostname}}",
		"--mount", x.srv.mountFlag("shared", "/data", remote),
		"--constraint", "node.hostname=="+x.a.Hostname,
		x.a.Engine.Image(), "sh", "-c", script)
	t.Cleanup(func() { x.a.Engine.Docker("service", "rm", "s") })

	payload := func() []byte {
		b, err := os.ReadFile(filepath.Join(remote, "payload"))
		if err != nil {
			t.Fatalf("payload on the server: %v", err)
		}
		return b
	}
	onA, notA := "node.hostname=="+x.a.Hostname, "node.hostname!="+x.a.Hostname
	steps := []struct {
		to      *cluster.Node
		rm, add string // the constraint change that sends the task there
	}{{x.a, "", ""}, {x.b, onA, notA}, {x.a, notA, onA}}
	var want []byte
	visits := []string{}
	for _, step := range steps {
		n := step.to
		sumFile := filepath.Join(remote, "sum."+n.Hostname)
		os.Remove(sumFile) // left by an earlier visit
		if step.add != "" {
			x.a.Docker(t, "service", "update", "--detach", "--no-resolve-image", "--constraint-rm", step.rm, "--constraint-add", step.add, "s")
		}
		x.waitTaskOn(t, "s", n)
		waitFor(t, 30*time.Second, "the task on "+n.Name+" to record its checksum", func() bool {
			_, err := os.Stat(sumFile)
			return err == nil
		})
		got := payload()
		if len(got) != 65536 {
			t.Fatalf("payload on the server has %d bytes, want 65536", len(got))
		}
		if want == nil {
			want = got
		} else if string(got) != string(want) {
			t.Fatalf("payload changed on the server after the task moved to %s", n.Name)
		}
		sum := sha256.Sum256(want)
		recorded, err := os.ReadFile(sumFile)
		if err != nil || !strings.HasPrefix(string(recorded), hex.EncodeToString(sum[:])+" ") {
			t.Fatalf("task on %s read other bytes than were written: recorded %q (%v), want sha256 %x", n.Name, recorded, err, sum)
		}
		// And through the node's engine, from the running task itself.
		c := x.taskContainer(t, n, "s")
		if out := n.Docker(t, "exec", c, "sha256sum", "/data/payload"); !strings.HasPrefix(out, hex.EncodeToString(sum[:])) {
			t.Fatalf("exec on %s: %q, want sha256 %x", n.Name, out, sum)
		}
		visits = append(visits, n.Hostname)
		waitFor(t, 10*time.Second, "visits to list "+n.Name, func() bool {
			b, _ := os.ReadFile(filepath.Join(remote, "visits"))
			return strings.Join(strings.Fields(string(b)), ",") == strings.Join(visits, ",")
		})
		// The node the task left has unmounted its copy of the volume.
		for _, m := range []*cluster.Node{x.a, x.b} {
			if m != n {
				waitFor(t, 10*time.Second, "the volume to be unmounted on "+m.Name, func() bool { return len(sshfsMounts(t, m)) == 0 },
					func() string { return fmt.Sprint(sshfsMounts(t, m)) })
			}
		}
		// Docker shows the volume as cluster-wide: the driver said global.
		if v := n.Docker(t, "volume", "inspect", "--format", "{{.Driver}} {{.Scope}}", "shared"); v != driver+" global" {
			t.Errorf("volume on %s: driver and scope %q, want %q", n.Name, v, driver+" global")
		}
		t.Logf("task runs on %s and reads the same %d bytes", n.Name, len(want))
	}

	// Each move took one task: none failed or was rejected on the way.
	if ps := x.a.Docker(t, "service", "ps", "--format", "{{.Node}} {{.CurrentState}} {{.Error}}", "s"); strings.Count(ps, "\n") != len(steps)-1 ||
		strings.Contains(ps, "Failed") || strings.Contains(ps, "Rejected") {
		t.Errorf("service s tasks, want %d and none failed:\n%s", len(steps), ps)
	}
	x.a.Docker(t, "service", "rm", "s")
	for _, n := range []*cluster.Node{x.a, x.b} {
		waitFor(t, 30*time.Second, "the service's containers to go on "+n.Name, func() bool {
			return n.Docker(t, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name=s") == ""
		})
		n.Docker(t, "volume", "rm", "shared")
		if out := n.Docker(t, "volume", "ls", "-q"); strings.Contains(out, "shared") {
			t.Errorf("volume still listed on %s after rm: %q", n.Name, out)
		}
		x.noSSHFSMounts(t, n)
	}
	// Remove forgets the volume; the data on the server stays.
	if string(payload()) != string(want) {
		t.Fatal("payload on the server changed by docker volume rm")
	}
	for _, f := range []string{"visits", "sum." + x.a.Hostname, "sum." + x.b.Hostname} {
		if _, err := os.Stat(filepath.Join(remote, f)); err != nil {
			t.Errorf("docker volume rm deleted remote data: %v", err)
		}
	}
}

// globalService: a task on every node at once, each mounting the same
// remote directory through its own node's stowage: each sees what the
// other wrote.
func (x *env) globalService(t *testing.T) {
	remote := x.srv.mkdir(t, "global")
	x.a.Docker(t, "service", "create", "--detach", "--name", "g", "--mode", "global", "--no-resolve-image",
		"--hostname", "{{.Node.Hostname}}",
		"--mount", x.srv.mountFlag("everywhere", "/data", remote),
		x.a.Engine.Image(), "sh", "-c", `echo "written on $(hostname)" > /data/from.$(hostname) || exit 3
trap "exit 0" TERM
sleep 3600 & wait`)
	t.Cleanup(func() { x.a.Engine.Docker("service", "rm", "g") })
	nodes := []*cluster.Node{x.a, x.b}
	for _, n := range nodes {
		waitFor(t, 60*time.Second, "the task on "+n.Name+" to write", func() bool {
			_, err := os.Stat(filepath.Join(remote, "from."+n.Hostname))
			return err == nil
		}, func() string { return x.a.Docker(t, "service", "ps", "--no-trunc", "g") })
	}
	for _, n := range nodes {
		c := x.taskContainer(t, n, "g")
		for _, m := range nodes {
			if out := n.Docker(t, "exec", c, "cat", "/data/from."+m.Hostname); out != "written on "+m.Hostname {
				t.Errorf("task on %s reads %q from %s's file", n.Name, out, m.Name)
			}
		}
	}
	// One task per node, none restarted: each task's first attempt worked.
	if ps := x.a.Docker(t, "service", "ps", "--format", "{{.Node}} {{.DesiredState}} {{.CurrentState}}", "g"); strings.Count(ps, "Running Running") != 2 || strings.Count(ps, "\n") != 1 {
		t.Errorf("service g tasks:\n%s", ps)
	}
	x.a.Docker(t, "service", "rm", "g")
	for _, n := range nodes {
		waitFor(t, 30*time.Second, "the service's containers to go on "+n.Name, func() bool {
			return n.Docker(t, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name=g") == ""
		})
		n.Docker(t, "volume", "rm", "everywhere")
		x.noSSHFSMounts(t, n)
	}
	for _, n := range nodes {
		if _, err := os.Stat(filepath.Join(remote, "from."+n.Hostname)); err != nil {
			t.Errorf("docker volume rm deleted remote data: %v", err)
		}
	}
}

// engineRestart: dockerd on the node running a task restarts (no
// live-restore: the task's container stops). Swarm starts the task again,
// it finds its data, and the node's stowage counts exactly one mount.
func (x *env) engineRestart(t *testing.T) {
	n := x.b
	remote := x.srv.mkdir(t, "restart")
	x.a.Docker(t, "service", "create", "--detach", "--name", "r", "--no-resolve-image",
		"--hostname", "{{.Node.Hostname}}",
		"--mount", x.srv.mountFlag("restart", "/data", remote),
		"--constraint", "node.hostname=="+n.Hostname,
		x.a.Engine.Image(), "sh", "-c", `echo start >> /data/starts || exit 3
trap "exit 0" TERM
sleep 3600 & wait`)
	t.Cleanup(func() { x.a.Engine.Docker("service", "rm", "r") })
	starts := func() int {
		b, _ := os.ReadFile(filepath.Join(remote, "starts"))
		return strings.Count(string(b), "start\n")
	}
	x.waitTaskOn(t, "r", n)
	waitFor(t, 30*time.Second, "the task to start", func() bool { return starts() == 1 })

	n.Engine.Restart(t, engine.Options{})
	waitFor(t, 60*time.Second, "Swarm to start the task again on "+n.Name, func() bool { return starts() == 2 },
		func() string { return x.a.Docker(t, "service", "ps", "--no-trunc", "r") })
	x.waitTaskOn(t, "r", n)
	c := x.taskContainer(t, n, "r")
	if out := n.Docker(t, "exec", c, "cat", "/data/starts"); out != "start\nstart" {
		t.Errorf("the task after the restart reads %q", out)
	}
	// The old container's Unmount arrived before dockerd stopped; the new
	// one's Mount after it started: one mount, not two.
	if m := n.Docker(t, "volume", "inspect", "--format", "{{index .Status \"mounts\"}}", "restart"); m != "1" {
		t.Errorf("stowage on %s counts %s mounts of the volume, want 1", n.Name, m)
	}
	if ms := sshfsMounts(t, n); len(ms) != 1 {
		t.Errorf("sshfs mounts on %s: %v, want one", n.Name, ms)
	}
	x.a.Docker(t, "service", "rm", "r")
	waitFor(t, 30*time.Second, "the service's container to go", func() bool {
		return n.Docker(t, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name=r") == ""
	})
	n.Docker(t, "volume", "rm", "restart")
	x.noSSHFSMounts(t, n)
	if starts() != 2 {
		t.Errorf("remote data changed by volume rm: %d starts", starts())
	}
}

// waitTaskOn waits until the service's one running task runs on n and
// no other task of it is running anywhere.
func (x *env) waitTaskOn(t *testing.T, svc string, n *cluster.Node) {
	t.Helper()
	var last string
	waitFor(t, 60*time.Second, "service "+svc+" to run on "+n.Name, func() bool {
		last = x.a.Docker(t, "service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}}|{{.CurrentState}}|{{.Error}}", svc)
		lines := strings.Split(last, "\n")
		return len(lines) == 1 && strings.HasPrefix(lines[0], n.Hostname+"|Running")
	}, func() string { return "service ps: " + last + "\n" + x.a.Docker(t, "service", "ps", "--no-trunc", svc) })
}

// taskContainer is the running container of the service on n.
func (x *env) taskContainer(t *testing.T, n *cluster.Node, svc string) string {
	t.Helper()
	var ids []string
	waitFor(t, 30*time.Second, "one running container of "+svc+" on "+n.Name, func() bool {
		ids = strings.Fields(n.Docker(t, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+svc))
		return len(ids) == 1
	}, func() string {
		return fmt.Sprintf("%d running; service ps:\n%s\ndocker ps -a on %s:\n%s", len(ids), x.a.Docker(t, "service", "ps", "--no-trunc", svc),
			n.Name, n.Docker(t, "ps", "-a", "--no-trunc", "--filter", "label=com.docker.swarm.service.name="+svc))
	})
	return ids[0]
}

// noSSHFSMounts asserts the node's mount table holds no sshfs mount of
// its stowage.
func (x *env) noSSHFSMounts(t *testing.T, n *cluster.Node) {
	t.Helper()
	if ms := sshfsMounts(t, n); len(ms) > 0 {
		t.Errorf("sshfs still mounted on %s: %v", n.Name, ms)
	}
}

func sshfsMounts(t *testing.T, n *cluster.Node) []string {
	t.Helper()
	out, err := n.Command("cat", "/proc/self/mountinfo").Output()
	if err != nil {
		t.Fatalf("mount table of %s: %v", n.Name, err)
	}
	var ms []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); strings.Contains(l, " - fuse.sshfs ") && strings.HasPrefix(f[4], n.Stowage.Root+"/") {
			ms = append(ms, f[4])
		}
	}
	return ms
}

// serverFault: the server fails (fault) while a container writes. The
// write fails within limit; the daemon keeps answering Get for this and
// other volumes; after heal the next Mount works and finds what was
// written before.
func (x *env) serverFault(t *testing.T, n *cluster.Node, name string, fault, heal func(testing.TB), limit time.Duration) {
	remote := x.srv.mkdir(t, name)
	other := x.srv.mkdir(t, name+"-other")
	vol, vother := "v"+name, "v"+name+"-other"
	x.volume(t, n, vol, remote)
	x.volume(t, n, vother, other)
	// A second container keeps the other volume mounted through the fault.
	keep := n.Docker(t, "run", "-d", "--network", "none", "-v", vother+":/data", n.Engine.Image(), "sleep", "3600")
	t.Cleanup(func() { n.Engine.Docker("rm", "-f", keep) })
	w := n.Docker(t, "run", "-d", "--network", "none", "-v", vol+":/data", n.Engine.Image(), "sh", "-c",
		`i=0; while echo $i >> /data/seq; do i=$((i+1)); sleep 0.1; done; echo "write $i failed" >&2; exit 7`)
	t.Cleanup(func() { n.Engine.Docker("rm", "-f", w) })
	seq := filepath.Join(remote, "seq")
	waitFor(t, 30*time.Second, "the writer to write", func() bool {
		b, _ := os.ReadFile(seq)
		return strings.Count(string(b), "\n") >= 5
	})

	// Get latency over the fault, straight on the node's plugin socket.
	stop := make(chan struct{})
	lat := make(chan []time.Duration, 1)
	go func() {
		var ds []time.Duration
		cl := n.Stowage.Client()
		for {
			select {
			case <-stop:
				lat <- ds
				return
			default:
			}
			for _, v := range []string{vother, vol} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				began := time.Now()
				var resp struct{ Err string }
				err := cl.Call(ctx, "/VolumeDriver.Get", map[string]string{"Name": v}, &resp)
				d := time.Since(began)
				cancel()
				if err != nil || resp.Err != "" {
					d = time.Hour // an error counts as too slow
				}
				ds = append(ds, d)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	began := time.Now()
	fault(t)
	var exit string
	waitFor(t, 2*limit, "the writer to fail", func() bool {
		exit = n.Docker(t, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", w)
		return strings.HasPrefix(exit, "exited")
	})
	failedIn := time.Since(began)
	// Docker's own view of the volumes keeps answering too.
	if out := n.Docker(t, "volume", "inspect", "--format", "{{.Name}}", vother, vol); out != vother+"\n"+vol {
		t.Errorf("volume inspect during the fault: %q", out)
	}
	time.Sleep(time.Second)
	close(stop)
	ds := <-lat
	if exit != "exited 7" {
		t.Errorf("writer ended %q, want exited 7 (its write failed)", exit)
	}
	_, logs, _ := n.Engine.Docker("logs", w)
	t.Logf("the write failed %v after the fault (%s)", failedIn.Round(time.Millisecond), strings.Join(strings.Fields(logs), " "))
	if failedIn > limit {
		t.Errorf("the write failed only after %v: a failed server must give an I/O error within %v", failedIn, limit)
	}
	p99, max := percentile(ds, 0.99), percentile(ds, 1)
	t.Logf("Get during the fault: %d calls, p99 %v, max %v", len(ds), p99.Round(time.Microsecond), max.Round(time.Microsecond))
	if len(ds) < 20 || p99 > 50*time.Millisecond {
		t.Errorf("Get during the fault: %d calls, p99 %v; want p99 under 50ms", len(ds), p99)
	}
	// A Get waiting on the network would take seconds: not even one may.
	if max > 2*time.Second {
		t.Errorf("a Get during the fault took %v: Get must never wait for the server", max)
	}

	heal(t)
	n.Docker(t, "rm", "-f", w)
	// The next Mount connects again and finds what was written before.
	out := n.Docker(t, "run", "--rm", "--network", "none", "-v", vol+":/data", n.Engine.Image(), "head", "-n", "3", "/data/seq")
	if out != "0\n1\n2" {
		t.Errorf("after the server came back, the volume reads %q, want the writer's first lines", out)
	}
	n.Docker(t, "rm", "-f", keep)
	waitFor(t, 10*time.Second, "every sshfs mount to go", func() bool { return len(sshfsMounts(t, n)) == 0 },
		func() string { return fmt.Sprint(sshfsMounts(t, n)) })
}

// stowageKilled: kill -9 of stowage under a running container; the
// container keeps reading and writing; after a restart docker rm -f and
// docker volume rm work and leave the remote data.
func (x *env) stowageKilled(t *testing.T) {
	n := x.b
	remote := x.srv.mkdir(t, "stowage-killed")
	x.volume(t, n, "vkill", remote)
	c := n.Docker(t, "run", "-d", "--network", "none", "-v", "vkill:/data", n.Engine.Image(), "sh", "-c",
		`i=0; while echo $i >> /data/seq; do i=$((i+1)); sleep 0.1; done; exit 7`)
	t.Cleanup(func() { n.Engine.Docker("rm", "-f", c) })
	seq := filepath.Join(remote, "seq")
	lines := func() int {
		b, _ := os.ReadFile(seq)
		return strings.Count(string(b), "\n")
	}
	waitFor(t, 30*time.Second, "the writer to write", func() bool { return lines() >= 5 })

	n.Stowage.Kill(t)
	at := lines()
	waitFor(t, 15*time.Second, "the container to keep writing with stowage dead", func() bool { return lines() >= at+20 })
	if out := n.Docker(t, "exec", c, "head", "-n", "2", "/data/seq"); out != "0\n1" {
		t.Errorf("reading in the container with stowage dead: %q", out)
	}
	n.Stowage.Restart(t)
	if st := n.Docker(t, "inspect", "--format", "{{.State.Status}}", c); st != "running" {
		t.Fatalf("container %s after the restart", st)
	}
	at = lines()
	waitFor(t, 15*time.Second, "the container to keep writing after the restart", func() bool { return lines() >= at+10 })

	n.Docker(t, "rm", "-f", c)
	n.Docker(t, "volume", "rm", "vkill")
	x.noSSHFSMounts(t, n)
	if got := lines(); got < at+10 {
		t.Errorf("remote data lost by rm -f + volume rm: %d lines", got)
	}
}

// volume creates an sshfs volume on n through Docker.
func (x *env) volume(t *testing.T, n *cluster.Node, name, remote string) {
	t.Helper()
	args := []string{"volume", "create", "-d", driver}
	for _, o := range x.srv.volumeOpts(remote) {
		args = append(args, "-o", o)
	}
	n.Docker(t, append(args, name)...)
	t.Cleanup(func() { n.Engine.Docker("volume", "rm", "-f", name) })
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			for _, f := range detail {
				msg += "\n" + f()
			}
			t.Fatalf("timed out after %v waiting for %s%s", d, what, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
