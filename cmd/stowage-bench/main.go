// Command stowage-bench is the benchmark's helper binary. `stowage-bench
// floor --socket NAME` serves a no-op, in-memory volume driver with
// go-plugins-helpers on /run/docker/plugins/NAME.sock: the cost of Docker's
// plugin transport alone, the floor stowage is measured against. The
// benchmark itself is bench_test.go (build tag stowagebench), run by
// `make bench`.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/plugin"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "floor" {
		fmt.Fprintln(stderr, "Usage: stowage-bench floor --socket NAME\n\nServes a no-op in-memory volume driver (the benchmark's floor). Run the benchmark with 'make bench'.")
		return 2
	}
	fs := flag.NewFlagSet("stowage-bench floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("socket", "", "plugin name: listens on /run/docker/plugins/NAME.sock")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *name == "" {
		fmt.Fprintln(stderr, "stowage-bench floor: --socket is required")
		return 2
	}
	sock, err := plugin.SocketPath(*name)
	if err != nil {
		fmt.Fprintln(stderr, "stowage-bench floor:", err)
		return 2
	}
	// The helpers' server cannot be shut down: on a signal, unlink the
	// socket so no client waits on a stale one, and exit.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		os.Remove(sock)
		os.Exit(0)
	}()
	h := volume.NewHandler(newFloor())
	if err := h.ServeUnix(*name, 0); err != nil {
		fmt.Fprintln(stderr, "stowage-bench floor:", err)
		return 1
	}
	return 0
}
