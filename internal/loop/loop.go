// Package loop attaches regular files to loop block devices through the
// kernel's ioctls, reusing a device that already backs the same file: one
// filesystem image attached twice and mounted through both corrupts it.
package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/devnode"
)

// attachMu serialises find-then-attach inside this process, so two
// volumes' Activate never race for one free device or one image twice.
var attachMu sync.Mutex

// Find returns the loop device (/dev/loopN) backed by file, or "" if none.
// It compares device and inode, not names: a path may be reached many ways.
func Find(file string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", file, err)
	}
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		return "", fmt.Errorf("listing loop devices: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		// Only attached devices have a backing_file.
		if _, err := os.Stat(filepath.Join("/sys/block", name, "loop", "backing_file")); err != nil {
			continue
		}
		dev := "/dev/" + name
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			// A container's own /dev (a managed plugin after a restart)
			// lacks nodes for devices attached before: make one, or an
			// image still mounted by running containers would look free
			// and be attached a second time.
			if n, aerr := strconv.Atoi(strings.TrimPrefix(name, "loop")); aerr == nil {
				if err = ensureNode(dev, n); err == nil {
					fd, err = unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				}
			}
		}
		if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
			continue // detached meanwhile
		}
		if err != nil {
			return "", fmt.Errorf("checking attached loop device %s: %w", dev, err)
		}
		info, err := unix.IoctlLoopGetStatus64(fd)
		unix.Close(fd)
		if err != nil {
			continue
		}
		if info.Device == uint64(st.Dev) && info.Inode == st.Ino {
			return dev, nil
		}
	}
	return "", nil
}

// Device is an attached loop device, held open until Close so autoclear
// cannot take it away before it is mounted.
type Device struct {
	Path string
	fd   int
}

// Close lets go of the device: with autoclear, an unmounted device is
// detached by the kernel at this point.
func (d *Device) Close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// Attach returns a loop device backed by file: the existing one if any,
// else a free device configured with autoclear, so it goes away when the
// last user (the mount) lets go. Mount it, then Close it.
func Attach(file string) (*Device, error) {
	attachMu.Lock()
	defer attachMu.Unlock()
	dev, err := Find(file)
	if err != nil {
		return nil, err
	}
	if dev != "" {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", dev, err)
		}
		return &Device{Path: dev, fd: fd}, nil
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening image %s: %w", file, err)
	}
	defer f.Close()
	ctl, err := unix.Open(controlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		if err = ensureControl(); err == nil {
			ctl, err = unix.Open(controlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening /dev/loop-control (is the loop module loaded?): %w", err)
	}
	defer unix.Close(ctl)
	// Another process may grab the free device between GET_FREE and
	// CONFIGURE (EBUSY): ask again.
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		if err := ensureNode(dev, n); err != nil {
			return nil, err
		}
		lfd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], file)
		err = unix.IoctlLoopConfigure(lfd, &cfg)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			// Kernels before 5.8 lack LOOP_CONFIGURE.
			err = unix.IoctlSetInt(lfd, unix.LOOP_SET_FD, int(f.Fd()))
			if err == nil {
				if serr := unix.IoctlLoopSetStatus64(lfd, &cfg.Info); serr != nil {
					unix.IoctlSetInt(lfd, unix.LOOP_CLR_FD, 0)
					err = serr
				}
			}
		}
		if err == nil {
			return &Device{Path: dev, fd: lfd}, nil
		}
		unix.Close(lfd)
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attaching %s to %s: %w", file, dev, err)
		}
		lastErr = err
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("attaching %s: every free loop device was taken meanwhile: %w", file, lastErr)
}

// Detach clears dev, refusing while anything holds it. LOOP_CLR_FD alone
// cannot tell: on a busy device it only arms autoclear and returns success.
// A mounted filesystem claims its block device exclusively, in every mount
// namespace, so an exclusive open fails with EBUSY while one is mounted.
// With autoclear a device no one holds is cleared already; this is for
// devices left attached by a crash between attach and mount.
func Detach(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%s is in use (a filesystem on it is mounted, perhaps outside stowage's directories): %w", dev, err)
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detaching %s: %w", dev, err)
	}
	return nil
}

const controlPath = "/dev/loop-control"

// ensureControl makes /dev/loop-control where a container's own /dev lacks
// it (misc 10:237 on every kernel so far).
func ensureControl() error {
	return devnode.Ensure(controlPath, "/sys/class/misc/loop-control/dev", false, unix.Mkdev(10, 237), 0o600)
}

// ensureNode makes /dev/loopN with the number the kernel gave the device
// (its minor is not n when max_part is set).
func ensureNode(dev string, n int) error {
	name := "loop" + strconv.Itoa(n)
	return devnode.Ensure(dev, filepath.Join("/sys/block", name, "dev"), true, unix.Mkdev(7, uint32(n)), 0o660)
}
