package bind

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
