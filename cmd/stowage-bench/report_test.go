//go:build stowagebench

package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// machine describes where the run happened, from the usual tools.
func machine() map[string]string {
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("(%s: %v)", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	return map[string]string{
		"nproc":  run("nproc"),
		"cpu":    cpu,
		"memory": run("free", "-h"),
		"kernel": run("uname", "-srvm"),
		"disk":   run("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", os.TempDir()) + "\n" + run("lsblk", "-d", "-o", "NAME,ROTA,SIZE,TYPE"),
		"go":     run("go", "version"),
		"docker": run("dockerd", "--version"),
	}
}

// Target is one of issue 6's targets with its measured value.
type Target struct {
	What, Measured, Limit string
	OK                    bool
	// Reference: a figure that explains a target, with no limit of its own.
	Reference bool
}

// worstSpeedup is the lowest 64-caller / one-caller Create throughput of
// side over the levels, and the N it was at.
func worstSpeedup(levels []Level, side func(Level) Side) (float64, int) {
	worst, at := math.Inf(1), 0
	for _, l := range levels {
		if s := side(l); s.ConcCreates/s.SeqCreates < worst {
			worst, at = s.ConcCreates/s.SeqCreates, l.N
		}
	}
	return worst, at
}

func targets(r *Results) []Target {
	if len(r.Levels) == 0 {
		return nil
	}
	lo, hi := r.Levels[0], r.Levels[len(r.Levels)-1]
	var ts []Target
	add := func(what string, ok bool, measured, limit string) {
		ts = append(ts, Target{What: what, Measured: measured, Limit: limit, OK: ok})
	}
	// The peer's List at the largest N it was measured at (10 000 by default).
	var pl *Level
	for i := range r.Levels {
		if r.Levels[i].Peer != nil {
			pl = &r.Levels[i]
		}
	}
	if pl != nil {
		q := pl.Stowage.List.P50 / pl.Peer.List.P50
		add(fmt.Sprintf("List p50 at N=%d / peer's (%s)", pl.N, r.PeerName), q <= 0.8, fmt.Sprintf("%.2f / %.2f ms = %.2f×", pl.Stowage.List.P50, pl.Peer.List.P50, q), "≤ 0.8×")
	}
	add(fmt.Sprintf("List p50 at N=%d", hi.N), hi.Stowage.List.P50 <= 60, fmt.Sprintf("%.1f ms (p99 %.1f ms; floor %.1f ms)", hi.Stowage.List.P50, hi.Stowage.List.P99, hi.Floor.List.P50), "≤ 60 ms")
	g := hi.Stowage.Get.P50 / hi.Floor.Get.P50
	add(fmt.Sprintf("Get p50 at N=%d / floor's Get p50", hi.N), g <= 1.1, fmt.Sprintf("%.3f / %.3f ms = %.2f×", hi.Stowage.Get.P50, hi.Floor.Get.P50, g), "≤ 1.1×")
	mu := hi.Floor.MountUnmount.P50 + 2*hi.Fsync.P50
	add(fmt.Sprintf("Mount+Unmount pair p50 at N=%d / floor's pair + 2 fdatasyncs", hi.N), hi.Stowage.MountUnmount.P50 <= mu, fmt.Sprintf("%.3f ms / (%.3f + 2 × %.3f) ms = %.2f×", hi.Stowage.MountUnmount.P50, hi.Floor.MountUnmount.P50, hi.Fsync.P50, hi.Stowage.MountUnmount.P50/mu), "≤ 1×")
	if m := r.MemMount; m.Stowage.Samples > 0 {
		ts = append(ts, Target{What: fmt.Sprintf("the same pair with stowage's root in memory (tmpfs: its two commits flush nothing) / floor's pair, N=%d", r.MemMountN),
			Measured: fmt.Sprintf("%.3f / %.3f ms = %.2f×: %+.0f µs of stowage's own work per pair, for which the limit above leaves no time", m.Stowage.P50, m.Floor.P50, m.Stowage.P50/m.Floor.P50, (m.Stowage.P50-m.Floor.P50)*1000),
			Limit:    "none", Reference: true})
	}
	cr := hi.Stowage.CreateRemove.P50 / lo.Stowage.CreateRemove.P50
	add(fmt.Sprintf("Create+Remove p50 at N=%d / at N=%d", hi.N, lo.N), cr <= 1.5, fmt.Sprintf("%.2f / %.2f ms = %.2f×", hi.Stowage.CreateRemove.P50, lo.Stowage.CreateRemove.P50, cr), "≤ 1.5×")
	add(fmt.Sprintf("start to ready at N=%d", hi.N), hi.ReadyMs <= 1000, fmt.Sprintf("%.0f ms", hi.ReadyMs), "≤ 1 s")
	// The peak since exec counts: start-up's transient memory is as real to
	// the host as what stays.
	rss := max(hi.RSSStartMiB, hi.RSSListMiB, hi.HWMMiB)
	add(fmt.Sprintf("resident memory at N=%d, index included (after start / after List / peak)", hi.N), rss <= 64, fmt.Sprintf("%.1f / %.1f / %.1f MiB (after List: %.1f MiB anonymous, %.1f MiB state-file pages)", hi.RSSStartMiB, hi.RSSListMiB, hi.HWMMiB, hi.AnonListMiB, hi.FileListMiB), "≤ 64 MiB")
	d := r.Docker.Stowage.P50 / r.Docker.Floor.P50
	add("Docker API create+rm pair, stowage / floor plugin (p50)", d <= 1.35, fmt.Sprintf("%.2f / %.2f ms = %.2f× (stowage / local: %.2f×; floor / local: %.2f×)", r.Docker.Stowage.P50, r.Docker.Floor.P50, d, r.Docker.Stowage.P50/r.Docker.Local.P50, r.Docker.Floor.P50/r.Docker.Local.P50), "≤ 1.35×")
	if m := r.Docker.InMemory; m.Samples > 0 {
		dm := m.P50 / r.Docker.Floor.P50
		// A pair makes pairFlushes device flushes (see BENCHMARKS.md).
		fs := r.Fsync
		for _, l := range r.Levels {
			if l.N == r.DockerN && l.Fsync.Samples > 0 {
				fs = l.Fsync
			}
		}
		fl := r.Docker.Floor.P50 + pairFlushes*fs.P50
		add("the same with stowage's root in memory (tmpfs: no device flush) / floor plugin", dm <= 1.35, fmt.Sprintf("%.2f / %.2f ms = %.2f×; on disk, stowage / (floor + %d × fdatasync p50 at N=%d) = %.2f / (%.2f + %d × %.3f) ms = %.2f×", m.P50, r.Docker.Floor.P50, dm, pairFlushes, r.DockerN, r.Docker.Stowage.P50, r.Docker.Floor.P50, pairFlushes, fs.P50, r.Docker.Stowage.P50/fl), "≤ 1.35× (a reference: the issue's target is the row above)")
	}
	worst, worstN := worstSpeedup(r.Levels, func(l Level) Side { return l.Stowage })
	add("64 concurrent durable Creates / one at a time (worst N), on this machine's root (ext4, no journal)", worst >= 6, fmt.Sprintf("%.1f× (N=%d)", worst, worstN), "≥ 6×")
	floorWorst, floorN := worstSpeedup(r.Levels, func(l Level) Side { return l.Floor })
	ts = append(ts, Target{What: "the same for the floor, a driver that keeps a map and does no I/O (worst N)",
		Measured: fmt.Sprintf("%.1f× (N=%d): the client and the plugins share this machine's %s cores", floorWorst, floorN, r.Machine["nproc"]),
		Limit:    "none", Reference: true})
	if j := r.Journaled; j != nil {
		add(fmt.Sprintf("the same on a journaled ext4 (an image volume of stowage's, N=%d)", j.At), j.Conc/j.Seq >= 6, fmt.Sprintf("%.1f× (%.0f / %.0f creates/s)", j.Conc/j.Seq, j.Conc, j.Seq), "≥ 6×")
	}
	bw, bn := 0.0, 0
	for _, l := range r.Levels {
		if l.BusyGet.P99 > bw {
			bw, bn = l.BusyGet.P99, l.N
		}
	}
	add("Get p99 while one Create is busy 5 s (worst N)", bw <= 5, fmt.Sprintf("%.2f ms (N=%d)", bw, bn), "≤ 5 ms")
	return ts
}

// pairFlushes is how many device flushes a dir volume's create+rm pair
// makes: Create's intent, the new directory, its parent and the record;
// Remove's intent, the parent after the rmdir and the record.
const pairFlushes = 7

const (
	beginMark = "<!-- bench:begin (written by make bench; edit outside these marks) -->"
	endMark   = "<!-- bench:end -->"
)

func writeReport(r *Results, cfg config) error {
	png := filepath.Join(cfg.out, "latency.png")
	if err := plotLatency(r, png); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	md := renderResults(r)
	if err := os.WriteFile(filepath.Join(cfg.out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if cfg.doc == "" || cfg.quick {
		return nil // a quick run never overwrites the published figures
	}
	b, err := os.ReadFile(png)
	if err != nil {
		return err
	}
	if err := os.WriteFile(strings.TrimSuffix(cfg.doc, ".md")+".png", b, 0o644); err != nil {
		return err
	}
	old, err := os.ReadFile(cfg.doc)
	doc := string(old)
	if err != nil || !strings.Contains(doc, beginMark) || !strings.Contains(doc, endMark) {
		doc = "# Benchmarks\n\n" + beginMark + "\n" + endMark + "\n"
	}
	i, j := strings.Index(doc, beginMark)+len(beginMark), strings.Index(doc, endMark)
	doc = doc[:i] + "\n" + md + doc[j:]
	return os.WriteFile(cfg.doc, []byte(doc), 0o644)
}

func renderResults(r *Results) string {
	var b strings.Builder
	p := func(format string, a ...interface{}) { fmt.Fprintf(&b, format, a...) }
	p("Run of %s, %s, took %.0f s. Command: `%s` (from the repository root, as root).\n\n",
		r.Started.Format(time.RFC3339), map[bool]string{true: "QUICK (few samples)", false: "full"}[r.Quick], r.Seconds, r.Command)
	p("Load average before / after: `%s` / `%s`.\n\n", r.LoadFrom, r.LoadTo)
	p("### Machine\n\n```\nnproc: %s\nCPU: %s\nkernel: %s\n%s\ndisk:\n%s\n%s\n%s\n```\n\n", r.Machine["nproc"], r.Machine["cpu"], r.Machine["kernel"], r.Machine["memory"], r.Machine["disk"], r.Machine["go"], r.Machine["docker"])
	p("### Targets\n\n| target | measured | limit | |\n|---|---|---|---|\n")
	for _, t := range targets(r) {
		status := map[bool]string{true: "met", false: "**missed**"}[t.OK]
		if t.Reference {
			status = "reference"
		}
		p("| %s | %s | %s | %s |\n", t.What, t.Measured, t.Limit, status)
	}
	p("\n### Latency over the plugin socket (ms, p50 / p99)\n\n")
	p("stowage = `stowage serve` (dir backend, info logging, every change fsynced); floor = no-op in-memory driver on go-plugins-helpers; peer = %s (Debian's package, local remote, its JSON state file), at N ≤ %d. All over their unix sockets with dockerd's requests from one caller, samples interleaved.\n\n", r.PeerName, peerMaxOf(r))
	p("| N | driver | Get | List | Create+Remove | Mount+Unmount | Creates/s, 1 caller | Creates/s, 64 callers | speed-up |\n|---|---|---|---|---|---|---|---|---|\n")
	pd := func(d Dist) string { return fmt.Sprintf("%.3f / %.3f", d.P50, d.P99) }
	for _, l := range r.Levels {
		sides := []struct {
			name string
			s    Side
		}{{"stowage", l.Stowage}, {"floor", l.Floor}}
		if l.Peer != nil {
			sides = append(sides, struct {
				name string
				s    Side
			}{"peer", *l.Peer})
		}
		for _, s := range sides {
			p("| %d | %s | %s | %s | %s | %s | %.0f | %.0f | %s |\n", l.N, s.name, pd(s.s.Get), pd(s.s.List), pd(s.s.CreateRemove), pd(s.s.MountUnmount), s.s.SeqCreates, s.s.ConcCreates, ratio(s.s.ConcCreates, s.s.SeqCreates))
		}
	}
	p("\nSamples per N and driver: Get %d, List %d–%d, Create+Remove and Mount+Unmount %d pairs.\n\n",
		r.Levels[0].Stowage.Get.Samples, r.Levels[len(r.Levels)-1].Stowage.List.Samples, r.Levels[0].Stowage.List.Samples, r.Levels[0].Stowage.CreateRemove.Samples)
	p("### stowage / peer, per call (p50; below 1 stowage is faster)\n\n| N | Get | List | Create+Remove | Mount+Unmount | Creates/s, 1 caller | Creates/s, 64 callers | peer's start to ready at N |\n|---|---|---|---|---|---|---|---|\n")
	for _, l := range r.Levels {
		if l.Peer == nil {
			continue
		}
		pr := *l.Peer
		p("| %d | %s | %s | %s | %s | %s (faster: higher) | %s (faster: higher) | %.1f s |\n", l.N, ratio(l.Stowage.Get.P50, pr.Get.P50), ratio(l.Stowage.List.P50, pr.List.P50), ratio(l.Stowage.CreateRemove.P50, pr.CreateRemove.P50), ratio(l.Stowage.MountUnmount.P50, pr.MountUnmount.P50), ratio(l.Stowage.SeqCreates, pr.SeqCreates), ratio(l.Stowage.ConcCreates, pr.ConcCreates), l.PeerReadyS)
	}
	for _, l := range r.Levels {
		if l.Peer != nil && l.Peer.Failed != "" {
			p("\nAt N=%d the peer failed a call (`%s`); its changes were not measured further there (missing figures are 0, their ratios –).\n", l.N, l.Peer.Failed)
		}
	}
	p("\n")
	p("### stowage at N volumes: start, memory, a busy Create\n\n")
	p("| N | populate (64 callers over the socket) | start to ready | RSS after start (anon) | RSS after List (anon + file) | peak RSS (at ready) | state file | Get p50 / p99 while one Create is busy | Gets during it | busy Create took |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, l := range r.Levels {
		p("| %d | %.1f s (%.0f/s) | %.0f ms | %.1f MiB (%.1f) | %.1f MiB (%.1f + %.1f) | %.1f MiB (%.1f) | %.1f MiB | %s ms | %d | %.2f s |\n", l.N, l.PopulateSeconds, l.PopulateRate, l.ReadyMs, l.RSSStartMiB, l.AnonStartMiB, l.RSSListMiB, l.AnonListMiB, l.FileListMiB, l.HWMMiB, l.HWMStartMiB, l.StateFileMiB, pd(l.BusyGet), l.BusyGet.Samples, l.BusyCreateS)
	}
	p("\nThe disk: a 4 KiB write + fdatasync in the daemon's root takes %.2f ms p50 (%.2f ms p99, %d samples) before the run; every durable change pays one (a journal append; a checkpoint into bbolt, rarely, two more). Beside the Mount+Unmount pairs, one per round:", r.Fsync.P50, r.Fsync.P99, r.Fsync.Samples)
	for _, l := range r.Levels {
		p(" N=%d %.3f ms p50 (%.2f p99);", l.N, l.Fsync.P50, l.Fsync.P99)
	}
	p("\n")
	p("\nStart to ready: from exec of `stowage serve` until Get of an existing volume answers with it (open and check the state file, reconcile, listen).\n\n")
	p("### Through the Docker API (private dockerd 20.10, N=%d)\n\n", r.DockerN)
	p("`POST /volumes/create` + `DELETE /volumes/NAME` over the engine's unix socket, %d pairs per driver, rotating order; only the API calls are timed.\n\n", r.Docker.Stowage.Samples)
	p("| driver | pair p50 | pair p99 | p50 / local |\n|---|---|---|---|\n")
	for _, d := range []struct {
		n string
		d Dist
	}{{"local", r.Docker.Local}, {"floor (legacy plugin)", r.Docker.Floor}, {"stowage (legacy plugin)", r.Docker.Stowage}, {"stowage, root in memory (tmpfs)", r.Docker.InMemory}} {
		if d.d.Samples == 0 {
			continue
		}
		p("| %s | %.2f ms | %.2f ms | %.2f× |\n", d.n, d.d.P50, d.d.P99, d.d.P50/r.Docker.Local.P50)
	}
	p("\n![p50 latency against N](BENCHMARKS.png)\n\n")
	return b.String()
}

// ratio is a/b, or – where either was not measured.
func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func peerMaxOf(r *Results) int {
	m := 0
	for _, l := range r.Levels {
		if l.Peer != nil {
			m = l.N
		}
	}
	return m
}

// plotLatency draws p50 latency against N on log-log axes, stowage solid,
// floor dashed, peer dotted, one colour per operation.
func plotLatency(r *Results, path string) error {
	p := plot.New()
	p.Title.Text = "stowage vs floor vs peer (rclone): p50 latency over the plugin socket"
	p.X.Label.Text = "existing volumes (N)"
	p.Y.Label.Text = "latency p50 (ms)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	ops := []struct {
		name string
		get  func(Side) Dist
		c    color.RGBA
	}{
		{"Get", func(s Side) Dist { return s.Get }, color.RGBA{0x1f, 0x77, 0xb4, 0xff}},
		{"List", func(s Side) Dist { return s.List }, color.RGBA{0xd6, 0x27, 0x28, 0xff}},
		{"Create+Remove", func(s Side) Dist { return s.CreateRemove }, color.RGBA{0x2c, 0xa0, 0x2c, 0xff}},
		{"Mount+Unmount", func(s Side) Dist { return s.MountUnmount }, color.RGBA{0x94, 0x67, 0xbd, 0xff}},
	}
	for _, op := range ops {
		for _, who := range []string{"stowage", "floor", "peer"} {
			pts := make(plotter.XYs, 0, len(r.Levels))
			for _, l := range r.Levels {
				s := l.Stowage
				switch who {
				case "floor":
					s = l.Floor
				case "peer":
					if l.Peer == nil {
						continue
					}
					s = *l.Peer
				}
				pts = append(pts, plotter.XY{X: float64(l.N), Y: max(op.get(s).P50, 1e-3)})
			}
			if len(pts) == 0 {
				continue
			}
			line, points, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			line.Color, points.Color = op.c, op.c
			line.Width = vg.Points(2)
			switch who {
			case "floor":
				line.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
				points.Shape = draw.BoxGlyph{}
			case "peer":
				line.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
				points.Shape = draw.TriangleGlyph{}
			default:
				points.Shape = draw.CircleGlyph{}
			}
			p.Add(line, points)
			p.Legend.Add(op.name+" "+who, line, points)
		}
	}
	// Head-room above the highest line for the legend.
	p.Y.Max *= 30
	p.Add(plotter.NewGrid())
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}
