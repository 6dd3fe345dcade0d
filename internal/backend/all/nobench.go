//go:build !stowagebench

package all

import "github.com/stowage/stowage/internal/backend"

// benchModules is empty in the shipped build: test-only backends never ship.
func benchModules() []backend.Module { return nil }
