package sshfs

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/ssh"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/store"
)

// spawnRecorder stands in for starting sshfs: it records each argv and
// plays what the test scripts.
type spawnRecorder struct {
	mu    sync.Mutex
	calls [][]string
	// output is written to sshfs's log, then the "process" exits with exit.
	output string
	exit   error
}

func (r *spawnRecorder) spawn(argv []string, out *os.File) (<-chan error, func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, append([]string(nil), argv...))
	out.WriteString(r.output)
	done := make(chan error, 1)
	done <- r.exit
	return done, func() {}, nil
}

func (r *spawnRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

type fixture struct {
	b     *SSHFS
	rec   *spawnRecorder
	drv   *driver.Driver
	st    *store.Store
	keys  string
	known string
}

func hostKeyLine(t *testing.T, host string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return host + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	keys := filepath.Join(base, "keys")
	os.Mkdir(keys, 0o700)
	os.WriteFile(filepath.Join(keys, "id"), []byte("not really a key\n"), 0o600)
	os.WriteFile(filepath.Join(keys, "loose"), []byte("not really a key\n"), 0o644)
	os.Symlink("/etc/shadow", filepath.Join(keys, "link"))
	known := filepath.Join(base, "known_hosts")
	lines := hostKeyLine(t, "[127.0.0.1]:2222") + "\n" + hostKeyLine(t, "files.example") + "\n" + hostKeyLine(t, "[::1]:2222") + "\n"
	if err := os.WriteFile(known, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "sshfs")
	os.Mkdir(dir, 0o700)
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	rec := &spawnRecorder{}
	b := &SSHFS{dir: dir, keysDir: keys, knownHosts: known, bin: "/usr/bin/sshfs", log: log, spawn: rec.spawn}
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
	return &fixture{b: b, rec: rec, drv: drv, st: st, keys: keys, known: known}
}

func (f *fixture) entries(t *testing.T) []string {
	t.Helper()
	es, err := os.ReadDir(f.b.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

var good = map[string]string{"backend": ID, "remote": "root@127.0.0.1:/srv/x", "port": "2222", "identity": "id"}

func with(kv ...string) map[string]string {
	o := map[string]string{}
	for k, v := range good {
		o[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(o, kv[i])
		} else {
			o[kv[i]] = kv[i+1]
		}
	}
	return o
}

// Hostile or wrong options: each a clear error, no record, nothing made in
// the backend's directory, and no process started.
func TestHostileOptionsAreRefusedWithNothingDone(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		opts map[string]string
		want string
	}{
		{with("remote", "root@127.0.0.1:/srv;reboot"), "';'"},
		{with("remote", "root@127.0.0.1:/srv x"), "spaces"},
		{with("remote", "-oProxyCommand=touch:/tmp"), "'-'"},
		{with("remote", "-oProxyCommand=touch /tmp/pwned"), "spaces"},
		{with("remote", "root@-oProxyCommand=x:/srv"), "host"},
		{with("remote", "root@127.0.0.1:/srv,allow_root"), "','"},
		{with("remote", "root@127.0.0.1:/$(reboot)"), "'$'"},
		{with("remote", "root@127.0.0.1:srv"), "absolute"},
		{with("remote", ""), "remote is required"},
		{with("identity", "../../etc/shadow"), "not a path"},
		{with("identity", "/etc/shadow"), "not a path"},
		{with("identity", "link"), "symlink"},
		{with("identity", "loose"), "chmod 600"},
		{with("identity", "absent"), "no key file"},
		{with("identity", ""), "identity is required"},
		{with("password", "hunter2"), "keys only"},
		{with("remote", "root@unknown.example:/srv"), "[unknown.example]:2222 is unknown"},
		{with("port", "2223"), "[127.0.0.1]:2223 is unknown"},
		{with("remote", "files.example:/srv", "port", "2222"), "[files.example]:2222 is unknown"},
		{with("port", "0"), "TCP port"},
		{with("port", "65536"), "TCP port"},
		{with("port", "-1"), "TCP port"},
		{with("mode", "4755"), "0777"},
		{with("uid", "-1"), "uid"},
		{with("ssh_command", "/bin/sh"), "unknown option"},
		{with("IdentityFile", "/etc/shadow"), "unknown option"},
	}
	for _, c := range cases {
		err := f.drv.Create(&volume.CreateRequest{Name: "v", Options: c.opts})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `volume "v"`) {
			t.Errorf("Create %v = %v; want an error naming the volume and mentioning %q", c.opts, err, c.want)
		}
		if _, gerr := f.st.Get("v"); !errors.Is(gerr, store.ErrNotFound) {
			t.Fatalf("Create %v left a record (%v)", c.opts, gerr)
		}
		if es := f.entries(t); len(es) != 0 {
			t.Fatalf("Create %v left %v in the backend's directory", c.opts, es)
		}
	}
	if n := f.rec.count(); n != 0 {
		t.Fatalf("refused creates started %d processes: %v", n, f.rec.calls)
	}
	// A refused option is refused even beside valid ones, and says why.
	_, err := Module.Parse(with("password", "x"))
	if err == nil || !strings.Contains(err.Error(), "--ssh-keys-dir") {
		t.Errorf("Parse password = %v", err)
	}
}

func TestCreateAcceptsKnownHostsForms(t *testing.T) {
	f := newFixture(t)
	for name, opts := range map[string]map[string]string{
		"v4":   good,
		"dns":  with("remote", "svc@Files.Example:/data", "port", "22"),
		"dns2": with("remote", "files.example:/data", "port", ""),
		"v6":   with("remote", "root@[::1]:/srv"),
	} {
		if err := f.drv.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
			t.Errorf("Create %s %v: %v", name, opts, err)
		}
	}
	// Same name and options again (a retry, or Swarm asking each node):
	// fine; other options: a clear error.
	if err := f.drv.Create(&volume.CreateRequest{Name: "v4", Options: good}); err != nil {
		t.Errorf("Create again with the same options: %v", err)
	}
	err := f.drv.Create(&volume.CreateRequest{Name: "v4", Options: with("remote", "root@127.0.0.1:/srv/y")})
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "remote=root@127.0.0.1:/srv/x") {
		t.Errorf("Create again with another remote = %v; want an 'already exists' error showing the recorded options", err)
	}
	if n := f.rec.count(); n != 0 {
		t.Fatalf("Create started %d processes; it must never touch the network", n)
	}
}

// Get, List and Path answer from the record while the server is
// unreachable: no process, no connection, no wait.
func TestGetAndListNeverExecOrDial(t *testing.T) {
	f := newFixture(t)
	// Port 2222 on 127.0.0.1 has no server in this test.
	if err := f.drv.Create(&volume.CreateRequest{Name: "far", Options: good}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 200; i++ {
		g, err := f.drv.Get(&volume.GetRequest{Name: "far"})
		if err != nil {
			t.Fatal(err)
		}
		if g.Volume.Status["remove"] != Forgets || g.Volume.Status["remote"] != "root@127.0.0.1:/srv/x" {
			t.Fatalf("Status = %v", g.Volume.Status)
		}
		if g.Volume.Mountpoint != filepath.Join(f.b.dir, "far") {
			t.Fatalf("Mountpoint = %q, want one named after the volume", g.Volume.Mountpoint)
		}
		l, err := f.drv.List()
		if err != nil || len(l.Volumes) != 1 {
			t.Fatalf("List = %v, %v", l, err)
		}
		if _, err := f.drv.Path(&volume.PathRequest{Name: "far"}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("200 Get+List+Path took %s", d)
	}
	if n := f.rec.count(); n != 0 {
		t.Fatalf("Get/List/Path started %d processes", n)
	}
}

func TestArgvIsExplicitAndHasNoShell(t *testing.T) {
	f := newFixture(t)
	opts, err := Module.Parse(with("uid", "1000", "gid", "1001", "mode", "0750"))
	if err != nil {
		t.Fatal(err)
	}
	vol := &backend.Volume{Name: "v", Options: opts}
	argv, err := f.b.Argv(vol)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/sshfs", "-v", "root@127.0.0.1:/srv/x", filepath.Join(f.b.dir, "v"), "-p", "2222", "-F", "/dev/null",
		"-o", "IdentityFile=" + filepath.Join(f.keys, "id"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + f.known, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
		"-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3", "-o", "reconnect",
		"-o", "allow_other", "-o", "default_permissions", "-o", "uid=1000", "-o", "gid=1001", "-o", "umask=027"}
	if !reflect.DeepEqual(argv, want) {
		t.Errorf("argv\n got %q\nwant %q", argv, want)
	}
}

// A failed sshfs is explained from ssh's words, names the host, and leaves
// nothing mounted and the ledger empty.
func TestMountFailuresAreExplained(t *testing.T) {
	for _, c := range []struct{ output, want string }{
		{"@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key for [127.0.0.1]:2222 has changed and you have requested strict checking.\nHost key verification failed.\nread: Connection reset by peer\n", "host key of [127.0.0.1]:2222 does not match"},
		{"root@127.0.0.1: Permission denied (publickey).\nread: Connection reset by peer\n", "refused the key id for user root"},
		{"ssh: connect to host 127.0.0.1 port 2222: Connection refused\nread: Connection reset by peer\n", "cannot reach the SSH server 127.0.0.1 port 2222"},
		{"root@127.0.0.1:/srv/x: No such file or directory\n", "remote directory /srv/x does not exist"},
		{"something new\n", "something new"},
	} {
		f := newFixture(t)
		if err := f.drv.Create(&volume.CreateRequest{Name: "v", Options: good}); err != nil {
			t.Fatal(err)
		}
		f.rec.output, f.rec.exit = c.output, errors.New("exit status 1")
		_, err := f.drv.Mount(&volume.MountRequest{Name: "v", ID: strings.Repeat("a", 64)})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "nothing was mounted") {
			t.Errorf("Mount with sshfs saying %q = %v; want it to say %q", c.output, err, c.want)
		}
		if f.rec.count() != 1 {
			t.Errorf("%d sshfs runs, want 1", f.rec.count())
		}
		vol, _ := f.st.Get("v")
		if vol.ActiveMounts() != 0 {
			t.Errorf("a failed Mount is in the ledger: %v", vol.Mounts)
		}
	}
}

// Remove forgets: it removes only the empty mount point, and refuses, with
// nothing removed, when files sit in it.
func TestRemoveOnlyDropsAnEmptyMountPoint(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"empty", "full"} {
		if err := f.drv.Create(&volume.CreateRequest{Name: n, Options: good}); err != nil {
			t.Fatal(err)
		}
	}
	stray := filepath.Join(f.b.dir, "full", "stray")
	os.WriteFile(stray, []byte("keep"), 0o600)
	err := f.drv.Remove(&volume.RemoveRequest{Name: "full"})
	if err == nil || !strings.Contains(err.Error(), "holds files") {
		t.Fatalf("Remove with a stray file = %v", err)
	}
	if b, err := os.ReadFile(stray); err != nil || string(b) != "keep" {
		t.Fatalf("the stray file was touched: %q %v", b, err)
	}
	if _, err := f.st.Get("full"); err != nil {
		t.Fatalf("a refused Remove lost the record: %v", err)
	}
	if err := f.drv.Remove(&volume.RemoveRequest{Name: "empty"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(f.b.dir, "empty")); !os.IsNotExist(err) {
		t.Fatalf("mount point after Remove: %v", err)
	}
	if f.rec.count() != 0 {
		t.Fatalf("Remove started a process")
	}
}

func TestNewRequiresKnownHostsAndCleanPaths(t *testing.T) {
	f := newFixture(t)
	env := func(keys, known string) backend.Env {
		return backend.Env{Dir: t.TempDir(), Settings: map[string]string{SettingKeysDir: keys, SettingKnownHosts: known}}
	}
	if _, err := newSSHFS(env(f.keys, "")); err == nil || !strings.Contains(err.Error(), "--ssh-known-hosts is needed") {
		t.Errorf("New without known hosts = %v", err)
	}
	if _, err := newSSHFS(env("keys", f.known)); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("New with a relative keys dir = %v", err)
	}
	odd := filepath.Join(t.TempDir(), "a,b")
	os.Mkdir(odd, 0o700)
	if _, err := newSSHFS(env(odd, f.known)); err == nil || !strings.Contains(err.Error(), "must not contain") {
		t.Errorf("New with a comma in the keys dir = %v", err)
	}
	bad := filepath.Join(t.TempDir(), "known")
	os.WriteFile(bad, []byte("this is not a known_hosts line\n"), 0o600)
	if _, err := newSSHFS(env(f.keys, bad)); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("New with a malformed known_hosts = %v", err)
	}
	if _, err := newSSHFS(env(f.keys, f.known)); err != nil {
		t.Errorf("New: %v", err)
	}
}
