package driver

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/all"
	"github.com/stowage/stowage/internal/store"
)

// The driver's own cost of a Mount+Unmount pair of a dir volume, durable
// commits included: what is left once the socket is taken away.
func BenchmarkMountUnmountDir(b *testing.B) {
	d := benchDriver(b)
	if err := d.Create(&volume.CreateRequest{Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Mount(&volume.MountRequest{Name: "bench", ID: id}); err != nil {
			b.Fatal(err)
		}
		if err := d.Unmount(&volume.UnmountRequest{Name: "bench", ID: id}); err != nil {
			b.Fatal(err)
		}
	}
}

// The driver's own cost of a Create+Remove pair of a dir volume.
func BenchmarkCreateRemoveDir(b *testing.B) {
	d := benchDriver(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Create(&volume.CreateRequest{Name: "bench"}); err != nil {
			b.Fatal(err)
		}
		if err := d.Remove(&volume.RemoveRequest{Name: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDriver(b *testing.B) *Driver {
	root := b.TempDir()
	st, err := store.Open(filepath.Join(root, store.FileName), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	insts, err := backend.NewRegistry(all.Modules()...).Provision(root, []string{"dir"}, nil, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(Config{Store: st, Backends: insts, DefaultBackend: "dir", BootID: "boot-1", Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// Durable dir Creates, 64 callers at once: the driver's share of the
// socket bench's 64-caller throughput.
func BenchmarkCreateDir64(b *testing.B) {
	d := benchDriver(b)
	var n atomic.Int64
	b.SetParallelism(32) // 64 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := d.Create(&volume.CreateRequest{Name: fmt.Sprintf("c%07d", n.Add(1))}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// One caller's durable dir Creates, to compare with BenchmarkCreateDir64.
func BenchmarkCreateDir1(b *testing.B) {
	d := benchDriver(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Create(&volume.CreateRequest{Name: fmt.Sprintf("c%07d", i)}); err != nil {
			b.Fatal(err)
		}
	}
}
