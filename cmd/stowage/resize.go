package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/stowage/stowage/driver"
)

func runResize(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stowage resize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sock string
	socketFlag(fs, &sock)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: stowage resize [--socket S] VOLUME SIZE

Grows VOLUME to SIZE (like 20G): its image file, then the filesystem in it,
online if containers use it. Volumes only grow. Talks to the running daemon.
Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	var resp driver.ResizeResponse
	req := driver.ResizeRequest{Name: fs.Arg(0), Size: fs.Arg(1)}
	if err := callDaemon(sock, "/Stowage.Resize", 2*time.Minute, req, &resp); err != nil {
		fmt.Fprintln(stderr, "stowage resize:", err)
		return 1
	}
	fmt.Fprintf(stdout, "volume %s: resized to %d bytes\n", req.Name, resp.Size)
	return 0
}
