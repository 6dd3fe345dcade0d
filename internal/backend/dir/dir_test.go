package dir

import (
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/backend"
)

func TestSizeRefusedOffBtrfs(t *testing.T) {
	d := &Dir{dir: t.TempDir()}
	opts, err := Module.Parse(map[string]string{"size": "1G"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(opts); err == nil || !strings.Contains(err.Error(), "backend=image") {
		t.Fatalf("size on a non-btrfs root: %v; want a refusal pointing to backend=image", err)
	}
	if err := d.Validate(backend.Options{}); err != nil {
		t.Fatal(err)
	}
}
