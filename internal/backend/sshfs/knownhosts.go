package sshfs

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// knownHostsName is how known_hosts names HOST at PORT: the bare host for
// port 22, [HOST]:PORT otherwise.
func knownHostsName(host, port string) string {
	if port == "" {
		port = "22"
	}
	return knownhosts.Normalize(net.JoinHostPort(host, port))
}

func readKnownHosts(file string) (ssh.HostKeyCallback, error) {
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("--ssh-known-hosts %s cannot be read: %v", file, err)
	}
	return cb, nil
}

// probeKey is a key no server holds: checking it against the file tells
// which keys the file has for a host, without any connection.
var probeKey, _ = ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))

// checkKnownHost reports, from the known_hosts file alone, whether it
// holds a key for host at port. The key itself is checked by ssh at Mount.
func (s *SSHFS) checkKnownHost(host, port string) error {
	cb, err := readKnownHosts(s.knownHosts)
	if err != nil {
		return err
	}
	if port == "" {
		port = "22"
	}
	err = cb(net.JoinHostPort(host, port), &net.TCPAddr{IP: net.IPv4zero}, probeKey)
	var ke *knownhosts.KeyError
	if err == nil || errors.As(err, &ke) && len(ke.Want) > 0 {
		return nil
	}
	var re *knownhosts.RevokedError
	if errors.As(err, &re) {
		return fmt.Errorf("the host key of %s is marked revoked in %s", knownHostsName(host, port), s.knownHosts)
	}
	if ke == nil {
		return fmt.Errorf("checking %s in %s: %v", knownHostsName(host, port), s.knownHosts, err)
	}
	return fmt.Errorf("the SSH server %s is unknown: %s holds no host key for it, and stowage never trusts a key on first use. Add it on the daemon's host: ssh-keyscan -p %s %s >> %s (then check the fingerprint with ssh-keygen -lf %s)",
		knownHostsName(host, port), s.knownHosts, port, host, s.knownHosts, s.knownHosts)
}
