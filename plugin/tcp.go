package plugin

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/docker/go-connections/tlsconfig"
)

// TLSOptions are the files for the optional TCP listener. All three are
// required: a plugin API reachable over the network without client
// certificates would let anyone create, mount and remove volumes.
type TLSOptions struct {
	Cert, Key, CA string
}

// ListenTLS listens on addr with TLS that requires client certificates
// signed by CA (go-connections' server defaults: TLS 1.2+, its cipher list).
func ListenTLS(addr string, o TLSOptions) (net.Listener, error) {
	if o.Cert == "" || o.Key == "" || o.CA == "" {
		return nil, errors.New("--tcp-addr needs --tls-cert, --tls-key and --tls-ca: stowage serves TCP only with TLS and client certificates")
	}
	cfg, err := tlsconfig.Server(tlsconfig.Options{
		CertFile: o.Cert, KeyFile: o.Key, CAFile: o.CA,
		ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		return nil, fmt.Errorf("--tcp-addr %s: TLS setup: %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--tcp-addr %s: %w", addr, err)
	}
	return tls.NewListener(l, cfg), nil
}

// Spec is dockerd's NAME.json plugin discovery file.
type Spec struct {
	Name      string
	Addr      string
	TLSConfig *SpecTLS `json:",omitempty"`
}

// SpecTLS is the client side of the TLS setup dockerd uses to call us.
type SpecTLS struct {
	CAFile   string `json:",omitempty"`
	CertFile string `json:",omitempty"`
	KeyFile  string `json:",omitempty"`
}

// WriteSpec writes dir/NAME.json atomically (temp file, fsync, rename) and
// returns its path.
func WriteSpec(dir string, s Spec) (string, error) {
	if s.Name == "" || filepath.Base(s.Name) != s.Name || s.Name == "." || s.Name == ".." {
		return "", fmt.Errorf("plugin name %q cannot name a spec file", s.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("spec dir %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, s.Name+".json")
	f, err := os.CreateTemp(dir, "."+s.Name+".json.*")
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(append(data, '\n'))
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("writing %s: %w", path, werr)
	}
	return path, nil
}
