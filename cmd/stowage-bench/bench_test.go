//go:build stowagebench

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

// The benchmark drives a real `stowage serve` (built with -tags
// stowagebench, so the slow backend exists) and the floor driver over their
// unix sockets with dockerd's requests, then both and Docker's local driver
// through a private engine's API. Settings come from the environment (the
// Makefile's bench target sets them):
//
//	STOWAGE_BENCH_BIN    stowage built with -tags stowagebench
//	STOWAGE_BENCH_FLOOR  the stowage-bench binary (serves the floor)
//	STOWAGE_BENCH_OUT    directory for results.json, logs and the plot
//	STOWAGE_BENCH_DOC    BENCHMARKS.md to (re)write between its markers
//	STOWAGE_BENCH_NS     volume counts, default 1000,10000,100000
//	STOWAGE_BENCH_QUICK  1: few samples, for trying the pipeline
//	STOWAGE_BENCH_PEER_MAX  largest N the peer (rclone serve docker) is
//	                     measured at, default 10000: it rewrites its whole
//	                     state file on every change, so populating it grows
//	                     with the square of N
type config struct {
	bin, floorBin, out, doc string
	ns                      []int
	quick                   bool
	peerMax                 int
}

func loadConfig(t *testing.T) config {
	c := config{
		bin: os.Getenv("STOWAGE_BENCH_BIN"), floorBin: os.Getenv("STOWAGE_BENCH_FLOOR"),
		out: os.Getenv("STOWAGE_BENCH_OUT"), doc: os.Getenv("STOWAGE_BENCH_DOC"),
		quick: os.Getenv("STOWAGE_BENCH_QUICK") == "1",
	}
	if c.bin == "" || c.floorBin == "" || c.out == "" {
		t.Fatal("run the benchmark with 'make bench' (it sets STOWAGE_BENCH_BIN, STOWAGE_BENCH_FLOOR and STOWAGE_BENCH_OUT)")
	}
	ns := os.Getenv("STOWAGE_BENCH_NS")
	if ns == "" {
		ns = "1000,10000,100000"
	}
	for _, s := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 100 {
			t.Fatalf("STOWAGE_BENCH_NS: %q is not a volume count of at least 100", s)
		}
		c.ns = append(c.ns, n)
	}
	sort.Ints(c.ns)
	c.peerMax = 10000
	if v := os.Getenv("STOWAGE_BENCH_PEER_MAX"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("STOWAGE_BENCH_PEER_MAX: %q is not a number", v)
		}
		c.peerMax = n
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

// samples returns n, or a tenth of it (at least 20) in a quick run.
func (c config) samples(n int) int {
	if c.quick {
		return max(n/10, 20)
	}
	return n
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	Samples int     `json:"samples"`
}

func dist(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) float64 {
		i := int(p*float64(len(s))+0.5) - 1
		i = min(max(i, 0), len(s)-1)
		return float64(s[i]) / 1e6
	}
	return Dist{P50: q(0.50), P99: q(0.99), Samples: len(s)}
}

// Side is one driver's figures at one N.
type Side struct {
	Get          Dist    `json:"get"`
	List         Dist    `json:"list"`
	CreateRemove Dist    `json:"create_remove"`
	MountUnmount Dist    `json:"mount_unmount"`
	SeqCreates   float64 `json:"seq_creates_per_s"`
	ConcCreates  float64 `json:"conc64_creates_per_s"`
	// Failed: the peer's call that failed; its changes stopped there.
	Failed string `json:"failed,omitempty"`
}

// Level is everything measured with N existing volumes.
type Level struct {
	N               int     `json:"n"`
	PopulateSeconds float64 `json:"populate_s"`
	PopulateRate    float64 `json:"populate_per_s"`
	Stowage         Side    `json:"stowage"`
	Floor           Side    `json:"floor"`
	// Peer is rclone serve docker, at N up to the peer maximum only.
	Peer *Side `json:"peer,omitempty"`
	// PeerReadyS: the peer's start with N volumes in its state file.
	PeerReadyS float64 `json:"peer_start_to_ready_s,omitempty"`
	// Fsync is a 4 KiB write + fdatasync in stowage's root, one sample
	// beside every Mount+Unmount pair, so it sees the same load.
	Fsync       Dist    `json:"fdatasync_4k"`
	ReadyMs     float64 `json:"start_to_ready_ms"`
	RSSStartMiB float64 `json:"rss_after_start_mib"`
	RSSListMiB  float64 `json:"rss_after_list_mib"`
	// HWMMiB is VmHWM after the List samples: the peak since exec (start,
	// recovery, reconcile, List); HWMStartMiB the same once ready.
	HWMMiB       float64 `json:"rss_peak_mib"`
	HWMStartMiB  float64 `json:"rss_peak_at_ready_mib"`
	AnonStartMiB float64 `json:"rss_anon_after_start_mib"`
	AnonListMiB  float64 `json:"rss_anon_after_list_mib"`
	FileListMiB  float64 `json:"rss_file_after_list_mib"`
	StateFileMiB float64 `json:"state_file_mib"`
	BusyGet      Dist    `json:"busy_get"`
	BusyCreateS  float64 `json:"busy_create_s"`
}

// DockerCmp is the Docker API create+rm pair per driver.
type DockerCmp struct {
	Local   Dist `json:"local"`
	Floor   Dist `json:"floor"`
	Stowage Dist `json:"stowage"`
	// InMemory: a second stowage whose root is a tmpfs, where every fsync
	// returns at once: stowage's own work without the device's flushes.
	InMemory Dist `json:"stowage_root_in_memory"`
}

// MemPairs is Mount+Unmount pairs of the stowage whose root is in memory
// and of the floor, measured taking turns.
type MemPairs struct {
	Stowage Dist `json:"stowage"`
	Floor   Dist `json:"floor"`
}

// Results is one run.
type Results struct {
	Started  time.Time         `json:"started"`
	Seconds  float64           `json:"seconds"`
	Command  string            `json:"command"`
	Machine  map[string]string `json:"machine"`
	LoadFrom string            `json:"load_before"`
	LoadTo   string            `json:"load_after"`
	Quick    bool              `json:"quick"`
	Levels   []Level           `json:"levels"`
	Docker   DockerCmp         `json:"docker"`
	DockerN  int               `json:"docker_at_n"`
	Fsync    Dist              `json:"fdatasync_4k"`
	PeerName string            `json:"peer_name"`
	// MemMount: Mount+Unmount pairs of the in-memory stowage (see
	// DockerCmp.InMemory) and the floor, taking turns, at MemMountN volumes.
	MemMount  MemPairs `json:"mount_unmount_root_in_memory"`
	MemMountN int      `json:"mount_unmount_root_in_memory_at_n"`
	// Journaled: the throughput pair on a journaled ext4 (this VM's root
	// has none; a Docker host's /var/lib/docker usually has one).
	Journaled *Throughput `json:"journaled_ext4,omitempty"`
}

// Throughput is Creates per second by one caller and by 64 at once.
type Throughput struct {
	Seq  float64 `json:"seq_creates_per_s"`
	Conc float64 `json:"conc64_creates_per_s"`
	At   int     `json:"existing_volumes"`
}

// proc is one plugin process on a socket.
type proc struct {
	name, sock string
	// opts are the Create options this driver needs (the peer: where).
	opts    func(name string) map[string]string
	peerDir string
	args    []string
	bin     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	c       *client.Client
}

func startProc(t *testing.T, p *proc) time.Duration {
	t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.bin, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(p.done)
	// Fresh client: the old one's pooled connections died with the process.
	p.c = client.New(p.sock)
	return p.waitReady(t, began, "")
}

// waitReady polls until the socket answers; with probe set, until Get of
// that existing volume answers with the volume, which is what dockerd needs.
func (p *proc) waitReady(t *testing.T, began time.Time, probe string) time.Duration {
	t.Helper()
	for time.Since(began) < 60*time.Second {
		select {
		case <-p.done:
			t.Fatalf("%s exited at start; see %s", p.bin, p.logPath)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		if probe == "" {
			err = p.c.Call(ctx, "/Plugin.Activate", nil, nil)
		} else {
			var r volume.GetResponse
			err = p.c.Call(ctx, "/VolumeDriver.Get", &volume.GetRequest{Name: probe}, &r)
			if err == nil && (r.Volume == nil || r.Volume.Name != probe) {
				err = fmt.Errorf("Get %s answered %+v", probe, r.Volume)
			}
		}
		cancel()
		if err == nil {
			return time.Since(began)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s did not answer on %s within 60s; see %s", p.bin, p.sock, p.logPath)
	return 0
}

func (p *proc) stop(t *testing.T) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	// The peer is not under test: rclone was seen to take over a minute
	// to stop under load. A stowage that does not stop is a failure.
	wait, fail := 60*time.Second, t.Errorf
	if p.peerDir != "" {
		wait, fail = 10*time.Second, t.Logf
	}
	select {
	case <-p.done:
	case <-time.After(wait):
		p.cmd.Process.Kill()
		<-p.done
		fail("%s did not stop within %v of SIGTERM; killed", p.bin, wait)
	}
	p.cmd = nil
	p.c.HTTP.CloseIdleConnections()
	// rclone leaves its socket behind, and so does anything killed: every
	// engine on the machine that lists volume drivers would then wait out
	// its retries on it (it made later e2e runs minutes slower).
	if err := os.Remove(p.sock); err != nil && !os.IsNotExist(err) {
		t.Errorf("removing %s: %v", p.sock, err)
	}
	if p.peerDir != "" {
		// A killed rclone leaves its FUSE mounts behind, dead ("transport
		// endpoint is not connected"): its next start could not restore
		// those volumes, nor could the root be removed.
		base := filepath.Join(p.peerDir, "base")
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			unix.Unmount(filepath.Join(base, e.Name()), unix.MNT_DETACH)
		}
	}
}

// restart stops stowage and times its start until Get of probe answers.
func (p *proc) restart(t *testing.T, probe string) time.Duration {
	p.stop(t)
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.c = client.New(p.sock)
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(p.done)
	return p.waitReady(t, began, probe)
}

// mem is a process's resident memory in MiB: all of it, its peak, and the
// anonymous (heap, stacks) and file-backed (the state file's mmap) parts.
type mem struct{ rss, hwm, anon, file float64 }

func (p *proc) mem(t *testing.T) mem {
	var m mem
	m.rss, m.hwm, m.anon, m.file = p.status(t)
	return m
}

// rss reads VmRSS and VmHWM of the process, in MiB.
func (p *proc) rss(t *testing.T) (rss, hwm float64) {
	m := p.mem(t)
	return m.rss, m.hwm
}

func (p *proc) status(t *testing.T) (rss, hwm, anon, file float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		case "RssAnon:":
			anon = kb / 1024
		case "RssFile:":
			file = kb / 1024
		}
	}
	return rss, hwm, anon, file
}

func call(t *testing.T, c *client.Client, op string, req, resp interface{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Call(ctx, "/VolumeDriver."+op, req, resp); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

func timed(t *testing.T, c *client.Client, op string, req, resp interface{}) time.Duration {
	t.Helper()
	s := time.Now()
	call(t, c, op, req, resp)
	return time.Since(s)
}

// listRaw posts List as dockerd does and times it to the last byte.
func listRaw(t *testing.T, c *client.Client) (time.Duration, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://plugin.moby.localhost/VolumeDriver.List", strings.NewReader("{}"))
	req.Header.Set("Accept", client.Accept)
	s := time.Now()
	res, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	raw, err := io.ReadAll(res.Body)
	d := time.Since(s)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("List: %s %v: %.200s", res.Status, err, raw)
	}
	return d, raw
}

func volName(i int) string { return fmt.Sprintf("v%07d", i) }

func mountID(r *rand.Rand) string {
	b := make([]byte, 32)
	r.Read(b)
	return fmt.Sprintf("%x", b)
}

func (p *proc) createOpts(name string) map[string]string {
	if p.opts == nil {
		return nil
	}
	return p.opts(name)
}

// populate creates volumes from..to-1 with 64 callers at once.
func populate(t *testing.T, p *proc, from, to int) {
	c := p.c
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				err := c.Call(ctx, "/VolumeDriver.Create", &volume.CreateRequest{Name: volName(i), Options: p.createOpts(volName(i))}, nil)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("create %s: %w", volName(i), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// creates times n Creates by `workers` callers at once; it returns Creates
// per second and a func that removes them (untimed). The caller removes
// after both throughput runs: on ext4 without a journal (this VM's root),
// mkdir's inode allocator steps over every inode freed in the last minutes,
// so a run right after another's removals would pay for them.
func creates(t *testing.T, p *proc, prefix string, n, workers int) (float64, func()) {
	c := p.c
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	run := func(op string, timedRun bool) float64 {
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		began := time.Now()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					var err error
					if op == "Create" {
						err = c.Call(ctx, "/VolumeDriver.Create", &volume.CreateRequest{Name: names[i], Options: p.createOpts(names[i])}, nil)
					} else {
						err = c.Call(ctx, "/VolumeDriver.Remove", &volume.RemoveRequest{Name: names[i]}, nil)
					}
					cancel()
					if err != nil {
						failed.Store(fmt.Errorf("%s %s: %w", op, names[i], err))
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			t.Fatal(err)
		}
		return float64(n) / time.Since(began).Seconds()
	}
	rate := run("Create", true)
	return rate, func() { run("Remove", false) }
}

// throughput is one caller's Creates, then 64 callers', removed after both.
func throughput(t *testing.T, p *proc, tag string, seqN, concN int) (seq, conc float64) {
	seq, rmSeq := creates(t, p, "seq-"+tag, seqN, 1)
	conc, rmConc := creates(t, p, "conc-"+tag, concN, 64)
	rmSeq()
	rmConc()
	return seq, conc
}

// side measures one driver at N. The caller interleaves the drivers' calls
// one by one, so load from other work on the machine falls on each alike.
type sideRun struct {
	p *proc
	c *client.Client
	// peer: a failed call stops its changes for the level (rclone's FUSE
	// Unmount was seen to hang under load) instead of failing the run.
	peer   bool
	failed error
	gets   []time.Duration
	lists  []time.Duration
	cr     []time.Duration
	mu     []time.Duration
}

// change times one changing call. A peer's failure is recorded, not fatal.
func (s *sideRun) change(t *testing.T, op string, req, resp interface{}) (time.Duration, bool) {
	if !s.peer {
		return timed(t, s.c, op, req, resp), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.c.Call(ctx, "/VolumeDriver."+op, req, resp); err != nil {
		s.failed = fmt.Errorf("%s: %w", op, err)
		t.Logf("peer: %v; its changes are not measured further at this N", s.failed)
		return 0, false
	}
	return time.Since(start), true
}

// createRemoves times pairs rounds of a fresh volume created and removed,
// the runs taking turns one pair at a time; pause, if not 0, follows each
// round.
func createRemoves(t *testing.T, n int, runs []*sideRun, pairs int, pause time.Duration) {
	for i := 0; i < pairs; i++ {
		if i > 0 {
			time.Sleep(pause)
		}
		for _, s := range runs {
			if s.failed != nil {
				continue
			}
			name := fmt.Sprintf("cr-%d-%s-%d", n, s.p.name, i)
			dc, ok := s.change(t, "Create", &volume.CreateRequest{Name: name, Options: s.p.createOpts(name)}, nil)
			if !ok {
				continue
			}
			dr, ok := s.change(t, "Remove", &volume.RemoveRequest{Name: name}, nil)
			if ok {
				s.cr = append(s.cr, dc+dr)
			}
		}
	}
}

// mountUnmounts times pairs rounds of an existing volume mounted and
// unmounted under a new mount ID, as createRemoves does; beside, if not
// nil, runs before each round (the fsync probe, so that it sees the same
// load).
func mountUnmounts(t *testing.T, r *rand.Rand, n int, runs []*sideRun, pairs int, beside func(i int), pause time.Duration) {
	for i := 0; i < pairs; i++ {
		if i > 0 {
			time.Sleep(pause)
		}
		if beside != nil {
			beside(i)
		}
		for _, s := range runs {
			if s.failed != nil {
				continue
			}
			name, id := volName(r.Intn(n)), mountID(r)
			var mr volume.MountResponse
			d, ok := s.change(t, "Mount", &volume.MountRequest{Name: name, ID: id}, &mr)
			if !ok {
				continue
			}
			if mr.Mountpoint == "" {
				t.Fatalf("Mount %s answered no mountpoint", name)
			}
			du, ok := s.change(t, "Unmount", &volume.UnmountRequest{Name: name, ID: id}, nil)
			if ok {
				s.mu = append(s.mu, d+du)
			}
		}
	}
}

func measureLevel(t *testing.T, cfg config, n int, sto, flo, peer *proc, root string, lvl *Level) {
	r := rand.New(rand.NewSource(int64(n)))
	runs := []*sideRun{{p: sto, c: sto.c}, {p: flo, c: flo.c}}
	if peer != nil {
		runs = append(runs, &sideRun{p: peer, c: peer.c, peer: true})
	}

	// Get: random existing volumes, the drivers answering in turn, one
	// request each, the same name: a Get is ~0.15 ms, and in blocks of
	// even 200 a burst of other work on the machine fell on one side.
	getN := cfg.samples(4000)
	for i := 0; i < getN; i++ {
		name := volName(r.Intn(n))
		for _, s := range runs {
			var resp volume.GetResponse
			s.gets = append(s.gets, timed(t, s.c, "Get", &volume.GetRequest{Name: name}, &resp))
			if resp.Volume == nil || resp.Volume.Name != name {
				t.Fatalf("Get %s answered %+v", name, resp.Volume)
			}
		}
	}
	// List: timed until the answer's last byte is read (dockerd's own
	// decoding is not the plugin's cost), then decoded and counted.
	listN := cfg.samples(40)
	if n >= 100000 {
		listN = cfg.samples(15)
	}
	for i := 0; i < listN; i++ {
		for _, s := range runs {
			d, raw := listRaw(t, s.c)
			s.lists = append(s.lists, d)
			var resp volume.ListResponse
			if err := json.Unmarshal(raw, &resp); err != nil {
				t.Fatalf("List answer: %v", err)
			}
			if len(resp.Volumes) != n {
				t.Fatalf("List answered %d volumes, want %d", len(resp.Volumes), n)
			}
		}
	}
	m := sto.mem(t)
	lvl.RSSListMiB, lvl.HWMMiB, lvl.AnonListMiB, lvl.FileListMiB = m.rss, m.hwm, m.anon, m.file
	// Create+Remove and Mount+Unmount: stowage and the floor take turns;
	// the peer has passes of its own afterwards. Interleaved, the peer's
	// work (its whole JSON state file written per change, its garbage
	// collection) was still going on when stowage's next change came, and
	// stowage's fdatasyncs waited behind it: at N=1000, where the peer took
	// part in every round, stowage's Create+Remove read 4.5 ms with the
	// peer in the rounds and 2.3-2.7 ms with it out (quick runs,
	// 2026-12-07).
	pairs := cfg.samples(400)
	probe, err := os.CreateTemp(root, "fsync-probe-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe.Name())
	defer probe.Close()
	var fsyncs []time.Duration
	ours := runs[:2]
	createRemoves(t, n, ours, pairs, 0)
	mountUnmounts(t, r, n, ours, pairs, func(i int) { fsyncs = append(fsyncs, fsyncOnce(t, probe, i)) }, 0)
	lvl.Fsync = dist(fsyncs)
	// Throughput: one caller, then 64 at once.
	seqN, concN := cfg.samples(300), cfg.samples(1280)
	tag := fmt.Sprint(n)
	lvl.Stowage.SeqCreates, lvl.Stowage.ConcCreates = throughput(t, sto, tag, seqN, concN)
	lvl.Floor.SeqCreates, lvl.Floor.ConcCreates = throughput(t, flo, tag, seqN, concN)
	if peer != nil {
		// The peer's changes grow with N (it rewrites its state file each
		// time): one pair for every peerEvery of the others'. Between its
		// rounds it waits as long as the others' rounds took, as when it
		// took turns with them. Its Mount (a FUSE mount) was seen to hang
		// rclone whole, so its Mount+Unmount pairs come last.
		ps := runs[2]
		peerEvery := max(1, n/2500)
		var cr, mu float64
		for _, s := range ours {
			cr, mu = cr+dist(s.cr).P50, mu+dist(s.mu).P50
		}
		ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
		createRemoves(t, n, []*sideRun{ps}, max(pairs/peerEvery, 20), ms(cr))
		if ps.failed == nil {
			lvl.Peer = &Side{}
			lvl.Peer.SeqCreates, lvl.Peer.ConcCreates = throughput(t, peer, tag, max(seqN/peerEvery, 20), max(concN/peerEvery, 64))
		}
		mountUnmounts(t, r, n, []*sideRun{ps}, max(pairs/peerEvery, 20), nil, ms(mu))
	}
	for i, s := range runs {
		side := &lvl.Stowage
		switch i {
		case 1:
			side = &lvl.Floor
		case 2:
			if lvl.Peer == nil {
				lvl.Peer = &Side{}
			}
			side = lvl.Peer
		}
		side.Get, side.List, side.CreateRemove, side.MountUnmount = dist(s.gets), dist(s.lists), dist(s.cr), dist(s.mu)
		if s.failed != nil {
			side.Failed = s.failed.Error()
		}
	}

	// One Create held busy for 5 s by the slow backend; meanwhile Get other
	// volumes one after another and see that none waits for it.
	busy := fmt.Sprintf("busy-%d", n)
	done := make(chan time.Duration)
	go func() {
		s := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := sto.c.Call(ctx, "/VolumeDriver.Create", &volume.CreateRequest{Name: busy, Options: map[string]string{"backend": "slow", "delay": "5s"}}, nil)
		if err != nil {
			t.Errorf("slow Create: %v", err)
		}
		done <- time.Since(s)
	}()
	time.Sleep(50 * time.Millisecond)
	var busyGets []time.Duration
loop:
	for {
		select {
		case d := <-done:
			lvl.BusyCreateS = d.Seconds()
			break loop
		default:
		}
		busyGets = append(busyGets, timed(t, sto.c, "Get", &volume.GetRequest{Name: volName(r.Intn(n))}, &volume.GetResponse{}))
		time.Sleep(200 * time.Microsecond)
	}
	lvl.BusyGet = dist(busyGets)
	if lvl.BusyCreateS < 5 {
		t.Fatalf("the slow Create took %.2fs: the slow backend did not hold it", lvl.BusyCreateS)
	}
	call(t, sto.c, "Remove", &volume.RemoveRequest{Name: busy}, nil)
}

// journaled measures the throughput pair on a journaled ext4: a second
// stowage whose root is an image volume of the first (ext4 as the image
// backend formats it, loop-mounted).
func journaled(t *testing.T, cfg config, sto *proc) *Throughput {
	j, done := nested(t, cfg, sto, "bench-ext4", map[string]string{"backend": "image", "size": "1G"}, "stowage-ext4.log")
	at := min(10000, slices.Max(cfg.ns))
	populate(t, j, 0, at)
	seq, conc := throughput(t, j, "ext4", cfg.samples(300), cfg.samples(1280))
	done()
	t.Logf("journaled ext4, N=%d: %.0f creates/s by one caller, %.0f by 64", at, seq, conc)
	return &Throughput{Seq: seq, Conc: conc, At: at}
}

// inMemory starts a second stowage whose root is a tmpfs volume of the
// first: every fsync there returns at once.
func inMemory(t *testing.T, cfg config, sto *proc) (p *proc, done func()) {
	return nested(t, cfg, sto, "bench-mem", map[string]string{"backend": "tmpfs", "size": "256M"}, "stowage-in-memory.log")
}

// nested starts a second stowage whose root is the first's volume vol,
// created with opts and mounted, so nothing but stowage sets it up; done
// stops it and removes the volume.
func nested(t *testing.T, cfg config, sto *proc, vol string, opts map[string]string, logName string) (p *proc, done func()) {
	call(t, sto.c, "Create", &volume.CreateRequest{Name: vol, Options: opts}, nil)
	id := strings.Repeat("e", 64)
	var mr volume.MountResponse
	call(t, sto.c, "Mount", &volume.MountRequest{Name: vol, ID: id}, &mr)
	name := daemon.RandomName("stwn")
	p = &proc{name: name, sock: "/run/docker/plugins/" + name + ".sock", bin: cfg.bin,
		args:    []string{"serve", "--root", mr.Mountpoint, "--socket", name, "--announce-to", ""},
		logPath: filepath.Join(cfg.out, logName)}
	os.Remove(p.logPath)
	startProc(t, p)
	return p, func() {
		p.stop(t)
		call(t, sto.c, "Unmount", &volume.UnmountRequest{Name: vol, ID: id}, nil)
		call(t, sto.c, "Remove", &volume.RemoveRequest{Name: vol}, nil)
	}
}

// dockerPairs times create+rm pairs through the engine's API, one pair per
// driver per round, in rotating order.
func dockerPairs(t *testing.T, cfg config, e *engine.Engine, drivers []string) [][]time.Duration {
	sock := strings.TrimPrefix(e.Host(), "unix://")
	hc := &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	do := func(method, path string, body interface{}, want int) time.Duration {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://docker/v1.41"+path, rd)
		req.Header.Set("Content-Type", "application/json")
		s := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		d := time.Since(s)
		if res.StatusCode != want {
			t.Fatalf("%s %s: %s: %s", method, path, res.Status, raw)
		}
		return d
	}
	pair := func(driver, name string) time.Duration {
		return do("POST", "/volumes/create", map[string]string{"Name": name, "Driver": driver}, http.StatusCreated) +
			do("DELETE", "/volumes/"+name, nil, http.StatusNoContent)
	}
	out := make([][]time.Duration, len(drivers))
	for i, d := range drivers { // warm up: plugin activation, connections
		for k := 0; k < 10; k++ {
			pair(d, fmt.Sprintf("warm-%d-%d", i, k))
		}
	}
	rounds := cfg.samples(300)
	for r := 0; r < rounds; r++ {
		for k := range drivers {
			i := (r + k) % len(drivers)
			out[i] = append(out[i], pair(drivers[i], fmt.Sprintf("dk-%d-%d", i, r)))
		}
	}
	return out
}

// fsyncProbe times a 4 KiB write and fdatasync in the daemon's root: the
// disk's price for one durable step (a journal append pays one).
func fsyncProbe(t *testing.T, dir string, n int) Dist {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var ds []time.Duration
	for i := 0; i < n; i++ {
		ds = append(ds, fsyncOnce(t, f, i))
	}
	return dist(ds)
}

func fsyncOnce(t *testing.T, f *os.File, i int) time.Duration {
	buf := make([]byte, 4096)
	s := time.Now()
	if _, err := f.WriteAt(buf, int64(i%16)*4096); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	return time.Since(s)
}

// peerProc is rclone serve docker (Debian's package) on its own socket,
// volumes on its local backend under root: the peer whose Get was the
// fastest in issue 12's table. It listens on a unix socket only.
func peerProc(t *testing.T, cfg config, root string) *proc {
	bin, err := exec.LookPath("rclone")
	if err != nil {
		t.Fatal("the benchmark runs rclone serve docker beside stowage: apt-get install rclone")
	}
	name := daemon.RandomName("rclb")
	dir := filepath.Join(root, "peer")
	for _, d := range []string{"base", "cache", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return &proc{name: name, sock: "/run/docker/plugins/" + name + ".sock", bin: bin,
		args: []string{"serve", "docker", "--socket-addr", "/run/docker/plugins/" + name + ".sock", "--no-spec",
			"--base-dir", filepath.Join(dir, "base"), "--cache-dir", filepath.Join(dir, "cache"),
			"--config", filepath.Join(dir, "rclone.conf"), "--log-level", "NOTICE"},
		logPath: filepath.Join(cfg.out, "peer.log"), peerDir: dir,
		opts: func(v string) map[string]string {
			return map[string]string{"remote": filepath.Join(dir, "data", v)}
		}}
}

// populatePeer gives rclone N volumes by writing its own state file
// (docker-plugin.state) while it is stopped, then times its start until Get
// of the last one answers. Creating them through the socket would take
// hours at 10 000: every Create rewrites the whole file.
func (p *proc) populatePeer(t *testing.T, n int) time.Duration {
	p.stop(t)
	type rec struct {
		Name       string            `json:"name"`
		Mountpoint string            `json:"mountpoint"`
		Created    time.Time         `json:"created"`
		Fs         string            `json:"fs"`
		Options    map[string]string `json:"options"`
		Mounts     []string          `json:"mounts"`
	}
	recs := make([]rec, n)
	now := time.Now().UTC()
	for i := range recs {
		name := volName(i)
		recs[i] = rec{Name: name, Mountpoint: filepath.Join(p.peerDir, "base", name), Created: now,
			Fs: p.opts(name)["remote"], Options: map[string]string{}, Mounts: []string{}}
	}
	raw, _ := json.Marshal(recs)
	if err := os.WriteFile(filepath.Join(p.peerDir, "cache", "docker-plugin.state"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return p.restart(t, volName(n-1))
}

func rcloneVersion() string {
	out, _ := exec.Command("rclone", "version").Output()
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(strings.TrimSpace(first), "rclone ")
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func TestBench(t *testing.T) {
	cfg := loadConfig(t)
	began := time.Now()
	res := &Results{Started: began.UTC(), Quick: cfg.quick, LoadFrom: loadavg(), Machine: machine(),
		Command: "make bench"}
	if v := os.Getenv("STOWAGE_BENCH_NS"); v != "" {
		res.Command = "STOWAGE_BENCH_NS=" + v + " " + res.Command
	}
	if cfg.quick {
		res.Command = "STOWAGE_BENCH_QUICK=1 " + res.Command
	}

	root, err := os.MkdirTemp("", "stwbench-")
	if err != nil {
		t.Fatal(err)
	}
	// 100 000 volume directories live here: remove them whatever happens.
	t.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("removing %s: %v", root, err)
		}
	})
	stoName, floName := daemon.RandomName("stwb"), daemon.RandomName("flrb")
	sto := &proc{name: stoName, sock: "/run/docker/plugins/" + stoName + ".sock", bin: cfg.bin,
		args:    []string{"serve", "--root", root, "--socket", stoName, "--announce-to", ""},
		logPath: filepath.Join(cfg.out, "stowage.log")}
	flo := &proc{name: floName, sock: "/run/docker/plugins/" + floName + ".sock", bin: cfg.floorBin,
		args: []string{"floor", "--socket", floName}, logPath: filepath.Join(cfg.out, "floor.log")}
	os.Remove(sto.logPath)
	os.Remove(flo.logPath)
	startProc(t, sto)
	t.Cleanup(func() { sto.stop(t) })
	startProc(t, flo)
	t.Cleanup(func() { flo.stop(t) })

	peer := peerProc(t, cfg, root)
	os.Remove(peer.logPath)
	startProc(t, peer)
	t.Cleanup(func() { peer.stop(t) })
	res.PeerName = "rclone serve docker " + rcloneVersion()

	res.Fsync = fsyncProbe(t, root, cfg.samples(300))
	have := 0
	for li, n := range cfg.ns {
		lvl := Level{N: n}
		s := time.Now()
		populate(t, sto, have, n)
		lvl.PopulateSeconds = time.Since(s).Seconds()
		lvl.PopulateRate = float64(n-have) / lvl.PopulateSeconds
		populate(t, flo, have, n)
		var atN *proc
		if peer.cmd != nil && n <= cfg.peerMax {
			lvl.PeerReadyS = peer.populatePeer(t, n).Seconds()
			atN = peer
		} else if peer.cmd != nil {
			// Past its maximum the peer is stopped: it would only add load.
			peer.stop(t)
		}
		have = n
		t.Logf("N=%d: populated stowage in %.1fs (%.0f creates/s, 64 callers)", n, lvl.PopulateSeconds, lvl.PopulateRate)

		lvl.ReadyMs = float64(sto.restart(t, volName(n-1))) / 1e6
		m := sto.mem(t)
		lvl.RSSStartMiB, lvl.AnonStartMiB, lvl.HWMStartMiB = m.rss, m.anon, m.hwm
		if fi, err := os.Stat(filepath.Join(root, "stowage.db")); err == nil {
			lvl.StateFileMiB = float64(fi.Size()) / (1 << 20)
		}
		measureLevel(t, cfg, n, sto, flo, atN, root, &lvl)
		t.Logf("N=%d: %+v", n, lvl)
		res.Levels = append(res.Levels, lvl)

		if li == 0 {
			// Docker API comparison at the smallest N: dockerd's own cost
			// does not depend on how many volumes the plugin holds.
			mem, done := inMemory(t, cfg, sto)
			// Mount+Unmount without the device: the pair's time that is
			// stowage's own work, which its target (floor + 2 fdatasyncs)
			// leaves no room for.
			memN := min(n, 1000)
			populate(t, mem, 0, memN)
			memRuns := []*sideRun{{p: mem, c: mem.c}, {p: flo, c: flo.c}}
			mountUnmounts(t, rand.New(rand.NewSource(1)), memN, memRuns, cfg.samples(400), nil, 0)
			res.MemMount, res.MemMountN = MemPairs{Stowage: dist(memRuns[0].mu), Floor: dist(memRuns[1].mu)}, memN
			e := engine.Start(t, engine.Options{Name: "bench"})
			unix.Sync()
			ds := dockerPairs(t, cfg, e, []string{"local", floName, stoName, mem.name})
			res.Docker = DockerCmp{Local: dist(ds[0]), Floor: dist(ds[1]), Stowage: dist(ds[2]), InMemory: dist(ds[3])}
			res.DockerN = n
			done()
			t.Logf("docker pairs: %+v", res.Docker)
			e.Stop(t)
		}
	}
	res.Journaled = journaled(t, cfg, sto)
	res.Seconds = time.Since(began).Seconds()
	res.LoadTo = loadavg()

	raw, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(cfg.out, "results.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeReport(res, cfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("benchmark took %.0fs", res.Seconds)
}
