package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/config"
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

func TestScopeFollowsTheBackends(t *testing.T) {
	local := backend.Instance{Module: backend.Module{ID: "dir"}}
	shared := backend.Instance{Module: backend.Module{ID: "sshfs", Shared: true}}
	onlyShared := map[string]backend.Instance{"sshfs": shared}
	mixed := map[string]backend.Instance{"dir": local, "tmpfs": {Module: backend.Module{ID: "tmpfs"}}, "sshfs": shared}
	for _, c := range []struct {
		flag  string
		insts map[string]backend.Instance
		want  string
	}{
		{"", onlyShared, "global"},
		{"", mixed, "local"},
		{"local", onlyShared, "local"},
		{"global", onlyShared, "global"},
		{"local", mixed, "local"},
	} {
		got, err := resolveScope(c.flag, c.insts)
		if err != nil || got != c.want {
			t.Errorf("resolveScope(%q, %d backends) = %q, %v; want %q", c.flag, len(c.insts), got, err, c.want)
		}
	}
	_, err := resolveScope("global", mixed)
	if err == nil || !strings.Contains(err.Error(), "dir, tmpfs keep data on this node") || !strings.Contains(err.Error(), "--backends sshfs") || !strings.Contains(err.Error(), "--socket") {
		t.Errorf("resolveScope(global) with node-local backends = %v", err)
	}
	if _, err := resolveScope("cluster", onlyShared); err == nil {
		t.Error("resolveScope accepted an unknown scope")
	}
	if got := defaultBackend("", onlyShared); got != "sshfs" {
		t.Errorf("default backend of a shared-only daemon = %q", got)
	}
	if got := defaultBackend("", mixed); got != "dir" {
		t.Errorf("default backend = %q", got)
	}
}

// A daemon told --scope global with node-local backends refuses to start
// (the message is resolveScope's, checked above).
func TestServeRefusesGlobalScopeWithLocalBackends(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	var out bytes.Buffer
	code := run([]string{"serve", "--root", root, "--socket", filepath.Join(t.TempDir(), "s.sock"), "--scope", "global", "--backends", "dir"}, &out, &out)
	if code != 1 {
		t.Fatalf("exit %d, output %q; want 1", code, out.String())
	}
}

// dockerd can be told only of names it can find the daemon by.
func TestAnnouncedDrivers(t *testing.T) {
	for _, c := range []struct {
		sock, tcp string
		want      []string
	}{
		{"/run/docker/plugins/stowage.sock", "", []string{"stowage"}},
		{"/run/docker/plugins/shared/shared.sock", "", []string{"shared"}},
		{"/run/docker/plugins/x/other.sock", "", nil},
		{"/tmp/stowage.sock", "", nil},
		{"/tmp/stowage.sock", "0.0.0.0:1", []string{"stowage"}},
		{"/run/docker/plugins/stowage.sock", "0.0.0.0:1", []string{"stowage"}},
	} {
		cfg := &config.Serve{Socket: c.sock, TCPAddr: c.tcp}
		if got := announcedDrivers(cfg, c.sock); !reflect.DeepEqual(got, c.want) {
			t.Errorf("announcedDrivers(%s, tcp %q) = %v, want %v", c.sock, c.tcp, got, c.want)
		}
	}
}

// A bad --announce-to stops serve before the root is touched.
func TestServeRefusesABadAnnounceTo(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	var out bytes.Buffer
	code := run([]string{"serve", "--root", root, "--socket", filepath.Join(t.TempDir(), "s.sock"), "--announce-to", "tcp://127.0.0.1:2375"}, &out, &out)
	if code == 0 {
		t.Fatalf("serve with --announce-to tcp:// = %d, %q; want a refusal", code, out.String())
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("the refused start touched the root: %v", err)
	}
}
