// Package core tests stowage's core promises end to end: a real dockerd, the
// docker CLI and real containers, with build/stowage serving as a legacy
// plugin. If no engine can start, these tests fail; they never skip.
package core

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

type env struct {
	e *engine.Engine
	d *daemon.Daemon
}

func (x *env) docker(t *testing.T, args ...string) string {
	t.Helper()
	return x.e.MustDocker(t, args...)
}

// run runs a container with --network none (the private engine has no bridge).
func (x *env) run(t *testing.T, args ...string) string {
	t.Helper()
	return x.docker(t, append([]string{"run", "--rm", "--network", "none"}, args...)...)
}

type inspected struct {
	Name, Driver, Mountpoint, CreatedAt string
	Options                             map[string]string
	Status                              map[string]interface{}
}

func (x *env) inspect(t *testing.T, name string) inspected {
	t.Helper()
	var out []inspected
	if err := json.Unmarshal([]byte(x.docker(t, "volume", "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("volume inspect %s: %v %v", name, out, err)
	}
	return out[0]
}

func (x *env) mounts(t *testing.T, name string) int {
	t.Helper()
	n, ok := x.inspect(t, name).Status["mounts"].(float64)
	if !ok {
		t.Fatalf("inspect %s: Status has no mounts count", name)
	}
	return int(n)
}

func (x *env) listed(t *testing.T, name string) bool {
	t.Helper()
	out := x.docker(t, "volume", "ls", "--filter", "driver="+x.d.Name, "--format", "{{.Name}}")
	for _, l := range strings.Split(out, "\n") {
		if l == name {
			return true
		}
	}
	return false
}

func (x *env) dataDir(name string) string { return filepath.Join(x.d.Root, "dir", name) }

// waitFor polls cond for up to 30 s: Docker delivers Unmount asynchronously
// after a container stops.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestCore(t *testing.T) {
	engine.RequireRoot(t)
	x := &env{e: engine.Start(t, engine.Options{})}
	x.d = daemon.Start(t, daemon.Options{})
	img := x.e.Image()

	t.Run("create-inspect-write-read-remove", func(t *testing.T) {
		x.docker(t, "volume", "create", "-d", x.d.Name, "-o", "uid=1234", "-o", "gid=2345", "-o", "mode=0750", "life")
		if !x.listed(t, "life") {
			t.Fatal("docker volume ls does not show the new volume")
		}
		v := x.inspect(t, "life")
		if v.Driver != x.d.Name || v.Status["backend"] != "dir" {
			t.Fatalf("inspect: driver %q backend %v", v.Driver, v.Status["backend"])
		}
		if _, err := time.Parse(time.RFC3339, v.CreatedAt); err != nil {
			t.Fatalf("CreatedAt %q is not RFC 3339", v.CreatedAt)
		}
		opts, _ := v.Status["options"].(map[string]interface{})
		if opts["uid"] != "1234" || opts["gid"] != "2345" || opts["mode"] != "0750" {
			t.Fatalf("Status options = %v", v.Status["options"])
		}
		// Docker sends Create only when Get says there is no such
		// volume: creating an existing name succeeds and changes nothing.
		x.docker(t, "volume", "create", "-d", x.d.Name, "-o", "mode=0700", "life")
		if opts, _ := x.inspect(t, "life").Status["options"].(map[string]interface{}); opts["mode"] != "0750" {
			t.Fatalf("a second create changed the options: %v", opts)
		}
		if n := len(createdLife.FindAllString(x.d.Log(), -1)); n != 1 {
			t.Fatalf("stowage logged %d successful Creates of life, want 1", n)
		}
		if got := x.run(t, "-v", "life:/data", img, "stat", "-c", "%u %g %a", "/data"); got != "1234 2345 750" {
			t.Fatalf("stat in container = %q, want 1234 2345 750", got)
		}
		x.run(t, "-v", "life:/data", img, "sh", "-c", "echo written-by-one > /data/f")
		if got := x.run(t, "-v", "life:/d", img, "cat", "/d/f"); got != "written-by-one" {
			t.Fatalf("second container read %q", got)
		}
		waitFor(t, "unmounts", func() bool { return x.mounts(t, "life") == 0 })
		x.docker(t, "volume", "rm", "life")
		if x.listed(t, "life") {
			t.Fatal("volume still listed after rm")
		}
		if _, err := os.Lstat(x.dataDir("life")); !os.IsNotExist(err) {
			t.Fatalf("data directory still there after rm: %v", err)
		}
	})

	t.Run("two-containers-and-remove-refused-while-in-use", func(t *testing.T) {
		x.docker(t, "volume", "create", "-d", x.d.Name, "shared")
		x.docker(t, "run", "-d", "--network", "none", "--name", "c1", "-v", "shared:/s", img, "sh", "-c", "echo one > /s/one; sleep 300")
		x.docker(t, "run", "-d", "--network", "none", "--name", "c2", "-v", "shared:/s", img, "sh", "-c", "echo two > /s/two; sleep 300")
		waitFor(t, "both writes", func() bool {
			out, _, _ := x.e.Docker("exec", "c1", "cat", "/s/one", "/s/two")
			return out == "one\ntwo\n"
		})
		if n := x.mounts(t, "shared"); n != 2 {
			t.Fatalf("ledger holds %d mounts, want 2", n)
		}
		x.docker(t, "rm", "-f", "c1")
		// dockerd refuses on its own while it knows a container uses the
		// volume; ask stowage directly, as Docker would after a restart.
		err := x.d.Client().Call(context.Background(), "/VolumeDriver.Remove", map[string]string{"Name": "shared"}, nil)
		if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "1 mount holds it") {
			t.Fatalf("Remove while c2 runs: %v; want an in-use error naming 1 mount", err)
		}
		if _, err := os.Stat(filepath.Join(x.dataDir("shared"), "two")); err != nil {
			t.Fatalf("data touched by the refused Remove: %v", err)
		}
		x.docker(t, "rm", "-f", "c2")
		waitFor(t, "unmounts", func() bool { return x.mounts(t, "shared") == 0 })
		x.docker(t, "volume", "rm", "shared")
	})

	t.Run("volumes-from-cp-and-restart", func(t *testing.T) {
		x.docker(t, "volume", "create", "-d", x.d.Name, "vf")
		x.docker(t, "run", "-d", "--network", "none", "--name", "owner", "-v", "vf:/v", img, "sleep", "300")
		x.docker(t, "run", "-d", "--network", "none", "--name", "follower", "--volumes-from", "owner", img, "sleep", "300")
		waitFor(t, "two mounts", func() bool { return x.mounts(t, "vf") == 2 })

		src := filepath.Join(t.TempDir(), "copied")
		os.WriteFile(src, []byte("via docker cp"), 0o644)
		x.docker(t, "cp", src, "owner:/v/copied")
		if got := x.docker(t, "exec", "follower", "cat", "/v/copied"); got != "via docker cp" {
			t.Fatalf("follower reads %q", got)
		}
		// docker cp mounts and unmounts with the container's ID: the
		// ledger must be back where it was.
		waitFor(t, "cp's unmount", func() bool { return x.mounts(t, "vf") == 2 })

		before := mountIDs(x.d.Log(), "Mount", "vf")
		x.docker(t, "restart", "-t", "1", "owner")
		waitFor(t, "restart's mount", func() bool { return len(mountIDs(x.d.Log(), "Mount", "vf")) > len(before) })
		if n := x.mounts(t, "vf"); n != 2 {
			t.Fatalf("after restart the ledger holds %d mounts, want 2", n)
		}
		if got := x.docker(t, "exec", "owner", "cat", "/v/copied"); got != "via docker cp" {
			t.Fatalf("after restart owner reads %q", got)
		}
		x.docker(t, "rm", "-f", "owner", "follower")
		waitFor(t, "unmounts", func() bool { return x.mounts(t, "vf") == 0 })
		x.docker(t, "volume", "rm", "vf")
	})

	t.Run("kill-9-while-mounted", func(t *testing.T) {
		x.docker(t, "volume", "create", "-d", x.d.Name, "survivor")
		x.docker(t, "run", "-d", "--network", "none", "--name", "holder", "-v", "survivor:/v", img, "sh", "-c", "echo precious > /v/p; sleep 300")
		waitFor(t, "the write", func() bool { out, _, _ := x.e.Docker("exec", "holder", "cat", "/v/p"); return out == "precious\n" })
		x.d.Kill(t)
		if _, err := os.Lstat(x.d.Socket); err != nil {
			t.Fatalf("after SIGKILL the socket file should be left behind (stale): %v", err)
		}
		x.d.Restart(t) // replaces the stale socket
		if n := x.mounts(t, "survivor"); n != 1 {
			t.Fatalf("after restart the ledger holds %d mounts, want the 1 persisted", n)
		}
		x.docker(t, "rm", "-f", "holder")
		waitFor(t, "the Unmount after restart", func() bool { return x.mounts(t, "survivor") == 0 })
		if !x.listed(t, "survivor") {
			t.Fatal("volume not listed after the crash")
		}
		if got := x.run(t, "-v", "survivor:/v", img, "cat", "/v/p"); got != "precious" {
			t.Fatalf("data after crash = %q", got)
		}
		waitFor(t, "unmount", func() bool { return x.mounts(t, "survivor") == 0 })
		x.docker(t, "volume", "rm", "survivor")
		if _, err := os.Lstat(x.dataDir("survivor")); !os.IsNotExist(err) {
			t.Fatal("data still on disk after rm")
		}
	})

	t.Run("dockerd-restart", func(t *testing.T) {
		x.docker(t, "volume", "create", "-d", x.d.Name, "-o", "mode=0700", "kept")
		x.run(t, "-v", "kept:/k", img, "sh", "-c", "echo before > /k/b")
		x.e.Restart(t, engine.Options{})
		if !x.listed(t, "kept") {
			t.Fatal("volume forgotten by dockerd after its restart")
		}
		if v := x.inspect(t, "kept"); v.Options["mode"] != "0700" {
			t.Fatalf("Docker lost the volume's options after restart: %v", v.Options)
		}
		if got := x.run(t, "-v", "kept:/k", img, "cat", "/k/b"); got != "before" {
			t.Fatalf("data after dockerd restart = %q", got)
		}
		waitFor(t, "unmount", func() bool { return x.mounts(t, "kept") == 0 })
		x.docker(t, "volume", "rm", "kept")
	})

	t.Run("prune-leaves-plugin-volumes", func(t *testing.T) {
		// dockerd prunes only volumes of its own local driver, on every
		// engine (volume/service Prune filters ByDriver("local")). What
		// changed in 23.0 (API 1.42) is which local ones: before, every
		// unused volume; since, only anonymous ones unless --all.
		x.docker(t, "volume", "create", "-d", x.d.Name, "unpruned")
		x.run(t, "-v", "unpruned:/u", img, "sh", "-c", "echo kept > /u/k")
		waitFor(t, "unmount", func() bool { return x.mounts(t, "unpruned") == 0 })
		x.docker(t, "volume", "create", "localnamed")
		localListed := func() bool {
			return x.docker(t, "volume", "ls", "-q", "--filter", "driver=local", "--filter", "name=localnamed") != ""
		}
		x.docker(t, "volume", "prune", "-f")
		if x.e.Version().AtLeast(23, 0) {
			if !localListed() {
				t.Fatalf("engine %s: prune without --all removed a named local volume", x.e.Version())
			}
			x.docker(t, "volume", "prune", "-f", "--all")
		}
		if localListed() {
			t.Fatalf("engine %s: prune kept an unused named local volume: the prune this test means did not run", x.e.Version())
		}
		if !x.listed(t, "unpruned") {
			t.Fatal("prune removed a stowage volume from Docker's list")
		}
		if x.d.LogContains("op=Remove", "volume=unpruned") {
			t.Fatal("prune sent Remove to stowage")
		}
		if got := x.run(t, "-v", "unpruned:/u", img, "cat", "/u/k"); got != "kept" {
			t.Fatalf("data after prune = %q", got)
		}
		waitFor(t, "unmount", func() bool { return x.mounts(t, "unpruned") == 0 })
		x.docker(t, "volume", "rm", "unpruned")
	})

	t.Run("anonymous-volume-removed-with-its-container", func(t *testing.T) {
		// docker run --rm removes the anonymous volumes it made, through
		// the plugin: Docker names them with 64 hex characters.
		out := x.run(t, "--volume-driver", x.d.Name, "-v", "/scratch", img, "sh", "-c", "echo tmp > /scratch/f; cat /scratch/f")
		if out != "tmp" {
			t.Fatalf("anonymous volume read back %q", out)
		}
		var name string
		waitFor(t, "the anonymous volume's Remove", func() bool {
			for _, l := range strings.Split(x.d.Log(), "\n") {
				if m := anonRemove.FindStringSubmatch(l); m != nil {
					name = m[1]
					return true
				}
			}
			return false
		})
		if x.listed(t, name) {
			t.Fatalf("anonymous volume %s still listed after run --rm", name)
		}
		if _, err := os.Lstat(x.dataDir(name)); !os.IsNotExist(err) {
			t.Fatalf("anonymous volume's data left after run --rm: %v", err)
		}
	})

	t.Run("bad-input-through-the-cli", func(t *testing.T) {
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"-o", "colour=red", "ok1"}, `unknown option "colour" for backend "dir"; valid options are: backend, `},
			{[]string{"-o", "mode=99999", "ok2"}, `option mode="99999": must be octal permission bits`},
			{[]string{"-o", "uid=-1", "ok3"}, `option uid="-1": must be a number`},
			{[]string{"-o", "backend=nosuch", "ok4"}, `backend "nosuch" is not enabled`},
			{[]string{"a/../b"}, `volume name "a/../b" is invalid`},
			{[]string{".hidden"}, `volume name ".hidden" is invalid`},
		}
		entries, _ := os.ReadDir(filepath.Join(x.d.Root, "dir"))
		for _, c := range cases {
			_, stderr, err := x.e.Docker(append([]string{"volume", "create", "-d", x.d.Name}, c.args...)...)
			if err == nil || !strings.Contains(stderr, c.want) {
				t.Errorf("create %v: err=%v stderr=%q; want it to contain %q", c.args, err, stderr, c.want)
			}
		}
		after, _ := os.ReadDir(filepath.Join(x.d.Root, "dir"))
		if len(after) != len(entries) {
			t.Fatalf("refused creates changed the disk: %d entries before, %d after", len(entries), len(after))
		}
		for _, n := range []string{"ok1", "ok2", "ok3", "ok4"} {
			if x.listed(t, n) {
				t.Errorf("refused volume %s is listed", n)
			}
		}
	})

	t.Run("one-log-line-per-request", func(t *testing.T) {
		if !x.d.LogContains("op=Mount", "volume=survivor", "mount_id=", "duration=", "status=200") {
			t.Fatal("no Mount log line with op, volume, mount_id, duration and status")
		}
		if !x.d.LogContains("op=Create", "volume=ok1", "error=", "unknown option") {
			t.Fatal("no Create log line carrying the error")
		}
	})

	t.Run("sigterm-removes-the-socket", func(t *testing.T) {
		x.d.Stop(t)
		if code := x.d.ExitCode(); code != 0 {
			t.Fatalf("exit code after SIGTERM = %d\n%s", code, x.d.Log())
		}
		if _, err := os.Lstat(x.d.Socket); !os.IsNotExist(err) {
			t.Fatalf("socket still there after a clean shutdown: %v", err)
		}
		x.d.Restart(t)
	})
}

var createdLife = regexp.MustCompile(`(?m)op=Create status=200 volume=life(\s|$)`)

var anonRemove = regexp.MustCompile(`op=Remove status=200 volume=([0-9a-f]{64})\b`)

var mountLine = regexp.MustCompile(`mount_id=([0-9a-f]+) op=(\w+) status=200 volume=(\S+)`)

// mountIDs lists the mount IDs of successful op calls on volume, in order.
func mountIDs(log, op, volume string) []string {
	var ids []string
	for _, m := range mountLine.FindAllStringSubmatch(log, -1) {
		if m[2] == op && m[3] == volume {
			ids = append(ids, m[1])
		}
	}
	return ids
}
