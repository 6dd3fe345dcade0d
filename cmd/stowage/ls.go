package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/config"
	"github.com/stowage/stowage/internal/store"
	"github.com/stowage/stowage/plugin"
)

// VolumeInfo is one volume as the operator commands show it: its record,
// plus where Docker finds it when the daemon knows.
type VolumeInfo struct {
	store.Volume
	Mountpoint string `json:"mountpoint,omitempty"`
}

// VolumesResponse answers /Stowage.Volumes.
type VolumesResponse struct {
	Volumes []VolumeInfo `json:"volumes"`
}

// volumesEndpoint serves full records to ls, inspect and doctor while the
// daemon holds the state file's lock.
func volumesEndpoint(st *store.Store, insts map[string]backend.Instance) plugin.Endpoint {
	return plugin.Endpoint{Call: func(interface{}) (interface{}, error) {
		vols, err := st.List()
		if err != nil {
			return nil, fmt.Errorf("listing volumes: %v", err)
		}
		out := &VolumesResponse{Volumes: make([]VolumeInfo, 0, len(vols))}
		for _, v := range vols {
			vi := VolumeInfo{Volume: *v}
			if inst, ok := insts[v.Backend]; ok {
				vi.Mountpoint = inst.Mountpoint(v)
			}
			out.Volumes = append(out.Volumes, vi)
		}
		return out, nil
	}}
}

// opFlags are the flags every read-only operator command shares.
type opFlags struct {
	socket, root, format string
}

func bindOpFlags(fs *flag.FlagSet) *opFlags {
	o := &opFlags{}
	socketFlag(fs, &o.socket)
	b := config.NewBinder(fs)
	b.String(&o.root, "root", "/var/lib/stowage", "the daemon's root, read directly when the daemon does not answer")
	fs.StringVar(&o.format, "format", "table", "output: table (for people) or json (for scripts)")
	return o
}

func (o *opFlags) check() error {
	if o.format != "table" && o.format != "json" {
		return fmt.Errorf("--format %q: use table or json", o.format)
	}
	return nil
}

// errNoDaemon means nothing answers on the socket.
var errNoDaemon = errors.New("the daemon does not answer")

// fromDaemon calls the running daemon; errNoDaemon when none answers.
func (o *opFlags) fromDaemon(path string, req, resp interface{}) error {
	err := callDaemon(o.socket, path, time.Minute, req, resp)
	var ce *client.Error
	if err != nil && !errors.As(err, &ce) {
		return fmt.Errorf("%w (%v)", errNoDaemon, err)
	}
	return err
}

// loadVolumes returns every volume and where they were read from: the
// daemon if it answers, else the state file opened read-only (bbolt's shared
// lock: it fails while a daemon holds the file).
func (o *opFlags) loadVolumes() ([]VolumeInfo, string, error) {
	var resp VolumesResponse
	err := o.fromDaemon("/Stowage.Volumes", nil, &resp)
	if err == nil {
		return resp.Volumes, "daemon", nil
	}
	if !errors.Is(err, errNoDaemon) {
		return nil, "", fmt.Errorf("asking the daemon: %v", err)
	}
	st, err := store.Open(filepath.Join(o.root, store.FileName), store.Options{ReadOnly: true, LockTimeout: time.Second})
	if err != nil {
		return nil, "", fmt.Errorf("the daemon does not answer on --socket %s, and reading the state directly failed: %v", o.socket, err)
	}
	defer st.Close()
	vols, err := st.List()
	if err != nil {
		return nil, "", err
	}
	out := make([]VolumeInfo, len(vols))
	for i, v := range vols {
		out[i] = VolumeInfo{Volume: *v}
	}
	return out, "state-file", nil
}

func parseOp(name, usage string, args []string, stderr io.Writer, nargs int) (*opFlags, []string, int) {
	fs := flag.NewFlagSet("stowage "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := bindOpFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, nil, 0
		}
		return nil, nil, 2
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return nil, nil, 2
	}
	if err := o.check(); err != nil {
		fmt.Fprintf(stderr, "stowage %s: %v\n", name, err)
		return nil, nil, 2
	}
	return o, fs.Args(), -1
}

func writeJSON(w io.Writer, v interface{}) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func runLs(args []string, stdout, stderr io.Writer) int {
	o, _, rc := parseOp("ls", `Usage: stowage ls [--format table|json] [--socket S] [--root DIR]

Lists every volume stowage records. Asks the running daemon; when none
answers, reads the state file read-only, so it works either way. Flags:
`, args, stderr, 0)
	if o == nil {
		return rc
	}
	vols, source, err := o.loadVolumes()
	if err != nil {
		fmt.Fprintln(stderr, "stowage ls:", err)
		return 1
	}
	if o.format == "json" {
		if vols == nil {
			vols = []VolumeInfo{}
		}
		writeJSON(stdout, map[string]interface{}{"source": source, "volumes": vols})
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBACKEND\tMOUNTS\tCREATED\tOPTIONS")
	for _, v := range vols {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", v.Name, v.Backend, v.ActiveMounts(), v.CreatedAt.Format(time.RFC3339), optString(v.Options))
	}
	tw.Flush()
	return 0
}

func optString(o map[string]string) string {
	if len(o) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + o[k]
	}
	return strings.Join(parts, ",")
}
