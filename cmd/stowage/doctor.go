package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/config"
	"github.com/stowage/stowage/internal/mounttable"
	"github.com/stowage/stowage/internal/store"
)

// FindUnrecordedMount is doctor's own finding: something mounted in a
// backend's directory under a name no volume records.
const FindUnrecordedMount = "unrecorded-mount"

// DoctorReport is doctor's answer (--format json).
type DoctorReport struct {
	Source   string           `json:"source"`
	Volumes  int              `json:"volumes"`
	Findings []driver.Finding `json:"findings"`
	Fixed    []string         `json:"fixed,omitempty"`
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stowage doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// The daemon's own flags (and env twins), so doctor, reading the state
	// itself, sees the root and backends as the daemon does.
	cfg := &config.Serve{}
	b := config.NewBinder(fs)
	cfg.Bind(b)
	o := &opFlags{}
	fs.StringVar(&o.format, "format", "table", "output: table (for people) or json (for scripts)")
	fix := fs.Bool("fix", false, "also do the fixes that cannot lose data (today: release mount-ledger entries from before the last reboot); everything else is only reported")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: stowage doctor [--fix] [--format table|json] [serve's flags: --socket S --root DIR ...]

Compares the state with the data on disk and the kernel's mount table, and
reports: volumes whose data is missing, data or mounts no volume records,
ledger entries from before the last reboot, volumes of disabled backends.
It deletes nothing. Exit status: 0 when nothing is found, 1 when something
is (or on error), 2 on bad usage. Asks the running daemon; when none answers,
reads the state itself. Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	if err := b.Err(); err != nil {
		fmt.Fprintln(stderr, "stowage doctor:", err)
		return 2
	}
	o.socket, o.root = cfg.Socket, cfg.Root
	if err := o.check(); err != nil {
		fmt.Fprintln(stderr, "stowage doctor:", err)
		return 2
	}
	d := &doctor{o: o, cfg: cfg}
	rep, err := d.run(*fix)
	if err != nil {
		fmt.Fprintln(stderr, "stowage doctor:", err)
		return 1
	}
	if o.format == "json" {
		if rep.Findings == nil {
			rep.Findings = []driver.Finding{}
		}
		writeJSON(stdout, rep)
	} else {
		for _, f := range rep.Fixed {
			fmt.Fprintln(stdout, "fixed:", f)
		}
		if len(rep.Findings) == 0 {
			fmt.Fprintf(stdout, "%d volume(s), nothing to report\n", rep.Volumes)
		} else {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tVOLUME\tBACKEND\tMOUNT-ID\tDETAIL")
			for _, f := range rep.Findings {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Kind, dash(f.Volume), dash(f.Backend), dash(short(f.MountID)), f.Detail)
			}
			tw.Flush()
		}
	}
	if len(rep.Findings) > 0 {
		return 1
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

type doctor struct {
	o   *opFlags
	cfg *config.Serve
}

// run checks once, fixes what is safe if asked, and checks again so the
// report shows what is left.
func (d *doctor) run(fix bool) (*DoctorReport, error) {
	rep, err := d.check()
	if err != nil || !fix {
		return rep, err
	}
	var fixed []string
	seen := map[string]bool{}
	for _, f := range rep.Findings {
		if f.Kind != driver.FindStaleMount || seen[f.Volume] {
			continue
		}
		seen[f.Volume] = true
		// No IDs: Release drops only entries of earlier boots, which no
		// running container can hold. Nothing on disk is touched.
		res, err := d.release(rep.Source, f.Volume)
		if err != nil {
			return nil, fmt.Errorf("releasing stale mounts of volume %q: %v", f.Volume, err)
		}
		fixed = append(fixed, fmt.Sprintf("volume %s: released %d mount-ledger entr(ies) from before the last reboot: %s", f.Volume, len(res.Released), strings.Join(res.Released, ", ")))
	}
	if len(fixed) == 0 {
		return rep, nil
	}
	rep, err = d.check()
	if rep != nil {
		rep.Fixed = fixed
	}
	return rep, err
}

func (d *doctor) release(source, name string) (*driver.ReleaseResponse, error) {
	req := &driver.ReleaseRequest{Name: name}
	if source == "daemon" {
		var resp driver.ReleaseResponse
		if err := d.o.fromDaemon("/Stowage.Release", req, &resp); err != nil {
			return nil, err
		}
		return &resp, nil
	}
	drv, st, err := d.offlineDriver(false)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return drv.Release(req)
}

func (d *doctor) check() (*DoctorReport, error) {
	rep := &DoctorReport{}
	var dr driver.Report
	var vols []VolumeInfo
	err := d.o.fromDaemon("/Stowage.Reconcile", nil, &dr)
	switch {
	case err == nil:
		rep.Source = "daemon"
		var resp VolumesResponse
		if err := d.o.fromDaemon("/Stowage.Volumes", nil, &resp); err != nil {
			return nil, fmt.Errorf("asking the daemon for its volumes: %v", err)
		}
		vols = resp.Volumes
	case errors.Is(err, errNoDaemon):
		rep.Source = "state-file"
		drv, st, err := d.offlineDriver(true)
		if err != nil {
			return nil, err
		}
		dr, err = drv.Reconcile(context.Background())
		if err == nil {
			var raw []*store.Volume
			raw, err = st.List()
			for _, v := range raw {
				vols = append(vols, VolumeInfo{Volume: *v})
			}
		}
		st.Close()
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("asking the daemon: %v", err)
	}
	rep.Volumes = dr.Volumes
	rep.Findings = append(dr.Findings, d.mountFindings(vols)...)
	return rep, nil
}

// offlineDriver reads the state itself: read-only for checks, read-write
// only to apply a fix (possible only while no daemon holds the file).
func (d *doctor) offlineDriver(readOnly bool) (*driver.Driver, *store.Store, error) {
	root, err := filepath.Abs(d.o.root)
	if err != nil {
		return nil, nil, err
	}
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	d.o.root = root
	st, err := store.Open(filepath.Join(root, store.FileName), store.Options{ReadOnly: readOnly, LockTimeout: time.Second})
	if err != nil {
		return nil, nil, fmt.Errorf("the daemon does not answer on --socket %s, and reading the state directly failed: %v", d.o.socket, err)
	}
	log := logrus.New()
	log.Out = io.Discard
	drv, _, err := buildDriver(d.cfg, root, st, log)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return drv, st, nil
}

// mountFindings reads the kernel mount table under the root: a mount in
// ROOT/BACKEND/NAME… for a NAME no volume records is stowage's storage
// left up by a crash (or someone else's), and keeps a directory busy.
func (d *doctor) mountFindings(vols []VolumeInfo) []driver.Finding {
	root := d.o.root
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	pts, err := mounttable.Under(root)
	if err != nil {
		return []driver.Finding{{Kind: driver.FindProblem, Detail: err.Error()}}
	}
	known := map[string]bool{}
	for _, v := range vols {
		known[v.Backend+"/"+v.Name] = true
	}
	var out []driver.Finding
	seen := map[string]bool{}
	for _, p := range pts {
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			continue
		}
		parts := strings.SplitN(rel, string(filepath.Separator), 3)
		if len(parts) < 2 || known[parts[0]+"/"+parts[1]] || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, driver.Finding{Kind: FindUnrecordedMount, Volume: parts[1], Backend: parts[0],
			Detail: fmt.Sprintf("%s is mounted but no volume records %q; it is kept: unmount it by hand once nothing uses it", p, parts[1])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Volume < out[j].Volume })
	return out
}
