package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/config"
	"github.com/stowage/stowage/plugin"
)

// socketFlag binds --socket, for commands that talk to a running daemon, to p.
func socketFlag(fs *flag.FlagSet, p *string) {
	config.NewBinder(fs).String(p, "socket", "stowage", "socket of the running stowage serve: a bare NAME or a path (managed plugin: /run/docker/plugins/PLUGIN-ID/stowage.sock)")
}

// callDaemon posts req to the daemon on socket (a bare NAME or a path) and
// decodes its answer into resp, within timeout.
func callDaemon(socket, path string, timeout time.Duration, req, resp interface{}) error {
	sock, err := plugin.SocketPath(socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return client.New(sock).Call(ctx, path, req, resp)
}

func runRelease(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stowage release", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sock string
	socketFlag(fs, &sock)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: stowage release [--socket S] VOLUME [MOUNT-ID...]

Drops entries from VOLUME's mount ledger that Docker will never unmount.
Without MOUNT-IDs it drops only entries counted before the last reboot: no
container can still hold those, so it is always safe. Naming MOUNT-IDs drops
those too, whatever their boot; do that only for containers that are gone.
Talks to the running daemon. Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return 2
	}
	var resp driver.ReleaseResponse
	req := driver.ReleaseRequest{Name: fs.Arg(0), IDs: fs.Args()[1:]}
	if err := callDaemon(sock, "/Stowage.Release", time.Minute, req, &resp); err != nil {
		fmt.Fprintln(stderr, "stowage release:", err)
		return 1
	}
	if len(resp.Released) == 0 {
		fmt.Fprintf(stdout, "volume %s: nothing to release\n", req.Name)
		return 0
	}
	fmt.Fprintf(stdout, "volume %s: released %d mount(s): %s\n", req.Name, len(resp.Released), strings.Join(resp.Released, ", "))
	return 0
}
