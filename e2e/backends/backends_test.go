package backends

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

// TestBackends runs every backend scenario against one private engine, so
// the engine's start is paid once.
func TestBackends(t *testing.T) {
	eng := engine.Start(t, engine.Options{})
	btrRoot := loopFS(t, "btrfs", "2G")
	bindRoot := filepath.Join(btrRoot, "binds")
	if err := os.Mkdir(bindRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{eng: eng, bindRoot: bindRoot}
	e.btr = daemon.Start(t, daemon.Options{Root: filepath.Join(btrRoot, "root"), Args: []string{"--bind-roots", bindRoot}})

	t.Run("ImageLimitsAndOwnership", func(t *testing.T) {
		for _, c := range []struct {
			fs string
			mb int
		}{{"ext4", 32}, {"xfs", 300}, {"btrfs", 128}} {
			c := c
			t.Run(c.fs, func(t *testing.T) {
				name := daemon.RandomName("img-" + c.fs)
				e.volume(t, e.btr, name, "backend=image", "fs="+c.fs, fmt.Sprintf("size=%dM", c.mb), "uid=1234", "gid=5678", "mode=0750")
				if got := e.mustSh(t, name, "stat -c '%u %g %a' /data"); got != "1234 5678 750" {
					t.Errorf("stat of the volume's root = %q, want \"1234 5678 750\"", got)
				}
				out, ok := e.sh(t, name, fmt.Sprintf("dd if=/dev/zero of=/data/big bs=1M count=%d && sync", c.mb+32))
				if ok || !strings.Contains(out, "No space left on device") {
					t.Errorf("writing %dM into a %dM %s volume: ok=%v, output %q; want No space left on device", c.mb+32, c.mb, c.fs, ok, out)
				}
				st, err := get(t, e.btr, name)
				if err != nil {
					t.Fatal(err)
				}
				if st["size_bytes"] != float64(c.mb<<20) || st["fs"] != c.fs {
					t.Errorf("Get status = %s; want size_bytes %d and fs %s", jsonString(st), c.mb<<20, c.fs)
				}
			})
		}
	})

	t.Run("TmpfsLimitOwnershipAndDiscard", func(t *testing.T) {
		name := daemon.RandomName("tmp")
		e.volume(t, e.btr, name, "backend=tmpfs", "size=8M", "uid=1234", "gid=5678", "mode=0750")
		if got := e.mustSh(t, name, "stat -c '%u %g %a' /data"); got != "1234 5678 750" {
			t.Errorf("stat = %q, want \"1234 5678 750\"", got)
		}
		out, ok := e.sh(t, name, "dd if=/dev/zero of=/data/big bs=1M count=16")
		if ok || !strings.Contains(out, "No space left on device") {
			t.Errorf("writing 16M into an 8M tmpfs: ok=%v, %q; want No space left on device", ok, out)
		}
		e.mustSh(t, name, "echo gone > /data/x")
		if got := e.mustSh(t, name, "ls -A /data"); got != "" {
			t.Errorf("tmpfs kept %q after its last unmount; its data must be discarded", got)
		}
		st, _ := get(t, e.btr, name)
		if !strings.Contains(fmt.Sprint(st["ephemeral"]), "discarded") {
			t.Errorf("Get status %s does not say the data is discarded", jsonString(st))
		}
	})

	t.Run("DirOnBtrfsQuota", func(t *testing.T) {
		name := daemon.RandomName("dir")
		e.volume(t, e.btr, name, "backend=dir", "size=10M", "uid=1234", "gid=5678", "mode=0750")
		if got := e.mustSh(t, name, "stat -c '%u %g %a' /data"); got != "1234 5678 750" {
			t.Errorf("stat = %q, want \"1234 5678 750\"", got)
		}
		out, ok := e.sh(t, name, "dd if=/dev/zero of=/data/big bs=1M count=20 && sync")
		if ok || !strings.Contains(out, "Disk quota exceeded") {
			t.Errorf("writing 20M into a 10M dir volume: ok=%v, %q; want Disk quota exceeded", ok, out)
		}
		st, _ := get(t, e.btr, name)
		if used, _ := st["used_bytes"].(float64); used < 5<<20 || st["size_bytes"] != float64(10<<20) {
			t.Errorf("Get status %s: want size_bytes 10M and used_bytes from the qgroup (at least 5M)", jsonString(st))
		}
	})

	t.Run("Bind", func(t *testing.T) {
		name := daemon.RandomName("bind")
		host := filepath.Join(bindRoot, name)
		if err := os.Mkdir(host, 0o755); err != nil {
			t.Fatal(err)
		}
		e.volume(t, e.btr, name, "backend=bind", "path="+host)
		e.mustSh(t, name, "echo kept > /data/file")
		e.eng.MustDocker(t, "volume", "rm", name)
		if b, err := os.ReadFile(filepath.Join(host, "file")); err != nil || string(b) != "kept\n" {
			t.Fatalf("host file after docker volume rm: %q, %v; want it kept", b, err)
		}
		outside := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(bindRoot, name+"-link")); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(host, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		e.volume(t, e.btr, name+"-again", "backend=bind", "path="+host)
		for _, c := range []struct{ path, want string }{
			{outside, "not inside a bind root"},
			{bindRoot + "-sibling", "cannot be adopted"},
			{filepath.Join(host, "..", ".."), "not inside a bind root"},
			{filepath.Join(bindRoot, name+"-link"), "resolves to " + outside},
			{bindRoot, "is a root itself"},
			{filepath.Join(host, "sub"), "overlaps"},
		} {
			e.createFails(t, e.btr, daemon.RandomName("bad"), c.want, "backend=bind", "path="+c.path)
		}
		if entries, _ := os.ReadDir(filepath.Join(e.btr.Root, "bind")); len(entries) != 1 {
			t.Errorf("bind markers after refused creates: %d, want 1 (only %s-again)", len(entries), name)
		}
	})

	t.Run("Clone", func(t *testing.T) {
		for _, c := range []struct{ backend, extra string }{{"dir", "mode=0755"}, {"image", "size=32M"}} {
			c := c
			t.Run(c.backend, func(t *testing.T) { e.clone(t, e.btr, c.backend, c.extra) })
		}
	})

	t.Run("Resize", func(t *testing.T) {
		name := daemon.RandomName("rsz")
		e.volume(t, e.btr, name, "backend=image", "size=32M")
		sum := e.mustSh(t, name, "dd if=/dev/urandom of=/data/f bs=1M count=8 2>/dev/null && sha256sum /data/f")
		resize := func(size string) (string, error) {
			out, err := exec.Command(daemon.Bin(t), "resize", "--socket", e.btr.Name, name, size).CombinedOutput()
			return string(out), err
		}
		if out, err := resize("64M"); err != nil {
			t.Fatalf("offline resize: %v: %s", err, out)
		}
		if got := e.mustSh(t, name, "sha256sum /data/f"); got != sum {
			t.Errorf("data after resize: %q, want %q", got, sum)
		}
		if kb := dfKB(t, e.mustSh(t, name, "df -k /data")); kb < 50<<10 {
			t.Errorf("after resize to 64M the filesystem has %d KiB", kb)
		}
		if out, err := resize("16M"); err == nil || !strings.Contains(out, "only grow") {
			t.Errorf("shrinking: %v %q; want a refusal saying volumes only grow", err, out)
		}
		if st, _ := get(t, e.btr, name); st["size_bytes"] != float64(64<<20) {
			t.Errorf("recorded size after resize: %v, want %d", st["size_bytes"], 64<<20)
		}
	})

	// Online growth, with a container using the volume. xfs: online ext4
	// growth needs CAP_SYS_RESOURCE, which this test machine withholds.
	t.Run("ResizeOnline", func(t *testing.T) {
		name := daemon.RandomName("rszon")
		e.volume(t, e.btr, name, "backend=image", "fs=xfs", "size=300M")
		cid := e.eng.MustDocker(t, "run", "-d", "--network", "none", "-v", name+":/data", e.eng.Image(), "sh", "-c", "echo kept > /data/f; sleep 300")
		defer e.eng.Docker("rm", "-f", cid)
		before := dfKB(t, e.eng.MustDocker(t, "exec", cid, "df", "-k", "/data"))
		if out, err := exec.Command(daemon.Bin(t), "resize", "--socket", e.btr.Name, name, "400M").CombinedOutput(); err != nil {
			t.Fatalf("online resize: %v: %s", err, out)
		}
		if kb := dfKB(t, e.eng.MustDocker(t, "exec", cid, "df", "-k", "/data")); kb < before+90<<10 {
			t.Errorf("online resize from 300M to 400M: the running container sees %d KiB, was %d", kb, before)
		}
		if got := e.eng.MustDocker(t, "exec", cid, "cat", "/data/f"); got != "kept" {
			t.Errorf("data after online resize: %q", got)
		}
		if st, _ := get(t, e.btr, name); st["size_bytes"] != float64(400<<20) {
			t.Errorf("recorded size after resize: %v, want %d", st["size_bytes"], 400<<20)
		}
	})

	t.Run("RemoveRefusedWhileMounted", func(t *testing.T) {
		for _, c := range [][]string{{"backend=dir"}, {"backend=image", "size=16M"}, {"backend=tmpfs"}, {"backend=bind"}} {
			name := daemon.RandomName("busy")
			if c[0] == "backend=bind" {
				host := filepath.Join(bindRoot, name)
				os.Mkdir(host, 0o755)
				c = append(c, "path="+host)
			}
			e.volume(t, e.btr, name, c...)
			cid := e.eng.MustDocker(t, "run", "-d", "--network", "none", "-v", name+":/data", e.eng.Image(), "sh", "-c", "echo precious > /data/f; sleep 300")
			err := e.btr.Client().Call(context.Background(), "/VolumeDriver.Remove", map[string]string{"Name": name}, nil)
			if err == nil || !strings.Contains(err.Error(), "in use") {
				t.Errorf("%v: Remove while a container runs: %v; want in use", c, err)
			}
			if got := e.eng.MustDocker(t, "exec", cid, "cat", "/data/f"); got != "precious" {
				t.Errorf("%v: data after refused remove: %q", c, got)
			}
			e.eng.MustDocker(t, "rm", "-f", cid)
		}
	})

	t.Run("PlainRoot", func(t *testing.T) {
		plain := daemon.Start(t, daemon.Options{})
		e.createFails(t, plain, daemon.RandomName("sz"), "backend=image", "backend=dir", "size=1G")
		e.createFails(t, plain, daemon.RandomName("opt"), "valid options are: backend, from, from_mounted, fs, gid, mode, size, uid", "backend=image", "size=1G", "colour=red")
		e.createFails(t, plain, daemon.RandomName("sz"), "must be greater than zero", "backend=image", "size=0")
		e.createFails(t, plain, daemon.RandomName("nob"), "not enabled", "backend=bind", "path=/srv")
		t.Run("CloneByCopy", func(t *testing.T) { e.clone(t, plain, "dir", "uid=0") })
	})

	t.Run("FailedCreateLeavesNothing", func(t *testing.T) {
		root := loopFS(t, "ext4", "64M")
		d := daemon.Start(t, daemon.Options{Root: filepath.Join(root, "root")})
		fill(t, root, 1<<20)
		e.createFails(t, d, daemon.RandomName("full"), "formatting its image", "backend=image", "size=4G")
		assertEmptyDir(t, filepath.Join(d.Root, "image"))
		fill(t, root, 0)
		e.createFails(t, d, daemon.RandomName("full"), "no space left on device", "backend=dir")
		assertEmptyDir(t, filepath.Join(d.Root, "dir"))
		e.createFails(t, d, daemon.RandomName("full"), "no space left on device", "backend=tmpfs", "size=1M")
		assertEmptyDir(t, filepath.Join(d.Root, "tmpfs"))
	})

	t.Run("BackendsCommand", func(t *testing.T) {
		out, err := exec.Command(daemon.Bin(t), "backends", "--format", "json").Output()
		if err != nil {
			t.Fatal(err)
		}
		var docs []struct {
			ID      string
			Options []struct{ Name, Type, Help string }
		}
		if err := json.Unmarshal(out, &docs); err != nil {
			t.Fatalf("stowage backends --format json: %v\n%s", err, out)
		}
		want := map[string][]string{"dir": {"size", "from"}, "image": {"size", "fs", "from"}, "tmpfs": {"size", "uid"}, "bind": {"path"}, "sshfs": {"remote", "port", "identity", "uid", "gid", "mode"}}
		for _, d := range docs {
			for _, o := range d.Options {
				if o.Type == "" || o.Help == "" {
					t.Errorf("backend %s option %s lacks a type or help", d.ID, o.Name)
				}
				for i, w := range want[d.ID] {
					if w == o.Name {
						want[d.ID][i] = ""
					}
				}
			}
			for _, w := range want[d.ID] {
				if w != "" {
					t.Errorf("backend %s does not list option %s", d.ID, w)
				}
			}
			delete(want, d.ID)
		}
		if len(want) > 0 {
			t.Errorf("backends missing from the listing: %v", want)
		}
	})
}

// clone checks a copy holds its source's data, ownership and links, and
// that both diverge independently; a mounted source needs from_mounted.
func (e *env) clone(t *testing.T, d *daemon.Daemon, backend, extra string) {
	src, dst := daemon.RandomName("src"), daemon.RandomName("dst")
	e.volume(t, d, src, "backend="+backend, extra)
	e.mustSh(t, src, "echo one > /data/f && mkdir /data/d && chown 42:43 /data/d && ln -s f /data/l && ln /data/f /data/h")
	e.volume(t, d, dst, "backend="+backend, "from="+src)
	if got := e.mustSh(t, dst, "cat /data/f; stat -c %u:%g /data/d; readlink /data/l; stat -c %h /data/f"); got != "one\n42:43\nf\n2" {
		t.Errorf("clone holds %q; want the source's data, owner, symlink and hard link", got)
	}
	e.mustSh(t, dst, "echo two > /data/f")
	e.mustSh(t, src, "echo three > /data/g")
	if got := e.mustSh(t, src, "cat /data/f"); got != "one" {
		t.Errorf("source changed by a write to its clone: %q", got)
	}
	if got := e.mustSh(t, dst, "ls /data"); strings.Contains(got, "g") {
		t.Errorf("clone sees a file written to its source afterwards: %q", got)
	}
	cid := e.eng.MustDocker(t, "run", "-d", "--network", "none", "-v", src+":/data", e.eng.Image(), "sleep", "300")
	defer e.eng.Docker("rm", "-f", cid)
	e.createFails(t, d, daemon.RandomName("dst"), "from_mounted=true", "backend="+backend, "from="+src)
	e.volume(t, d, daemon.RandomName("dst"), "backend="+backend, "from="+src, "from_mounted=true")
}

// fill allocates a file on the filesystem at mnt until leave bytes are free.
func fill(t *testing.T, mnt string, leave int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	f, err := os.CreateTemp(mnt, "filler-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Shrink the request until it fits: metadata takes some of "free".
	for n := free - leave; n > 0; n -= 64 << 10 {
		if unix.Fallocate(int(f.Fd()), 0, 0, n) == nil {
			break
		}
	}
	if leave == 0 {
		// Mop up the last blocks.
		for i := 0; ; i++ {
			g, err := os.CreateTemp(mnt, "crumb-")
			if err != nil {
				break
			}
			err = unix.Fallocate(int(g.Fd()), 0, 0, 4096)
			g.Close()
			if err != nil || i > 10000 {
				break
			}
		}
	}
}

func dfKB(t *testing.T, out string) int {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 2 {
		t.Fatalf("cannot read df output %q", out)
	}
	n, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatalf("cannot read df output %q", out)
	}
	return n
}
