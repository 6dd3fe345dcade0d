package hostile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/loop"
	"github.com/stowage/stowage/internal/store"
)

// tinyFS mounts a fresh ext4 of size bytes on a loop device and returns its
// mount point; cleanup unmounts it (the loop device autoclears).
func tinyFS(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-N", "256", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	dev, err := loop.Attach(img)
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := unix.Mount(dev.Path, mnt, "ext4", 0, ""); err != nil {
		dev.Close()
		t.Fatalf("mounting %s: %v", dev.Path, err)
	}
	dev.Close()
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// fill writes a filler file until the filesystem is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// ext4 reserves blocks for delayed allocation and gives some back at
	// sync: fill until a write fails right after a sync.
	buf := make([]byte, 1024)
	for round := 0; round < 20; round++ {
		wrote := 0
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
			wrote++
		}
		f.Sync()
		if wrote == 0 {
			return p
		}
	}
	t.Fatal("could not fill the filesystem")
	return p
}

func callD(c *client.Client, path string, req, resp interface{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.Call(ctx, path, req, resp)
}

// consistent checks every record has its data and every data directory has
// its record, reading the state file the way the daemon does.
func consistent(t *testing.T, c *client.Client, root string) (records int) {
	t.Helper()
	var list struct{ Volumes []struct{ Name string } }
	if err := callD(c, "/VolumeDriver.List", struct{}{}, &list); err != nil {
		t.Fatalf("List: %v", err)
	}
	recorded := map[string]bool{}
	for _, v := range list.Volumes {
		recorded[v.Name] = true
		if _, err := os.Stat(filepath.Join(root, "dir", v.Name)); err != nil {
			t.Errorf("volume %s is recorded but its data is missing: %v", v.Name, err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(root, "dir"))
	for _, e := range ents {
		if !recorded[e.Name()] {
			t.Errorf("data directory %s has no record: a half-made volume", e.Name())
		}
	}
	return len(list.Volumes)
}

// The root fills up: Creates and Mounts fail with a clear error or succeed
// completely as space is freed 1 KiB at a time (mkdir fails; the state
// commit, appended to the journal's preallocated space, does not); nothing
// half-made stays, also after a restart.
func TestRootFillsUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: loop devices and mounts")
	}
	mnt := tinyFS(t, 4<<20)
	root := filepath.Join(mnt, "root")
	d := daemon.Start(t, daemon.Options{Root: root, Args: []string{"--log-level", "warn", "--backends", "dir"}})
	c := d.Client()
	if err := callD(c, "/VolumeDriver.Create", map[string]string{"Name": "before"}, nil); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, mnt)
	failures, successes, mountFail := 0, 0, 0
	kinds := map[string]bool{} // which step failed: mkdir, the commit, the ledger
	for step := 0; step < 400 && successes < 6; step++ {
		name := fmt.Sprintf("full-%02d", step)
		err := callD(c, "/VolumeDriver.Create", map[string]string{"Name": name}, nil)
		if err != nil {
			failures++
			kinds[firstWords(err.Error(), name)] = true
			if !strings.Contains(err.Error(), "no space left") || !strings.Contains(err.Error(), name) {
				t.Errorf("Create on a full root: %q; want the volume and 'no space left'", err)
			}
			if _, serr := os.Stat(filepath.Join(root, "dir", name)); serr == nil {
				t.Errorf("a failed Create (%v) left its directory behind", err)
			}
		} else {
			successes++
			var mr struct{ Mountpoint string }
			id := fmt.Sprintf("%064d", step)
			merr := callD(c, "/VolumeDriver.Mount", map[string]string{"Name": name, "ID": id}, &mr)
			if merr != nil {
				mountFail++
				kinds[firstWords(merr.Error(), name)] = true
				if !strings.Contains(merr.Error(), "no space left") {
					t.Errorf("Mount on a full root: %q", merr)
				}
			}
			var get struct {
				Volume struct{ Status map[string]interface{} }
			}
			callD(c, "/VolumeDriver.Get", map[string]string{"Name": name}, &get)
			want := 1
			if merr != nil {
				want = 0
			}
			if fmt.Sprint(get.Volume.Status["mounts"]) != fmt.Sprint(want) {
				t.Errorf("after Mount (err %v) the ledger says %v mounts, want %d", merr, get.Volume.Status["mounts"], want)
			}
		}
		consistent(t, c, root)
		// Free 1 KiB and try again.
		fi, _ := os.Stat(filler)
		os.Truncate(filler, fi.Size()-1024)
	}
	t.Logf("on a filling root: %d creates refused, %d succeeded, %d mounts refused; errors seen: %q", failures, successes, mountFail, keysOf(kinds))
	if failures == 0 || successes == 0 {
		t.Fatalf("the sweep did not cross from full to free: %d failures, %d successes", failures, successes)
	}
	// The state's changes go to its journal, whose space was written once
	// at start: a full root fails the storage step, never the record.
	if kinds[`volume "NAME": recording it failed`] {
		t.Errorf("a full root made the state commit fail, though the journal's space is its own (errors: %q)", keysOf(kinds))
	}
	os.Remove(filler)
	// Out of inodes: the data directory cannot be made though the state could.
	inodes := filepath.Join(mnt, "inodes")
	os.Mkdir(inodes, 0o700)
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(inodes, fmt.Sprint(i)))
		if err != nil {
			break
		}
		f.Close()
	}
	err := callD(c, "/VolumeDriver.Create", map[string]string{"Name": "noinode"}, nil)
	if err == nil || !strings.Contains(err.Error(), "no space left") || !strings.Contains(err.Error(), "noinode") {
		t.Errorf("Create with no inodes left: %v", err)
	}
	consistent(t, c, root)
	os.RemoveAll(inodes)
	d.Kill(t)
	d.Restart(t)
	c = d.Client()
	if n := consistent(t, c, root); n != successes+1 {
		t.Fatalf("after a restart %d volumes, want %d", n, successes+1)
	}
}

// A read-only root: writes fail clearly, reads keep working, nothing changes;
// a daemon cannot start on it and says why.
func TestReadOnlyRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: loop devices and mounts")
	}
	mnt := tinyFS(t, 8<<20)
	root := filepath.Join(mnt, "root")
	d := daemon.Start(t, daemon.Options{Root: root, Args: []string{"--log-level", "warn", "--backends", "dir"}})
	c := d.Client()
	if err := callD(c, "/VolumeDriver.Create", map[string]string{"Name": "ro"}, nil); err != nil {
		t.Fatal(err)
	}
	// What errors=remount-ro does after an I/O error, while stowage has the
	// state file open for writing (a plain remount,ro would be refused busy).
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT, "abort"); err != nil {
		t.Fatalf("remount abort: %v", err)
	}
	roErr := func(err error) bool {
		return err != nil && (strings.Contains(err.Error(), "read-only file system") || strings.Contains(err.Error(), "input/output error"))
	}
	err := callD(c, "/VolumeDriver.Create", map[string]string{"Name": "new"}, nil)
	if !roErr(err) || !strings.Contains(err.Error(), `"new"`) {
		t.Errorf("Create on a read-only root: %v", err)
	}
	err = callD(c, "/VolumeDriver.Mount", map[string]string{"Name": "ro", "ID": strings.Repeat("1", 64)}, nil)
	if !roErr(err) {
		t.Errorf("Mount on a read-only root (the ledger cannot be written): %v", err)
	}
	var get struct{ Volume *struct{ Name string } }
	if err := callD(c, "/VolumeDriver.Get", map[string]string{"Name": "ro"}, &get); err != nil || get.Volume == nil {
		t.Errorf("Get on a read-only root must keep working (Docker forgets volumes whose Get fails): %v", err)
	}
	if err := callD(c, "/VolumeDriver.Remove", map[string]string{"Name": "ro"}, nil); err == nil {
		t.Error("Remove succeeded on a read-only root")
	}
	consistent(t, c, root)
	d.Stop(t)
	// Starting on a read-only root fails loudly.
	out, err := exec.Command(daemon.Bin(t), "serve", "--root", root, "--socket", daemon.RandomName("stw"), "--announce-to", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "read-only") && !strings.Contains(string(out), "input/output") {
		t.Errorf("serve on a read-only root: %v\n%s", err, out)
	}
	if _, err := store.Open(filepath.Join(root, store.FileName), store.Options{ReadOnly: true}); err != nil {
		t.Errorf("the state file is unreadable after all this: %v", err)
	}
}

// A backend tool that is missing or fails: a clear error naming the tool and
// its stderr, and no half-made volume.
func TestBackendToolFails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	fake := t.TempDir()
	script := "#!/bin/sh\necho 'mkfs.ext4: simulated failure: device exploded' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(fake, "mkfs.ext4"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		label, path, want string
	}{
		{"missing", t.TempDir(), "mkfs.ext4"},
		{"exits non-zero", fake, "device exploded"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			d := daemon.Start(t, daemon.Options{Args: []string{"--log-level", "warn", "--backends", "dir,image"}, Env: []string{"PATH=" + tc.path}})
			c := d.Client()
			err := callD(c, "/VolumeDriver.Create", map[string]interface{}{"Name": "img", "Opts": map[string]string{"backend": "image", "size": "64M"}}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"img"`) {
				t.Fatalf("Create with mkfs %s: %v; want the volume and %q", tc.label, err, tc.want)
			}
			ents, _ := os.ReadDir(filepath.Join(d.Root, "image"))
			if len(ents) != 0 {
				t.Fatalf("a failed image Create left %v behind", ents)
			}
			var list struct{ Volumes []json.RawMessage }
			if err := callD(c, "/VolumeDriver.List", struct{}{}, &list); err != nil || len(list.Volumes) != 0 {
				t.Fatalf("List after a failed Create: %v %v", list.Volumes, err)
			}
		})
	}
}

// firstWords is an error's text up to its first colon after the volume name:
// which step failed, without the details.
func firstWords(e, name string) string {
	e = strings.ReplaceAll(e, name, "NAME")
	if i := strings.Index(e, ": "); i >= 0 {
		if j := strings.Index(e[i+2:], ":"); j >= 0 {
			return e[:i+2+j]
		}
	}
	return e
}

func keysOf(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// An image volume on a root that fills up while mkfs writes: a clear error
// and no image file, directory or loop device left.
func TestImageCreateOnFullRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: loop devices and mounts")
	}
	mnt := tinyFS(t, 6<<20)
	root := filepath.Join(mnt, "root")
	d := daemon.Start(t, daemon.Options{Root: root, Args: []string{"--log-level", "warn", "--backends", "dir,image"}})
	c := d.Client()
	filler := fill(t, mnt)
	fi, _ := os.Stat(filler)
	os.Truncate(filler, fi.Size()-256<<10) // room for the state, not for a filesystem
	err := callD(c, "/VolumeDriver.Create", map[string]interface{}{"Name": "img", "Opts": map[string]string{"backend": "image", "size": "64M"}}, nil)
	if err == nil || !strings.Contains(err.Error(), `"img"`) {
		t.Fatalf("image Create on a full root: %v", err)
	}
	t.Logf("image Create on a full root: %v", err)
	if ents, _ := os.ReadDir(filepath.Join(root, "image")); len(ents) != 0 {
		t.Fatalf("a failed image Create left %v behind", ents)
	}
	if out, _ := exec.Command("losetup", "-j", filepath.Join(root, "image", "img", "disk.img")).CombinedOutput(); len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("a loop device is left: %s", out)
	}
	consistent(t, c, root)
}
