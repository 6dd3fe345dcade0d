// Package devnode makes device nodes that a container's own /dev lacks: a
// managed plugin's /dev holds only Docker's default nodes, while the
// devices stowage needs (loop, FUSE) are numbered by the kernel, which
// sysfs tells.
package devnode

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Ensure makes the node path unless something is there already: a block
// device if block, else a character device, with the major:minor read from
// the sysfs file sysDev (like /sys/class/misc/fuse/dev) or, when that
// cannot be read, fallback.
func Ensure(path, sysDev string, block bool, fallback uint64, perm uint32) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	num := fallback
	if b, err := os.ReadFile(sysDev); err == nil {
		var maj, min uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err == nil {
			num = unix.Mkdev(maj, min)
		}
	}
	mode := uint32(unix.S_IFCHR)
	if block {
		mode = unix.S_IFBLK
	}
	if err := unix.Mknod(path, mode|perm, int(num)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("creating device node %s: %w", path, err)
	}
	return nil
}
