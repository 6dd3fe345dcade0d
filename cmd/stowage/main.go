// Command stowage is the stowage Docker volume plugin: `stowage serve` runs
// the daemon; the other subcommands help operate it.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Set by the linker (see Makefile).
var (
	version = "dev"
	commit  = "unknown"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run the volume plugin daemon", runServe},
		{"release", "release mount-ledger entries Docker will never unmount (after a reboot)", runRelease},
		{"backends", "list the built-in backends with their options", runBackends},
		{"resize", "grow a volume (image backend) to a new size", runResize},
		{"ls", "list volumes (from the daemon, or the state file read-only when it is down)", runLs},
		{"inspect", "show one volume's record and mount ledger", runInspect},
		{"doctor", "check state against data on disk and the mount table; --fix does only what cannot lose data", runDoctor},
		{"version", "print version and commit", runVersion},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "-v", "--version":
		return runVersion(nil, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "stowage: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `stowage — a Docker volume plugin for volumes Docker's local driver cannot give.

Usage:
  stowage COMMAND [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nFlags of 'stowage serve' (each also read from its environment variable):\n")
	fs, _, _ := serveFlags(io.Discard)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nRun 'stowage COMMAND --help' for a command's flags.\n")
}

func runVersion(_ []string, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "stowage %s (commit %s)\n", version, strings.TrimSpace(commit))
	return 0
}
