package main

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The collector's setting for serve. Most of the heap is the store's index
// (pointer-free bytes, cheap to keep), and GOGC=25 bounds the garbage at a
// quarter of it: at 100 000 volumes that is the difference between ~53 and
// ~75 MiB. On a small heap the same 25 % is a megabyte or two, so under
// load the collector ran every few dozen requests (one Mount+Unmount pair
// allocates ~18 KiB): a tenth of the daemon's CPU at 1 000 volumes. The
// headroom is therefore a quarter of the live heap, but never less than
// minGCHeadroom, nor more than Go's default allows (GOGC also scales the
// runtime's 4 MiB minimum heap: 400 would make it 16 MiB).
const (
	baseGCPercent = 25
	maxGCPercent  = 100
	minGCHeadroom = 4 << 20
	gcTuneEvery   = 5 * time.Second
)

// gcPercent is the GOGC that gives a live heap of live bytes its headroom.
func gcPercent(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	p := max(baseGCPercent, int(minGCHeadroom*100/live)+1)
	return min(p, maxGCPercent)
}

// gcTuned tells whether serve sets GOGC: GOGC in the environment wins.
func gcTuned() bool { return os.Getenv("GOGC") == "" }

// keepGCHeadroom sets GOGC from the live heap now and every gcTuneEvery
// until stop is closed, as the index grows or shrinks.
func keepGCHeadroom(stop <-chan struct{}) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	cur := -1
	t := time.NewTicker(gcTuneEvery)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if p := gcPercent(sample[0].Value.Uint64()); p != cur {
				debug.SetGCPercent(p)
				cur = p
			}
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
