package main

import (
	"errors"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// floor is the cheapest correct driver: a map under a lock, nothing on
// disk. Measured through the same transport, it is what stowage's own work
// is compared with.
type floor struct {
	mu      sync.RWMutex
	vols    map[string]*volume.Volume
	mounts  map[string]int
	created string
}

var _ volume.Driver = (*floor)(nil)

var errNoSuch = errors.New("no such volume")

func newFloor() *floor {
	return &floor{vols: map[string]*volume.Volume{}, mounts: map[string]int{}, created: time.Now().UTC().Format(time.RFC3339)}
}

func (f *floor) Create(r *volume.CreateRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vols[r.Name]; !ok {
		f.vols[r.Name] = &volume.Volume{Name: r.Name, Mountpoint: "/floor/" + r.Name, CreatedAt: f.created}
	}
	return nil
}

func (f *floor) List() (*volume.ListResponse, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*volume.Volume, 0, len(f.vols))
	for _, v := range f.vols {
		out = append(out, v)
	}
	return &volume.ListResponse{Volumes: out}, nil
}

func (f *floor) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.vols[r.Name]
	if !ok {
		return nil, errNoSuch
	}
	return &volume.GetResponse{Volume: v}, nil
}

func (f *floor) Remove(r *volume.RemoveRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounts[r.Name] > 0 {
		return errors.New("volume is in use")
	}
	delete(f.vols, r.Name)
	return nil
}

func (f *floor) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.vols[r.Name]
	if !ok {
		return nil, errNoSuch
	}
	return &volume.PathResponse{Mountpoint: v.Mountpoint}, nil
}

func (f *floor) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[r.Name]
	if !ok {
		return nil, errNoSuch
	}
	f.mounts[r.Name]++
	return &volume.MountResponse{Mountpoint: v.Mountpoint}, nil
}

func (f *floor) Unmount(r *volume.UnmountRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounts[r.Name] > 0 {
		f.mounts[r.Name]--
	}
	return nil
}

func (f *floor) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}
