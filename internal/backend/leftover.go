package backend

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/safefs"
)

// RefuseLeftover refuses anything at p but an empty directory: a crash
// between making a volume's place and recording it leaves an empty one,
// safe to adopt; anything else may be someone's data and is kept. what
// names p in the error ("data directory", "mount point").
func RefuseLeftover(p, what string) error {
	if _, err := os.Lstat(p); err != nil {
		return nil
	}
	if err := safefs.Adoptable(p); err != nil {
		return fmt.Errorf("its %s %s already exists but no volume records it (%v); nothing was changed: inspect it and move it away, then create the volume again", what, p, err)
	}
	return nil
}

// MakeMountPoint makes the empty directory p (0700) where a volume is
// mounted on first use, adopting an empty leftover (RefuseLeftover).
func MakeMountPoint(p string) error {
	err := os.Mkdir(p, 0o700)
	made := err == nil
	if errors.Is(err, os.ErrExist) {
		if err := RefuseLeftover(p, "mount point"); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("creating its mount point: %w", err)
	}
	if err := safefs.SyncNew(p); err != nil {
		if made {
			// A failed Create undoes its own work; rmdir takes only an
			// empty directory.
			unix.Rmdir(p)
		}
		return fmt.Errorf("creating its mount point: %w", err)
	}
	return nil
}
