package store

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Durable Creates one at a time against 64 at once (32 per CPU on the
// 2-core CI machines): group commit must make the second several times
// faster per Create. Run: go test -run X -bench Create ./internal/store
func benchCreate(b *testing.B, parallel bool) {
	s, err := Open(filepath.Join(b.TempDir(), FileName), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var n atomic.Int64
	create := func() {
		if err := s.Create(&Volume{Name: fmt.Sprintf("v%09d", n.Add(1)), Backend: "dir", Options: map[string]string{"mode": "0755"}, CreatedAt: time.Unix(1e9, 0).UTC()}); err != nil {
			b.Error(err)
		}
	}
	b.ResetTimer()
	if !parallel {
		for i := 0; i < b.N; i++ {
			create()
		}
		return
	}
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			create()
		}
	})
}

func BenchmarkCreateOneAtATime(b *testing.B) { benchCreate(b, false) }
func BenchmarkCreate64AtOnce(b *testing.B)   { benchCreate(b, true) }
