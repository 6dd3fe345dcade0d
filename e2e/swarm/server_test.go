package swarm

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stowage/stowage/internal/e2e/cluster"
	"github.com/stowage/stowage/internal/e2e/sshd"
)

// sshdPort is not 22, so volumes must carry -o port=.
const sshdPort = 2222

// server is the storage server: an sshd (internal/e2e/sshd) in a host of
// its own on the cluster's bridge. It shares this machine's files, so the
// test reads the served directories directly.
type server struct {
	host *cluster.Host
	sshd *sshd.Server
}

func startServer(t *testing.T, c *cluster.Cluster) *server {
	t.Helper()
	h := c.Host(t, "sshd")
	dir := filepath.Join(c.Dir(), "sshd")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	prefix := h.NS.Argv()
	return &server{host: h, sshd: sshd.Start(t, sshd.Options{Dir: dir, Addr: h.Addr, Port: sshdPort, Prefix: prefix[:len(prefix)-1]})}
}

// serveArgs are a node's stowage serve flags: only the sshfs backend, so
// the daemon tells Docker its volumes are of global scope.
func (s *server) serveArgs() []string {
	return []string{"--backends", "sshfs", "--ssh-keys-dir", s.sshd.KeysDir, "--ssh-known-hosts", s.sshd.KnownHosts}
}

// volumeOpts are the options of an sshfs volume on the remote directory.
func (s *server) volumeOpts(remote string) []string {
	return []string{"backend=sshfs", "remote=root@" + s.host.Addr + ":" + remote,
		"identity=" + s.sshd.ClientKeyName, "port=" + strconv.Itoa(s.sshd.Port)}
}

// mountFlag is a docker service --mount value for an sshfs volume.
func (s *server) mountFlag(name, target, remote string) string {
	f := "type=volume,source=" + name + ",target=" + target + ",volume-driver=" + driver
	for _, o := range s.volumeOpts(remote) {
		f += ",volume-opt=" + o
	}
	return f
}

// mkdir makes a directory on the server and returns its remote path, which
// is also where the test finds it.
func (s *server) mkdir(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(s.sshd.Data, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// kill SIGKILLs sshd and its sessions: the clients' connections drop.
func (s *server) kill(t testing.TB) { s.sshd.Kill(t) }

// restart starts sshd again with the same address and keys.
func (s *server) restart(t testing.TB) { s.sshd.Restart(t) }
