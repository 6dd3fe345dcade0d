package core

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/store"
)

// serveOnce runs `stowage serve` expecting it to refuse to start.
func serveOnce(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, daemon.Bin(t), append([]string{"serve", "--announce-to", ""}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("stowage serve %v kept running; it should have refused to start\n%s", args, out.String())
	}
	code := 0
	if err != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return out.String(), code
}

func TestStartRefusesALiveSocket(t *testing.T) {
	d := daemon.Start(t, daemon.Options{})
	out, code := serveOnce(t, "--root", t.TempDir(), "--socket", d.Name)
	if code == 0 || !strings.Contains(out, "in use by a live process") {
		t.Fatalf("second daemon on a live socket: exit %d\n%s", code, out)
	}
	if !d.Running() {
		t.Fatal("the first daemon died")
	}
	if err := d.Client().Call(context.Background(), "/Plugin.Activate", nil, nil); err != nil {
		t.Fatalf("the first daemon stopped answering: %v", err)
	}
}

func TestStartRefusesBadState(t *testing.T) {
	cases := map[string]func(t *testing.T, path string){
		"corrupt": func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("not a bbolt file "), 1024), 0o600)
		},
		"unknown-schema": func(t *testing.T, path string) {
			s, err := store.Open(path, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Create(&store.Volume{Name: "precious", Backend: "dir"})
			s.Close()
			setSchema(t, path, "99")
		},
		"empty-file": func(t *testing.T, path string) {
			os.WriteFile(path, nil, 0o600)
		},
		"missing-beside-data": func(t *testing.T, path string) {
			vol := filepath.Join(filepath.Dir(path), "dir", "precious")
			os.MkdirAll(vol, 0o755)
			os.WriteFile(filepath.Join(vol, "f"), []byte("data"), 0o644)
		},
		"unreadable": func(t *testing.T, path string) {
			os.Mkdir(path, 0o700) // a directory where the file should be
		},
	}
	for name, plant := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			path := filepath.Join(root, store.FileName)
			plant(t, path)
			before := snapshot(t, root)
			out, code := serveOnce(t, "--root", root, "--socket", filepath.Join(root, "s.sock"))
			if code == 0 || !strings.Contains(out, path) {
				t.Fatalf("exit %d; want a refusal naming %s\n%s", code, path, out)
			}
			if after := snapshot(t, root); after != before {
				t.Fatalf("a refused start changed the root:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot lists every path under root with its mode and a digest of its
// content, to show that a refused start created or changed nothing.
func snapshot(t *testing.T, root string) string {
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s %v %x\n", p, fi.Mode(), sha256.Sum256(data))
		}
		return nil
	})
	return b.String()
}
