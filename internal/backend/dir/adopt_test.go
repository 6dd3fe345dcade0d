package dir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
)

func newTestDir(t *testing.T) *Dir {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	b, err := Module.New(backend.Env{Dir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return b.(*Dir)
}

func parse(t *testing.T, raw map[string]string) backend.Options {
	t.Helper()
	o, err := Module.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// A crash between mkdir and the record's commit leaves an empty directory:
// the next Create adopts it, with the requested ownership and mode.
func TestCreateAdoptsEmptyLeftover(t *testing.T) {
	d := newTestDir(t)
	p := filepath.Join(d.dir, "v")
	os.Mkdir(p, 0o700)
	vol := &backend.Volume{Name: "v"}
	if err := d.Create(context.Background(), vol, parse(t, map[string]string{"uid": "1234", "mode": "0750"})); err != nil {
		t.Fatalf("Create over an empty leftover: %v", err)
	}
	var st unix.Stat_t
	unix.Stat(p, &st)
	if st.Uid != 1234 || st.Mode&0o7777 != 0o750 {
		t.Fatalf("adopted dir has uid %d mode %o", st.Uid, st.Mode&0o7777)
	}
}

// Anything but an empty, unmounted directory is refused and left untouched.
func TestCreateRefusesNonEmptyLeftoverUntouched(t *testing.T) {
	d := newTestDir(t)
	cases := map[string]func(p string){
		"non-empty": func(p string) {
			os.Mkdir(p, 0o711)
			os.WriteFile(filepath.Join(p, "someone's data"), []byte("keep"), 0o600)
		},
		"a file": func(p string) { os.WriteFile(p, []byte("keep"), 0o600) },
		"a symlink to an empty dir": func(p string) {
			target := filepath.Join(filepath.Dir(d.dir), "elsewhere")
			os.Mkdir(target, 0o711)
			os.Symlink(target, p)
		},
	}
	for label, setup := range cases {
		t.Run(label, func(t *testing.T) {
			name := strings.ReplaceAll(label, " ", "-")
			p := filepath.Join(d.dir, name)
			setup(p)
			before := describeTree(t, filepath.Dir(d.dir))
			err := d.Create(context.Background(), &backend.Volume{Name: name}, parse(t, map[string]string{"mode": "0777", "uid": "42"}))
			if err == nil || !strings.Contains(err.Error(), "already exists but no volume records it") || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("Create over %s: %v", label, err)
			}
			if after := describeTree(t, filepath.Dir(d.dir)); after != before {
				t.Fatalf("a refused Create changed the disk:\n%s\n---\n%s", before, after)
			}
		})
	}
}

func TestCreateRefusesLeftoverThatIsAMountPoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounts a tmpfs: run as root")
	}
	d := newTestDir(t)
	p := filepath.Join(d.dir, "m")
	os.Mkdir(p, 0o700)
	if err := unix.Mount("tmpfs", p, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(p, unix.MNT_DETACH)
	err := d.Create(context.Background(), &backend.Volume{Name: "m"}, parse(t, nil))
	if err == nil || !strings.Contains(err.Error(), "mount point") {
		t.Fatalf("Create over a mount point: %v", err)
	}
}

// Remove refuses through a live mount below the volume and deletes nothing.
func TestRemoveRefusesThroughLiveMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounts a tmpfs: run as root")
	}
	d := newTestDir(t)
	vol := &backend.Volume{Name: "v"}
	if err := d.Create(context.Background(), vol, parse(t, nil)); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(d.dir, "v", "sub")
	os.Mkdir(sub, 0o755)
	os.WriteFile(filepath.Join(d.dir, "v", "mine"), []byte("x"), 0o644)
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)
	os.WriteFile(filepath.Join(sub, "theirs"), []byte("y"), 0o644)
	if err := d.Remove(context.Background(), vol); err == nil {
		t.Fatal("Remove through a live mount succeeded")
	}
	for _, f := range []string{filepath.Join(d.dir, "v", "mine"), filepath.Join(sub, "theirs")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s deleted by a refused Remove", f)
		}
	}
}

func TestInventoryReportsWithoutChanging(t *testing.T) {
	d := newTestDir(t)
	os.Mkdir(filepath.Join(d.dir, "stray"), 0o700)
	known := []*backend.Volume{{Name: "gone"}}
	before := describeTree(t, d.dir)
	inv, err := backend.RunInventory(context.Background(), d, known)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Missing) != 1 || inv.Missing[0] != "gone" || len(inv.Unrecorded) != 1 || inv.Unrecorded[0] != "stray" {
		t.Fatalf("inventory %+v", inv)
	}
	if describeTree(t, d.dir) != before {
		t.Fatal("Inventory changed the disk")
	}
}

func describeTree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		unix.Lstat(p, &st)
		fmt.Fprintf(&b, "%s %s %d:%d\n", p, fi.Mode(), st.Uid, st.Gid)
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			b.Write(c)
			b.WriteString("\n")
		}
		return nil
	})
	return b.String()
}
