// Package tool runs the few external programs stowage relies on (mkfs,
// fsck, resize tools) with argument vectors, never a shell, and turns their
// failure into an error that carries their own words.
package tool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Packages names the Debian package providing each tool, for the error a
// user sees when one is missing.
var packages = map[string]string{
	"mkfs.ext4": "e2fsprogs", "e2fsck": "e2fsprogs", "resize2fs": "e2fsprogs", "tune2fs": "e2fsprogs",
	"mkfs.xfs": "xfsprogs", "xfs_growfs": "xfsprogs", "xfs_admin": "xfsprogs",
	"mkfs.btrfs": "btrfs-progs", "btrfs": "btrfs-progs", "btrfstune": "btrfs-progs",
}

// Run runs name with args and returns its stdout. On failure the error
// holds the command line and the tool's stderr (trimmed).
func Run(ctx context.Context, name string, args ...string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		pkg := packages[name]
		if pkg == "" {
			pkg = "the package providing it"
		}
		return "", fmt.Errorf("%s is not installed on the host: install %s", name, pkg)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return out.String(), fmt.Errorf("%s %s failed (%v): %s", name, strings.Join(args, " "), err, msg)
	}
	return out.String(), nil
}
