package main

import (
	"runtime/debug"
	"testing"
)

func TestGCPercentKeepsAQuarterOrTheMinimumHeadroom(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 20, maxGCPercent},   // 4 MiB would be 400 %: capped
		{8 << 20, 51},             // 4 MiB of headroom
		{16 << 20, 26},            // 4 MiB: about a quarter already
		{20 << 20, baseGCPercent}, // a quarter is more than 4 MiB
		{1 << 30, baseGCPercent},
	} {
		if got := gcPercent(c.live); got != c.want {
			t.Errorf("gcPercent(%d MiB) = %d, want %d", c.live>>20, got, c.want)
		}
		if p := gcPercent(c.live); c.live > 0 && p < maxGCPercent && c.live*uint64(p)/100 < minGCHeadroom {
			t.Errorf("live %d MiB at GOGC=%d leaves less than %d MiB of headroom", c.live>>20, p, minGCHeadroom>>20)
		}
	}
}

// keepGCHeadroom sets GOGC from the live heap before its first tick.
func TestKeepGCHeadroomSetsGOGCAtOnce(t *testing.T) {
	old := debug.SetGCPercent(7)
	defer debug.SetGCPercent(old)
	stop := make(chan struct{})
	close(stop) // one pass, then it returns
	keepGCHeadroom(stop)
	if got := debug.SetGCPercent(old); got < baseGCPercent || got > maxGCPercent {
		t.Fatalf("GOGC after keepGCHeadroom = %d, want %d..%d", got, baseGCPercent, maxGCPercent)
	}
}
