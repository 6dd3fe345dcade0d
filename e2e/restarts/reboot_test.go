// Package restarts proves stowage keeps its promises across the restarts a
// host goes through: a reboot (simulated), dockerd restarts with running
// containers (with and without live-restore), stowage restarts while
// containers run, and both at once. They fail, never skip, without root or
// an engine.
package restarts

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/loop"
	"github.com/stowage/stowage/internal/mounttable"
)

func call(t *testing.T, c *client.Client, path string, req, resp interface{}) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return c.Call(ctx, path, req, resp)
}

func must(t *testing.T, c *client.Client, path string, req, resp interface{}) {
	t.Helper()
	if err := call(t, c, path, req, resp); err != nil {
		t.Fatalf("%s %v: %v", path, req, err)
	}
}

func id(n int) string { return fmt.Sprintf("%064x", n) }

// simulateReboot does to stowage's root what a reboot does: every process
// dies, every mount goes, every loop device is detached. The boot ID changes.
func simulateReboot(t *testing.T, d *daemon.Daemon, bootFile string, images []string) {
	t.Helper()
	d.Kill(t)
	mts, err := mounttable.Under(d.Root)
	if err != nil {
		t.Fatal(err)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mts))) // deepest first
	for _, m := range mts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Fatalf("tearing down %s: %v", m, err)
		}
	}
	for _, img := range images {
		if dev, err := loop.Find(img); err == nil && dev != "" {
			if err := loop.Detach(dev); err != nil {
				t.Fatalf("detaching %s: %v", dev, err)
			}
		}
	}
	if mts, _ := mounttable.Under(d.Root); len(mts) != 0 {
		t.Fatalf("mounts survived the simulated reboot: %v", mts)
	}
	if err := os.WriteFile(bootFile, []byte("boot-after-"+daemon.RandomName("r")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRebootWithMountedVolumes: volumes of every backend mounted, ledgers
// non-empty; after the reboot every volume is listed and usable, the stale
// entries are reported and block Remove with a hint, and once released with
// `stowage release` the volume is removable. Data on persistent backends
// survives; tmpfs data is gone by design.
func TestRebootWithMountedVolumes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: mounts and loop devices")
	}
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	os.WriteFile(bootFile, []byte("boot-before\n"), 0o644)
	d := daemon.Start(t, daemon.Options{Args: []string{"--boot-id-file", bootFile, "--backends", "dir,tmpfs,image"}})
	c := d.Client()
	suffix := strings.TrimPrefix(d.Name, "stw-")
	vols := []struct {
		name    string
		opts    map[string]string
		durable bool
	}{
		{"rb-dir-" + suffix, nil, true},
		{"rb-tmpfs-" + suffix, map[string]string{"backend": "tmpfs", "size": "8M"}, false},
		{"rb-image-" + suffix, map[string]string{"backend": "image", "size": "32M"}, true},
	}
	var images []string
	for i, v := range vols {
		must(t, c, "/VolumeDriver.Create", map[string]interface{}{"Name": v.name, "Opts": v.opts}, nil)
		var mr volume.MountResponse
		for _, mid := range []int{1, 1, 2} { // ID 1 twice, as Docker may
			must(t, c, "/VolumeDriver.Mount", map[string]string{"Name": v.name, "ID": id(i*10 + mid)}, &mr)
		}
		if err := os.WriteFile(filepath.Join(mr.Mountpoint, "before-reboot"), []byte(v.name), 0o644); err != nil {
			t.Fatal(err)
		}
		unix.Sync()
		if v.opts["backend"] == "image" {
			m, _ := filepath.Glob(filepath.Join(d.Root, "image", v.name, "*.img"))
			images = append(images, m...)
		}
	}
	if mts, _ := mounttable.Under(d.Root); len(mts) != 2 {
		t.Fatalf("before the reboot: mounts %v, want the tmpfs and the image", mts)
	}

	simulateReboot(t, d, bootFile, images)
	d.Restart(t)
	c = d.Client()

	var list volume.ListResponse
	must(t, c, "/VolumeDriver.List", struct{}{}, &list)
	if len(list.Volumes) != len(vols) {
		t.Fatalf("after the reboot %d volumes are listed, want %d", len(list.Volumes), len(vols))
	}
	var rep driver.Report
	must(t, c, "/Stowage.Reconcile", nil, &rep)
	stale := 0
	for _, f := range rep.Findings {
		if f.Kind != driver.FindStaleMount {
			t.Errorf("unexpected finding after a reboot: %+v", f)
			continue
		}
		stale++
		if !strings.Contains(f.Detail, "stowage release "+f.Volume) {
			t.Errorf("stale-mount finding does not say how to clear it: %q", f.Detail)
		}
	}
	if stale != 2*len(vols) {
		t.Fatalf("%d stale-mount findings, want %d (two IDs per volume)", stale, 2*len(vols))
	}
	for i, v := range vols {
		var get volume.GetResponse
		must(t, c, "/VolumeDriver.Get", map[string]string{"Name": v.name}, &get)
		if fmt.Sprint(get.Volume.Status["stale_mounts"]) != "3" {
			t.Errorf("%s: Status %v, want stale_mounts 3", v.name, get.Volume.Status)
		}
		err := call(t, c, "/VolumeDriver.Remove", map[string]string{"Name": v.name}, nil)
		if err == nil || !strings.Contains(err.Error(), "stowage release "+v.name) {
			t.Fatalf("%s: Remove with stale entries = %v, want a refusal naming 'stowage release %s'", v.name, err, v.name)
		}
		// Usable: a new container mounts it and finds what was written.
		var mr volume.MountResponse
		must(t, c, "/VolumeDriver.Mount", map[string]string{"Name": v.name, "ID": id(i*10 + 5)}, &mr)
		got, err := os.ReadFile(filepath.Join(mr.Mountpoint, "before-reboot"))
		switch {
		case v.durable && string(got) != v.name:
			t.Errorf("%s: data written before the reboot: %q, %v", v.name, got, err)
		case !v.durable && err == nil:
			t.Errorf("%s: tmpfs data survived a reboot?", v.name)
		}
		if err := os.WriteFile(filepath.Join(mr.Mountpoint, "after-reboot"), []byte("x"), 0o644); err != nil {
			t.Errorf("%s: not writable after the reboot: %v", v.name, err)
		}
		// Docker mounting a pre-reboot ID again replaces its stale entry.
		must(t, c, "/VolumeDriver.Mount", map[string]string{"Name": v.name, "ID": id(i*10 + 1)}, &mr)
		must(t, c, "/VolumeDriver.Unmount", map[string]string{"Name": v.name, "ID": id(i*10 + 1)}, nil)
		must(t, c, "/VolumeDriver.Unmount", map[string]string{"Name": v.name, "ID": id(i*10 + 5)}, nil)
		must(t, c, "/VolumeDriver.Get", map[string]string{"Name": v.name}, &get)
		if fmt.Sprint(get.Volume.Status["stale_mounts"]) != "1" || fmt.Sprint(get.Volume.Status["mounts"]) != "1" {
			t.Errorf("%s: after remount/unmount Status %v, want mounts 1, stale_mounts 1 (ID 2 only)", v.name, get.Volume.Status)
		}
	}
	if mts, _ := mounttable.Under(d.Root); len(mts) != 0 {
		t.Fatalf("storage left up with only stale entries: %v", mts)
	}
	// The operator's way out: stowage release drops only earlier-boot entries.
	for i, v := range vols {
		out, err := exec.Command(daemon.Bin(t), "release", "--socket", d.Name, v.name).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "released 1 mount(s): "+id(i*10+2)) {
			t.Fatalf("stowage release %s: %v\n%s", v.name, err, out)
		}
		out, err = exec.Command(daemon.Bin(t), "release", "--socket", d.Name, v.name).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "nothing to release") {
			t.Fatalf("second stowage release %s: %v\n%s", v.name, err, out)
		}
		must(t, c, "/VolumeDriver.Remove", map[string]string{"Name": v.name}, nil)
	}
	must(t, c, "/Stowage.Reconcile", nil, &rep)
	if len(rep.Findings) != 0 || rep.Volumes != 0 {
		t.Fatalf("after removing everything reconcile says %+v", rep)
	}
	for _, b := range []string{"dir", "tmpfs", "image"} {
		if ents, _ := os.ReadDir(filepath.Join(d.Root, b)); len(ents) != 0 {
			t.Errorf("backend %s left %d entries behind", b, len(ents))
		}
	}
	for _, img := range images {
		if dev, _ := loop.Find(img); dev != "" {
			t.Errorf("loop device %s left attached to %s", dev, img)
		}
	}
}
