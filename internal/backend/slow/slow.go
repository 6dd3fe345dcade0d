// Package slow is a benchmark-only backend: a dir backend whose Create
// waits for the "delay" option first, to stand in for slow work (mkfs, a
// network connect). It is built only with the stowagebench tag (see
// internal/backend/all/bench.go), never into the shipped binary.
package slow

import (
	"context"
	"fmt"
	"time"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/dir"
)

// ID is the backend's registered name.
const ID = "slow"

// maxDelay keeps a typo from holding a Create past dockerd's 2-minute limit.
const maxDelay = time.Minute

// Module registers the slow backend.
var Module = backend.Module{
	ID:      ID,
	Summary: "benchmark only: a directory whose Create first waits for the delay option",
	Options: append(backend.Ownership(), backend.Option{Name: "delay", Type: backend.TypeString, Default: "5s", Help: "how long Create waits before making the directory (Go duration)"}),
	New: func(env backend.Env) (backend.Backend, error) {
		inner, err := dir.Module.New(env)
		if err != nil {
			return nil, err
		}
		return &Slow{Backend: inner}, nil
	},
}

// Slow delegates everything but Create's wait to the dir backend.
type Slow struct{ backend.Backend }

var _ backend.Backend = (*Slow)(nil)

// Validate checks the delay.
func (s *Slow) Validate(opts backend.Options) error {
	_, err := delay(opts)
	return err
}

// Create waits (honouring ctx), then makes the directory.
func (s *Slow) Create(ctx context.Context, vol *backend.Volume, opts backend.Options) error {
	d, err := delay(opts)
	if err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return fmt.Errorf("slow create cancelled: %w", ctx.Err())
	}
	return s.Backend.Create(ctx, vol, opts)
}

func delay(opts backend.Options) (time.Duration, error) {
	d, err := time.ParseDuration(opts["delay"])
	if err != nil || d < 0 || d > maxDelay {
		return 0, fmt.Errorf("option delay=%q: must be a Go duration from 0s to %v", opts["delay"], maxDelay)
	}
	return d, nil
}
