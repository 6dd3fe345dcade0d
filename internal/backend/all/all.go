// Package all lists the backend modules built into stowage. Adding a backend
// is one line here and a package of its own.
package all

import (
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/bind"
	"github.com/stowage/stowage/internal/backend/dir"
	"github.com/stowage/stowage/internal/backend/image"
	"github.com/stowage/stowage/internal/backend/sshfs"
	"github.com/stowage/stowage/internal/backend/tmpfs"
)

// Modules returns every built-in backend module.
func Modules() []backend.Module {
	mods := []backend.Module{
		dir.Module,
		image.Module,
		tmpfs.Module,
		bind.Module,
		sshfs.Module,
	}
	// Empty unless built with the stowagebench tag.
	return append(mods, benchModules()...)
}
