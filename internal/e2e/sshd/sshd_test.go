package sshd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// clientOpts are ssh's options to reach s strictly with its client key.
func clientOpts(s *Server) []string {
	return []string{"-F", "/dev/null", "-i", s.ClientKey, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + s.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=5"}
}

// runSFTP runs one sftp command through the sftp subsystem (as sshfs
// does; no remote shell, so nothing of root's login profile runs).
func runSFTP(t *testing.T, prefix []string, s *Server) (string, error) {
	t.Helper()
	batch := filepath.Join(t.TempDir(), "batch")
	os.WriteFile(batch, []byte("pwd\n"), 0o600)
	argv := append(append(append(append([]string(nil), prefix...), "sftp"), clientOpts(s)...), "-P", strconv.Itoa(s.Port), "-b", batch, "root@"+s.Addr)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err == nil && !strings.Contains(string(out), "Remote working directory") {
		err = fmt.Errorf("unexpected sftp output")
	}
	return string(out), err
}

// The server takes its client key, is named correctly in its known_hosts,
// and Kill, Restart and NewHostKey do what a dead, revived and re-keyed
// server would.
func TestServerLifecycle(t *testing.T) {
	s := Start(t, Options{})
	if out, err := runSFTP(t, nil, s); err != nil {
		t.Fatalf("sftp with the client key: %v\n%s", err, out)
	}
	s.Kill(t)
	if out, err := runSFTP(t, nil, s); err == nil || !strings.Contains(out, "Connection refused") {
		t.Fatalf("ssh to a killed server: %v\n%s", err, out)
	}
	s.Restart(t)
	if out, err := runSFTP(t, nil, s); err != nil {
		t.Fatalf("ssh after Restart: %v\n%s", err, out)
	}
	s.NewHostKey(t)
	if out, err := runSFTP(t, nil, s); err == nil || !strings.Contains(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		t.Fatalf("ssh after NewHostKey: %v\n%s", err, out)
	}
}

// With Prefix the server runs in a network namespace the test made, on an
// address only that namespace has.
func TestServerInANetworkNamespace(t *testing.T) {
	ns := "stwsshd-" + strconv.Itoa(FreePort(t, "127.0.0.1"))
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	in := []string{"ip", "netns", "exec", ns}
	for _, c := range [][]string{{"ip", "link", "set", "lo", "up"}, {"ip", "addr", "add", "10.231.0.1/32", "dev", "lo"}} {
		if out, err := exec.Command(in[0], append(in[1:], c...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	s := Start(t, Options{Addr: "10.231.0.1", Port: 2222, Prefix: []string{"nsenter", "--net=/run/netns/" + ns}})
	if s.HostName() != "[10.231.0.1]:2222" {
		t.Errorf("HostName = %q", s.HostName())
	}
	// A connection kept open (no command, no shell), as sshfs keeps one.
	hold := exec.Command(in[0], append(append(append(in[1:], "ssh"), clientOpts(s)...), "-N", "-p", strconv.Itoa(s.Port), "root@"+s.Addr)...)
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hold.Process.Kill(); hold.Wait() }()
	if out, err := runSFTP(t, in, s); err != nil {
		t.Fatalf("sftp inside the namespace: %v\n%s", err, out)
	}
	pids := s.Pids()
	if len(pids) < 2 {
		t.Fatalf("Pids = %v: want the listener and the session that served ssh", pids)
	}
	s.Kill(t)
	for _, p := range pids {
		if alive(p) {
			t.Errorf("process %d of the server lives on after Kill", p)
		}
	}
}

// alive: an sshd of that pid exists and is not a zombie (the pid of a dead
// one may already serve another program).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && strings.Contains(string(b), "(sshd)") && running(pid)
}
