// Package backends tests every backend end to end: a private Docker engine,
// real stowage daemons on filesystems made for the test (a btrfs root for
// dir's qgroups, a nearly full root for failure atomicity), and containers
// that write, stat and hit limits.
package backends

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

// env is what every subtest shares: one engine, and daemons by root kind.
type env struct {
	eng *engine.Engine
	// btr serves a btrfs root with quotas and bind roots.
	btr *daemon.Daemon
	// bindRoot is btr's --bind-roots.
	bindRoot string
}

// loopFS makes a sparse file of size, formats it fstype and mounts it at a
// fresh temp dir; cleanup unmounts it (the loop device autoclears).
func loopFS(t *testing.T, fstype, size string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "stwbk-")
	if err != nil {
		t.Fatal(err)
	}
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "truncate", "-s", size, img)
	mkfs := map[string][]string{"btrfs": {"mkfs.btrfs", "-q", "-f"}, "ext4": {"mkfs.ext4", "-q", "-F", "-m", "0"}}[fstype]
	run(t, mkfs[0], append(mkfs[1:], img)...)
	run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		// Anything the daemons left mounted below first (they should not).
		if out, err := exec.Command("umount", "-R", mnt).CombinedOutput(); err != nil {
			t.Errorf("unmounting test filesystem %s: %v: %s", mnt, err, out)
		}
		os.RemoveAll(dir)
	})
	return mnt
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// volume creates a volume through Docker; cleanup removes it.
func (e *env) volume(t *testing.T, d *daemon.Daemon, name string, opts ...string) {
	t.Helper()
	args := []string{"volume", "create", "-d", d.Name}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	e.eng.MustDocker(t, append(args, name)...)
	t.Cleanup(func() { e.eng.Docker("volume", "rm", "-f", name) })
}

// createFails asserts docker volume create fails with want in its error.
func (e *env) createFails(t *testing.T, d *daemon.Daemon, name, want string, opts ...string) {
	t.Helper()
	args := []string{"volume", "create", "-d", d.Name}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	_, stderr, err := e.eng.Docker(append(args, name)...)
	if err == nil {
		e.eng.Docker("volume", "rm", "-f", name)
		t.Fatalf("creating %s with %v succeeded; want an error containing %q", name, opts, want)
	}
	if !strings.Contains(stderr, want) {
		t.Fatalf("creating %s with %v: error %q does not contain %q", name, opts, strings.TrimSpace(stderr), want)
	}
	assertNoVolume(t, d, name)
}

// sh runs a shell command in a throwaway container with vol at /data and
// returns its combined output and whether it succeeded.
func (e *env) sh(t *testing.T, vol, script string) (string, bool) {
	t.Helper()
	out, stderr, err := e.eng.Docker("run", "--rm", "--network", "none", "-v", vol+":/data", e.eng.Image(), "sh", "-c", script)
	if err != nil && !strings.Contains(err.Error(), "exit status") {
		t.Fatalf("docker run: %v\n%s", err, stderr)
	}
	return out + stderr, err == nil
}

func (e *env) mustSh(t *testing.T, vol, script string) string {
	t.Helper()
	out, ok := e.sh(t, vol, script)
	if !ok {
		t.Fatalf("in a container with %s: %q failed:\n%s", vol, script, out)
	}
	return strings.TrimSpace(out)
}

// get calls Get on the daemon's socket, as dockerd does.
func get(t *testing.T, d *daemon.Daemon, name string) (map[string]interface{}, error) {
	t.Helper()
	var resp struct {
		Volume struct {
			Mountpoint string
			Status     map[string]interface{}
		}
	}
	err := d.Client().Call(context.Background(), "/VolumeDriver.Get", map[string]string{"Name": name}, &resp)
	return resp.Volume.Status, err
}

func assertNoVolume(t *testing.T, d *daemon.Daemon, name string) {
	t.Helper()
	_, err := get(t, d, name)
	var ce *client.Error
	if err == nil || !asClientErr(err, &ce) || !strings.Contains(ce.Err, "no such volume") {
		t.Fatalf("volume %s: Get = %v, want no such volume", name, err)
	}
}

func asClientErr(err error, ce **client.Error) bool {
	e, ok := err.(*client.Error)
	if ok {
		*ce = e
	}
	return ok
}

// assertEmptyDir fails unless dir holds nothing.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%s should be empty after a failed create, holds %v", dir, names)
	}
}

func jsonString(v interface{}) string {
	b, _ := json.Marshal(v)
	return string(b)
}
