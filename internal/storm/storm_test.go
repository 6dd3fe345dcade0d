package storm

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

// The CI run is short; `make soak` runs the same storm for a long time:
//
//	go test ./internal/storm -run TestCrashStorm -timeout 0 -v \
//	    -storm.kills 0 -storm.duration 35m -storm.seed 42
var (
	seedFlag     = flag.Int64("storm.seed", 0, "storm seed (0: derived from the clock and printed)")
	killsFlag    = flag.Int("storm.kills", 60, "number of SIGKILLs (0: no limit, use -storm.duration)")
	durationFlag = flag.Duration("storm.duration", 0, "stop after this long (0: no limit)")
	workersFlag  = flag.Int("storm.workers", 6, "concurrent clients")
)

// TestCrashStorm: concurrent Create/Mount/Unmount/Remove/Get/List against a
// real daemon, SIGKILLed at random moments (at least 50 times in CI), with the
// invariants checked after every restart.
func TestCrashStorm(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the crash storm runs a real stowage serve, which needs root")
	}
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	if *killsFlag == 0 && *durationFlag == 0 {
		t.Fatal("-storm.kills 0 needs -storm.duration")
	}
	// Always printed, so a failing run can be replayed with -storm.seed.
	t.Logf("storm seed %d (replay: go test ./internal/storm -run TestCrashStorm -storm.seed %d)", seed, seed)
	last := time.Now()
	cfg := Config{Seed: seed, Kills: *killsFlag, Duration: *durationFlag, Workers: *workersFlag}
	if *durationFlag > 0 {
		cfg.LogLevel = "error"
		cfg.Progress = func(s Stats) {
			if time.Since(last) > time.Minute {
				last = time.Now()
				fmt.Println("storm progress:", s)
			}
		}
	}
	s := Run(t, cfg)
	fmt.Println("storm result:", s)
	fmt.Println("storm result json:", MarshalStats(s))
	if s.Violations > 0 {
		t.Fatalf("%d invariant violations (seed %d)", s.Violations, seed)
	}
	if *killsFlag > 0 && s.Kills < int64(*killsFlag) {
		t.Fatalf("only %d kills, want %d", s.Kills, *killsFlag)
	}
	if s.SSHFSMounts == 0 {
		t.Fatal("no sshfs volume was ever mounted: the storm did not exercise the sshfs backend")
	}
	if s.OK == 0 || s.InDoubt == 0 {
		t.Fatalf("the storm proved nothing: %d operations succeeded, %d were cut by a kill", s.OK, s.InDoubt)
	}
}
