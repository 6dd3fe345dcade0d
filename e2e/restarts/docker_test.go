package restarts

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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

func setup(t *testing.T, liveRestore bool) *env {
	t.Helper()
	engine.RequireRoot(t)
	return &env{e: engine.Start(t, engine.Options{LiveRestore: liveRestore}), d: daemon.Start(t, daemon.Options{})}
}

func (x *env) docker(t *testing.T, args ...string) string {
	t.Helper()
	return x.e.MustDocker(t, args...)
}

// mounts is the volume's ledger total as docker volume inspect shows it.
func (x *env) mounts(t *testing.T, name string) int {
	t.Helper()
	var out []struct{ Status map[string]interface{} }
	if err := json.Unmarshal([]byte(x.docker(t, "volume", "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("volume inspect %s: %v", name, err)
	}
	n, _ := out[0].Status["mounts"].(float64)
	return int(n)
}

func (x *env) listed(t *testing.T, name string) bool {
	t.Helper()
	for _, l := range strings.Split(x.docker(t, "volume", "ls", "--format", "{{.Name}}"), "\n") {
		if l == name {
			return true
		}
	}
	return false
}

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

// start runs a long-lived container using the volume that writes a marker.
func (x *env) start(t *testing.T, vol string) string {
	t.Helper()
	c := x.docker(t, "run", "-d", "--network", "none", "-v", vol+":/data", x.e.Image(),
		"sh", "-c", "echo before > /data/marker; sync; exec sleep 3600")
	waitFor(t, "the marker", func() bool {
		_, err := os.Stat(filepath.Join(x.d.Root, "dir", vol, "marker"))
		return err == nil
	})
	return c
}

func (x *env) running(t *testing.T, c string) bool {
	t.Helper()
	return x.docker(t, "inspect", "-f", "{{.State.Running}}", c) == "true"
}

// survived checks a running container still reads and writes its volume and
// the data lands in the volume's directory.
func (x *env) survived(t *testing.T, c, vol string) {
	t.Helper()
	if !x.running(t, c) {
		t.Fatal("the container stopped")
	}
	if got := x.docker(t, "exec", c, "cat", "/data/marker"); got != "before" {
		t.Fatalf("container reads %q from its volume", got)
	}
	x.docker(t, "exec", c, "sh", "-c", "echo after > /data/after; sync")
	if b, err := os.ReadFile(filepath.Join(x.d.Root, "dir", vol, "after")); err != nil || string(b) != "after\n" {
		t.Fatalf("write through the container did not reach the volume: %q %v", b, err)
	}
}

// finish runs the next stop/rm sequence and removes the volume: the
// Unmount must arrive and count down the ledger stowage kept.
func (x *env) finish(t *testing.T, c, vol string) {
	t.Helper()
	t0 := time.Now()
	x.docker(t, "stop", "-t", "1", c)
	x.docker(t, "rm", c)
	t.Logf("stop+rm took %v", time.Since(t0))
	deadline := time.Now().Add(30 * time.Second)
	for x.mounts(t, vol) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the ledger did not empty after stop/rm\nstowage log:\n%s\ndockerd log:\n%s", grepLines(x.d.Log(), "Unmount", "Mount", "error", "warn"), x.e.LogTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	x.docker(t, "volume", "rm", vol)
	if x.listed(t, vol) {
		t.Fatal("volume listed after rm")
	}
	if _, err := os.Stat(filepath.Join(x.d.Root, "dir", vol)); !os.IsNotExist(err) {
		t.Fatalf("volume data left after rm: %v", err)
	}
}

// dockerd restarts with live-restore: the container keeps running and its
// mount; stowage's ledger still holds it; the later stop/rm works.
func TestDockerdRestartWithLiveRestore(t *testing.T) {
	x := setup(t, true)
	vol := "lr-" + strings.TrimPrefix(x.d.Name, "stw-")
	x.docker(t, "volume", "create", "-d", x.d.Name, vol)
	c := x.start(t, vol)
	if n := x.mounts(t, vol); n != 1 {
		t.Fatalf("mounts %d, want 1", n)
	}
	x.e.Restart(t, engine.Options{LiveRestore: true})
	if !x.listed(t, vol) {
		t.Fatal("volume not listed after the dockerd restart")
	}
	x.survived(t, c, vol)
	if n := x.mounts(t, vol); n != 1 {
		t.Fatalf("after the restart mounts %d, want 1 (the running container)", n)
	}
	if _, _, err := x.e.Docker("volume", "rm", vol); err == nil {
		t.Fatal("volume rm succeeded while a running container uses it")
	}
	x.finish(t, c, vol)
}

// dockerd restarts without live-restore: containers stop with it and their
// mounts are released; volumes and data stay; the volume can be used and
// removed afterwards.
func TestDockerdRestartWithoutLiveRestore(t *testing.T) {
	x := setup(t, false)
	vol := "nolr-" + strings.TrimPrefix(x.d.Name, "stw-")
	x.docker(t, "volume", "create", "-d", x.d.Name, vol)
	c := x.start(t, vol)
	x.e.Restart(t, engine.Options{})
	if !x.listed(t, vol) {
		t.Fatal("volume not listed after the dockerd restart")
	}
	if x.running(t, c) {
		t.Fatal("container kept running without live-restore?")
	}
	waitFor(t, "the stopped container's unmount", func() bool { return x.mounts(t, vol) == 0 })
	if got := x.docker(t, "run", "--rm", "--network", "none", "-v", vol+":/d", x.e.Image(), "cat", "/d/marker"); got != "before" {
		t.Fatalf("data after the restart: %q", got)
	}
	x.docker(t, "start", c)
	x.survived(t, c, vol)
	x.finish(t, c, vol)
}

// stowage is SIGKILLed and restarted while a container runs: Docker never
// replays the Mount, so only the persisted ledger knows; the container keeps
// its data; the Unmount at stop finds its entry.
func TestStowageRestartWhileContainersRun(t *testing.T) {
	x := setup(t, false)
	vol := "sr-" + strings.TrimPrefix(x.d.Name, "stw-")
	x.docker(t, "volume", "create", "-d", x.d.Name, vol)
	c := x.start(t, vol)
	x.d.Kill(t)
	x.d.Restart(t)
	if !x.listed(t, vol) {
		t.Fatal("volume not listed after the stowage restart")
	}
	if n := x.mounts(t, vol); n != 1 {
		t.Fatalf("after the stowage restart mounts %d, want 1 (persisted ledger)", n)
	}
	out, _, err := x.e.Docker("volume", "rm", vol)
	if err == nil {
		t.Fatalf("volume rm succeeded while a container runs on it: %s", out)
	}
	x.survived(t, c, vol)
	x.d.Stop(t) // a clean stop too
	x.d.Restart(t)
	x.survived(t, c, vol)
	x.finish(t, c, vol)
}

// Both at once, as a host's service manager does it: stowage dies, dockerd
// (live-restore) restarts and stowage comes back while dockerd is still
// retrying it. Nothing is forgotten by either.
func TestStowageAndDockerdRestartTogether(t *testing.T) {
	x := setup(t, true)
	vol := "both-" + strings.TrimPrefix(x.d.Name, "stw-")
	x.docker(t, "volume", "create", "-d", x.d.Name, vol)
	c := x.start(t, vol)
	x.d.Kill(t)
	back := make(chan struct{})
	go func() {
		defer close(back)
		time.Sleep(1500 * time.Millisecond) // inside dockerd's 15 s of retries
		x.d.Restart(t)
	}()
	x.e.Restart(t, engine.Options{LiveRestore: true})
	<-back
	if !x.listed(t, vol) {
		t.Fatal("volume forgotten after both restarted")
	}
	x.survived(t, c, vol)
	if n := x.mounts(t, vol); n != 1 {
		t.Fatalf("mounts %d after both restarted, want 1", n)
	}
	x.finish(t, c, vol)
}

// stowage stays down for all of dockerd's start: dockerd cannot restore the
// running container's mount points ("failed to prepare mountpoints") and so
// never sends its Unmount. The volume and data are kept; after the container
// is gone, Remove refuses naming the mount, and `stowage release VOLUME ID`
// with the ID prefix it showed clears it. README "Reliability" documents this.
func TestDockerdStartsWhileStowageIsDown(t *testing.T) {
	x := setup(t, true)
	vol := "down-" + strings.TrimPrefix(x.d.Name, "stw-")
	x.docker(t, "volume", "create", "-d", x.d.Name, vol)
	c := x.start(t, vol)
	x.d.Kill(t)
	x.e.Restart(t, engine.Options{LiveRestore: true}) // ~30 s: dockerd retries the plugin twice
	x.d.Restart(t)
	if !x.listed(t, vol) {
		t.Fatal("volume forgotten")
	}
	x.survived(t, c, vol)
	x.docker(t, "stop", "-t", "1", c)
	x.docker(t, "rm", c)
	time.Sleep(2 * time.Second)
	if n := x.mounts(t, vol); n == 0 {
		// Docker sent the Unmount after all: the ordinary path.
		t.Logf("engine %s sent the Unmount after all", x.e.Version())
		x.docker(t, "volume", "rm", vol)
		return
	}
	t.Logf("engine %s never sent the Unmount: clearing it with stowage release", x.e.Version())
	_, stderr, err := x.e.Docker("volume", "rm", vol)
	if err == nil || !strings.Contains(stderr, "in use") || !strings.Contains(stderr, "mount IDs ") {
		t.Fatalf("volume rm with a mount Docker will never unmount: %v %s", err, stderr)
	}
	prefix := stderr[strings.Index(stderr, "mount IDs ")+len("mount IDs "):]
	prefix = prefix[:12]
	out, err := exec.Command(daemon.Bin(t), "release", "--socket", x.d.Name, vol, prefix).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "released 1 mount(s)") {
		t.Fatalf("stowage release %s %s: %v\n%s", vol, prefix, err, out)
	}
	x.docker(t, "volume", "rm", vol)
	if _, err := os.Stat(filepath.Join(x.d.Root, "dir", vol)); !os.IsNotExist(err) {
		t.Fatalf("volume data left after rm: %v", err)
	}
}

func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
