// Package sshd runs Debian's OpenSSH server for tests: a private sshd on a
// loopback port (or inside a network namespace the test made), with a
// generated host key, a generated client key authorized for root, and a
// known_hosts file naming the server. Kill, Pause and Restart act on the
// listener and every session it forked, as a dead or hung server would.
package sshd

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is Debian's sshd.
const Binary = "/usr/sbin/sshd"

// Options say how to run the server. The zero value is a server on a free
// port of 127.0.0.1 in a fresh temporary directory.
type Options struct {
	// Dir holds keys, config and the exported directory; default t.TempDir().
	Dir string
	// Addr is the ListenAddress; default 127.0.0.1.
	Addr string
	// Port; default a free port on Addr (pick one yourself when Prefix
	// puts sshd in another network namespace).
	Port int
	// Prefix is put before sshd's argv, e.g. {"nsenter", "--net=/run/netns/n1"}.
	Prefix []string
}

// Server is one sshd and its files.
type Server struct {
	Dir  string
	Addr string
	Port int
	// HostKey is the host's private key; HostKeyPub its public key line.
	HostKey    string
	HostKeyPub string
	// KeysDir holds ClientKey, named ClientKeyName: give it to stowage
	// as --ssh-keys-dir and volumes -o identity=ClientKeyName.
	KeysDir       string
	ClientKeyName string
	ClientKey     string
	// KnownHosts names the host key under [Addr]:Port (Addr alone on 22):
	// give it to stowage as --ssh-known-hosts.
	KnownHosts string
	// Data is an empty directory the tests can export: remote=root@ADDR:Data.
	Data string

	prefix []string
	config string
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	log    *bytes.Buffer
}

// ClientKeyNameDefault is ClientKey's file name in KeysDir.
const ClientKeyNameDefault = "id"

// Start generates the keys, writes the config and starts sshd. Cleanup
// kills it and its sessions.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("sshd needs root (it logs in as root with a key)")
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = FreePort(t, o.Addr)
	}
	s := &Server{Dir: o.Dir, Addr: o.Addr, Port: o.Port, prefix: o.Prefix, ClientKeyName: ClientKeyNameDefault}
	s.HostKey = filepath.Join(o.Dir, "host_ed25519")
	s.KeysDir = filepath.Join(o.Dir, "keys")
	s.ClientKey = filepath.Join(s.KeysDir, s.ClientKeyName)
	s.KnownHosts = filepath.Join(o.Dir, "known_hosts")
	s.Data = filepath.Join(o.Dir, "srv")
	s.config = filepath.Join(o.Dir, "sshd_config")
	for _, d := range []string{s.KeysDir, s.Data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// sshd's privilege separation directory; Debian's package makes it
	// only when its own service starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	keygen(t, s.HostKey)
	keygen(t, s.ClientKey)
	pub, err := os.ReadFile(s.ClientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(o.Dir, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	s.readHostKey(t)
	if err := os.WriteFile(s.KnownHosts, []byte(s.KnownHostsLine()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Join([]string{
		"Port " + strconv.Itoa(s.Port),
		"ListenAddress " + s.Addr,
		"HostKey " + s.HostKey,
		"PidFile none",
		"AuthorizedKeysFile " + auth,
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		// The test's directories live under /tmp, which StrictModes rejects.
		"StrictModes no",
		"Subsystem sftp internal-sftp",
		// Sessions are sftp only: no remote shell (and none of root's
		// login profile) ever runs, and nothing is forwarded.
		"ForceCommand internal-sftp",
		"AllowTcpForwarding no",
		"X11Forwarding no",
		"PermitTTY no",
		"LogLevel VERBOSE",
		"PrintMotd no",
		"MaxStartups 100",
		"",
	}, "\n")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	t.Cleanup(func() { s.Kill(t) })
	return s
}

// FreePort finds a free TCP port on addr.
func FreePort(t testing.TB, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func keygen(t testing.TB, path string) {
	t.Helper()
	os.Remove(path)
	os.Remove(path + ".pub")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stowage-test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", path, err, out)
	}
}

func (s *Server) readHostKey(t testing.TB) {
	t.Helper()
	pub, err := os.ReadFile(s.HostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		t.Fatalf("host key %s.pub: %q", s.HostKey, pub)
	}
	s.HostKeyPub = f[0] + " " + f[1]
}

// HostName is the server's name in known_hosts: [ADDR]:PORT, or ADDR on 22.
func (s *Server) HostName() string {
	if s.Port == 22 {
		return s.Addr
	}
	return "[" + s.Addr + "]:" + strconv.Itoa(s.Port)
}

// KnownHostsLine is the server's known_hosts line.
func (s *Server) KnownHostsLine() string { return s.HostName() + " " + s.HostKeyPub }

// Remote is remote=root@ADDR:Data/sub for a volume (sub is created).
func (s *Server) Remote(t testing.TB, sub string) string {
	t.Helper()
	p := filepath.Join(s.Data, sub)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	host := s.Addr
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "root@" + host + ":" + p
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	argv := append(append([]string(nil), s.prefix...), Binary, "-D", "-e", "-f", s.config)
	cmd := exec.Command(argv[0], argv[1:]...)
	log := &bytes.Buffer{}
	w := &lockedWriter{mu: &s.mu, buf: log}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, log
	s.mu.Unlock()
	want := fmt.Sprintf("Server listening on %s port %d", s.Addr, s.Port)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("sshd exited at start:\n%s", s.Log())
		default:
		}
		if strings.Contains(s.Log(), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("sshd did not listen within 10s:\n%s", s.Log())
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// Log is what the current sshd wrote.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Pids are the listener and every process below it (sessions setsid, so
// a process group would miss them).
func (s *Server) Pids() []int {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	return tree(cmd.Process.Pid)
}

// tree is pid and its descendants, from /proc.
func tree(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm may hold spaces: the fields after its ')' are fixed.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// running: pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return i >= 0 && len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func (s *Server) signalAll(sig syscall.Signal) {
	for _, p := range s.Pids() {
		syscall.Kill(p, sig)
	}
}

// Kill SIGKILLs the listener and every session, as a crashed server; the
// clients' connections are reset. Idempotent.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return
	}
	// Stop first, so nothing forks while the tree is killed.
	s.signalAll(syscall.SIGSTOP)
	pids := s.Pids()
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("sshd did not die within 10s of SIGKILL")
	}
	// The sessions die on their own time, not the listener's: a caller
	// must find them gone (or zombies) once Kill returns.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		left := 0
		for _, p := range pids {
			if running(p) {
				left++
			}
		}
		if left == 0 {
			break
		}
	}
	s.mu.Lock()
	s.cmd, s.done = nil, nil
	s.mu.Unlock()
}

// Pause SIGSTOPs the server and its sessions: connections stay open and
// nothing answers, as a hung or unreachable server.
func (s *Server) Pause(t testing.TB) { s.signalAll(syscall.SIGSTOP) }

// Resume undoes Pause.
func (s *Server) Resume(t testing.TB) { s.signalAll(syscall.SIGCONT) }

// Restart starts sshd again (after Kill) on the same port and keys.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill(t)
	s.start(t)
}

// NewHostKey replaces the host key and restarts the server; KnownHosts
// keeps the old key, so clients see a changed host key.
func (s *Server) NewHostKey(t testing.TB) {
	t.Helper()
	s.Kill(t)
	keygen(t, s.HostKey)
	s.readHostKey(t)
	s.start(t)
}

// SSHFSPid is the pid of the sshfs process serving mountpoint, or 0.
func SSHFSPid(mountpoint string) int {
	if pids := SSHFSPids(func(arg string) bool { return arg == mountpoint }); len(pids) > 0 {
		return pids[0]
	}
	return 0
}

// SSHFSPids are the pids of sshfs processes with an argument match accepts
// (other tests on the machine may run sshfs of their own).
func SSHFSPids(match func(arg string) bool) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != "sshfs" {
			continue
		}
		for _, a := range args[1:] {
			if match(a) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
