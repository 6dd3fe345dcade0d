package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bad environment twin stops serve before it touches anything, rather
// than running with the default the user tried to change.
func TestServeRefusesABadEnvironmentValue(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	t.Setenv("STOWAGE_SHUTDOWN_TIMEOUT", "soon")
	var out bytes.Buffer
	code := run([]string{"serve", "--root", root, "--socket", filepath.Join(t.TempDir(), "s.sock")}, &out, &out)
	if code != 2 || !strings.Contains(out.String(), "STOWAGE_SHUTDOWN_TIMEOUT") {
		t.Fatalf("exit %d, output %q; want 2 naming the variable", code, out.String())
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("serve created its root despite the refusal: %v", err)
	}
}
