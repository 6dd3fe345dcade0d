package sshfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/e2e/sshd"
	"github.com/stowage/stowage/internal/store"
)

// realFixture is a driver over a real sshfs backend and a real sshd.
type realFixture struct {
	srv *sshd.Server
	b   *SSHFS
	drv *driver.Driver
	st  *store.Store
}

func newReal(t *testing.T) *realFixture {
	t.Helper()
	return newRealWith(t, sshd.Start(t, sshd.Options{}))
}

func newRealWith(t *testing.T, srv *sshd.Server) *realFixture {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "sshfs")
	os.Mkdir(dir, 0o700)
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	b, err := newSSHFS(backend.Env{Dir: dir, Log: log, Settings: map[string]string{SettingKeysDir: srv.KeysDir, SettingKnownHosts: srv.KnownHosts}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(base, store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv, err := driver.New(driver.Config{Store: st, Backends: map[string]backend.Instance{ID: {Module: Module, Backend: b}},
		DefaultBackend: ID, BootID: "boot-1", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	f := &realFixture{srv: srv, b: b.(*SSHFS), drv: drv, st: st}
	// Whatever a test leaves mounted goes with it.
	t.Cleanup(func() {
		vols, _ := st.List()
		for _, v := range vols {
			f.b.Deactivate(t.Context(), v)
		}
	})
	return f
}

func (f *realFixture) create(t *testing.T, name, sub string, extra ...string) {
	t.Helper()
	opts := map[string]string{"backend": ID, "remote": f.srv.Remote(t, sub), "port": strconv.Itoa(f.srv.Port), "identity": f.srv.ClientKeyName}
	for i := 0; i+1 < len(extra); i += 2 {
		opts[extra[i]] = extra[i+1]
	}
	if err := f.drv.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
		t.Fatal(err)
	}
}

var id1, id2 = strings.Repeat("1", 64), strings.Repeat("2", 64)

func mounted(t *testing.T, p string) bool {
	t.Helper()
	m, err := mountAt(p)
	if err != nil {
		t.Fatal(err)
	}
	return m != nil && m.FSType == FSType
}

// The whole life of a volume against a real server: the data lands on the
// server, unmount ends sshfs, and Remove leaves the remote data in place.
func TestRealMountWriteUnmountRemoveKeepsRemoteData(t *testing.T) {
	f := newReal(t)
	f.create(t, "app", "app", "uid", "1234", "mode", "0750")
	mp, err := f.drv.Mount(&volume.MountRequest{Name: "app", ID: id1})
	if err != nil {
		t.Fatal(err)
	}
	if !mounted(t, mp.Mountpoint) {
		t.Fatalf("%s is not an sshfs mount after Mount", mp.Mountpoint)
	}
	if err := os.WriteFile(filepath.Join(mp.Mountpoint, "hello"), []byte("from a container"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(f.srv.Data, "app", "hello"))
	if err != nil || string(got) != "from a container" {
		t.Fatalf("on the server: %q, %v", got, err)
	}
	fi, err := os.Stat(mp.Mountpoint)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("mode through the mount = %o, want 0750", fi.Mode().Perm())
	}
	// A second container: no second sshfs.
	if _, err := f.drv.Mount(&volume.MountRequest{Name: "app", ID: id2}); err != nil {
		t.Fatal(err)
	}
	if err := f.drv.Remove(&volume.RemoveRequest{Name: "app"}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Remove while mounted = %v", err)
	}
	f.drv.Unmount(&volume.UnmountRequest{Name: "app", ID: id2})
	if !mounted(t, mp.Mountpoint) {
		t.Fatal("unmounting one of two containers unmounted the volume")
	}
	if err := f.drv.Unmount(&volume.UnmountRequest{Name: "app", ID: id1}); err != nil {
		t.Fatal(err)
	}
	if mounted(t, mp.Mountpoint) {
		t.Fatal("still mounted after the last Unmount")
	}
	if err := f.drv.Remove(&volume.RemoveRequest{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(f.srv.Data, "app", "hello")); err != nil || string(got) != "from a container" {
		t.Fatalf("Remove touched the remote data: %q, %v", got, err)
	}
	if _, err := os.Lstat(mp.Mountpoint); !os.IsNotExist(err) {
		t.Fatalf("mount point after Remove: %v", err)
	}
}

// A server whose host key changed is refused at Mount with an error that
// names it and says how to accept the new key if that is expected.
func TestRealChangedHostKeyFailsMount(t *testing.T) {
	f := newReal(t)
	f.create(t, "v", "v")
	f.srv.NewHostKey(t)
	_, err := f.drv.Mount(&volume.MountRequest{Name: "v", ID: id1})
	if err == nil || !strings.Contains(err.Error(), "host key of "+f.srv.HostName()+" does not match") || !strings.Contains(err.Error(), "nothing was mounted") {
		t.Fatalf("Mount after a host key change = %v", err)
	}
	if mounted(t, f.b.path("v")) {
		t.Fatal("mounted despite the changed host key")
	}
	if v, _ := f.st.Get("v"); v.ActiveMounts() != 0 {
		t.Fatalf("ledger after a refused Mount: %v", v.Mounts)
	}
}

// A server that dies or hangs gives I/O errors within seconds, never a
// hang; other volumes keep answering; and the volume mounts again once the
// server is back.
func TestRealDeadServerFailsFastAndRecovers(t *testing.T) {
	f := newReal(t)
	f.create(t, "v", "v")
	f.create(t, "other", "other")
	mp, err := f.drv.Mount(&volume.MountRequest{Name: "v", ID: id1})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(mp.Mountpoint, "f")
	if err := os.WriteFile(file, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A hung server: connections stay open, nothing answers.
	f.srv.Pause(t)
	start := time.Now()
	werr := writeWithin(t, file, 30*time.Second)
	hung := time.Since(start)
	t.Logf("write to a hung server failed after %s: %v", hung, werr)
	if werr == nil {
		t.Fatal("a write to a hung server succeeded")
	}
	// Other volumes' Get keeps answering meanwhile, from the state.
	gs := time.Now()
	if _, err := f.drv.Get(&volume.GetRequest{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.drv.Get(&volume.GetRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("Get of both volumes with the server hung: %s", time.Since(gs))
	f.srv.Resume(t)

	// A dead server: connections are reset.
	f.srv.Kill(t)
	start = time.Now()
	werr = writeWithin(t, file, 30*time.Second)
	t.Logf("write to a dead server failed after %s: %v", time.Since(start), werr)
	if werr == nil {
		t.Fatal("a write to a dead server succeeded")
	}
	if _, err := f.drv.Mount(&volume.MountRequest{Name: "other", ID: id2}); err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("Mount with the server down = %v; want a clear 'cannot reach'", err)
	}

	f.srv.Restart(t)
	// reconnect: the existing mount works again.
	if err := os.WriteFile(file, []byte("2"), 0o644); err != nil {
		t.Fatalf("write after the server is back: %v", err)
	}
	if _, err := f.drv.Mount(&volume.MountRequest{Name: "other", ID: id2}); err != nil {
		t.Fatalf("Mount after the server is back: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.srv.Data, "v", "f")); string(b) != "2" {
		t.Fatalf("on the server: %q", b)
	}
}

// writeWithin writes in a goroutine and fails the test if it takes longer
// than limit: the point is that it does not hang.
func writeWithin(t *testing.T, p string, limit time.Duration) error {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- os.WriteFile(p, []byte("x"), 0o644) }()
	select {
	case err := <-res:
		return err
	case <-time.After(limit):
		t.Fatalf("a write to %s hung for %s", p, limit)
		return nil
	}
}

// A mount whose sshfs process died is cleared and made again by the next
// first Mount, and a live one is adopted, not mounted twice.
func TestRealActivateAdoptsLiveAndReplacesDeadMounts(t *testing.T) {
	f := newReal(t)
	f.create(t, "v", "v")
	vol, _ := f.st.Get("v")
	ctx := t.Context()
	if err := f.b.Activate(ctx, vol); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Activate(ctx, vol); err != nil {
		t.Fatalf("Activate of a live mount: %v", err)
	}
	if n := countMounts(t, f.b.path("v")); n != 1 {
		t.Fatalf("%d mounts at the mount point, want 1", n)
	}
	killSSHFS(t, f.b.path("v"))
	if err := f.b.Activate(ctx, vol); err != nil {
		t.Fatalf("Activate over a dead mount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(f.b.path("v"), "f"), []byte("ok"), 0o644); err != nil {
		t.Fatalf("write after re-mounting: %v", err)
	}
	if n := countMounts(t, f.b.path("v")); n != 1 {
		t.Fatalf("%d mounts at the mount point, want 1", n)
	}
}

func countMounts(t *testing.T, p string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			n++
		}
	}
	return n
}

// killSSHFS SIGKILLs the sshfs process serving mountpoint p.
func killSSHFS(t *testing.T, p string) {
	t.Helper()
	pid := sshd.SSHFSPid(p)
	if pid == 0 {
		t.Fatalf("no sshfs process serves %s", p)
	}
	proc, _ := os.FindProcess(pid)
	proc.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for sshd.SSHFSPid(p) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// With the server hung, the last Unmount and Remove still finish at once:
// bringing a volume down never waits for the server.
func TestRealUnmountAndRemoveWithAHungServer(t *testing.T) {
	f := newReal(t)
	f.create(t, "v", "v")
	mp, err := f.drv.Mount(&volume.MountRequest{Name: "v", ID: id1})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mp.Mountpoint, "kept"), []byte("on the server"), 0o644)
	f.srv.Pause(t)
	defer f.srv.Resume(t)
	start := time.Now()
	if err := f.drv.Unmount(&volume.UnmountRequest{Name: "v", ID: id1}); err != nil {
		t.Fatal(err)
	}
	if err := f.drv.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Unmount + Remove with a hung server took %s", d)
	}
	t.Logf("Unmount + Remove with the server hung: %s", time.Since(start))
	if mounted(t, mp.Mountpoint) {
		t.Fatal("still mounted")
	}
	if b, err := os.ReadFile(filepath.Join(f.srv.Data, "v", "kept")); err != nil || string(b) != "on the server" {
		t.Fatalf("remote data after Remove: %q %v", b, err)
	}
}

// Something else mounted at a volume's mount point is never unmounted or
// removed by it, and the volume will not mount over it.
func TestRealForeignMountIsLeftAlone(t *testing.T) {
	f := newReal(t)
	f.create(t, "v", "v")
	p := f.b.path("v")
	if err := unix.Mount("foreign", p, "tmpfs", 0, "size=1M"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(p, unix.MNT_DETACH)
	os.WriteFile(filepath.Join(p, "theirs"), []byte("x"), 0o644)
	if _, err := f.drv.Mount(&volume.MountRequest{Name: "v", ID: id1}); err == nil || !strings.Contains(err.Error(), "tmpfs is mounted at its mount point") {
		t.Fatalf("Mount over a foreign mount = %v", err)
	}
	if err := f.drv.Remove(&volume.RemoveRequest{Name: "v"}); err == nil || !strings.Contains(err.Error(), "leaves it alone") {
		t.Fatalf("Remove with a foreign mount = %v", err)
	}
	if _, err := os.Stat(filepath.Join(p, "theirs")); err != nil {
		t.Fatalf("the foreign mount's file: %v", err)
	}
	if _, err := f.st.Get("v"); err != nil {
		t.Fatalf("the volume was lost: %v", err)
	}
	inv, _ := backend.RunInventory(t.Context(), f.b, []*backend.Volume{mustGet(t, f.st, "v")})
	if len(inv.Problems) != 1 || !strings.Contains(inv.Problems[0], "not sshfs") {
		t.Errorf("Inventory = %+v", inv)
	}
}

// Files in an unmounted mount point are not hidden under a mount.
func TestRealMountRefusesANonEmptyMountPoint(t *testing.T) {
	f := newReal(t)
	f.create(t, "v", "v")
	os.WriteFile(filepath.Join(f.b.path("v"), "stray"), []byte("x"), 0o644)
	if _, err := f.drv.Mount(&volume.MountRequest{Name: "v", ID: id1}); err == nil || !strings.Contains(err.Error(), "not an empty directory") {
		t.Fatalf("Mount over a non-empty mount point = %v", err)
	}
	if mounted(t, f.b.path("v")) {
		t.Fatal("mounted over stray files")
	}
}

func mustGet(t *testing.T, st *store.Store, name string) *store.Volume {
	t.Helper()
	v, err := st.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A Mount arriving while an sshfs started before a crash is still
// connecting adopts its mount (sshfs mounts before it connects, and the
// probe waits for it to serve), instead of stacking a second sshfs.
func TestRealMountWaitsForAnSSHFSStillConnecting(t *testing.T) {
	f := newReal(t)
	f.create(t, "v", "v")
	vol, _ := f.st.Get("v")
	argv, err := f.b.Argv(vol)
	if err != nil {
		t.Fatal(err)
	}
	// The server hangs for a moment, as if the old stowage's sshfs were
	// still in its ssh handshake when the new stowage gets the Mount.
	f.srv.Pause(t)
	out, _ := os.Create(filepath.Join(t.TempDir(), "log"))
	done, _, err := spawnDetached(argv, out)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	go func() { time.Sleep(time.Second); f.srv.Resume(t) }()
	if !mounted(t, f.b.path("v")) {
		t.Fatal("sshfs has not mounted before connecting")
	}
	if _, err := f.drv.Mount(&volume.MountRequest{Name: "v", ID: id1}); err != nil {
		t.Fatal(err)
	}
	<-done
	if n := countMounts(t, f.b.path("v")); n != 1 {
		t.Fatalf("%d mounts at the mount point, want 1", n)
	}
}

// An IPv6 server: remote=[ADDR]:PATH, known_hosts names it [ADDR]:PORT.
func TestRealIPv6Server(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{Addr: "::1"})
	f := newRealWith(t, srv)
	f.create(t, "v6", "v6")
	if got := mustGet(t, f.st, "v6").Options["remote"]; !strings.HasPrefix(got, "root@[::1]:/") {
		t.Fatalf("recorded remote %q", got)
	}
	mp, err := f.drv.Mount(&volume.MountRequest{Name: "v6", ID: id1})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp.Mountpoint, "f"), []byte("six"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(srv.Data, "v6", "f")); string(b) != "six" {
		t.Fatalf("on the server: %q", b)
	}
}

// What ssh and sshfs say becomes an error the user can act on: a key the
// server does not accept, a remote directory that does not exist.
func TestRealMountErrorsSayWhatToDo(t *testing.T) {
	f := newReal(t)
	stranger := filepath.Join(f.srv.KeysDir, "stranger")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	f.create(t, "nokey", "nokey", "identity", "stranger")
	_, err := f.drv.Mount(&volume.MountRequest{Name: "nokey", ID: id1})
	if err == nil || !strings.Contains(err.Error(), "refused the key stranger for user root") {
		t.Errorf("Mount with an unauthorized key = %v", err)
	}
	opts := map[string]string{"backend": ID, "remote": "root@127.0.0.1:" + filepath.Join(f.srv.Data, "absent"), "port": strconv.Itoa(f.srv.Port), "identity": f.srv.ClientKeyName}
	if err := f.drv.Create(&volume.CreateRequest{Name: "nodir", Options: opts}); err != nil {
		t.Fatal(err)
	}
	_, err = f.drv.Mount(&volume.MountRequest{Name: "nodir", ID: id1})
	if err == nil || !strings.Contains(err.Error(), "does not exist on 127.0.0.1") || !strings.Contains(err.Error(), "never creates") {
		t.Errorf("Mount of a missing remote directory = %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.srv.Data, "absent")); !os.IsNotExist(err) {
		t.Errorf("stowage created the remote directory: %v", err)
	}
	for _, n := range []string{"nokey", "nodir"} {
		if mounted(t, f.b.path(n)) {
			t.Errorf("%s is mounted after a failed Mount", n)
		}
	}
}
