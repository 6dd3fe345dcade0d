package sshfs

import (
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
)

// Remote is a parsed remote=[USER@]HOST:PATH.
type Remote struct {
	User string // empty: ssh's default, the daemon's own user
	Host string // a DNS name, an IPv4 literal or an IPv6 literal (no brackets)
	Path string // absolute and clean
}

// Limits that keep a remote spec well inside what ssh and sshfs accept.
const (
	maxUser = 32
	maxHost = 253
	maxPath = 1024
)

// ParseRemote parses and checks a remote spec strictly. It refuses anything
// that ssh or sshfs could read as an option or that a shell would treat
// specially (though no shell is ever involved): a leading '-', whitespace,
// control characters, quotes, ';', '|', '&', '$', '`', ',' (sshfs's -o
// separator) and the like. The host is lowercased, as ssh does.
func ParseRemote(s string) (Remote, error) {
	var r Remote
	if s == "" {
		return r, errors.New("must be [USER@]HOST:PATH, like root@backup.example:/srv/volumes/app")
	}
	for _, c := range s {
		if c < 0x21 || c > 0x7e {
			return r, errors.New("must be printable ASCII without spaces or control characters")
		}
	}
	if s[0] == '-' {
		return r, errors.New("must not start with '-' (it would be read as an ssh option)")
	}
	if i := strings.IndexAny(s, ";|&$`'\"\\,<>(){}*?!#^"); i >= 0 {
		return r, fmt.Errorf("must not contain %q: a remote is [USER@]HOST:PATH with a plain absolute path", s[i])
	}
	rest := s
	// The user ends at the first '@' before the host: a path may hold '@'.
	if at := strings.IndexByte(rest, '@'); at >= 0 && (strings.IndexAny(rest, ":[") < 0 || at < strings.IndexAny(rest, ":[")) {
		r.User, rest = rest[:at], rest[at+1:]
		if err := checkUser(r.User); err != nil {
			return r, err
		}
	}
	var hostPart string
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return r, errors.New("an IPv6 host must be written [ADDRESS]:PATH, with the closing ']'")
		}
		hostPart = rest[1:end]
		rest = rest[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return r, errors.New("must be [USER@]HOST:PATH: the IPv6 host must be followed by ':' and the path")
		}
		if ip := net.ParseIP(hostPart); ip == nil || ip.To4() != nil || !strings.Contains(hostPart, ":") {
			return r, fmt.Errorf("host [%s] is not an IPv6 address", hostPart)
		}
		r.Host = strings.ToLower(hostPart)
		rest = rest[1:]
	} else {
		colon := strings.IndexByte(rest, ':')
		if colon < 0 {
			return r, errors.New("must be [USER@]HOST:PATH: the ':' between host and path is missing")
		}
		hostPart, rest = rest[:colon], rest[colon+1:]
		if err := checkHost(hostPart); err != nil {
			return r, err
		}
		r.Host = strings.ToLower(hostPart)
	}
	if err := checkPath(rest); err != nil {
		return r, err
	}
	r.Path = rest
	return r, nil
}

// String is the normalised spec, the form sshfs is given.
func (r Remote) String() string {
	h := r.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if r.User != "" {
		h = r.User + "@" + h
	}
	return h + ":" + r.Path
}

// NormalizeRemote is the remote option's schema check.
func NormalizeRemote(s string) (string, error) {
	r, err := ParseRemote(s)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

func checkUser(u string) error {
	if u == "" || len(u) > maxUser {
		return fmt.Errorf("user %q must be 1 to %d characters", u, maxUser)
	}
	for i, c := range u {
		ok := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("user %q must start with a letter or '_' and hold only letters, digits, '.', '_' and '-'", u)
		}
	}
	return nil
}

// checkHost accepts a DNS name or an IPv4 literal: dot-separated labels of
// letters, digits and inner '-'.
func checkHost(h string) error {
	if h == "" {
		return errors.New("the host is empty: must be [USER@]HOST:PATH")
	}
	if len(h) > maxHost {
		return fmt.Errorf("the host is longer than %d characters", maxHost)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q is not a DNS name or IP address (an IPv6 address is written [ADDRESS])", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("host %q is not a DNS name or IP address (an IPv6 address is written [ADDRESS])", h)
			}
		}
	}
	return nil
}

// checkPath accepts an absolute, clean path of ordinary characters.
func checkPath(p string) error {
	if p == "" {
		return errors.New("the path is empty: must be [USER@]HOST:PATH with an absolute PATH")
	}
	if p[0] != '/' {
		return fmt.Errorf("path %q must be absolute (start with '/'): sshfs would resolve it against the remote user's home", p)
	}
	if len(p) > maxPath {
		return fmt.Errorf("the path is longer than %d characters", maxPath)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q must be clean: no '.', '..', '//' or trailing '/' (like %s)", p, path.Clean(p))
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/._-+=@%:~", c)) {
			return fmt.Errorf("path %q may hold only letters, digits and / . _ - + = @ %% : ~", p)
		}
	}
	return nil
}

// CheckIdentityName accepts a plain file name inside the keys directory:
// never a path, never '.' or '..', nothing ssh would expand ('%', '~').
func CheckIdentityName(n string) (string, error) {
	if n == "" {
		return "", errors.New("must name a private key file in the daemon's --ssh-keys-dir")
	}
	if strings.ContainsAny(n, "/\\") {
		return "", errors.New("must be a file name inside the daemon's --ssh-keys-dir, not a path; keys are never read from anywhere else")
	}
	if len(n) > 255 {
		return "", errors.New("must be at most 255 characters")
	}
	for i, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || i > 0 && (c == '.' || c == '-')) {
			return "", errors.New("must be a plain file name (letters, digits, '_', and '.' or '-' after the first character) inside the daemon's --ssh-keys-dir")
		}
	}
	return n, nil
}
