package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/plugin"
)

func runResize(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stowage resize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
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
	path, err := plugin.SocketPath(*sock)
	if err != nil {
		fmt.Fprintln(stderr, "stowage resize:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var resp driver.ResizeResponse
	req := driver.ResizeRequest{Name: fs.Arg(0), Size: fs.Arg(1)}
	if err := client.New(path).Call(ctx, "/Stowage.Resize", req, &resp); err != nil {
		fmt.Fprintln(stderr, "stowage resize:", err)
		return 1
	}
	fmt.Fprintf(stdout, "volume %s: resized to %d bytes\n", req.Name, resp.Size)
	return 0
}
