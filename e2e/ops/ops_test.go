// Package ops tests operating stowage end to end: the metrics endpoint after
// a real Docker workload, and the operator commands (ls, inspect, doctor)
// against a real daemon and its state file. Failing, never skipping, when no
// engine can start.
package ops

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
	"github.com/stowage/stowage/internal/store"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape returns every sample of /metrics as "name{labels}" → value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsCountWhatADockerWorkloadDid(t *testing.T) {
	e := engine.Start(t, engine.Options{Name: "ops"})
	addr := freeAddr(t)
	d := daemon.Start(t, daemon.Options{Args: []string{"--metrics-addr", addr}})

	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + addr + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	before := scrape(t, addr)

	// The workload: 2 volumes, 3 container runs on the first, remove the second.
	e.MustDocker(t, "volume", "create", "-d", d.Name, "m1")
	e.MustDocker(t, "volume", "create", "-d", d.Name, "m2")
	for i := 0; i < 3; i++ {
		e.MustDocker(t, "run", "--rm", "--network", "none", "-v", "m1:/data", e.Image(), "sh", "-c", "echo x >> /data/f")
	}
	// A container that holds m1 while we scrape.
	e.MustDocker(t, "run", "-d", "--name", "holder", "--network", "none", "-v", "m1:/data", e.Image(), "sleep", "600")
	e.MustDocker(t, "volume", "rm", "m2")
	if _, _, err := e.Docker("volume", "create", "-d", d.Name, "-o", "nosuch=1", "bad"); err == nil {
		t.Fatal("create with an unknown option succeeded")
	}

	after := scrape(t, addr)
	delta := func(k string) float64 { return after[k] - before[k] }
	want := map[string]float64{
		`stowage_requests_total{op="Create",result="ok"}`:     2,
		`stowage_requests_total{op="Create",result="error"}`:  1,
		`stowage_requests_total{op="Remove",result="ok"}`:     1,
		`stowage_request_duration_seconds_count{op="Create"}`: 3,
	}
	for k, v := range want {
		if got := delta(k); got != v {
			t.Errorf("%s grew by %v, want %v", k, got, v)
		}
	}
	// Docker may add Mount/Unmount pairs (copy-up); each run mounts at least once.
	if m, u := delta(`stowage_requests_total{op="Mount",result="ok"}`), delta(`stowage_requests_total{op="Unmount",result="ok"}`); m < 4 || m-u != 1 {
		t.Errorf("Mount grew by %v and Unmount by %v: want >=4 mounts and exactly one still held", m, u)
	}
	if v := after[`stowage_volumes{backend="dir"}`]; v != 1 {
		t.Errorf("stowage_volumes{backend=dir} = %v, want 1", v)
	}
	if v := after[`stowage_active_mounts`]; v != 1 {
		t.Errorf("stowage_active_mounts = %v, want 1 (the holder)", v)
	}
	// Each Create, Remove, Mount and Unmount commits once at least.
	if v := delta(`stowage_state_commit_duration_seconds_count`); v < 7 {
		t.Errorf("state commits grew by %v, want >= 7", v)
	}
	e.MustDocker(t, "rm", "-f", "holder")
	e.MustDocker(t, "volume", "rm", "m1")
}

func TestMetricsAddrRefusesNonLoopback(t *testing.T) {
	engine.RequireRoot(t)
	root := t.TempDir()
	out, err := exec.Command(daemon.Bin(t), "serve", "--root", root, "--socket", "/tmp/"+daemon.RandomName("stwm")+".sock", "--metrics-addr", "0.0.0.0:9").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "only loopback") {
		t.Fatalf("serve with a public metrics address: %v\n%s", err, out)
	}
}

func stowage(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(daemon.Bin(t), args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// treeSum hashes every path, mode and file content under root.
func treeSum(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	var paths []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(p) == store.FileName || p == store.JournalPath(filepath.Join(root, store.FileName)) {
			return nil // the state changes under --fix, by design
		}
		paths = append(paths, p)
		return nil
	})
	sort.Strings(paths)
	for _, p := range paths {
		fi, _ := os.Lstat(p)
		fmt.Fprintf(h, "%s %v\n", p, fi.Mode())
		if fi.Mode().IsRegular() {
			f, _ := os.Open(p)
			io.Copy(h, f)
			f.Close()
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

type doctorOut struct {
	Source   string
	Findings []struct{ Kind, Volume, MountID string }
	Fixed    []string
}

func doctor(t *testing.T, args ...string) (doctorOut, int) {
	t.Helper()
	out, code := stowage(t, append([]string{"doctor", "--format", "json"}, args...)...)
	var r doctorOut
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor output is not JSON (%v):\n%s", err, out)
	}
	return r, code
}

func kinds(r doctorOut) map[string]string {
	m := map[string]string{}
	for _, f := range r.Findings {
		m[f.Kind+"/"+f.Volume] = f.MountID
	}
	return m
}

func TestLsInspectDoctorFindPlantedInconsistenciesAndFixLosesNothing(t *testing.T) {
	engine.RequireRoot(t)
	d := daemon.Start(t, daemon.Options{})
	c := d.Client()
	call := func(path string, req interface{}) {
		t.Helper()
		ctx, cancel := ctxT()
		defer cancel()
		if err := c.Call(ctx, path, req, nil); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	for _, n := range []string{"keep", "stale", "lost"} {
		call("/VolumeDriver.Create", map[string]interface{}{"Name": n})
	}
	os.WriteFile(filepath.Join(d.Root, "dir", "keep", "precious"), []byte("data"), 0o644)
	os.WriteFile(filepath.Join(d.Root, "dir", "stale", "precious"), []byte("data"), 0o644)
	mid := strings.Repeat("b", 64)
	call("/VolumeDriver.Mount", map[string]string{"Name": "stale", "ID": mid})
	sock := []string{"--socket", d.Name, "--root", d.Root}

	// ls and inspect while the daemon runs: they ask it.
	out, code := stowage(t, append([]string{"ls", "--format", "json"}, sock...)...)
	if code != 0 || !strings.Contains(out, `"source": "daemon"`) || !strings.Contains(out, `"name": "stale"`) {
		t.Fatalf("ls (daemon up) = %d\n%s", code, out)
	}
	d.Stop(t)

	// Plant, with the daemon down: a ledger entry of another boot, missing
	// data, orphan data, and a mount no volume records.
	st, err := store.Open(filepath.Join(d.Root, store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update("stale", func(v *store.Volume) error {
		m := v.Mounts[mid]
		m.Boot = "00000000-0000-0000-0000-000000000000"
		v.Mounts[mid] = m
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.Rename(filepath.Join(d.Root, "dir", "lost"), filepath.Join(t.TempDir(), "lost")); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(d.Root, "dir", "orphan")
	os.MkdirAll(filepath.Join(orphan, "sub"), 0o755)
	os.WriteFile(filepath.Join(orphan, "sub", "file"), []byte("someone's"), 0o644)
	ghost := filepath.Join(d.Root, "dir", "ghost")
	os.Mkdir(ghost, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "stwghost", ghost).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", ghost).Run() })
	os.WriteFile(filepath.Join(ghost, "in-tmpfs"), []byte("x"), 0o644)

	// ls and inspect with the daemon down: they read the state file.
	out, code = stowage(t, append([]string{"ls", "--format", "json"}, sock...)...)
	if code != 0 || !strings.Contains(out, `"source": "state-file"`) || strings.Count(out, `"name":`) != 3 {
		t.Fatalf("ls (daemon down) = %d\n%s", code, out)
	}
	out, code = stowage(t, append([]string{"inspect"}, append(sock, "stale")...)...)
	if code != 0 || !strings.Contains(out, mid) || !strings.Contains(out, "00000000-0000") {
		t.Fatalf("inspect (daemon down) = %d\n%s", code, out)
	}
	if out, code = stowage(t, append([]string{"inspect"}, append(sock, "nosuch")...)...); code == 0 || !strings.Contains(out, "no such volume") {
		t.Fatalf("inspect of a missing volume = %d\n%s", code, out)
	}

	wantKinds := map[string]bool{"stale-mount/stale": true, "missing-data/lost": true, "unrecorded-data/orphan": true, "unrecorded-data/ghost": true, "unrecorded-mount/ghost": true}
	check := func(r doctorOut, code int, stale bool) {
		t.Helper()
		got := kinds(r)
		for k := range wantKinds {
			if _, ok := got[k]; ok != (stale || k != "stale-mount/stale") {
				t.Errorf("doctor (%s) finding %s present=%v; all: %v", r.Source, k, ok, got)
			}
		}
		if code != 1 {
			t.Errorf("doctor exit code %d with findings, want 1", code)
		}
	}
	before := treeSum(t, d.Root)

	// Offline doctor, then --fix: it releases the stale entry, nothing else.
	r, code := doctor(t, sock...)
	if r.Source != "state-file" {
		t.Errorf("doctor source %q with the daemon down", r.Source)
	}
	check(r, code, true)
	r, code = doctor(t, append([]string{"--fix"}, sock...)...)
	check(r, code, false)
	if len(r.Fixed) != 1 || !strings.Contains(r.Fixed[0], mid) {
		t.Errorf("doctor --fix fixed %v", r.Fixed)
	}
	if after := treeSum(t, d.Root); after != before {
		t.Fatal("doctor --fix changed data under the root")
	}

	// Online: plant another stale entry, restart, and let the daemon do it.
	st, _ = store.Open(filepath.Join(d.Root, store.FileName), store.Options{})
	st.Update("keep", func(v *store.Volume) error {
		v.Mounts = map[string]store.Mount{strings.Repeat("c", 64): {Count: 2, Boot: "old", Since: time.Now()}}
		return nil
	})
	st.Close()
	d.Restart(t)
	r, code = doctor(t, sock...)
	if r.Source != "daemon" {
		t.Errorf("doctor source %q with the daemon up", r.Source)
	}
	if _, ok := kinds(r)["stale-mount/keep"]; !ok {
		t.Errorf("online doctor missed the stale entry: %v", kinds(r))
	}
	r, _ = doctor(t, append([]string{"--fix"}, sock...)...)
	check(r, 1, false)
	if _, ok := kinds(r)["stale-mount/keep"]; ok || len(r.Fixed) != 1 {
		t.Errorf("online --fix left %v, fixed %v", kinds(r), r.Fixed)
	}
	if after := treeSum(t, d.Root); after != before {
		t.Fatal("online doctor --fix changed data under the root")
	}
	if b, err := os.ReadFile(filepath.Join(d.Root, "dir", "keep", "precious")); err != nil || string(b) != "data" {
		t.Fatalf("data of keep: %q %v", b, err)
	}
	// The table form says the same for people.
	out, _ = stowage(t, append([]string{"doctor"}, sock...)...)
	for _, w := range []string{"KIND", "missing-data", "unrecorded-mount", "orphan"} {
		if !strings.Contains(out, w) {
			t.Errorf("doctor table lacks %q:\n%s", w, out)
		}
	}
}

// doctor judges staleness by the boot ID the daemon uses (--boot-id-file):
// reading the real one instead would call every live mount stale, and
// --fix would release it while its container runs.
func TestDoctorUsesTheDaemonsBootID(t *testing.T) {
	engine.RequireRoot(t)
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	os.WriteFile(bootFile, []byte("11111111-2222-3333-4444-555555555555\n"), 0o644)
	d := daemon.Start(t, daemon.Options{Args: []string{"--boot-id-file", bootFile}})
	ctx, cancel := ctxT()
	defer cancel()
	mid := strings.Repeat("c", 64)
	if err := d.Client().Call(ctx, "/VolumeDriver.Create", map[string]string{"Name": "live"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Client().Call(ctx, "/VolumeDriver.Mount", map[string]string{"Name": "live", "ID": mid}, nil); err != nil {
		t.Fatal(err)
	}
	d.Stop(t)

	args := []string{"--root", d.Root, "--socket", d.Name, "--boot-id-file", bootFile}
	r, _ := doctor(t, append([]string{"--fix"}, args...)...)
	if _, stale := kinds(r)["stale-mount/live"]; stale || len(r.Fixed) > 0 {
		t.Fatalf("doctor --fix with the daemon's boot ID called a live mount stale: findings %v, fixed %v", r.Findings, r.Fixed)
	}
	out, code := stowage(t, "inspect", "--format", "json", "--root", d.Root, "--socket", d.Name, "live")
	if code != 0 || !strings.Contains(out, mid) {
		t.Fatalf("the live mount is gone from the ledger after doctor --fix (exit %d):\n%s", code, out)
	}
}
