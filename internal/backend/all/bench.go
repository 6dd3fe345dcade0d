//go:build stowagebench

package all

import (
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/slow"
)

// benchModules adds the benchmark-only backends to a stowagebench build.
func benchModules() []backend.Module { return []backend.Module{slow.Module} }
