package bind

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
)

func TestWithinIsByComponent(t *testing.T) {
	for _, c := range []struct {
		p, root string
		want    bool
	}{
		{"/srv/data/a", "/srv/data", true},
		{"/srv/data2", "/srv/data", false},
		{"/srv/data", "/srv/data", false},
		{"/srv", "/srv/data", false},
		{"/srv/data/../x", "/srv/data", false},
		{"/srv/data/..a", "/srv/data", true},
	} {
		if got := within(filepath.Clean(c.p), c.root); got != c.want {
			t.Errorf("within(%q, %q) = %v, want %v", c.p, c.root, got, c.want)
		}
	}
}

func TestCreateRefusesEscapesAndOverlapAndRemoveKeepsData(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	os.MkdirAll(filepath.Join(root, "a", "sub"), 0o755)
	os.Mkdir(filepath.Join(base, "outside"), 0o755)
	os.Symlink(filepath.Join(base, "outside"), filepath.Join(root, "link"))
	be, err := newBind(backend.Env{Dir: t.TempDir(), Settings: map[string]string{SettingRoots: root}})
	if err != nil {
		t.Fatal(err)
	}
	b := be.(*Bind)
	ctx := context.Background()
	vol := &backend.Volume{Name: "a"}
	if err := b.Create(ctx, vol, backend.Options{"path": filepath.Join(root, "a")}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "a", "keep"), []byte("x"), 0o644)
	for _, c := range []struct{ path, want string }{
		{filepath.Join(root, "link"), "not inside a bind root"},
		{filepath.Join(root, "a", "..", ".."), "not inside a bind root"},
		{root, "is a root itself"},
		{filepath.Join(root, "a", "sub"), "overlaps"},
		{filepath.Join(root, "a"), "overlaps"},
		{filepath.Join(root, "missing"), "cannot be adopted"},
	} {
		err := b.Create(ctx, &backend.Volume{Name: "x"}, backend.Options{"path": c.path})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("path %s: %v; want %q", c.path, err, c.want)
		}
	}
	if err := b.Remove(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a", "keep")); err != nil {
		t.Fatalf("host data after Remove: %v", err)
	}
	if entries, _ := os.ReadDir(b.dir); len(entries) != 0 {
		t.Fatalf("markers left: %d", len(entries))
	}
}

// Volume names may end in ".tmp": such a volume must still count in the
// overlap check, and creating another volume must not touch its marker.
func TestTmpSuffixedVolumeIsAVolume(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(root, "a"), 0o755)
	os.MkdirAll(filepath.Join(root, "b"), 0o755)
	be, err := newBind(backend.Env{Dir: t.TempDir(), Settings: map[string]string{SettingRoots: root}})
	if err != nil {
		t.Fatal(err)
	}
	b := be.(*Bind)
	ctx := context.Background()
	if err := b.Create(ctx, &backend.Volume{Name: "v.tmp"}, backend.Options{"path": filepath.Join(root, "a")}); err != nil {
		t.Fatal(err)
	}
	err = b.Create(ctx, &backend.Volume{Name: "w"}, backend.Options{"path": filepath.Join(root, "a")})
	if err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("second volume on v.tmp's path: %v; want an overlap refusal", err)
	}
	if err := b.Create(ctx, &backend.Volume{Name: "v"}, backend.Options{"path": filepath.Join(root, "b")}); err != nil {
		t.Fatal(err)
	}
	adopted, err := b.adopted()
	if err != nil {
		t.Fatal(err)
	}
	if adopted["v.tmp"] != filepath.Join(root, "a") || adopted["v"] != filepath.Join(root, "b") {
		t.Fatalf("markers after creating v beside v.tmp: %v", adopted)
	}
	inv, err := backend.RunInventory(ctx, b, []*backend.Volume{
		{Name: "v.tmp", Private: map[string]string{privPath: filepath.Join(root, "a")}},
		{Name: "v", Private: map[string]string{privPath: filepath.Join(root, "b")}},
	})
	if err != nil || len(inv.Unrecorded)+len(inv.Missing) != 0 {
		t.Fatalf("inventory = %+v, %v; want nothing to report", inv, err)
	}
}

// uid, gid and mode given at create apply to the adopted directory; none
// given leaves the host directory's own.
func TestOwnershipOnlyWhenAsked(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(root, "keep"), 0o711)
	os.MkdirAll(filepath.Join(root, "set"), 0o755)
	os.Chmod(filepath.Join(root, "keep"), 0o711)
	be, err := newBind(backend.Env{Dir: t.TempDir(), Settings: map[string]string{SettingRoots: root}})
	if err != nil {
		t.Fatal(err)
	}
	b := be.(*Bind)
	ctx := context.Background()
	if err := b.Create(ctx, &backend.Volume{Name: "keep"}, backend.Options{"path": filepath.Join(root, "keep")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx, &backend.Volume{Name: "set"}, backend.Options{"path": filepath.Join(root, "set"), "uid": "77", "mode": "0750"}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(root, "keep"), &st)
	if st.Mode&0o7777 != 0o711 || st.Uid != 0 {
		t.Errorf("untouched directory is now mode %o uid %d", st.Mode&0o7777, st.Uid)
	}
	unix.Stat(filepath.Join(root, "set"), &st)
	if st.Mode&0o7777 != 0o750 || st.Uid != 77 {
		t.Errorf("directory with uid=77 mode=0750 is mode %o uid %d", st.Mode&0o7777, st.Uid)
	}
}
