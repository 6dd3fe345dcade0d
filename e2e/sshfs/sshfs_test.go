// Package sshfs tests the sshfs backend end to end: a real sshd on a
// loopback port, a real `stowage serve` with only the shared backend (as the
// README's shared instance), a private Docker engine and containers that
// write through the volume. sshfs runs in stowage's network namespace (the
// host's), where the loopback sshd is reachable; dockerd only bind-mounts
// the mount point.
package sshfs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
	"github.com/stowage/stowage/internal/e2e/sshd"
)

type env struct {
	srv *sshd.Server
	d   *daemon.Daemon
	eng *engine.Engine
}

func setup(t *testing.T) *env {
	t.Helper()
	engine.RequireRoot(t)
	srv := sshd.Start(t, sshd.Options{})
	d := daemon.Start(t, daemon.Options{Args: []string{"--backends", "sshfs", "--ssh-keys-dir", srv.KeysDir, "--ssh-known-hosts", srv.KnownHosts}})
	// Runs before the daemon's cleanup removes its root: never let a
	// RemoveAll walk into a live sshfs mount (it would delete remote data).
	t.Cleanup(func() { unmountUnder(t, filepath.Join(d.Root, "sshfs")) })
	return &env{srv: srv, d: d, eng: engine.Start(t, engine.Options{})}
}

func unmountUnder(t *testing.T, dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			t.Logf("cleanup: detaching %s, left mounted by the test", f[4])
			syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

func (x *env) opts(t *testing.T, sub string) []string {
	return []string{"-o", "backend=sshfs", "-o", "remote=" + x.srv.Remote(t, sub), "-o", "port=" + strconv.Itoa(x.srv.Port), "-o", "identity=" + x.srv.ClientKeyName}
}

func (x *env) create(t *testing.T, name string, opts ...string) {
	t.Helper()
	x.eng.MustDocker(t, append(append([]string{"volume", "create", "-d", x.d.Name}, opts...), name)...)
}

func (x *env) createFails(t *testing.T, name, want string, opts ...string) {
	t.Helper()
	_, stderr, err := x.eng.Docker(append(append([]string{"volume", "create", "-d", x.d.Name}, opts...), name)...)
	if err == nil {
		t.Fatalf("volume create %s %v succeeded; want an error containing %q", name, opts, want)
	}
	if !strings.Contains(stderr, want) {
		t.Fatalf("volume create %s %v: %q does not contain %q", name, opts, strings.TrimSpace(stderr), want)
	}
}

func (x *env) inspect(t *testing.T, name string) (scope string, status map[string]interface{}) {
	t.Helper()
	var out []struct {
		Scope  string
		Status map[string]interface{}
	}
	if err := json.Unmarshal([]byte(x.eng.MustDocker(t, "volume", "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("volume inspect %s: %v", name, err)
	}
	return out[0].Scope, out[0].Status
}

// sshfsUnder counts sshfs processes serving a mount point under dir.
func sshfsUnder(dir string) int {
	return len(sshd.SSHFSPids(func(arg string) bool { return strings.HasPrefix(arg, dir+"/") }))
}

// The user-facing path: a shared instance reports scope global, a
// container writes through the volume onto the server, and docker volume
// rm forgets the volume and keeps the remote data.
func TestVolumeThroughDockerKeepsRemoteDataOnRemove(t *testing.T) {
	x := setup(t)
	x.create(t, "shared", x.opts(t, "shared")...)
	scope, status := x.inspect(t, "shared")
	if scope != "global" {
		t.Errorf("Scope = %q; a daemon with only sshfs must report global", scope)
	}
	if status["remove"] != "removing the volume forgets it; the remote data is never deleted" {
		t.Errorf("Status = %v; want it to say Remove keeps remote data", status)
	}
	out := x.eng.MustDocker(t, "run", "--rm", "--network", "none", "-v", "shared:/data", x.eng.Image(),
		"sh", "-c", "echo hello from a container > /data/greeting && mkdir -p /data/sub && echo deep > /data/sub/f && cat /data/greeting")
	if strings.TrimSpace(out) != "hello from a container" {
		t.Fatalf("container output %q", out)
	}
	remote := filepath.Join(x.srv.Data, "shared")
	if b, err := os.ReadFile(filepath.Join(remote, "greeting")); err != nil || string(b) != "hello from a container\n" {
		t.Fatalf("on the server: %q, %v", b, err)
	}
	// A second container sees what the first wrote.
	if got := x.eng.MustDocker(t, "run", "--rm", "--network", "none", "-v", "shared:/data", x.eng.Image(), "cat", "/data/sub/f"); strings.TrimSpace(got) != "deep" {
		t.Fatalf("second container read %q", got)
	}
	// Create again as a second Swarm node's dockerd or a retry sends it
	// (Docker itself answers an existing name without asking): the same
	// options are fine, others a clear error.
	same := map[string]string{"backend": "sshfs", "remote": x.srv.Remote(t, "shared"), "port": strconv.Itoa(x.srv.Port), "identity": x.srv.ClientKeyName}
	if err := x.d.Client().Call(context.Background(), "/VolumeDriver.Create", map[string]interface{}{"Name": "shared", "Opts": same}, nil); err != nil {
		t.Errorf("Create again with the same options: %v", err)
	}
	same["remote"] = x.srv.Remote(t, "elsewhere")
	err := x.d.Client().Call(context.Background(), "/VolumeDriver.Create", map[string]interface{}{"Name": "shared", "Opts": same}, nil)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Create again with another remote = %v; want 'already exists'", err)
	}

	x.eng.MustDocker(t, "volume", "rm", "shared")
	for _, p := range []string{"greeting", "sub/f"} {
		if _, err := os.Stat(filepath.Join(remote, p)); err != nil {
			t.Errorf("docker volume rm touched remote data: %s: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(x.d.Root, "sshfs", "shared")); !os.IsNotExist(err) {
		t.Errorf("the volume's mount point is left after rm: %v", err)
	}
}

// Hostile and wrong options through Docker: a clear error each, no volume,
// no sshfs process started.
func TestHostileOptionsThroughDocker(t *testing.T) {
	x := setup(t)
	if n := sshfsUnder(x.d.Root); n != 0 {
		t.Fatalf("%d sshfs processes before the test", n)
	}
	port := "port=" + strconv.Itoa(x.srv.Port)
	good := "remote=" + x.srv.Remote(t, "h")
	for _, c := range []struct {
		want string
		opts []string
	}{
		{"must not contain ';'", []string{"remote=root@127.0.0.1:/srv;touch", port, "identity=id"}},
		{"printable ASCII without spaces", []string{"remote=root@127.0.0.1:/srv;touch /tmp/pwned", port, "identity=id"}},
		{"printable ASCII without spaces", []string{"remote=root@127.0.0.1:/srv x", port, "identity=id"}},
		{"must not start with '-'", []string{"remote=-oProxyCommand=touch:/tmp", port, "identity=id"}},
		{"not a path", []string{good, port, "identity=../../etc/shadow"}},
		{"not a path", []string{good, port, "identity=/etc/shadow"}},
		{"keys only", []string{good, port, "identity=id", "password=hunter2"}},
		{"is unknown", []string{"remote=root@localhost:/srv", port, "identity=id"}},
		{"ssh-keyscan -p", []string{"remote=root@127.0.0.1:/srv", "port=1", "identity=id"}},
	} {
		var opts []string
		for _, o := range append([]string{"backend=sshfs"}, c.opts...) {
			opts = append(opts, "-o", o)
		}
		x.createFails(t, "hostile", c.want, opts...)
	}
	// Asked of stowage itself: dockerd would ask every plugin on the
	// machine about an unknown name.
	err := x.d.Client().Call(context.Background(), "/VolumeDriver.Get", map[string]string{"Name": "hostile"}, nil)
	if err == nil || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("a refused create left a volume: Get = %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(x.d.Root, "sshfs")); len(entries) != 0 {
		t.Fatalf("refused creates left %v in the backend's directory", entries)
	}
	if n := sshfsUnder(x.d.Root); n != 0 {
		t.Fatalf("refused creates started %d sshfs processes", n)
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Fatal("/tmp/pwned exists")
	}
}

// kill -9 of stowage under a running container: sshfs and its mount live
// on, the container keeps writing, the restarted daemon knows the mount,
// and rm -f + volume rm work and leave the remote data.
func TestStowageKill9KeepsTheMountAndContainerWriting(t *testing.T) {
	x := setup(t)
	x.create(t, "live", x.opts(t, "live")...)
	remote := filepath.Join(x.srv.Data, "live", "log")
	x.eng.MustDocker(t, "run", "-d", "--name", "writer", "--network", "none", "-v", "live:/data", x.eng.Image(),
		"sh", "-c", "i=0; while true; do echo $i >> /data/log; i=$((i+1)); sleep 0.1; done")
	t.Cleanup(func() { x.eng.Docker("rm", "-f", "writer") })
	mp := filepath.Join(x.d.Root, "sshfs", "live")
	waitGrows(t, remote)
	pid := sshd.SSHFSPid(mp)
	if pid == 0 {
		t.Fatal("no sshfs process serves the volume")
	}

	x.d.Kill(t)
	time.Sleep(500 * time.Millisecond)
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("sshfs died with stowage")
	}
	waitGrows(t, remote)

	x.d.Restart(t)
	if _, status := x.inspect(t, "live"); status["mounts"] != float64(1) {
		t.Fatalf("after the restart the ledger holds %v mounts, want 1", status["mounts"])
	}
	if sshd.SSHFSPid(mp) != pid {
		t.Fatal("the restarted daemon replaced the sshfs process of a live mount")
	}
	waitGrows(t, remote)

	x.eng.MustDocker(t, "rm", "-f", "writer")
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("sshfs still runs after the last container left")
	}
	x.eng.MustDocker(t, "volume", "rm", "live")
	if fi, err := os.Stat(remote); err != nil || fi.Size() == 0 {
		t.Fatalf("remote data after volume rm: %v, %v", fi, err)
	}
}

// waitGrows waits until the file on the server grows: the container is
// still writing through the volume.
func waitGrows(t *testing.T, p string) {
	t.Helper()
	size := func() int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	start := size()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := size(); s > start && s > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not grow within 10s (size %d): the container is not writing through the volume", p, start)
}

// A hung or dead server gives a running container I/O errors within
// seconds, not a hang; Get keeps answering for every volume meanwhile; the
// mount recovers when the server is back, and new mounts work again.
func TestDeadServerFailsContainerWritesFast(t *testing.T) {
	x := setup(t)
	x.create(t, "fragile", x.opts(t, "fragile")...)
	x.create(t, "bystander", x.opts(t, "bystander")...)
	// Writes every 0.1 s; each failure prints a line; it never stops.
	x.eng.MustDocker(t, "run", "-d", "--name", "fragile-writer", "--network", "none", "-v", "fragile:/data", x.eng.Image(),
		"sh", "-c", "while true; do echo x >> /data/f || echo write failed > /dev/stderr; sleep 0.1; done")
	t.Cleanup(func() { x.eng.Docker("rm", "-f", "fragile-writer") })
	remote := filepath.Join(x.srv.Data, "fragile", "f")
	waitGrows(t, remote)

	// Hung: connections stay open and nothing answers.
	x.srv.Pause(t)
	hung := x.failuresWithin(t, 0, 30*time.Second)
	t.Logf("the container's write failed %s after the server hung", hung.Round(time.Millisecond))
	x.getsAnswer(t, "bystander", "fragile")
	x.srv.Resume(t)
	waitGrows(t, remote) // reconnect: the same mount works again

	// Dead: connections are reset.
	before := strings.Count(logs(x, "fragile-writer"), "write failed")
	x.srv.Kill(t)
	dead := x.failuresWithin(t, before, 30*time.Second)
	t.Logf("the container's write failed %s after the server died", dead.Round(time.Millisecond))
	x.getsAnswer(t, "bystander", "fragile")
	_, stderr, err := x.eng.Docker("run", "--rm", "--network", "none", "-v", "bystander:/data", x.eng.Image(), "true")
	if err == nil || !strings.Contains(stderr, "cannot reach") {
		t.Fatalf("mounting with the server down: %v %q; want a clear 'cannot reach'", err, stderr)
	}
	x.srv.Restart(t)
	waitGrows(t, remote)
	if out := x.eng.MustDocker(t, "run", "--rm", "--network", "none", "-v", "bystander:/data", x.eng.Image(), "sh", "-c", "echo back > /data/f && cat /data/f"); strings.TrimSpace(out) != "back" {
		t.Fatalf("after the server is back: %q", out)
	}
}

// failuresWithin waits until the writer has reported more than before
// failed writes, and returns how long that took; past limit the test fails.
func (x *env) failuresWithin(t *testing.T, before int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for strings.Count(logs(x, "fragile-writer"), "write failed") <= before {
		if time.Since(start) > limit {
			t.Fatalf("the container's writes still do not fail %s after the server went away", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// getsAnswer calls Get on stowage's socket, as dockerd does, 100 times per
// volume while the server is away: each must answer, and none may wait on
// the network (seconds would mean it did).
func (x *env) getsAnswer(t *testing.T, names ...string) {
	t.Helper()
	var lat []time.Duration
	for i := 0; i < 100; i++ {
		for _, n := range names {
			s := time.Now()
			var resp struct{ Volume *struct{ Name string } }
			if err := x.d.Client().Call(context.Background(), "/VolumeDriver.Get", map[string]string{"Name": n}, &resp); err != nil || resp.Volume == nil {
				t.Fatalf("Get %s with the server away: %v", n, err)
			}
			lat = append(lat, time.Since(s))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("Get with the server away: p50 %s, p99 %s, max %s", lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	if lat[len(lat)-1] > 2*time.Second {
		t.Fatalf("a Get took %s with the server away: it waited on the network", lat[len(lat)-1])
	}
}

func logs(x *env, name string) string {
	out, stderr, _ := x.eng.Docker("logs", name)
	return out + stderr
}

// A server whose host key changed since it was added to known_hosts is
// refused at mount, with the server named, and nothing is mounted.
func TestChangedHostKeyRefusesMount(t *testing.T) {
	x := setup(t)
	x.create(t, "rekeyed", x.opts(t, "rekeyed")...)
	x.srv.NewHostKey(t)
	_, stderr, err := x.eng.Docker("run", "--rm", "--network", "none", "-v", "rekeyed:/data", x.eng.Image(), "touch", "/data/f")
	if err == nil || !strings.Contains(stderr, "host key of "+x.srv.HostName()+" does not match") {
		t.Fatalf("docker run after a host key change: %v %q", err, stderr)
	}
	if sshd.SSHFSPid(filepath.Join(x.d.Root, "sshfs", "rekeyed")) != 0 {
		t.Fatal("an sshfs process runs for the refused volume")
	}
	if _, err := os.Stat(filepath.Join(x.srv.Data, "rekeyed", "f")); err == nil {
		t.Fatal("the container wrote to a server whose key changed")
	}
}
